"""A lab ISP's faults as nftables rulesets, and loading a ruleset in a namespace.

The demo, the benchmarks and the tests load these in an ISP's namespace. An `inet`
table sees both the ISP's own traffic (input: its answers to gateway probes) and what
it forwards (the customer's traffic, probes to servers); it never sees ARP, so the
link and ARP stay up — the failure only probes can find.
"""

from __future__ import annotations

import json
import subprocess
import time

from ecmpd.lab import netns
from ecmpd.lab.layout import ISP_CUSTOMER_IF
from ecmpd.model import FAMILY_NAMES, Family

HEAL_RULESET = "flush ruleset\n"  # undoes any fault (the lab's ISPs hold no other rules)


class NftError(RuntimeError):
    """`nft` refused a ruleset."""


def gray_failure_ruleset(family: Family | None = None) -> str:
    """Drop everything, or one address family only (table `gray`, or `gray_ipv4`/`_ipv6`).

    An IPv6 fault drops neighbour discovery too (it is ICMPv6); an IPv4 one leaves ARP.
    """
    if family is None:
        table, verdict = "gray", "policy drop;"
    else:
        name = FAMILY_NAMES[family]  # also nftables' nfproto keyword
        table, verdict = f"gray_{name}", f"meta nfproto {name} drop;"
    return (
        f"table inet {table} {{\n"
        f"    chain input_drop {{ type filter hook input priority 0; {verdict} }}\n"
        f"    chain forward_drop {{ type filter hook forward priority 0; {verdict} }}\n"
        "}\n"
    )


def random_loss_ruleset(percent: int) -> str:
    """Drop a random share of what arrives and what is forwarded (nft numgen; no netem here)."""
    return f"""
        table inet lossy {{
            chain input_loss {{
                type filter hook input priority 0;
                numgen random mod 100 < {percent} drop
            }}
            chain forward_loss {{
                type filter hook forward priority 0;
                numgen random mod 100 < {percent} drop
            }}
        }}
    """


def load_nft(ns: str, script: str) -> float:
    """Loads an nftables script (atomically) inside ns; returns the wall seconds it took.

    `nft` runs as a child of a thread that entered ns, not under `ip netns exec`, so
    the time between deciding on a fault and its taking effect stays short.
    """

    def load() -> float:
        start = time.monotonic()
        done = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True)
        if done.returncode != 0:
            raise NftError(f"nft failed in {ns}: {done.stderr.strip()}")
        return time.monotonic() - start

    return netns.call_in(ns, load)


def gray_failure(ns: str, family: Family | None = None) -> float:
    """The namespace (an ISP) drops everything, or one family; link and ARP stay up."""
    return load_nft(ns, gray_failure_ruleset(family))


def random_loss(ns: str, percent: int) -> float:
    """The namespace drops a random share of what it receives and forwards."""
    return load_nft(ns, random_loss_ruleset(percent))


def heal_gray_failure(ns: str) -> float:
    """Undoes gray_failure() only (its table), leaving any other rules of the namespace."""
    return load_nft(ns, "delete table inet gray\n")


def heal(ns: str) -> float:
    """Undoes any fault above (flushes the namespace's whole ruleset)."""
    return load_nft(ns, HEAL_RULESET)


def first_syn_lost(ns: str) -> float:
    """The ISP drops the first SYN of every TCP connection its customer opens, IPv4 and
    IPv6 (table `firstsyn`): what a full upload queue does to some, made certain.
    Retransmissions pass. Connections are told apart by their whole 4-tuple (NAT keeps
    those of open connections unique), not by source port alone, which two can share."""
    return load_nft(
        ns,
        f"""
        table inet firstsyn {{
            set seen4 {{
                type ipv4_addr . inet_service . ipv4_addr . inet_service
                flags dynamic; size 65536
            }}
            set seen6 {{
                type ipv6_addr . inet_service . ipv6_addr . inet_service
                flags dynamic; size 65536
            }}
            counter lost {{ }}
            chain forward {{
                type filter hook forward priority -20; policy accept;
                iifname != "{ISP_CUSTOMER_IF}" accept
                tcp flags & (syn | ack) != syn accept
                ip saddr . tcp sport . ip daddr . tcp dport @seen4 accept
                ip6 saddr . tcp sport . ip6 daddr . tcp dport @seen6 accept
                meta nfproto ipv4 add @seen4 {{ ip saddr . tcp sport . ip daddr . tcp dport }} \\
                    counter name lost drop
                meta nfproto ipv6 \\
                    add @seen6 {{ ip6 saddr . tcp sport . ip6 daddr . tcp dport }} \\
                    counter name lost drop
            }}
        }}
        """,
    )


def syns_lost(ns: str) -> int:
    """How many first SYNs first_syn_lost() dropped in ns."""
    out = netns.run_in(
        ns,
        ["nft", "-j", "list", "counter", "inet", "firstsyn", "lost"],
        capture_output=True,
        text=True,
        check=True,
    )
    for item in json.loads(out.stdout)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise NftError(f"no counter `lost` in {ns}")
