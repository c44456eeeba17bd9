"""ecmpd's one nftables table, `inet ecmpd`, through `nft -j` in the current namespace.

What the table holds and why is in kernel/nftdoc.py (pure: render, update and parse).
`nft` runs as a subprocess with an argv list and a JSON document on stdin (never a
shell, never a string-built command). The child inherits the network namespace of the
*calling thread*, so a caller that did setns() in a thread (ecmpd.lab.netns.call_in)
gets the nft of that namespace.

A change from a table the caller knows the kernel holds is an update of only the chains
and sets that differ. Replacing the table re-registers every hook and waits for the
kernel to release the old ones: `nft` takes ≈16 ms for it, ≈2.7 ms for a failover's
update (its new reset chains; measured, 3 uplinks). A recovery's update removes the
reset chain's hook and waits as a replace does (≈15 ms), off any hurried path.
When nft turns the update down (the table is not what the caller thought: changed by
hand, deleted), the table is replaced whole.

Why a process and not libnftables in-process (tried): libnftables 1.0.6 waits for the
kernel's answer with select(), whose fd_set holds descriptors below 1024 only; in a
process with more open files its socket's descriptor is higher and glibc aborts the
whole process ("bit out of range 0 - FD_SETSIZE on fd_set"). A child has few files.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from typing import Any

from ecmpd.kernel.nftdoc import (
    FAMILY,
    TABLE,
    delete_document,
    parse_table,
    render_table,
    update_document,
)
from ecmpd.model import NftTable

log = logging.getLogger("ecmpd.kernel")

NFT = "nft"
NFT_TIMEOUT = 30.0

Doc = dict[str, Any]


class NftError(RuntimeError):
    """nft failed (or is missing); the message carries its stderr."""


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
    result = _nft(["-j", "list", "table", FAMILY, TABLE])
    if result.returncode != 0:
        if "No such file or directory" in result.stderr:
            return None
        raise NftError(f"nft list table {FAMILY} {TABLE} failed: {result.stderr.strip()}")
    doc: Doc = json.loads(result.stdout)
    return doc


def read_ruleset() -> Doc:
    """`nft -j list ruleset`, parsed (for the mark-bit clash check)."""
    result = _nft(["-j", "list", "ruleset"])
    if result.returncode != 0:
        raise NftError(f"nft list ruleset failed: {result.stderr.strip()}")
    doc: Doc = json.loads(result.stdout)
    return doc


def current_table() -> NftTable | None:
    """The table the kernel holds; None when absent or not as ecmpd writes it."""
    doc = read_table()
    return None if doc is None else parse_table(doc)
