"""Benchmark router mode: flows moved on failure and recovery, a recovered uplink's share, goodput.

Each part runs in fresh lab namespaces (router, ISPs, internet, LAN) that are removed
afterwards; the internet has no route back to the LAN, so LAN traffic works only NATed.

  moved_lookups    >= 10000 forwarded flows asked of the router's FIB (route get, iif
                   lan0, full L4 keys) with 3 equal uplinks: before a failure of one,
                   during it and after its recovery. ecmpd's resilient group (the real
                   daemon, a gray failure), its hash-threshold option, and the anchor:
                   a classic multipath default route, replaced by hand at once.
  moved_tcp        the same with long-lived TCP connections from LAN clients through
                   NAT (each sends a line every 100 ms and checks its echo); ISPs drop
                   foreign sources (BCP 38), so a moved NATed flow breaks as in reality.
  recovered_share  how long a recovered uplink takes to get its weighted share of new
                   flows: resilient buckets move to it only once idle for idle_timer.
                   Measured with short idle timers under a busy LAN, scaled to 60 s.
  goodput          bulk TCP from LAN clients through NAT over TBF-shaped uplinks
                   (100 + 200 Mbit/s; and 4 uplinks), as a fraction of the summed
                   rates, against the anchor: a single default route.

    python -m bench.flows [--quick] [--prefix P] [--seed N]

Prints one JSON document on stdout, progress on stderr. One module per part (lookups,
tcp, share, goodput), beside labs (the labs, configs, daemon and the anchor's route),
document (the JSON document) and rows (its README table rows).
"""
