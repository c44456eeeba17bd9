"""ecmpd's one nftables table, `inet ecmpd`, in the current network namespace.

What the table holds and why is in kernel/nftdoc.py (pure: render, update and parse).
Every command is a JSON document (one transaction), run as `nft -j -f -` would run it in
the network namespace of the *calling thread* (a caller that did setns() in a thread,
ecmpd.lab.netns.call_in, reaches that namespace's tables): by libnftables in-process
(kernel/libnft.py) when this process's descriptors leave it room, else by the `nft`
program (a subprocess, argv list and the document on stdin; never a shell) — a test
process holding thousands of connections, say.

A change from a table the caller knows the kernel holds is an update of only the chains
and sets that differ: a failover's adds the reset chains (or refills them, when a
metered standby already sits in them) and every other chain keeps its hook. In-process
with a kept context that is ≈1 ms (0.7 ms in the busy demo) against ≈1.7 ms for
replacing the table; by the `nft` program 3.5 ms against 16 ms, as its exit waits for
the kernel to release what a transaction removed (a replace removes the old table: see
kernel/libnft.py). When nft turns the update down (a chain or set to flush or delete is
not there: the table was changed by hand or deleted), the table is replaced whole. A
hand edit the update does not meet survives it until the next full read (the daemon's
resync, every 30 s) sees the table as changed, and the table is replaced whole then.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Any

from ecmpd.kernel import libnft
from ecmpd.kernel.libnft import NftError
from ecmpd.kernel.nftdoc import (
    FAMILY,
    TABLE,
    delete_document,
    parse_table,
    render_table,
    update_document,
)
from ecmpd.model import NftTable

__all__ = ["NftError", "apply_table", "current_table", "delete_table", "read_ruleset", "read_table"]

log = logging.getLogger("ecmpd.kernel")

NFT = "nft"
NFT_TIMEOUT = 30.0

Doc = dict[str, Any]


def _nft_process(document: str) -> str:
    """`nft -j -f -` with the document on stdin; what it printed."""
    try:
        result = subprocess.run(
            [NFT, "-j", "-f", "-"],
            input=document,
            capture_output=True,
            text=True,
            timeout=NFT_TIMEOUT,
            # Error texts are matched below (absent table); keep them untranslated.
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except FileNotFoundError as exc:
        raise NftError("nft (nftables) is not installed") from exc
    if result.returncode != 0:
        raise NftError(result.stderr.strip() or f"nft failed ({result.returncode})")
    return result.stdout


def _run_document(doc: Doc) -> str:
    """Runs a JSON document (one atomic transaction); what nft printed."""
    document = json.dumps(doc)
    printed = libnft.run(document)
    return _nft_process(document) if printed is None else printed


def _listing(what: Doc) -> Doc:
    """`nft -j list <what>`, parsed."""
    listed: Doc = json.loads(_run_document({"nftables": [{"list": what}]}))
    return listed


def apply_table(table: NftTable, held: NftTable | None = None) -> None:
    """Makes table inet ecmpd this one, atomically (other tables untouched).

    `held`: the table the kernel holds, if the caller knows it: then only what differs
    changes; otherwise (or when nft refuses the update) the table is replaced whole.
    """
    if held is not None:
        if held == table:
            return
        try:
            _run_document(update_document(held, table))
            return
        except NftError as exc:
            # Not what this caller last saw (changed or deleted by hand): replaced whole.
            log.warning("nftables.update_refused", extra={"error": str(exc)})
    _run_document(render_table(table))


def delete_table() -> None:
    """Removes table inet ecmpd; absent is fine."""
    _run_document(delete_document())


def read_table() -> Doc | None:
    """`nft -j list table inet ecmpd`, parsed; None when the table is absent."""
    try:
        return _listing({"table": {"family": FAMILY, "name": TABLE}})
    except NftError as exc:
        # Absent, or another failure? Asked again, not read from the message: in-process
        # its wording follows the daemon's locale.
        tables = _listing({"tables": None})["nftables"]
        if not any(
            t.get("table", {}).get("name") == TABLE and t["table"].get("family") == FAMILY
            for t in tables
        ):
            return None
        raise NftError(f"nft list table {FAMILY} {TABLE} failed: {exc}") from exc


def read_ruleset() -> Doc:
    """`nft -j list ruleset`, parsed (for the mark-bit clash check)."""
    try:
        return _listing({"ruleset": None})
    except NftError as exc:
        raise NftError(f"nft list ruleset failed: {exc}") from exc


def current_table() -> NftTable | None:
    """The table the kernel holds; None when absent or not as ecmpd writes it."""
    doc = read_table()
    return None if doc is None else parse_table(doc)
