"""The README performance table's rows and cells: how a benchmark's figures are written."""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, str]  # what, ecmpd, anchor (same run), target
TIMES = "\N{MULTIPLICATION SIGN}"


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """A figure for the table: '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def times(value: Any) -> str:
    """A ratio as 'N' and the multiplication sign, two significant figures at most."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.2g}{TIMES}" if value < 10 else f"{value:.0f}{TIMES}"


def pct(value: Any) -> str:
    """A fraction as a whole percentage, '-' when missing."""
    return f"{value:.0%}" if isinstance(value, int | float) else "-"


def get(doc: Any, *path: str | int) -> Any:
    """doc[path0][path1]..., None where any step is missing."""
    for key in path:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def met(doc: dict[str, Any], *keys: str) -> str:
    """✓ or ✗ per target the document says it met or not (nothing for unknown ones)."""
    marks = []
    for key in keys:
        done = get(doc, "met", key)
        if done is not None:
            marks.append("✓" if done else "✗")
    return f" {''.join(marks)}" if marks else ""
