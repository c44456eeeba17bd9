"""The run-dir record of what ecmpd replaced: sysctl values to restore on `down`."""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORD_FILE = "state.json"


class Record:
    """Original sysctl values, persisted before each write so a crash cannot lose them."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RECORD_FILE
        self.sysctls: dict[str, str] = {}
        if self.path.exists():
            data = json.loads(self.path.read_text())
            self.sysctls = {str(k): str(v) for k, v in data.get("sysctls", {}).items()}

    def save(self) -> None:
        """Write atomically (rename), creating the run dir with owner-only access."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"sysctls": self.sysctls}, indent=2, sort_keys=True))
        os.replace(tmp, self.path)
