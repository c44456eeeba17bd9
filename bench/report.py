"""The README's performance table (markdown) from the merged document of `python -m bench`."""

from __future__ import annotations

from typing import Any

from bench.cells import Row, cell
from bench.suite import BENCHES


def markdown_table(doc: dict[str, Any]) -> str:
    """The table: each benchmark's own rows, in suite order, then the ones that failed.

    Each row sets ecmpd beside the anchor measured in the same run on the same machine,
    so the comparison holds where the machine's absolute speed does not.
    """
    rows: list[Row] = []
    for bench in BENCHES:
        if bench.name in doc:
            rows += bench.rows(doc[bench.name])
    for name, why in doc.get("failed", {}).items():
        rows.append((f"`{name}` benchmark", f"failed: {why}", "", ""))
    machine = doc.get("machine", {})
    load = ", ".join(str(x) for x in doc.get("loadavg_at_start", []))
    lines = [
        f"Measured by `./dev bench{' --quick' if doc.get('quick') else ''}` on Linux "
        f"{machine.get('kernel', '?')}, {machine.get('cpus', '?')} CPUs (load average {load} "
        "at the start); every anchor ran in the same run. ✓/✗: target met or not.",
        "",
        "| what | ecmpd | anchor (same run) | target |",
        "|---|---|---|---|",
        *("| " + " | ".join(cell(c) for c in row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"
