"""The soft health signal: an uplink in service whose loss or RTT is over its soft limits.

Pure, a table like fsm.py's: `check.degraded_loss` / `check.degraded_rtt` sit below
the failure limits (max_loss / max_rtt); over them an uplink keeps carrying traffic but
is `degraded`, and its MPTCP endpoints turn backup, so connections prefer the other
uplinks without losing this one. Entering takes `down_after` consecutive soft-bad
rounds and leaving `up_after` soft-good ones: the same hysteresis as going down and up.
A busy uplink is not a degraded one: probes through a saturated lab uplink lost nothing
(RTT ~5 ms average); the limits are over the probe window, as max_loss and max_rtt are.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from ecmpd.config import CheckConfig


class Grade(StrEnum):
    """How an uplink's path quality stands against its soft limits."""

    CLEAR = "clear"
    DEGRADING = "degrading"  # soft-bad rounds counting up to down_after
    DEGRADED = "degraded"
    RECOVERING = "recovering"  # soft-good rounds counting up to up_after

    @property
    def degraded(self) -> bool:
        """Whether the uplink counts as degraded now (hysteresis: until the count completes)."""
        return self in (Grade.DEGRADED, Grade.RECOVERING)


_G = Grade
# Every move allowed; a count of 1 skips the counting state.
TRANSITIONS: Final[Mapping[Grade, frozenset[Grade]]] = MappingProxyType(
    {
        _G.CLEAR: frozenset({_G.DEGRADING, _G.DEGRADED}),
        _G.DEGRADING: frozenset({_G.CLEAR, _G.DEGRADED}),
        _G.DEGRADED: frozenset({_G.RECOVERING, _G.CLEAR}),
        _G.RECOVERING: frozenset({_G.DEGRADED, _G.CLEAR}),
    }
)


WITHIN = "within soft limits"


class IllegalGrade(Exception):
    """A move the transition table does not allow."""


@dataclass(frozen=True, slots=True)
class GradeChange:
    """One change of an uplink's grade."""

    old: Grade
    new: Grade
    at: float
    reason: str


def enabled(check: CheckConfig) -> bool:
    """Whether this check has a soft limit at all (otherwise never degraded)."""
    return check.degraded_loss is not None or check.degraded_rtt is not None


class DegradedTracker:
    """One uplink's grade in one family, fed one soft verdict per probe round."""

    def __init__(self, check: CheckConfig) -> None:
        self._enter = check.down_after
        self._leave = check.up_after
        self._grade = Grade.CLEAR
        self._reason = "starting"
        self._count = 0

    @property
    def grade(self) -> Grade:
        """The current grade."""
        return self._grade

    @property
    def degraded(self) -> bool:
        """Whether the uplink is degraded now."""
        return self._grade.degraded

    @property
    def reason(self) -> str:
        """Why the current grade was entered."""
        return self._reason

    def on_round(self, now: float, over: str | None) -> GradeChange | None:
        """Account one round: `over` says which soft limit it exceeded, None if within."""
        g = self._grade
        if over is None:
            if g is Grade.CLEAR:
                return None
            if g is Grade.DEGRADING:
                return self._move(now, Grade.CLEAR, WITHIN)
            return self._count_to(now, Grade.RECOVERING, Grade.CLEAR, self._leave, WITHIN)
        if g is Grade.DEGRADED:
            return None
        if g is Grade.RECOVERING:
            return self._move(now, Grade.DEGRADED, over)
        return self._count_to(now, Grade.DEGRADING, Grade.DEGRADED, self._enter, over)

    def _count_to(
        self, now: float, counting: Grade, final: Grade, need: int, why: str
    ) -> GradeChange | None:
        self._count = self._count + 1 if self._grade is counting else 1
        if self._count >= need:
            return self._move(now, final, f"{self._count} rounds: {why}")
        if self._grade is not counting:
            return self._move(now, counting, f"round 1/{need}: {why}", keep_count=True)
        return None

    def _move(self, now: float, new: Grade, reason: str, keep_count: bool = False) -> GradeChange:
        """The only place the grade changes: checked against TRANSITIONS first."""
        if new not in TRANSITIONS[self._grade]:
            raise IllegalGrade(f"illegal grade change {self._grade} -> {new}")
        change = GradeChange(self._grade, new, now, reason)
        self._grade, self._reason = new, reason
        if not keep_count:
            self._count = 0
        return change
