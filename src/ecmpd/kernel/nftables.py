"""ecmpd's one nftables table (router-mode NAT), through `nft -j` in the current namespace.

The table is `inet ecmpd`: one table serves IPv4 now and IPv6 later (the contract says
exactly one table named `ecmpd`; the `ip` family would need a second `ip6 ecmpd`), and
inet NAT chains exist since Linux 5.2. Every rule matches `meta nfproto ipv4` so an
inet masquerade never turns into NAT66 by accident.

`nft` runs as a subprocess with an argv list and a JSON document on stdin (never a
shell, never a string-built command). The child inherits the network namespace of the
*calling thread*, so a caller that did setns() in a thread (ecmpd.lab.netns.call_in)
gets the nft of that namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

NFT = "nft"
FAMILY = "inet"
TABLE = "ecmpd"
CHAIN = "postrouting"
SRCNAT_PRIORITY = 100  # the name `srcnat`; nft 1.0.6's JSON parser takes numbers only
NFT_TIMEOUT = 30.0
IFNAMSIZ = 16  # including the terminating NUL
# nft reads a trailing '*' in an interface name as a wildcard and '\' as an escape.
_BAD_IFNAME_CHARS = frozenset('*\\/: \t\n"')

Doc = dict[str, Any]


class NftError(RuntimeError):
    """nft failed (or is missing); the message carries its stderr."""


@dataclass(frozen=True)
class NatPlan:
    """What the NAT chain holds: masquerade per oif, or snat to a fixed source per oif."""

    masquerade: tuple[str, ...]
    snat: tuple[tuple[str, IPv4Address], ...] = ()

    def __post_init__(self) -> None:
        """Validates interface names and sorts, so equal plans compare equal."""
        names = [*self.masquerade, *(oif for oif, _ in self.snat)]
        for name in names:
            _check_ifname(name)
        if len(set(names)) != len(names):
            raise ValueError(f"an interface appears twice in the NAT plan: {names}")
        object.__setattr__(self, "masquerade", tuple(sorted(self.masquerade)))
        snat = tuple(sorted((oif, IPv4Address(addr)) for oif, addr in self.snat))
        object.__setattr__(self, "snat", snat)


def _check_ifname(name: str) -> None:
    """Raises ValueError for names the kernel or nft would read differently."""
    if not 0 < len(name.encode()) < IFNAMSIZ or _BAD_IFNAME_CHARS.intersection(name):
        raise ValueError(f"invalid interface name for a NAT rule: {name!r}")


def _table() -> Doc:
    """The table object, as nft's JSON names it."""
    return {"family": FAMILY, "name": TABLE}


