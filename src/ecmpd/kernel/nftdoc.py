"""Pure: table `inet ecmpd` as nft JSON, and back (what `nft -j list table` prints).

What the table does, hook by hook (M = the connection-mark bits, V = an uplink's value):
- conn_out (postrouting, mangle): a connection with no mark yet that leaves by an
  uplink gets that uplink's V in its conntrack mark;
- conn_in (prerouting, mangle): one that first *arrives* by an uplink gets its V too
  (its replies leave the way it came); a packet that does not come from an uplink gets
  its connection's V copied into its packet mark before routing, where
  `ip rule fwmark V/M lookup <uplink table>` sends it to its uplink;
- conn_local (output, type route): the same for the router's own connections (a
  changed mark makes the kernel route the packet again);
- reset (forward): while an uplink's connections are being ended, a TCP packet from
  the LAN side of one of them is answered with a reset the client accepts (its
  sequence number is the packet's acknowledgment number); so is one of a pin's
  connections left on a fallback uplink once the pin's first choice carries again (the
  pins4/pins6 sets, kernel/nftpins.py); the RST a client still opening a connection
  answers ecmpd's kick with (kernel/resets.py) is dropped;
- probe (output, raw): ecmpd's probe packets (mark M) are never tracked, and never
  leave by an uplink;
- nat (postrouting, srcnat): masquerade, IPv4 only (`meta nfproto ipv4`), so an inet
  masquerade never turns into NAT66;
- first_bytes (postrouting, mangle): on an uplink with ecmpd's queue (ecmpd.queues), the
  packets of a connection's first N bytes each way get the priority of the queue's
  first-packets class (model.QUEUE_FIRST), which the HTB there serves first. (Its
  conntrack counters are what `ct bytes` reads: the kernel turns on accounting for the
  namespace; a packet counts itself.)
Only ecmpd's bits of a mark are ever written (`mark & ~M | V`), never anyone else's.
"""

from __future__ import annotations

import json
from typing import Any

from ecmpd.kernel.nftpins import SETS, lookup, parse_set, pins_of, set_object
from ecmpd.model import QUEUE_FIRST, QUEUE_HANDLE, NftTable
from ecmpd.queues import show_handle

FAMILY = "inet"
TABLE = "ecmpd"
FULL = 0xFFFFFFFF
IFNAMSIZ = 16  # including the terminating NUL
# nft reads a trailing '*' in an interface name as a wildcard and '\' as an escape.
_BAD_IFNAME_CHARS = frozenset('*\\/: \t\n"')
# Hook priorities by number: nft 1.0.6's JSON parser takes no names.
PRIO_RAW, PRIO_MANGLE, PRIO_FILTER, PRIO_SRCNAT = -300, -150, 0, 100
# The acknowledgment number of ecmpd's kick to a client whose connection is still
# opening (kernel/resets.py): the client answers with a RST of this sequence number,
# which belongs to no conntrack entry (ecmpd deleted it) and must not leave unNATed.
KICK_ACK = 0x65636D70  # "ecmp"

Doc = dict[str, Any]
Expr = list[Any]

# chain name -> (type, hook, priority); the per-value chains have no hook.
BASE_CHAINS = {
    "probe": ("filter", "output", PRIO_RAW),
    "conn_in": ("filter", "prerouting", PRIO_MANGLE),
    "conn_local": ("route", "output", PRIO_MANGLE),
    "conn_out": ("filter", "postrouting", PRIO_MANGLE),
    "conn_reset": ("filter", "forward", PRIO_FILTER),
    "nat": ("nat", "postrouting", PRIO_SRCNAT),
    # Not `queue`: that is a keyword of nft's language, and the listing must read back.
    "first_bytes": ("filter", "postrouting", PRIO_MANGLE),
}
# model.QUEUE_FIRST as nft writes a priority (major:minor, hex).
FIRST_PRIORITY = show_handle(QUEUE_FIRST)
# A priority equal to the HTB's handle goes to its direct queue (health/probebase.py).
# (nft wants its minor written: "ec:0", where tc writes the handle "ec:".)
DIRECT_PRIORITY = f"{show_handle(QUEUE_HANDLE)}0"
DIRECTIONS = ("original", "reply")


