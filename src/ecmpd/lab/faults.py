"""What a gray failure of a lab ISP is, as nftables rulesets: one definition for all.

The demo, the benchmarks and the tests load these in an ISP's namespace. An `inet`
table sees both the ISP's own traffic (input: its answers to gateway probes) and what
it forwards (the customer's traffic, probes to servers); it never sees ARP, so the
link and ARP stay up — the failure only probes can find.
"""

from __future__ import annotations

from ecmpd.model import FAMILY_NAMES, Family

HEAL_RULESET = "flush ruleset\n"  # undoes any fault (the lab's ISPs hold no other rules)


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