def _rule(oif: str, action: Doc) -> Doc:
    """An `add rule` command: `meta nfproto ipv4 oifname OIF <action>`."""
    expr = [
        {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv4"}},
        {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": oif}},
        action,
    ]
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": CHAIN, "expr": expr}}}


def render_table(plan: NatPlan) -> Doc:
    """The one-transaction nft JSON document that atomically (re)creates table inet ecmpd."""
    chain = {
        "family": FAMILY,
        "table": TABLE,
        "name": CHAIN,
        "type": "nat",
        "hook": "postrouting",
        "prio": SRCNAT_PRIORITY,
        "policy": "accept",
    }
    commands: list[Doc] = [
        # add-then-delete is the documented replace idiom: the add makes the delete
        # valid when the table is absent, and the whole document is one transaction,
        # so there is no moment without NAT and no other table is looked at.
        {"add": {"table": _table()}},
        {"delete": {"table": _table()}},
        {"add": {"table": _table()}},
        {"add": {"chain": chain}},
    ]
    commands += [_rule(oif, {"masquerade": None}) for oif in plan.masquerade]
    commands += [_rule(oif, {"snat": {"family": "ip", "addr": str(a)}}) for oif, a in plan.snat]
    return {"nftables": commands}


def _delete_document() -> Doc:
    """Deletes table inet ecmpd if it exists, in one transaction (nft 1.0.6 has no destroy)."""
    return {"nftables": [{"add": {"table": _table()}}, {"delete": {"table": _table()}}]}


def _nft(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Runs nft with argv (a list) in the calling thread's network namespace."""
    try:
        return subprocess.run(
            [NFT, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            # Error texts are matched below (absent table); keep them untranslated.
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except FileNotFoundError as exc:
        raise NftError("nft (nftables) is not installed") from exc


def _run_document(doc: Doc) -> None:
    """Feeds a JSON document to `nft -j -f -` (one atomic transaction)."""
    result = _nft(["-j", "-f", "-"], stdin=json.dumps(doc))
    if result.returncode != 0:
        raise NftError(f"nft -j -f - failed: {result.stderr.strip()}")


def apply_table(plan: NatPlan) -> None:
    """Atomically replaces table inet ecmpd with the plan's (other tables untouched)."""
    _run_document(render_table(plan))


def delete_table() -> None:
    """Removes table inet ecmpd; absent is fine."""
    _run_document(_delete_document())


def read_table() -> Doc | None:
    """`nft -j list table inet ecmpd`, parsed; None when the table is absent."""
    result = _nft(["-j", "list", "table", FAMILY, TABLE])
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return None
        raise NftError(f"nft list table {FAMILY} {TABLE} failed: {result.stderr.strip()}")
    doc: Doc = json.loads(result.stdout)
    return doc


def current_plan() -> NatPlan | None:
    """The plan the kernel's table holds; None when absent or not as ecmpd writes it."""
    doc = read_table()
    return None if doc is None else parse_table(doc)


def parse_table(doc: Doc) -> NatPlan | None:
    """The NatPlan a listed table holds; None when it holds anything render_table never writes."""
    masquerade: list[str] = []
    snat: list[tuple[str, IPv4Address]] = []
    chains = 0
    for item in doc.get("nftables", []):
        kind, body = next(iter(item.items()))
        if kind in ("metainfo", "table"):
            continue
        if kind == "chain" and _is_our_chain(body):
            chains += 1
            continue
        parsed = _parse_rule(body) if kind == "rule" and body.get("chain") == CHAIN else None
        if parsed is None:
            return None  # a foreign object in our table: the caller re-applies
        oif, address = parsed
        if address is None:
            masquerade.append(oif)
        else:
            snat.append((oif, address))
    if chains != 1:
        return None
    try:
        return NatPlan(masquerade=tuple(masquerade), snat=tuple(snat))
    except ValueError:  # duplicate or odd names: not what ecmpd writes
        return None


def _is_our_chain(body: Doc) -> bool:
    """Tells whether a listed chain is the NAT chain render_table creates."""
    want = ("nat", "postrouting", SRCNAT_PRIORITY, "accept")
    got = (body.get("type"), body.get("hook"), body.get("prio"), body.get("policy"))
    return bool(body.get("name") == CHAIN and got == want)


def _parse_rule(body: Doc) -> tuple[str, IPv4Address | None] | None:
    """(oif, snat address or None for masquerade) of one of our rules, else None."""
    expr = body.get("expr", [])
    if len(expr) != 3 or _match(expr[0], "nfproto") != "ipv4":
        return None
    oif = _match(expr[1], "oifname")
    if oif is None:
        return None
    action = expr[2]
    if action == {"masquerade": None}:
        return oif, None
    snat = action.get("snat")
    if isinstance(snat, dict) and set(snat) == {"family", "addr"} and snat["family"] == "ip":
        try:
            return oif, IPv4Address(snat["addr"])
        except ValueError:
            return None
    return None


def _match(expr: Doc, key: str) -> str | None:
    """The right-hand string of `meta KEY == "value"`, else None."""
    match = expr.get("match")
    if not isinstance(match, dict) or match.get("op") != "==":
        return None
    if match.get("left") != {"meta": {"key": key}}:
        return None
    right = match.get("right")
    return right if isinstance(right, str) else None