def check_table(table: NftTable) -> None:
    """Raises ValueError for a table render_table would write wrongly."""
    names = [*(i for i, _ in table.marks), *table.masquerade, *(i for i, _ in table.queues)]
    for name in names:
        if not 0 < len(name.encode()) < IFNAMSIZ or _BAD_IFNAME_CHARS.intersection(name):
            raise ValueError(f"invalid interface name for an nftables rule: {name!r}")
    if len(set(table.masquerade)) != len(table.masquerade):
        raise ValueError(f"an interface appears twice in the NAT rules: {table.masquerade}")
    if len({i for i, _ in table.queues}) != len(table.queues):
        raise ValueError(f"an interface appears twice in the queue rules: {table.queues}")
    if any(n < 1 for _, n in table.queues):
        raise ValueError(f"a queue's first bytes must be at least 1: {table.queues}")
    values = [v for _, v in table.marks]
    if len(set(values)) != len(values) or len({i for i, _ in table.marks}) != len(values):
        raise ValueError(f"interfaces and mark values must be one to one: {table.marks}")
    mask = table.mask
    if table.marks and not mask:
        raise ValueError("connection marks need a mask")
    pinned = [p.mark for p in (*table.pins4, *table.pins6)]
    for value in (*values, *table.reset4, *table.reset6, *pinned):
        if not value or value & ~mask or value == mask:
            raise ValueError(f"mark {value:#x} is not an uplink value inside {mask:#x}")
    for version, pins in ((4, table.pins4), (6, table.pins6)):
        if any(p.src.version != version or p.dst.version != version for p in pins):
            raise ValueError(f"an IPv{version} pin reset with addresses of another family")


def _ref(name: str) -> Doc:
    return {"family": FAMILY, "table": TABLE, "name": name}


def _match(left: Any, right: Any) -> Doc:
    return {"match": {"op": "==", "left": left, "right": right}}


def _meta(key: str) -> Doc:
    return {"meta": {"key": key}}


def _ct(key: str) -> Doc:
    return {"ct": {"key": key}}


def _tcp(field: str) -> Doc:
    return {"payload": {"protocol": "tcp", "field": field}}


def _and(left: Any, mask: int) -> Doc:
    return {"&": [left, mask]}


def _set(items: list[Any]) -> Any:
    return {"set": items}


def _set_bits(key: Doc, mask: int, value: int) -> Doc:
    """`KEY set KEY & ~mask | value` in the form nft lists it (value's bits kept in the and)."""
    keep = (~mask & FULL) | value
    return {"mangle": {"key": key, "value": {"|": [_and(key, keep), value]}}}


def _value_chain(prefix: str, value: int) -> str:
    return f"{prefix}_{value:08x}"


def _rule(chain: str, expr: Expr) -> Doc:
    return {"add": {"rule": {**_ref(chain), "chain": chain, "expr": expr}}}


