"""Pure: the rules outside table `inet ecmpd` that read or write packet/connection mark bits.

`validate`/`apply` report those that clash with ecmpd's bits (ecmpd.marks.clashing),
read from `nft -j list ruleset`.
"""

from __future__ import annotations

from typing import Any

from ecmpd.kernel.nftdoc import FAMILY, FULL, TABLE, Doc, canonical
from ecmpd.marks import MarkUse

_MARK_KEYS = ({"meta": {"key": "mark"}}, {"ct": {"key": "mark"}})


def _masked_mark(node: Any) -> int | None:
    """The bits a mark expression reads (`mark`, `mark & M`); None if it reads no mark."""
    if node in _MARK_KEYS:
        return FULL
    if isinstance(node, dict) and set(node) == {"&"}:
        left, mask = node["&"]
        if left in _MARK_KEYS and isinstance(mask, int):
            return mask
    return None


def _written_bits(value: Any) -> int | None:
    """The bits a `mark set VALUE` changes; None for a copy of another mark (`ct mark`)."""
    if value in _MARK_KEYS:
        return None  # a whole-mark copy carries ecmpd's bits along unchanged
    if isinstance(value, dict) and set(value) == {"|"}:
        left, bits = value["|"]
        kept = _masked_mark(left)
        if kept is not None and isinstance(bits, int):
            return (~kept | bits) & FULL
    if isinstance(value, dict) and set(value) == {"&"}:
        kept = _masked_mark(value)
        if kept is not None:
            return ~kept & FULL
    return FULL  # a constant, or anything else: every bit may change


def _uses_in(expr: Any, where: str) -> list[MarkUse]:
    """The mark uses of one rule's expression list."""
    uses: list[MarkUse] = []
    for stmt in expr if isinstance(expr, list) else []:
        if not isinstance(stmt, dict) or len(stmt) != 1:
            continue
        kind, body = next(iter(stmt.items()))
        if kind == "match" and isinstance(body, dict):
            match = canonical(stmt)["match"]
            mask = _masked_mark(match.get("left"))
            right = match.get("right")
            if mask is not None:
                uses.append(MarkUse(where, mask, right if isinstance(right, int) else FULL))
        elif kind == "mangle" and isinstance(body, dict) and body.get("key") in _MARK_KEYS:
            bits = _written_bits(body.get("value"))
            if bits is not None:
                uses.append(MarkUse(where, bits, writes=True))
        elif kind in ("vmap", "map") and isinstance(body, dict):
            mask = _masked_mark(body.get("key"))
            if mask is not None:
                uses.append(MarkUse(where, mask, FULL))
    return uses


def mark_uses(ruleset: Doc) -> list[MarkUse]:
    """Every rule outside table inet ecmpd that tests or sets packet/connection mark bits."""
    uses: list[MarkUse] = []
    for item in ruleset.get("nftables", []):
        body = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(body, dict):
            continue
        if (body.get("family"), body.get("table")) == (FAMILY, TABLE):
            continue
        where = f"nft table {body.get('family')} {body.get('table')} chain {body.get('chain')}"
        uses += _uses_in(body.get("expr"), where)
    return uses
