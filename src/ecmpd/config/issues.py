"""Config problems: each names a file, a line and a field path, and all are reported at once."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file, rendered as `file:line: field: message`."""

    file: str
    line: int | None
    field: str
    message: str
    warning: bool = False  # not an error: something the kernel does not have yet

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        message = f"warning: {self.message}" if self.warning else self.message
        return f"{where}: {self.field}: {message}" if self.field else f"{where}: {message}"


class ConfigError(Exception):
    """A config that cannot be used; `issues` holds every problem found, in file order."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def sort_issues(issues: Iterable[ConfigIssue]) -> list[ConfigIssue]:
    """Issues in file order (whole-file ones first), so output reads top to bottom."""
    return sorted(issues, key=lambda issue: -1 if issue.line is None else issue.line)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or "" when none is close."""
    bare = _bare(word)
    scored = [(_likeness(bare, _bare(choice)), choice) for choice in choices]
    best = max(scored, default=(0.0, ""), key=lambda pair: pair[0])
    return f"; did you mean '{best[1]}'?" if best[0] >= 0.6 else ""


def _bare(word: str) -> str:
    # Without '-' and '_', so `dst_port` and `dport` compare as the near-equals they are.
    return word.replace("-", "").replace("_", "").lower()


def _likeness(word: str, choice: str) -> float:
    """difflib's ratio, with ties going to the choice that starts like the word (dst -> dport)."""
    ratio = difflib.SequenceMatcher(None, word, choice).ratio()
    return ratio + (0.01 if word[:1] == choice[:1] else 0.0)
