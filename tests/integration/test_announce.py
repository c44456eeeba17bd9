"""announce with the real daemon and kernel: the route FRR imports follows service.

Withdrawn before the balancer loses its last uplink, restored after it is back, moved
by delete-then-add (never an in-place replace), never there before a first verdict,
left by SIGTERM and by a restart, removed by `down`; IPv4 and IPv6 alike.
"""

from __future__ import annotations

import json
from pathlib import Path

from ecmpd.config import load_config
from ecmpd.lab import netns
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.wait import wait_for
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ecmpd, ip_json, netlink_monitor

TABLE = "150"
ANNOUNCE = {"balancer": {"when_all_down": "unreachable"}, "announce": {"table": int(TABLE)}}


def announced(lab: Lab) -> dict[int, str]:
    """IP version -> the announce route's device, for the routes now in the table."""
    routes: dict[int, str] = {}
    for version, flag in ((4, "-4"), (6, "-6")):
        # `show table 150` fails until the kernel has made the table: filter `all`.
        for r in ip_json(lab.router, flag, "route", "show", "table", "all"):
            if str(r.get("table")) != TABLE:
                continue
            assert r["dst"] == "default" and "nhid" not in r, r
            assert str(r.get("protocol")) in {"236"}, r
            routes[version] = r["dev"]
    return routes


def drain(lab: Lab, config: Path, run: Path, verb: str, *names: str) -> None:
    for name in names:
        r = ecmpd(lab.router, config, run, verb, name)
        assert r.returncode == 0, r.stderr


def table_lines(events: list[str]) -> list[str]:
    return [e for e in events if f"table {TABLE}" in e]


def first(events: list[str], pred: str) -> int:
    return next(i for i, e in enumerate(events) if pred in e)


def test_announce_follows_service_in_order(lab: Lab, tmp_path: Path) -> None:
    config = write_lab_config(lab, tmp_path / "ecmpd.yaml", extra=ANNOUNCE, ipv6=True)
    run = tmp_path / "run"
    wan = {isp.name: isp.uplink_if for isp in lab.isps}
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: announced(lab) == {4: wan["isp-a"], 6: wan["isp-a"]}, 5, "announce")

        # The announce's uplink leaves: the route moves, deleted then added, both families.
        with netlink_monitor(lab.router) as events:
            drain(lab, config, run, "drain", "isp-a")
            wait_for(lambda: announced(lab) == {4: wan["isp-b"], 6: wan["isp-b"]}, 5, "moved")
        lines = table_lines(events)
        assert len(lines) == 4, lines
        for dev in (wan["isp-a"], wan["isp-b"]):
            assert sum(dev in line for line in lines) == 2, lines
        # Per family: the old route deleted, then the new one added (no replace).
        for old, new in zip(lines[::2], lines[1::2], strict=True):
            assert old.startswith("Deleted") and wan["isp-a"] in old, lines
            assert not new.startswith("Deleted") and wan["isp-b"] in new, lines
            assert ("metric 1024" in old) == ("metric 1024" in new), lines

        # The last uplink leaves: withdrawn before anything else changes.
        drain(lab, config, run, "drain", "isp-b")
        wait_for(lambda: announced(lab) == {4: wan["isp-c"], 6: wan["isp-c"]}, 5, "on isp-c")
        with netlink_monitor(lab.router) as events:
            drain(lab, config, run, "drain", "isp-c")
            wait_for(lambda: announced(lab) == {}, 5, "withdrawn")
        assert len(table_lines(events)) == 2, events
        assert events[0].startswith("Deleted") and f"table {TABLE}" in events[0], events
        assert events[1].startswith("Deleted") and f"table {TABLE}" in events[1], events
        assert any("unreachable" in e for e in events[2:]), events
        assert daemon.uplink("isp-c").state == "drained"

        # One back: the balancer first, then the announce.
        with netlink_monitor(lab.router) as events:
            drain(lab, config, run, "undrain", "isp-c")
            wait_for(lambda: announced(lab) == {4: wan["isp-c"], 6: wan["isp-c"]}, 5, "back")
        announce_at = min(i for i, e in enumerate(events) if f"table {TABLE}" in e)
        balancer_at = first(events, "table 200")
        assert balancer_at < announce_at, events
        assert all(f"table {TABLE}" in e for e in events[announce_at:]), events
        drain(lab, config, run, "undrain", "isp-a", "isp-b")
        wait_for(lambda: announced(lab) == {4: wan["isp-a"], 6: wan["isp-a"]}, 5, "isp-a again")

    # SIGTERM left it; a restart changes nothing while probing settles; down removes it.
    assert announced(lab) == {4: wan["isp-a"], 6: wan["isp-a"]}
    with netlink_monitor(lab.router) as events, running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-c").health == "up", 5, "probed")
    assert table_lines(events) == [], events
    r = ecmpd(lab.router, config, run, "down")
    assert r.returncode == 0, r.stderr
    assert announced(lab) == {}


