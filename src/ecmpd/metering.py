"""Pure: how sparingly a standing-by metered uplink is probed, from its byte budget.

A probe round sends one probe to each target and counts its answer too (a metered
line bills both directions). Sizes are IP-level upper bounds: an echo of ecmpd's
16-byte payload, or a TCP handshake with Linux's SYN options and the closing RST.
"""

from __future__ import annotations

from ecmpd.config import CheckConfig
from ecmpd.health.packets import PAYLOAD
from ecmpd.model import Family

IP_HEADER = {Family.INET: 20, Family.INET6: 40}
ICMP_HEADER = 8
# SYN and SYN-ACK with options (mss, sack, timestamps, wscale): 40 bytes of TCP each;
# the ACK with timestamps 32; the RST 20 (tcp.py closes with SO_LINGER 0).
TCP_EXCHANGE = (40, 40, 32, 20)
SECONDS_PER_MINUTE = 60.0


def round_bytes(check: CheckConfig, targets: dict[Family, int]) -> int:
    """Bytes on the wire (both directions) of one probe round over every family's targets."""
    total = 0
    for family, count in targets.items():
        ip = IP_HEADER[family]
        if check.tcp_port is None:
            one = 2 * (ip + ICMP_HEADER + len(PAYLOAD))
        else:
            one = sum(ip + tcp for tcp in TCP_EXCHANGE)
        total += count * one
    return total


def standby_interval(check: CheckConfig, targets: dict[Family, int]) -> float:
    """Seconds between probe rounds that keep a standing-by uplink within its budget.

    In any minute, not only on average: n = budget // round rounds fit a minute, so
    rounds 60 / n seconds apart (a minute never holds n + 1 of them). A budget below one
    round spreads rounds out to match it on average.
    """
    per_round = round_bytes(check, targets)
    if per_round == 0:
        return check.interval
    fit = int(check.standby_budget // per_round)
    spacing = (
        SECONDS_PER_MINUTE / fit if fit else per_round * SECONDS_PER_MINUTE / check.standby_budget
    )
    return max(check.interval, spacing)
