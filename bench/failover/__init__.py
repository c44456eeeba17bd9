"""Benchmark failover under traffic: fault to traffic restored, against a cron-style monitor.

Three 3-ISP labs run side by side: ecmpd with its default check, ecmpd with a tuned
one, and the anchor, the seeds' monitor (every period it pings each gateway once and
rewrites a classic multipath route). A run starts UDP flows and TCP connection
attempts from the router, fails an ISP that carries flows (gray failure: nftables
drops everything, link and ARP stay up) and measures until every flow delivers again;
carrier loss and recovery are timed too. The anchor's 60 s period is modelled from
runs at a short period. Then 5% loss on every ISP counts false transitions. A fourth,
dual-stack lab (default check, IPv4 and IPv6 targets) times an IPv6-only gray failure
from the fault to the ISP's IPv6 nexthop leaving the kernel's IPv6 balancer group, and
from the heal to its return, with an IPv4-only gray failure in the same lab as the
anchor; each also watches that the other family's group never changed. Last, an 8-ISP
lab measures the daemon's CPU and memory.

    python -m bench.failover [--quick] [--runs N] [--anchor-runs N] [--cron-period S]
        [--ipv6-runs N] [--loss-seconds S] [--cost-seconds S] [--seed N] [--prefix P]

Prints one JSON document on stdout, progress on stderr. The modules: traffic (the
flows and what a fault did to them), runs (ecmpd's gray and carrier runs), cron (the
anchor), loss (false transitions), dual (the dual-stack lab), cost (CPU and memory),
timing (the waits), document (the JSON document) and rows (its README table rows).
"""