def _chains(table: NftTable) -> dict[str, list[Expr]]:
    """Every chain's rules (as nft JSON expressions), by chain name, in render order."""
    chains: dict[str, list[Expr]] = {}
    mask = table.mask
    uplinks = sorted(i for i, _ in table.marks)
    if table.marks:
        by_value = sorted((v, i) for i, v in table.marks)
        to_ct = _set([[i, {"jump": {"target": _value_chain("ct", v)}}] for i, v in table.marks])
        restore = _set([[v, {"jump": {"target": _value_chain("mark", v)}}] for v, _ in by_value])
        from_uplink = _match(_meta("iifname"), _set(list(uplinks)))
        unmarked = _match(_and(_ct("mark"), mask), 0)
        chains["probe"] = [
            [_match(_and(_meta("mark"), mask), mask), _oif_in(uplinks), {"drop": None}],
            [_match(_and(_meta("mark"), mask), mask), {"notrack": None}],
        ]
        chains["conn_in"] = [
            [unmarked, {"vmap": {"key": _meta("iifname"), "data": to_ct}}],
            [from_uplink, {"return": None}],
            [{"vmap": {"key": _and(_ct("mark"), mask), "data": restore}}],
        ]
        chains["conn_local"] = [
            [
                _match(_ct("direction"), "original"),
                {"vmap": {"key": _and(_ct("mark"), mask), "data": restore}},
            ]
        ]
        chains["conn_out"] = [[unmarked, {"vmap": {"key": _meta("oifname"), "data": to_ct}}]]
        by_family = {"ipv4": table.reset4, "ipv6": table.reset6}
        pins = pins_of(table)
        if any(by_family.values()) or any(pins.values()):
            # One chain per family: nft would hide a `meta nfproto` match in front of
            # `reject` when listing it, so the family is chosen by a verdict map.
            wanted = [f for f in by_family if by_family[f] or pins[f]]
            jumps = [[f, {"jump": {"target": f"reset_{f}"}}] for f in wanted]
            chains["conn_reset"] = [
                [from_uplink, {"return": None}],
                [
                    {"match": {"op": "in", "left": _ct("state"), "right": "invalid"}},
                    {"match": {"op": "in", "left": _tcp("flags"), "right": "rst"}},
                    _match(_tcp("sequence"), KICK_ACK),
                    {"drop": None},
                ],
                [{"vmap": {"key": _meta("nfproto"), "data": _set(jumps)}}],
            ]
            reject = {"reject": {"type": "tcp reset"}}
            for proto in wanted:
                chain = chains[f"reset_{proto}"] = []
                if by_family[proto]:
                    chain.append(
                        [
                            _match(_meta("l4proto"), "tcp"),
                            _match(_and(_ct("mark"), mask), _set(sorted(by_family[proto]))),
                            reject,
                        ]
                    )
                if pins[proto]:
                    chain.append([lookup(proto, mask), reject])
        for value, _ in by_value:
            chains[_value_chain("ct", value)] = [[_set_bits(_ct("mark"), mask, value)]]
            chains[_value_chain("mark", value)] = [[_set_bits(_meta("mark"), mask, value)]]
    if table.masquerade:
        chains["nat"] = [
            [
                _match(_meta("nfproto"), "ipv4"),
                _match(_meta("oifname"), oif),
                {"masquerade": None},
            ]
            for oif in sorted(table.masquerade)
        ]
    if table.queues:
        chains["first_bytes"] = [
            [
                _match(_meta("oifname"), oif),
                # Not a packet sent past the queue on purpose (the health probes).
                {"match": {"op": "!=", "left": _meta("priority"), "right": DIRECT_PRIORITY}},
                _match(_ct("direction"), way),
                {"match": {"op": "<=", "left": {"ct": {"key": "bytes", "dir": way}}, "right": n}},
                {"mangle": {"key": _meta("priority"), "value": FIRST_PRIORITY}},
            ]
            for oif, n in sorted(table.queues)
            for way in DIRECTIONS
        ]
    return chains


def _oif_in(uplinks: list[str]) -> Doc:
    """`oifname { uplinks }`: the probe guard's match."""
    return _match(_meta("oifname"), _set(list(uplinks)))


def _chain_object(name: str) -> Doc:
    chain = _ref(name)
    if name in BASE_CHAINS:
        kind, hook, prio = BASE_CHAINS[name]
        chain.update({"type": kind, "hook": hook, "prio": prio, "policy": "accept"})
    return chain


