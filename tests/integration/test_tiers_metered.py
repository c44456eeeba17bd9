"""A metered backup with the real `ecmpd run`: sparing probes, takeover, failback reset.

fiber (isp-a) and cable (isp-b) in tier 1, lte (isp-c) in tier 2 with `metered: true`
(so `failback: reset`). NAT-only return paths and source-validating ISPs, as in
test_tiers.py: what the server sees is the public address a connection really used.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ecmpd.health.fsm import detection_time
from ecmpd.lab.chat import chat
from ecmpd.lab.faults import gray_failure, heal_gray_failure, load_nft
from ecmpd.lab.groups import GroupWatch, group_members
from ecmpd.lab.topology import add_lan_clients
from ecmpd.lab.traffic import Traffic
from ecmpd.lab.wait import wait_for
from ecmpd.metering import round_bytes, standby_interval
from ecmpd.model import Family
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.labs import LabFactory
from tests.integration.fixtures.tiers import (
    CHECK,
    KERNEL_MARGIN,
    TALLY,
    data_bytes,
    tiered_lab,
    write_config,
)

METERED = {"isp-c": {"metered": True}}
PROBE_WINDOW = 30.0


def test_standing_by_metered_uplink_probes_within_its_budget_and_takes_over(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = tiered_lab(lab_factory, isps=3)
    config = write_config(lab, {"isp-c": 2}, [], METERED)
    load_nft(lab.ns("isp-c"), TALLY)
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.count_events("probe.sparse") == 1, 15, "lte probed sparingly")
        lte = daemon.uplink("isp-c")
        assert (lte.role, lte.metered, lte.tier) == ("standby", True, 2)
        assert lte.takeover_time_s == round(detection_time(CHECK), 3)
        assert lte.bytes_in is not None and lte.bytes_out is not None
        # The lab checks two IPv4 targets per uplink (its gateway and a server).
        targets = {Family.INET: 2}
        interval = standby_interval(CHECK, targets)
        start = data_bytes(lab, "isp-c", "probes")
        time.sleep(PROBE_WINDOW)
        spent = data_bytes(lab, "isp-c", "probes") - start
        rounds = math.ceil(PROBE_WINDOW / interval) + 1  # a window may catch one more
        assert 0 < spent <= rounds * round_bytes(CHECK, targets), (spent, interval)
        per_minute = spent * 60 / PROBE_WINDOW
        assert daemon.uplink("isp-c").health == "up"
        # Both tier-1 uplinks fail: the sparse verdict stands, lte takes over in the
        # failover time of any uplink, and is probed at the normal rate from the first
        # failed round of tier 1 on.
        t0 = time.monotonic()
        gray_failure(lab.ns("isp-a"))
        gray_failure(lab.ns("isp-b"))
        wait_for(lambda: group_members(lab) == {"isp-c"}, 5, "lte takes over")
        took = time.monotonic() - t0
        assert took <= detection_time(CHECK) + KERNEL_MARGIN, took
        assert daemon.count_events("probe.normal") >= 1
        # The status follows once the reconcile that changed the group has finished.
        wait_for(lambda: daemon.uplink("isp-c").role == "carrying", 2, "lte carrying")
        assert daemon.count_events("tier.takeover") == 1
    print(f"standing-by lte: {per_minute:.0f} probe bytes/min; takeover {took:.2f} s")


def test_metered_backup_connections_are_reset_on_failback(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """fiber returns: lte's connections are reset at once (not left to time out) and
    reconnect by fiber; 2 s later no connection and no data byte is on lte."""
    lab = tiered_lab(lab_factory, isps=3)
    fiber, _, lte = (str(isp.address.ip) for isp in lab.isps)
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    heard = tmp_path / "heard"
    script = hooks / "10-tier"
    script.write_text(
        '#!/bin/sh\n[ "$ECMPD_EVENT" = tier ] || exit 0\n'
        f'echo "$ECMPD_FAMILY $ECMPD_OLD_TIER $ECMPD_NEW_TIER $ECMPD_TAKEOVER" >> {heard}\n',
        encoding="utf-8",
    )
    script.chmod(0o755)
    config = write_config(lab, {"isp-c": 2}, [], METERED, extra={"hooks": str(hooks)})
    clients = add_lan_clients(lab, 8)
    specs = [(clients[i % 8], lab.servers[i % len(lab.servers)], 0) for i in range(24)]
    load_nft(lab.ns("isp-c"), TALLY)
    with running_daemon(lab, config, tmp_path / "d") as daemon:
        wait_for(lambda: daemon.uplink("isp-c").health == "up", 15, "every uplink probed")
        with chat(lab, specs, echo_timeout=2.0) as (_, pool):
            pool.wait_ready(10)
            assert data_bytes(lab, "isp-c") == 0
            gray_failure(lab.ns("isp-a"))
            gray_failure(lab.ns("isp-b"))
            wait_for(lambda: group_members(lab) == {"isp-c"}, 5, "lte takes over")
            wait_for(lambda: all(s.public == lte for s in pool.snapshot()), 15, "every slot on lte")
            heal_gray_failure(lab.ns("isp-a"))
            # `back`: a moment before the group change (the resets follow it at once, so a
            # poll that sees it late on a loaded machine may see some reconnected already).
            with GroupWatch(lab) as watch:
                back, _ = watch.bracket(lambda m: m == {"isp-a"}, 10, "fiber back")
            time.sleep(2.0)
            slots = pool.snapshot()
            on_lte = [s for s in slots if s.public_at(back) == lte]
            assert len(on_lte) == len(slots)
            # Ended by the reset (within a second), not by the 2 s echo timeout.
            ended = [e for s in on_lte for e in s.errors_since(back)]
            assert ended, "lte's connections were kept"
            first = min(e.at for e in ended) - back
            assert {e.kind for e in ended} == {"reset"} and first < 1.0, (ended, first)
            assert all(s.public == fiber for s in pool.snapshot())
            before = data_bytes(lab, "isp-c")
            time.sleep(1.0)
            assert data_bytes(lab, "isp-c") == before  # 0 data bytes on lte now
        assert daemon.count_events("failback.reset") == 1
        wait_for(lambda: daemon.uplink("isp-c").role == "standby", 2, "lte standing by")
    assert heard.read_text().splitlines() == ["ipv4 1 2 1", "ipv4 2 1 0"]


def test_a_data_cap_demotes_to_last_resort_and_survives_a_restart(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """isp-a may move 3 MB a day: bulk traffic past that makes it the last resort (isp-b,
    tier 1 too, carries alone); a restarted daemon reads the count from its run dir."""
    lab = tiered_lab(lab_factory, isps=2)
    config = write_config(lab, {}, [], {"isp-a": {"data_cap": "3MB/day"}})
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-a").health == "up", 10, "isp-a up")
        assert group_members(lab) == {"isp-a", "isp-b"}
        with Traffic(lab, flows=8, clients=4, lifetime_s=(1.0, 2.0)):
            wait_for(lambda: group_members(lab) == {"isp-b"}, 30, "isp-a demoted")
        a = daemon.uplink("isp-a")
        assert a.last_resort and a.data_cap == 3_000_000
        assert a.data_used is not None and a.data_used >= 3_000_000
        assert a.role == "standby"  # in service, behind every tier
        used = a.data_used
        changes = daemon.count_events("order.changed")  # the log carries on in the restart
    with running_daemon(lab, config, tmp_path) as daemon:
        # From its first reconcile on: isp-a never rejoins the group.
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            assert group_members(lab) == {"isp-b"}
            time.sleep(0.05)
        assert daemon.uplink("isp-a").last_resort is True
        assert (daemon.uplink("isp-a").data_used or 0) >= used
        # Capped from the start, not from its first reading a moment later.
        assert daemon.count_events("order.changed") == changes
