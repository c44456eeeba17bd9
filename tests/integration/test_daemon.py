"""`ecmpd run` in the lab: failover, recovery, no false failovers, reload, restart, hooks."""

from __future__ import annotations

import json
import signal
import stat
import time
from pathlib import Path

import pytest
import yaml

from ecmpd.config import CheckConfig
from ecmpd.health.fsm import detection_time
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal, random_loss
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.topology import isp_link_down, isp_link_up
from ecmpd.lab.wait import wait_for
from ecmpd.model import NH_ID_BASE, Family
from tests.integration.fixtures.daemon import GROUP_ID, running_daemon
from tests.integration.fixtures.kernelstate import ecmpd, ip_json, netlink_monitor

ALL = {"isp-a", "isp-b", "isp-c"}


def test_gray_failure_is_detected_and_recovers(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-b").health == "up", 5, "isp-b up")
        assert group_members(lab) == ALL
        gray_failure(lab.ns("isp-b"))
        took = wait_for(lambda: group_members(lab) == ALL - {"isp-b"}, 3, "isp-b removed")
        assert took < 1.5, took  # default check: detection bound 0.85 s
        # The status shows the reconcile once it is complete: after the group replace, its
        # last operation puts isp-b's mark in the table's reset set (one nft run).
        wait_for(lambda: not daemon.uplink("isp-b").in_balancer, 1, "status catches up")
        status = daemon.uplink("isp-b")
        assert (status.state, status.in_balancer) == ("down", False)
        assert status.reason
        # What an operator sees meanwhile: `ecmpd watch` in the daemon's namespace.
        frame = ecmpd(
            lab.router, lab.config_path, tmp_path / "run", "watch", "--once", env={"COLUMNS": "160"}
        )  # a pipe is 80 columns to rich: cells elide
        assert frame.returncode == 0, frame.stderr
        rows = {
            line.split()[1]: line
            for line in frame.stdout.splitlines()
            if len(line.split()) > 1 and line.split()[1] in ALL
        }
        assert set(rows) == ALL, frame.stdout
        assert "down" in rows["isp-b"] and "up" not in rows["isp-b"].split(), rows["isp-b"]
        assert all("up" in rows[name].split() for name in ("isp-a", "isp-c")), rows
        heal(lab.ns("isp-b"))
        wait_for(lambda: group_members(lab) == ALL, 5, "isp-b back")
        assert daemon.uplink("isp-b").state == "up"
        assert daemon.uplink("isp-a").transitions == 1  # unknown -> up only


def test_carrier_loss_acts_at_once_and_nexthops_come_back(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-c").health == "up", 5, "isp-c up")
        isp_link_down(lab, "isp-c")
        took = wait_for(lambda: group_members(lab) == ALL - {"isp-c"}, 2, "isp-c removed")
        assert took < 0.05, took
        assert daemon.uplink("isp-c").carrier is False
        isp_link_up(lab, "isp-c")
        # The kernel deleted isp-c's nexthop with the carrier; the daemon re-creates it
        # and probing brings the uplink back.
        wait_for(lambda: group_members(lab) == ALL, 5, "isp-c back")
        ids = {n["id"] for n in ip_json(lab.router, "nexthop", "show")}
        assert NH_ID_BASE + 103 in ids


def test_five_percent_loss_causes_no_failover(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 5, "up")
        before = {u.name: u.transitions for u in daemon.status().uplinks}
        for isp in ALL:
            random_loss(lab.ns(isp), 5)
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            assert group_members(lab) == ALL
            time.sleep(0.05)
        for u in daemon.status().uplinks:
            assert u.state == "up", u
            lost = sum(t.sent - t.received for t in u.targets)
            assert lost > 0, u  # the loss really happened
        # Only hysteresis (up -> falling -> up) may have moved; nothing left service.
        assert all(daemon.uplink(n).in_balancer for n in before)


@pytest.mark.parametrize("policy", ["keep", "main", "unreachable"])
def test_all_uplinks_down(lab: Lab, tmp_path: Path, policy: str) -> None:
    config = write_lab_config(
        lab, tmp_path / "c.yaml", extra={"balancer": {"when_all_down": policy}}
    )
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 5, "up")
        for isp in ALL:
            gray_failure(lab.ns(isp))
        wait_for(lambda: all(u.state == "down" for u in daemon.status().uplinks), 5, "all down")
        time.sleep(0.2)
        routes = ip_json(lab.router, "route", "show", "table", "200")
        if policy == "keep":
            assert group_members(lab) == ALL
            assert routes[0]["dst"] == "default" and "nhid" in routes[0]
        elif policy == "main":
            assert routes == []
        else:
            assert routes[0]["type"] == "unreachable"
        for isp in ALL:
            heal(lab.ns(isp))
        wait_for(lambda: group_members(lab) == ALL, 5, "all back")


def test_sighup_reloads_good_configs_and_keeps_the_old_one_on_bad(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "live.yaml"
    config.write_text(lab.config_path.read_text())
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-a").health == "up", 5, "up")
        since = daemon.uplink("isp-a").since
        data = yaml.safe_load(config.read_text())
        data["uplinks"][2]["weight"] = 3
        config.write_text(yaml.safe_dump(data))
        daemon.send(signal.SIGHUP)
        wait_for(lambda: _weight(lab, "isp-c") == 3, 5, "weight 3")
        assert daemon.uplink("isp-a").since == since  # unchanged uplink kept its health
        config.write_text("uplinks: [{name: BAD}]\n")
        daemon.send(signal.SIGHUP)
        wait_for(lambda: "config.reload_failed" in daemon.log(), 5, "reload failure logged")
        assert _weight(lab, "isp-c") == 3
        assert daemon.uplink("isp-a").health == "up"


def _weight(lab: Lab, isp: str) -> int:
    group = next(n for n in ip_json(lab.router, "nexthop", "show") if n["id"] == GROUP_ID)
    ids = {NH_ID_BASE + 101 + i: x.name for i, x in enumerate(lab.isps)}
    return int(next(m.get("weight", 1) for m in group["group"] if ids[m["id"]] == isp))


def test_restart_adopts_the_kernel_with_zero_changes(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 5, "up")
        gray_failure(lab.ns("isp-c"))
        wait_for(lambda: group_members(lab) == ALL - {"isp-c"}, 3, "isp-c removed")
        assert daemon.stop() == 0
    assert group_members(lab) == ALL - {"isp-c"}  # SIGTERM left forwarding in place
    with (
        netlink_monitor(lab.router) as events,
        running_daemon(lab, lab.config_path, tmp_path / "again") as daemon,
    ):
        time.sleep(2.0)
        assert daemon.uplink("isp-c").state == "down"
    assert events == []


def test_kill_9_leaves_forwarding_working(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: all(u.health == "up" for u in daemon.status().uplinks), 5, "up")
        daemon.stop(signal.SIGKILL)
    assert group_members(lab) == ALL
    routes = ip_json(lab.router, "route", "show", "table", "200")
    assert routes and routes[0]["dst"] == "default"


def test_drain_and_undrain_through_the_daemon(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-a").health == "up", 5, "up")
        r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "drain", "isp-a")
        assert r.returncode == 0, r.stderr
        assert group_members(lab) == ALL - {"isp-a"}
        assert daemon.uplink("isp-a").state == "drained"
        r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "undrain", "isp-a")
        assert r.returncode == 0, r.stderr
        assert group_members(lab) == ALL
        status = json.loads(
            ecmpd(lab.router, lab.config_path, tmp_path / "run", "status", "--json").stdout
        )
        assert status["source"] == "daemon"
        assert {u["name"]: u["state"] for u in status["uplinks"]} == dict.fromkeys(ALL, "up")
        bad = ecmpd(lab.router, lab.config_path, tmp_path / "run", "drain", "isp-z")
        assert bad.returncode == 2 and "isp-z" in bad.stderr


def test_hooks_run_with_the_change_in_their_environment(lab: Lab, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "hook.out"
    script = hooks / "10-record"
    script.write_text(f"#!/bin/sh\nenv | grep ^ECMPD_ | sort >> {out}\necho --- >> {out}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    slow = hooks / "20-slow"  # a slow hook must not hold up probing or the others
    slow.write_text("#!/bin/sh\nsleep 20\n")
    slow.chmod(0o755)
    config = write_lab_config(lab, tmp_path / "c.yaml", extra={"hooks": str(hooks)})
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-b").health == "up", 5, "up")
        gray_failure(lab.ns("isp-b"))
        wait_for(
            lambda: "ECMPD_NEW_STATE=down" in (out.read_text() if out.exists() else ""),
            5,
            "hook saw down",
        )
        heal(lab.ns("isp-b"))
        wait_for(lambda: group_members(lab) == ALL, 5, "isp-b back")
    text = out.read_text()
    assert "ECMPD_UPLINK=isp-b\n" in text
    assert "ECMPD_OLD_STATE=falling\nECMPD_REASON=" in text
    assert "ECMPD_IN_SERVICE=0" in text
    assert "ECMPD_FAMILY=ipv4\n" in text and "ECMPD_FAMILY=ipv6" not in text  # IPv4-only lab


def _hook_runs(directory: Path) -> list[dict[str, str]]:
    """The ECMPD_* environment of every finished hook run (one file per run)."""
    runs = []
    for path in sorted(directory.iterdir()):
        if not path.name.startswith("."):  # still being written
            lines = path.read_text().splitlines()
            runs.append(dict(line.split("=", 1) for line in lines if "=" in line))
    return runs


@pytest.mark.parametrize("lab", [{"ipv6": True}], indirect=True)
def test_hooks_hear_the_family_of_an_ipv6_only_change(lab: Lab, tmp_path: Path) -> None:
    hooks, runs = tmp_path / "hooks.d", tmp_path / "runs"
    hooks.mkdir()
    runs.mkdir()
    script = hooks / "10-record"
    # One file per run, so two runs at once (IPv4 and IPv6 of one uplink) cannot
    # interleave; written under a dot name and renamed, so never read half-written.
    script.write_text(f"#!/bin/sh\nenv | grep ^ECMPD_ > {runs}/.$$ && mv {runs}/.$$ {runs}/$$\n")
    script.chmod(0o755)
    config = write_lab_config(lab, tmp_path / "c.yaml", ipv6=True, extra={"hooks": str(hooks)})

    def seen(**env: str) -> list[dict[str, str]]:
        return [r for r in _hook_runs(runs) if env.items() <= r.items()]

    def both_up() -> bool:
        return all(
            seen(ECMPD_UPLINK="isp-b", ECMPD_FAMILY=family, ECMPD_NEW_STATE="up")
            for family in ("ipv4", "ipv6")
        )

    with running_daemon(lab, config, tmp_path):
        wait_for(both_up, 5, "a hook run for each family of isp-b coming up")
        gray_failure(lab.ns("isp-b"), Family.INET6)
        wait_for(lambda: bool(seen(ECMPD_UPLINK="isp-b", ECMPD_NEW_STATE="down")), 5, "down")
        heal(lab.ns("isp-b"))
    down = seen(ECMPD_UPLINK="isp-b", ECMPD_NEW_STATE="down")
    assert [r["ECMPD_FAMILY"] for r in down] == ["ipv6"]
    assert down[0]["ECMPD_IN_SERVICE"] == "0"
    assert down[0]["ECMPD_REASON"].startswith("ipv6: ")
    # IPv4 never noticed: its only change was unknown -> up.
    v4 = seen(ECMPD_UPLINK="isp-b", ECMPD_FAMILY="ipv4")
    assert [(r["ECMPD_OLD_STATE"], r["ECMPD_NEW_STATE"]) for r in v4] == [("unknown", "up")]


def test_control_socket_is_private(lab: Lab, tmp_path: Path) -> None:
    with running_daemon(lab, lab.config_path, tmp_path):
        mode = (tmp_path / "run" / "ecmpd.sock").stat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_probes_follow_a_renumbered_uplink(lab: Lab, tmp_path: Path) -> None:
    """An uplink whose address changes (a new DHCP lease) keeps being probed, from the new one."""
    data = yaml.safe_load(lab.config_path.read_text())
    del data["uplinks"][1]["source"]  # the interface's address, whatever it is now
    config = tmp_path / "renumber.yaml"
    config.write_text(yaml.safe_dump(data))
    wan = lab.isps[1].uplink_if
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-b").health == "up", 5, "isp-b up")
        # As a DHCP client does: the old address goes, then the new one comes.
        netns.run_in(lab.router, ["ip", "addr", "del", "10.2.0.2/24", "dev", wan], check=True)
        netns.run_in(lab.router, ["ip", "addr", "add", "10.2.0.3/24", "dev", wan], check=True)

        # The prober rebinds to the new address; if the daemon saw the interface without
        # any address in between, it held the uplink down meanwhile and starts it anew.
        def rebound() -> bool:
            log = daemon.log()
            return "probe.rebind" in log or "uplink.available" in log

        wait_for(rebound, 2, "the prober rebinds")
        # Probes from the old address would go unanswered: 3 detection bounds of silence.
        time.sleep(3 * detection_time(CheckConfig()))
        assert daemon.uplink("isp-b").health == "up"
        assert '"uplink.down"' not in daemon.log()
        assert "reconcile.failed" not in daemon.log()
        assert group_members(lab) == ALL
        rules = ip_json(lab.router, "rule", "show")
        assert any(r.get("src") == "10.2.0.3" for r in rules), rules
