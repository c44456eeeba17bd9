"""Benchmark one Multipath TCP download over two shaped uplinks, kept by ecmpd.

A host-mode lab with ISPs of 100 and 200 Mbit/s (TBF both ways). Goodput, measured
with iperf3 (the MPTCP runs under `mptcpize run`, as an unmodified application would
opt in): one MPTCP connection, against one plain TCP connection by each uplink and by
ecmpd's balancer (the anchors, same run), at equal RTT and with 10 ms against 60 ms
(a user-space delay line: this kernel has no netem). Events, with the real `ecmpd run`:
the gap in a running download when the uplink of its first subflow fails (gray failure:
link up, everything dropped), and how soon the returning uplink carries the same
connection again; the anchor is the kernel alone (the same endpoints, never removed).

    python -m bench.mptcp [--quick] [--prefix P]

Prints one JSON document on stdout, progress on stderr. goodput: the iperf3 runs;
events: the failure and return runs.
"""
