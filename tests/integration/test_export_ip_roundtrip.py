"""Round trip: `export --format ip` run with `ip -batch` builds what `ecmpd apply` builds.

Two identical labs: `ecmpd apply` in one, the exported script (run exactly as its
header says) in the other; then rules, routes, nexthops (groups and resilient
parameters included) and sysctls must match object by object, in both families.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ecmpd.export.ipbatch import FILENAME, NO_GATEWAY6
from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.marks import DEFAULT_MASK
from tests.integration.fixtures.kernelstate import ecmpd, ip_json, owned, snapshot
from tests.integration.fixtures.labs import LabFactory

# The export command, run as the CLI runs it, without depending on cli/main.py
# having registered it yet.
RUN_EXPORT = """
import argparse, sys
from ecmpd.cli import export
from ecmpd.cli.common import add_global_options
parser = argparse.ArgumentParser(prog="ecmpd")
add_global_options(parser)
export.register(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""

RULES: dict[str, Any] = {
    "default": {},
    "every-rule-kind": {
        "rules": [
            {"name": "local", "action": "bypass"},
            {"name": "vpn", "from": "10.200.7.0/24", "action": "pin", "uplink": "isp-b"},
            {
                "name": "strict",
                "from": "10.200.8.1",
                "action": "pin",
                "uplink": "isp-c",
                "strict": True,
            },
            {"name": "bank", "to": "203.0.113.0/24", "action": "main"},
            {
                "name": "web",
                "proto": "tcp",
                "dport": 443,
                "iif": "lo",
                "fwmark": "0x10/0xff",
                "action": "balance",
            },
            {"name": "v6", "from": "2001:db8:1::/48", "action": "main"},
            {"name": "rest", "action": "balance"},
        ]
    },
}
# every-rule-kind with every uplink dual-stack (see write_config).
DUAL_STACK = "dual-stack"
CASES = sorted([*RULES, DUAL_STACK])
IPV6_SYSCTLS = ("net.ipv6.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_fields")


def write_config(lab: Lab, case: str) -> None:
    """The lab's config for a case; dual-stack: each kind of IPv6 gateway once.

    isp-a has its link-local gateway (fe80::1 on its device), isp-b a global one, and
    isp-c none: a gateway-less IPv6 default route and nexthop, as on a point-to-point
    link, which the IPv4 run of the script must still create as IPv6.
    """
    if case != DUAL_STACK:
        write_lab_config(lab, lab.config_path, extra=RULES[case])
        return
    write_lab_config(
        lab, lab.config_path, extra=RULES["every-rule-kind"], ipv6=True, link_local=["isp-a"]
    )
    data = yaml.safe_load(lab.config_path.read_text())
    isp_c = data["uplinks"][2]
    gateway6 = isp_c.pop("gateway6")
    isp_c["check"]["targets"].remove(gateway6)
    lab.config_path.write_text(yaml.safe_dump(data, sort_keys=False))


def export_ip(lab: Lab, run_dir: Path) -> str:
    """The `ip` export, made inside the lab's router namespace from its live facts."""
    argv = [sys.executable, "-c", RUN_EXPORT, "-c", str(lab.config_path)]
    argv += ["--run-dir", str(run_dir), "export", "--format", "ip"]
    r = netns.run_in(lab.router, argv, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return str(r.stdout)


def run_as_documented(lab: Lab, script: str, workdir: Path) -> None:
    """Save the script and run the command line its header gives, in the router namespace."""
    (workdir / FILENAME).write_text(script)
    marker = "as root:"
    lines = script.splitlines()
    command = (
        next(lines[i + 1] for i, line in enumerate(lines) if line.rstrip().endswith(marker))
        .removeprefix("#")
        .strip()
    )
    r = netns.run_in(lab.router, ["sh", "-c", command], cwd=workdir, capture_output=True, text=True)
    assert r.returncode == 0, f"{command}\n{r.stdout}{r.stderr}"


def comparable(ns: str) -> dict[str, Any]:
    """What ecmpd owns in a namespace, plus the sysctls, free of per-lab noise."""
    snap = snapshot(ns)
    state = owned(snap)
    for nh in state["nexthops"]:
        # Seconds since the group was last unbalanced: a clock, not configuration.
        nh.get("resilient_args", {}).pop("unbalanced_time", None)
    # snapshot() lists IPv4 rules only; the IPv6 ones ecmpd made count as much.
    state["rules6"] = [r for r in ip_json(ns, "-6", "rule", "show") if r.get("protocol") == "236"]
    # `ip nexthop` does not print a nexthop's family; `ip -6 nexthop` lists IPv6 ones only.
    state["nexthops6"] = [
        nh for nh in ip_json(ns, "-6", "nexthop", "show") if nh.get("protocol") == "236"
    ]
    state["sysctls"] = snap["sysctls"] | {k: netns.read_sysctl(ns, k) for k in IPV6_SYSCTLS}
    # The connection marks' rules need ecmpd's nftables table, which the export leaves out.
    for kind in ("rules", "rules6"):
        state[kind] = [r for r in state[kind] if r.get("fwmask") != f"{DEFAULT_MASK:#x}"]
    return state


@pytest.mark.parametrize("case", CASES)
def test_ip_batch_export_builds_exactly_what_apply_builds(
    lab_factory: LabFactory, tmp_path: Path, case: str
) -> None:
    applied = lab_factory(shaping=False)
    exported = lab_factory(shaping=False)
    for lab in (applied, exported):
        write_config(lab, case)

    r = ecmpd(applied.router, applied.config_path, tmp_path / "run-a", "apply")
    assert r.returncode == 0, r.stderr
    script = export_ip(exported, tmp_path / "run-b")
    if case != "default":
        assert "\n#6 rule add " in script  # the IPv6 rules ride in the marked lines
    assert (NO_GATEWAY6 in script) == (case == DUAL_STACK)
    run_as_documented(exported, script, tmp_path)

    want, got = comparable(applied.router), comparable(exported.router)
    for kind in ("rules", "routes", "nexthops"):
        assert want[kind], f"apply built no {kind}"
        assert got[kind] == want[kind], kind
    assert got["rules6"] == want["rules6"]
    assert bool(want["rules6"]) == (case != "default")
    assert got["nexthops6"] == want["nexthops6"]
    if case == DUAL_STACK:
        wan = {isp.name: isp.uplink_if for isp in applied.isps}
        gateways6 = {nh["dev"]: nh.get("gateway") for nh in want["nexthops6"]}
        assert gateways6 == {
            wan["isp-a"]: "fe80::1",
            wan["isp-b"]: str(applied.isps[1].gateway6),
            wan["isp-c"]: None,
        }
    assert got["sysctls"] == want["sysctls"]

    # ecmpd takes the exported objects for its own and in step with the config; it
    # would only start recording the sysctls (which it owns once it has set them) and
    # add what the export leaves out: the connection marks' table and rules.
    plan = ecmpd(exported.router, exported.config_path, tmp_path / "run-b", "plan", "--json")
    assert plan.returncode == 0, plan.stderr
    ops = json.loads(plan.stdout)["ops"]
    rules = [op for op in ops if op["type"] == "Rule"]
    assert {op["type"] for op in ops} <= {"Sysctl", "NftTable", "Rule"}, ops
    assert all(r["op"] == "add" and r["object"]["fwmask"] == DEFAULT_MASK for r in rules), rules
    for op in (op for op in ops if op["type"] == "Sysctl"):
        obj = op["object"]
        assert netns.read_sysctl(exported.router, obj["name"]) == obj["value"]