def render_table(table: NftTable) -> Doc:
    """The one-transaction nft JSON document that atomically (re)creates table inet ecmpd."""
    check_table(table)
    chains = _chains(table)
    commands: list[Doc] = [
        # add-then-delete is the documented replace idiom: the add makes the delete
        # valid when the table is absent, and the whole document is one transaction,
        # so there is no moment without NAT or marks and no other table is looked at.
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        {"delete": {"table": {"family": FAMILY, "name": TABLE}}},
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
    ]
    # Sets and jump targets first: a rule may only name what exists.
    commands += [{"add": {"set": body}} for body in _sets(table).values()]
    order = sorted(chains, key=lambda name: name in BASE_CHAINS)
    commands += [{"add": {"chain": _chain_object(name)}} for name in order]
    commands += [_rule(name, expr) for name in order for expr in chains[name]]
    return {"nftables": commands}


def update_document(held: NftTable, table: NftTable) -> Doc:
    """The one-transaction document that turns `held` (what the kernel holds) into `table`.

    Only what differs changes: new sets and chains are added, a changed chain is flushed
    and refilled, a changed set flushed and refilled, and what is gone is flushed, then
    deleted (a chain only once nothing jumps to it: every chain that did is flushed in
    the same transaction). An unchanged base chain keeps its hook, and nothing that
    stays is removed (see kernel/nftables.py for what that saves). The kernel refuses
    the whole document if `held` was wrong where the document acts (a chain or set to
    flush or delete that is not there); a difference elsewhere survives it.
    """
    check_table(table)
    old, new = _chains(held), _chains(table)
    old_sets, new_sets = _sets(held), _sets(table)
    order = sorted(new, key=lambda name: name in BASE_CHAINS)
    added = [name for name in order if name not in old]
    changed = [name for name in order if name in old and old[name] != new[name]]
    gone = sorted(set(old) - set(new), key=lambda name: name not in BASE_CHAINS)
    commands: list[Doc] = []
    for name, body in new_sets.items():
        if name not in old_sets:
            commands.append({"add": {"set": body}})
        elif body != old_sets[name]:
            commands.append({"flush": {"set": _ref(name)}})
            if body["elem"]:
                commands.append({"add": {"element": {**_ref(name), "elem": body["elem"]}}})
    commands += [{"add": {"chain": _chain_object(name)}} for name in added]
    commands += [{"flush": {"chain": _ref(name)}} for name in changed + gone]
    commands += [
        _rule(name, expr)
        for name in order
        if name not in old or name in changed
        for expr in new[name]
    ]
    commands += [{"delete": {"chain": _ref(name)}} for name in gone]
    commands += [{"delete": {"set": _ref(name)}} for name in old_sets if name not in new_sets]
    return {"nftables": commands}


def _sets(table: NftTable) -> dict[str, Doc]:
    """The table's named sets (the pin resets of each family that has some), by name."""
    return {
        SETS[proto]: set_object(proto, pins, _ref(SETS[proto]))
        for proto, pins in pins_of(table).items()
        if pins
    }


def delete_document() -> Doc:
    """Deletes table inet ecmpd if it exists, in one transaction (nft 1.0.6 has no destroy)."""
    table = {"family": FAMILY, "name": TABLE}
    return {"nftables": [{"add": {"table": table}}, {"delete": {"table": table}}]}


# --- reading back ------------------------------------------------------------------


def canonical(node: Any) -> Any:
    """One spelling for what nft may list differently from how it was written.

    A one-element anonymous set is listed as its element, `x & prefix-mask == v` as a
    prefix, and set elements in any order.
    """
    if isinstance(node, list):
        return [canonical(n) for n in node]
    if not isinstance(node, dict):
        return node
    if set(node) == {"set"} and isinstance(node["set"], list):
        items = sorted((canonical(i) for i in node["set"]), key=json.dumps)
        return items[0] if len(items) == 1 else {"set": items}
    if set(node) == {"match"}:
        match = dict(node["match"])
        prefix = match.get("right")
        if isinstance(prefix, dict) and set(prefix) == {"prefix"}:
            length = int(prefix["prefix"]["len"])
            mask = (FULL << (32 - length)) & FULL
            match["left"] = _and(match["left"], mask)
            match["right"] = prefix["prefix"]["addr"]
        return {"match": {k: canonical(v) for k, v in match.items()}}
    return {k: canonical(v) for k, v in node.items() if k != "handle"}


