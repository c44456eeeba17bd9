"""Spillover with the real `ecmpd run`, TBF-shaped uplinks and bulk TCP from a LAN.

isp-a (tier 1) and isp-b (tier 2) are each shaped to RATE Mbit/s (at the ISP, as a
modem) and configured with that bandwidth, with ecmpd's upload queue a little below it
(as a user who shapes sets it; without it the router sends at its port's speed until
TCP meets the ISP's drops, and the load over `for` can pass the threshold in the first
second of a burst). Below the threshold tier 2 carries nothing; bulk traffic that loads
tier 1 past `above` for `for` makes new connections also take isp-b; no established
connection moves (each ISP drops foreign sources: a moved NATed connection would
fail); when the load is gone (below `below`), tier 1 carries alone again.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from ecmpd.lab.chat import chat
from ecmpd.lab.faults import load_nft
from ecmpd.lab.groups import group_members
from ecmpd.lab.topology import add_lan_clients
from ecmpd.lab.traffic import Traffic
from ecmpd.lab.wait import wait_for
from ecmpd.meter import METER_PERIOD
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.labs import LabFactory
from tests.integration.fixtures.tiers import TALLY, data_bytes, tiered_lab, write_config

RATE = 20  # Mbit/s per ISP
QUEUE = 19  # ecmpd's upload queue: 95% of the line, 95% load when full
SPILL = {"above": "80%", "below": "40%", "for": "2s"}
FOR_S = 2.0
# The load is an average over `for`, read every METER_PERIOD; then one reconcile.
# Slack for a loaded 2-core machine on top.
REACT = FOR_S + 2 * METER_PERIOD + 2.0


def test_spillover_takes_new_connections_above_the_threshold_only(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = tiered_lab(lab_factory, isps=2, rates_mbit=(RATE, RATE), shaping=True)
    config = write_config(
        lab,
        {"isp-b": 2},
        [],
        {
            name: {"bandwidth": f"{RATE}Mbit", "queue": {"rate": f"{QUEUE}Mbit"}}
            for name in ("isp-a", "isp-b")
        },
        extra={"balancer": {"spillover": SPILL}},
    )
    load_nft(lab.ns("isp-b"), TALLY)
    clients = add_lan_clients(lab, 8)
    with running_daemon(lab, config, tmp_path) as daemon:
        wait_for(lambda: daemon.uplink("isp-b").health == "up", 10, "every uplink probed")
        # Light traffic (chat lines), far below the threshold, for longer than the window.
        specs = [(clients[i % 8], lab.servers[i], 0) for i in range(8)]
        with chat(lab, specs) as (_, pool):
            pool.wait_ready(10)
            time.sleep(REACT)
            assert {s.public for s in pool.snapshot()} == {str(lab.isps[0].address.ip)}
        assert group_members(lab) == {"isp-a"}
        assert data_bytes(lab, "isp-b") == 0
        # Bulk traffic fills isp-a: after `for`, isp-b takes new connections too.
        with Traffic(lab, flows=12, clients=8, lifetime_s=(2.0, 4.0)) as bulk:
            took = wait_for(lambda: group_members(lab) == {"isp-a", "isp-b"}, 15, "spilling")
            assert FOR_S * 0.9 <= took <= REACT + FOR_S, took  # the load must build up first
            spilled = time.monotonic()
            wait_for(
                lambda: any(c.nat_uplink == "isp-b" for c in bulk.all_conns()),
                10,
                "a new connection on isp-b",
            )
            time.sleep(2.0)
            bulk.check()
            conns = bulk.all_conns()
            # Connections open across the spill kept delivering: none was re-routed
            # (isp-b would drop its foreign source address, for good).
            across = {
                c.slot
                for c in conns
                if c.connected is not None
                and c.connected < spilled - 0.1
                and (c.closed is None or c.closed > spilled + 1.0)
            }
            resumed = bulk.resumed(across, spilled, spilled + 1.0)
        # Established connections never moved: every one opened before the spill kept
        # its uplink (a moved one would have been dropped by the ISP: an error).
        before = [c for c in conns if c.connected is not None and c.connected < spilled - 0.1]
        assert before and all(c.nat_uplink == "isp-a" for c in before)
        assert across and math.inf not in resumed.values(), resumed
        assert bulk.errors() == [], bulk.errors()[:3]
        assert any(c.nat_uplink == "isp-b" and c.opened >= spilled for c in conns)
        assert data_bytes(lab, "isp-b") > 0
        # Load gone: below `below` over a whole window, tier 1 carries alone again.
        wait_for(lambda: group_members(lab) == {"isp-a"}, REACT + FOR_S, "spill over ended")
        assert daemon.count_events("order.changed") >= 2