def test_never_announced_before_a_verdict(lab: Lab, tmp_path: Path) -> None:
    """Every ISP dead from the start: unknown uplinks never count, so nothing is announced.

    (when_all_down keep: the balancer keeps them, which the announce must not follow.)
    """
    extra = {"announce": {"table": int(TABLE)}}
    config = write_lab_config(lab, tmp_path / "ecmpd.yaml", extra=extra)
    for isp in lab.isps:
        gray_failure(lab.ns(isp.name))
    try:
        with netlink_monitor(lab.router) as events, running_daemon(lab, config, tmp_path) as d:
            wait_for(lambda: d.uplink("isp-a").health == "down", 5, "isp-a down")
            wait_for(lambda: d.uplink("isp-c").health == "down", 5, "isp-c down")
            assert announced(lab) == {}
        assert table_lines(events) == [], events
        assert any("nexthop" in e or "group" in e for e in events), events
    finally:
        for isp in lab.isps:
            heal(lab.ns(isp.name))


def test_validate_warns_of_a_default_route_that_would_shadow_the_announce(
    lab: Lab, tmp_path: Path
) -> None:
    """A default route in main that FRR's zebra would take over the announce route (a
    DHCP client's, distance 0 against the import's 15; in main, a lower metric) is a
    warning at the announce key's line; validate still passes and changes nothing."""
    extra = {"announce": {"table": int(TABLE), "table6": "main"}}
    config = write_lab_config(lab, tmp_path / "ecmpd.yaml", extra=extra, ipv6=True)
    run = tmp_path / "run"
    lines = load_config(config)
    r = ecmpd(lab.router, config, run, "validate")
    assert r.returncode == 0 and "shadow" not in r.stderr, r.stderr
    isp = lab.isps[0]
    v6 = ["-6", "route", "add", "default", "via", str(isp.gateway6), "dev", isp.uplink_if]
    for argv in (
        ["route", "add", "default", "via", str(isp.gateway), "proto", "dhcp"],
        [*v6, "metric", "100", "proto", "ra"],  # shadows ecmpd's ::/0 at metric 236
        [*v6, "metric", "2048", "proto", "ra"],  # does not
    ):
        netns.run_in(lab.router, ["ip", *argv], check=True)
    r = ecmpd(lab.router, config, run, "validate")
    assert r.returncode == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if "shadow" in line]
    assert warned == [
        f"{config}:{lines.line_of('announce.table')}: announce.table: warning: the IPv4 default"
        f" route via {isp.gateway} dev {isp.uplink_if} (proto dhcp, metric 0) in the main table"
        " would shadow the announce route (imported) in FRR's zebra: FRR would announce it, or"
        " nothing, instead; keep main free of other default routes on an edge",
        f"{config}:{lines.line_of('announce.table6')}: announce.table6: warning: the IPv6"
        f" default route via {isp.gateway6} dev {isp.uplink_if} (proto ra, metric 100) in the"
        " main table would shadow the announce route (in main) in FRR's zebra: FRR would"
        " announce it, or nothing, instead; keep main free of other default routes on an edge",
    ], r.stderr
    r = ecmpd(lab.router, config, run, "validate", "--json")
    assert sum("shadow" in w for w in json.loads(r.stdout)["warnings"]) == 2, r.stdout
    assert not (run / "state.json").exists()  # validate wrote nothing
