"""The data-cap ledgers in the run dir, so a daemon restart keeps counting (adapter)."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime
from pathlib import Path

from ecmpd.datacap import Ledger

USAGE_FILE = "usage.json"
log = logging.getLogger(__name__)


def load_ledgers(run_dir: Path) -> dict[str, Ledger]:
    """The ledgers saved in run_dir; none when there is no file or it cannot be read."""
    path = run_dir / USAGE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {
            name: Ledger(
                period_start=datetime.fromisoformat(entry["period_start"]),
                used=int(entry["used"]),
                last_rx=_optional_int(entry.get("last_rx")),
                last_tx=_optional_int(entry.get("last_tx")),
            )
            for name, entry in data["uplinks"].items()
        }
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # A damaged file must not stop the daemon: counting starts again, said loudly.
        log.warning("usage.unreadable", extra={"path": str(path), "error": str(error)})
        return {}


def save_ledgers(run_dir: Path, ledgers: dict[str, Ledger]) -> None:
    """Write the ledgers atomically (a crash leaves the old file or the new one)."""
    doc = {
        "uplinks": {
            name: {
                "period_start": ledger.period_start.isoformat(),
                "used": ledger.used,
                "last_rx": ledger.last_rx,
                "last_tx": ledger.last_tx,
            }
            for name, ledger in sorted(ledgers.items())
        }
    }
    path = run_dir / USAGE_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))
