"""Benchmark established connections: idle ones across a recovery, and what marks cost.

Each part runs in fresh lab namespaces (router, ISPs, internet, LAN) that are removed
afterwards; the internet has no route back to the LAN, so LAN traffic works only NATed.

  idle     more idle NATed TCP connections than the group has buckets, opened before
           and during a gray failure of one uplink, silent across its recovery for
           longer than any idle timer, then each sends a line and waits for its echo:
           how many on the healthy uplinks broke. ecmpd (the real daemon: connection
           marks, idle_timer 0) against two anchors in the same lab: a resilient group
           alone (idle_timer 2 s, no marks) and a classic multipath route, both
           switched by hand at once.
  cost     unshaped forwarding throughput through the router's NAT (iperf3), with
           ecmpd's table and mark rules and with NAT alone, alternating rounds.

    python -m bench.connections [--quick] [--prefix P]

Prints one JSON document on stdout, progress on stderr. One module per part (idle,
cost), beside document (the JSON document) and rows (its README table rows).
"""
