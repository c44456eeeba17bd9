"""The run-dir record of what ecmpd replaced: sysctl values to restore on `down`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

RECORD_FILE = "state.json"


class Record:
    """Original sysctl values, persisted before each write so a crash cannot lose them."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RECORD_FILE
        self.sysctls: dict[str, str] = {}
        # Whether ecmpd created its nftables table: `observe` runs `nft` only then (or
        # in router mode), so hosts without NAT never pay for a subprocess.
        self.nat = False
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.sysctls = {str(k): str(v) for k, v in data.get("sysctls", {}).items()}
            self.nat = bool(data.get("nat", False))

    def remember(self, originals: Mapping[str, str]) -> None:
        """Add originals not recorded yet and save once (nothing to do: no write)."""
        new = {k: v for k, v in originals.items() if k not in self.sysctls}
        if new:
            self.sysctls.update(new)
            self.save()

    def save(self) -> None:
        """Write atomically (rename), creating the run dir with owner-only access."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = {"sysctls": self.sysctls, "nat": self.nat}
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
