"""ecmpd's one nftables table, `inet ecmpd`, through `nft -j` in the current namespace.

What the table holds and why is in kernel/nftdoc.py (pure: render and parse). `nft` runs
as a subprocess with an argv list and a JSON document on stdin (never a shell, never a
string-built command). The child inherits the network namespace of the *calling
thread*, so a caller that did setns() in a thread (ecmpd.lab.netns.call_in) gets the
nft of that namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

from ecmpd.kernel.nftdoc import FAMILY, TABLE, delete_document, parse_table, render_table
from ecmpd.model import NftTable

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


def apply_table(table: NftTable) -> None:
    """Atomically replaces table inet ecmpd with this one (other tables untouched)."""
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
