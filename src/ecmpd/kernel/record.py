"""The run-dir record of what ecmpd replaced or made: what `down` restores and removes.

Sysctl values and the MPTCP `subflows` limit to restore; the MPTCP endpoints ecmpd
created, by address and id (endpoints carry no owner mark, so this is how ecmpd knows
its own).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

RECORD_FILE = "state.json"
# The key `restorable()` gives the MPTCP subflows limit under (MptcpLimits.key).
MPTCP_LIMITS_KEY = "mptcp-limits"


class Record:
    """Original sysctl values, persisted before each write so a crash cannot lose them."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RECORD_FILE
        self.sysctls: dict[str, str] = {}
        # Whether ecmpd created its nftables table: `observe` runs `nft` only then (or
        # in router mode), so hosts without NAT never pay for a subprocess.
        self.nat = False
        # MPTCP endpoints ecmpd created: address (as text) -> endpoint id.
        self.endpoints: dict[str, int] = {}
        self.mptcp_subflows: int | None = None  # the limit before ecmpd set it
        # Each uplink's connection-mark slot: an uplink keeps its mark value (and so its
        # connections) across reloads and restarts even when its table id changes.
        self.marks: dict[str, int] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.sysctls = {str(k): str(v) for k, v in data.get("sysctls", {}).items()}
            self.nat = bool(data.get("nat", False))
            self.endpoints = {str(k): int(v) for k, v in data.get("endpoints", {}).items()}
            subflows = data.get("mptcp_subflows")
            self.mptcp_subflows = None if subflows is None else int(subflows)
            self.marks = {str(k): int(v) for k, v in data.get("marks", {}).items()}

    @property
    def mptcp(self) -> bool:
        """Whether ecmpd has MPTCP state to look after (observe reads it only then)."""
        return bool(self.endpoints) or self.mptcp_subflows is not None

    def restorable(self) -> dict[str, str]:
        """What a delete writes back, by object key: sysctls and the MPTCP limit."""
        limits = {} if self.mptcp_subflows is None else {MPTCP_LIMITS_KEY: str(self.mptcp_subflows)}
        return {**self.sysctls, **limits}

    def remember(self, originals: Mapping[str, str]) -> None:
        """Add originals not recorded yet and save once (nothing to do: no write)."""
        new = {k: v for k, v in originals.items() if k not in self.sysctls}
        if new:
            self.sysctls.update(new)
            self.save()

    def set_marks(self, slots: Mapping[str, int]) -> None:
        """Record the uplinks' mark slots (saved only when they change)."""
        if dict(slots) != self.marks:
            self.marks = dict(slots)
            self.save()

    def save(self) -> None:
        """Write atomically (rename), creating the run dir with owner-only access."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = {
            "sysctls": self.sysctls,
            "nat": self.nat,
            "endpoints": self.endpoints,
            "mptcp_subflows": self.mptcp_subflows,
            "marks": self.marks,
        }
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