Listing = tuple[dict[str, Doc], dict[str, list[Expr]], dict[str, Doc]]


def _listed(doc: Doc) -> Listing | None:
    """(chain objects, rules per chain, sets) of a listing; None if it holds anything else."""
    chains: dict[str, Doc] = {}
    rules: dict[str, list[Expr]] = {}
    sets: dict[str, Doc] = {}
    for item in doc.get("nftables", []):
        kind, body = next(iter(item.items()))
        if kind in ("metainfo", "table"):
            continue
        if kind == "chain":
            chains[body["name"]] = {k: v for k, v in body.items() if k != "handle"}
        elif kind == "rule":
            rules.setdefault(body["chain"], []).append(body["expr"])
        elif kind == "set" and body.get("name") in SETS.values():
            sets[body["name"]] = {k: v for k, v in body.items() if k != "handle"}
        else:
            return None  # another set, a map, a flowtable...: not ecmpd's
    return chains, rules, sets


def _guess(
    chains: dict[str, Doc], rules: dict[str, list[Expr]], sets: dict[str, Doc]
) -> NftTable | None:
    """The table whose rendering the listing should be (checked by the caller)."""
    mask = 0
    marks: list[tuple[str, int]] = []
    resets: dict[str, list[int]] = {"ipv4": [], "ipv6": []}
    masquerade: list[str] = []
    queues: list[tuple[str, int]] = []
    try:
        for expr in canonical(rules.get("conn_out", [])):
            mask = int(expr[0]["match"]["left"]["&"][1])
            for ifname, verdict in _pairs(expr[-1]["vmap"]["data"]):
                marks.append((str(ifname), int(verdict["jump"]["target"].split("_")[1], 16)))
        for proto in resets:
            for expr in canonical(rules.get(f"reset_{proto}", [])):
                if "concat" in expr[0]["match"]["left"]:
                    continue  # the pins' set lookup (read from the set itself)
                values = expr[1]["match"]["right"]
                listed = values["set"] if isinstance(values, dict) else [values]
                resets[proto] += [int(v) for v in listed]
        for expr in rules.get("nat", []):
            masquerade.append(str(expr[1]["match"]["right"]))
        for expr in rules.get("first_bytes", [])[::2]:
            queues.append((str(expr[0]["match"]["right"]), int(expr[3]["match"]["right"])))
        pins = {
            proto: parse_set(sets[name]) if name in sets else () for proto, name in SETS.items()
        }
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    return NftTable(
        mask=mask,
        marks=tuple(sorted(marks)),
        reset4=tuple(sorted(resets["ipv4"])),
        reset6=tuple(sorted(resets["ipv6"])),
        masquerade=tuple(sorted(masquerade)),
        queues=tuple(sorted(queues)),
        pins4=pins["ipv4"],
        pins6=pins["ipv6"],
    )


def _pairs(data: Any) -> list[Any]:
    """The [key, verdict] pairs of a canonical vmap's data (a lone pair stands bare)."""
    return list(data["set"]) if isinstance(data, dict) else [data]


def parse_table(doc: Doc) -> NftTable | None:
    """The NftTable a listed table holds; None when it holds anything render_table never writes."""
    listed = _listed(doc)
    if listed is None:
        return None
    chains, rules, sets = listed
    table = _guess(chains, rules, sets)
    if table is None:
        return None
    try:
        check_table(table)
    except ValueError:
        return None
    want = _chains(table)
    want_chains = {name: _chain_object(name) for name in want}
    if canonical(want_chains) != canonical(chains) or canonical(want) != canonical(rules):
        return None
    if canonical(_sets(table)) != canonical(sets):
        return None
    return table
