"""Benchmark `apply` (from scratch, re-apply) and the failover group replace, against `ip`.

For each uplink count a fresh namespace gets N veth uplinks; ecmpd's in-process
reconcile runs there while the anchor, the same state built by hand with `ip -batch`,
runs interleaved in a second fresh namespace. The machine is shared and noisy, so
the numbers to quote are the ratios to the anchor measured in the same run.

    python -m bench.apply [--quick] [--uplinks 2,8] [--reps 5] [--prefix P]

Prints one JSON document on stdout, progress on stderr. measure: one uplink count,
ecmpd and the anchor; rows: the README table rows of its document.
"""
