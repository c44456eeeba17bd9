"""Benchmark the demo's failover: every interrupted flow delivering again, with ecmpd's
upload queues against the same ecmpd without them.

`ecmpd lab demo` as a user runs it (48 saturating uploads from the LAN over 3 shaped
ISPs, the heaviest gray-failed, its connections reset), RUNS times with every uplink's
`queue` and RUNS times without (`--no-queue`: the uploads wait in the lab's drop-tail
modems), alternating, in one process. Per run: when the last of the failed uplink's
flows delivered again after the uplink left the group, and the median.

    python -m bench.demo [--quick] [--runs N] [--prefix P]

Prints one JSON document on stdout, progress on stderr; rows.py makes its table rows.
"""
