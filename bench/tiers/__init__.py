"""Benchmark failover order: a backup tier taking over, against a tier-1 failover and cron.

One 3-ISP lab with ecmpd's default check: isp-a and isp-b in tier 1, isp-c in tier 2.
Under the failover benchmark's traffic (UDP flows and TCP attempts from the router),
each run either gray-fails the tier-1 ISP carrying flows (the other takes over), or
both tier-1 ISPs at once (the backup takes over), and times fault -> every UDP flow
delivering again; then heals and times the return. The anchor, a cron script that
pings every gateway each minute and falls back to the backup when all primaries are
dead, is modelled as the failover benchmark models its cron: the wait for the tick,
then one 1 s ping timeout per dead gateway (pinged one after the other).

    python -m bench.tiers [--quick] [--runs N] [--seed N] [--prefix P]

Prints one JSON document on stdout, progress on stderr; rows.py makes its table rows.
"""
