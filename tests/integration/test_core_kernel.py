"""The core against the real kernel, in a lab: apply, idempotence, ownership, rollback, down."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.model import NH_ID_BASE
from tests.integration.fixtures.kernelstate import (
    ecmpd,
    foreign,
    ip_json,
    netlink_monitor,
    owned,
    snapshot,
)

GROUP_ID = NH_ID_BASE + 200


def apply_ok(lab: Lab, run: Path, config: Path | None = None) -> dict[str, object]:
    r = ecmpd(lab.router, config or lab.config_path, run, "apply", "--json")
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout)
    return result


def test_apply_builds_the_balanced_state_and_reapply_changes_nothing(
    lab: Lab, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    before_policy = netns.read_sysctl(lab.router, "net.ipv4.fib_multipath_hash_policy")
    assert before_policy != "1"  # or applying would not change it
    first = apply_ok(lab, run)
    assert first["changes"] == len(first["ops"]) > 0  # type: ignore[arg-type]

    nexthops = {n["id"]: n for n in ip_json(lab.router, "-d", "nexthop", "show")}
    group = nexthops[GROUP_ID]
    assert group["type"] == "resilient"
    assert sorted((m["id"], m.get("weight", 1)) for m in group["group"]) == [
        (NH_ID_BASE + 101, 2),
        (NH_ID_BASE + 102, 4),
        (NH_ID_BASE + 103, 1),
    ]
    assert group["resilient_args"]["buckets"] == 512
    balanced = ip_json(lab.router, "route", "show", "table", "200")
    assert balanced == [
        {
            "dst": "default",
            "nhid": GROUP_ID,
            "protocol": "236",
            "flags": [],
            "nexthops": balanced[0]["nexthops"],
        }
    ] or (balanced[0]["dst"] == "default" and balanced[0]["nhid"] == GROUP_ID)
    rules = [r for r in ip_json(lab.router, "rule", "show") if 10000 <= r["priority"] < 11000]
    assert [r["priority"] for r in rules if "fwmark" not in r] == [
        10000,
        10001,
        10002,
        10100,
        10110,
    ]
    # Connection marks: one rule per uplink beside its reply rule, and the probes' rule.
    marked = sorted(
        (r["priority"], r["fwmark"], r["fwmask"], r["table"]) for r in rules if "fwmark" in r
    )
    assert marked == [
        (10000, "0x65000000", "0xff000000", "101"),
        (10000, "0xff000000", "0xff000000", "main"),
        (10001, "0x66000000", "0xff000000", "102"),
        (10002, "0x67000000", "0xff000000", "103"),
    ]
    assert netns.read_sysctl(lab.router, "net.ipv4.fib_multipath_hash_policy") == "1"

    with netlink_monitor(lab.router) as events:
        second = apply_ok(lab, run)
    assert second["changes"] == 0
    assert events == []

    # The monitor is live: the same watch does see `down` remove everything.
    with netlink_monitor(lab.router) as events:
        r = ecmpd(lab.router, lab.config_path, run, "down")
        assert r.returncode == 0, r.stderr
    # It says what it restored: the value before ecmpd, read back from the kernel.
    assert f"sysctl -w net.ipv4.fib_multipath_hash_policy={before_policy}\n" in r.stdout
    assert netns.read_sysctl(lab.router, "net.ipv4.fib_multipath_hash_policy") == before_policy
    netlink_ops = [o for o in first["ops"] if o["type"] != "Sysctl"]  # type: ignore[attr-defined]
    assert len(events) >= len(netlink_ops) - 1


def _add_foreign_objects(ns: str) -> None:
    for argv in (
        ["ip", "route", "add", "192.0.2.0/24", "via", "10.1.0.1", "table", "300"],
        ["ip", "rule", "add", "priority", "500", "from", "10.9.9.9", "lookup", "300"],
        ["ip", "nexthop", "add", "id", "77", "via", "10.2.0.1", "dev", "wan-b"],
        ["ip", "route", "add", "198.51.100.0/25", "nhid", "77"],
        ["ip", "route", "add", "203.0.113.0/24", "via", "10.3.0.1", "proto", "static"],
    ):
        netns.run_in(ns, argv, check=True)


def test_foreign_routes_rules_tables_and_nexthops_are_never_touched(
    lab: Lab, tmp_path: Path
) -> None:
    _add_foreign_objects(lab.router)
    before = foreign(snapshot(lab.router))
    apply_ok(lab, tmp_path / "run")
    assert foreign(snapshot(lab.router)) == before
    assert ecmpd(lab.router, lab.config_path, tmp_path / "run", "down").returncode == 0
    assert foreign(snapshot(lab.router)) == before
    assert owned(snapshot(lab.router)) == {"rules": [], "routes": [], "nexthops": []}


def test_conflicts_with_foreign_objects_are_refused_before_any_change(
    lab: Lab, tmp_path: Path
) -> None:
    netns.run_in(
        lab.router, ["ip", "rule", "add", "priority", "10500", "lookup", "300"], check=True
    )
    netns.run_in(
        lab.router,
        ["ip", "route", "add", "192.0.2.0/24", "via", "10.1.0.1", "table", "200"],
        check=True,
    )
    before = snapshot(lab.router)
    r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "apply")
    assert r.returncode == 1
    assert "10500" in r.stderr and "rule_priority" in r.stderr
    assert "balancer.table" in r.stderr and "200" in r.stderr
    assert snapshot(lab.router) == before


def test_a_failure_midway_rolls_back_to_the_state_before(lab: Lab, tmp_path: Path) -> None:
    run = tmp_path / "run"
    pristine = snapshot(lab.router)
    r = ecmpd(lab.router, lab.config_path, run, "apply", fail_after=6)
    assert r.returncode == 2, r.stderr
    assert "rolled back" in r.stderr
    assert snapshot(lab.router) == pristine

    # From an applied config to a changed one: back to the first config's state.
    apply_ok(lab, run)
    applied = snapshot(lab.router)
    changed = write_lab_config(
        lab,
        tmp_path / "changed.yaml",
        extra={
            "hash": "l3",
            "balancer": {"group": "hash-threshold"},
            "rules": [
                {"name": "local", "action": "bypass"},
                {"name": "pinned", "to": "203.0.113.0/28", "action": "pin", "uplink": "isp-c"},
                {"name": "rest", "action": "balance"},
            ],
        },
    )
    for fault_after in (1, 4, 8):
        r = ecmpd(lab.router, changed, run, "apply", fail_after=fault_after)
        assert r.returncode == 2, r.stderr
        assert snapshot(lab.router) == applied, fault_after
    # Without the fault the change goes through (the plan was valid).
    assert apply_ok(lab, run, changed)["changes"]
    assert snapshot(lab.router) != applied


def test_down_restores_everything_including_sysctls(lab: Lab, tmp_path: Path) -> None:
    netns.write_sysctls(lab.router, {"net.ipv4.fib_multipath_hash_fields": "3"})
    pristine = snapshot(lab.router)
    config = write_lab_config(lab, tmp_path / "custom.yaml", extra={"hash": ["src-ip", "dst-port"]})
    apply_ok(lab, tmp_path / "run", config)
    assert netns.read_sysctl(lab.router, "net.ipv4.fib_multipath_hash_policy") == "3"
    assert netns.read_sysctl(lab.router, "net.ipv4.fib_multipath_hash_fields") == "33"
    r = ecmpd(lab.router, config, tmp_path / "run", "down", "--json")
    assert r.returncode == 0, r.stderr
    assert snapshot(lab.router) == pristine
    # A second down has nothing left to do.
    again = ecmpd(lab.router, config, tmp_path / "run", "down", "--json")
    assert json.loads(again.stdout)["changes"] == 0


def test_bad_config_changes_nothing_and_names_file_line_and_field(lab: Lab, tmp_path: Path) -> None:
    data = yaml.safe_load(lab.config_path.read_text())
    data["uplinks"][1]["gateway"] = "10.2.0.300"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data, sort_keys=False))
    before = snapshot(lab.router)
    r = ecmpd(lab.router, bad, tmp_path / "run", "apply")
    assert r.returncode == 1
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "10.2.0.300" in text)
    assert f"{bad}:{line}: uplinks[1].gateway:" in r.stderr
    assert snapshot(lab.router) == before


def test_plan_prints_ip_commands_and_status_reads_the_kernel(lab: Lab, tmp_path: Path) -> None:
    run = tmp_path / "run"
    plan = ecmpd(lab.router, lab.config_path, run, "plan")
    assert plan.returncode == 0, plan.stderr
    assert f"ip route add default nhid {GROUP_ID} table 200 proto 236" in plan.stdout
    status = json.loads(ecmpd(lab.router, lab.config_path, run, "status", "--json").stdout)
    assert {u["state"] for u in status["uplinks"]} == {"unknown"}
    apply_ok(lab, run)
    status = json.loads(ecmpd(lab.router, lab.config_path, run, "status", "--json").stdout)
    assert [(u["name"], u["state"], u["weight"], u["in_balancer"]) for u in status["uplinks"]] == [
        ("isp-a", "up", 2, True),
        ("isp-b", "up", 4, True),
        ("isp-c", "up", 1, True),
    ]
    assert [r["name"] for r in status["rules"]] == [
        "reply:isp-a",
        "conn:isp-a",
        "conn:probe",
        "reply:isp-b",
        "conn:isp-b",
        "reply:isp-c",
        "conn:isp-c",
        "local",
        "everything-else",
    ]
    assert ecmpd(lab.router, lab.config_path, run, "plan").stdout.startswith("# nothing to do")
