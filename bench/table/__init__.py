"""Benchmark ecmpd on a router that also carries a full routing table in main.

A BGP edge router holds ~1M IPv4 routes in main. ecmpd re-reads the kernel on every
carrier event and resync; if that read transferred every route, a failover would
wait for it. Here a namespace gets 4 veth uplinks, ecmpd's state, and N routes of
protocol bgp in main; then, with and without those routes, in the same run:

- observe_ms: ecmpd's read of the kernel (owned objects + facts), kernel-filtered;
- carrier_path_ms: what the daemon does on carrier loss: re-read links and nexthops
  (observe_links), plan, take the uplink out of the balancer (one group replace);
- anchor_unfiltered_dump_ms: one unfiltered route dump of both families, parsed from
  the fixed header only: the floor of any reader that is sent every route (ecmpd's
  own observe before the dumps were filtered).

    python -m bench.table [--quick] [--routes N] [--reps 7] [--prefix P]

Prints one JSON document on stdout, progress on stderr; rows: the README table rows
of its document.
"""
