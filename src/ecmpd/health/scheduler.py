"""Probe rounds for one uplink, on the schedule the health tracker's timing bounds assume.

A round is launched every `tracker.next_interval()` without waiting for the previous
one (rounds overlap when timeout > interval), and rounds are reported to the tracker
in the order they were launched: a late answer to an old round must never undo what
a newer round said. `detection_time()` in fsm.py is computed for exactly this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence

from ecmpd.health.degraded import GradeChange
from ecmpd.health.fsm import HealthTracker, RoundResults, Target, Transition
from ecmpd.health.probes import Prober, probe_round

OnTransition = Callable[[Transition], None]
OnGrade = Callable[[GradeChange], None]
log = logging.getLogger("ecmpd.health")


class ProbeScheduler:
    """Drives one HealthTracker with probe rounds until cancelled."""

    def __init__(
        self,
        tracker: HealthTracker,
        prober: Prober,
        targets: Sequence[Target],
        interval: float,
        timeout: float,
        on_transition: OnTransition,
        clock: Callable[[], float] = time.monotonic,
        on_grade: OnGrade | None = None,
    ) -> None:
        self.tracker = tracker
        self.prober = prober
        self.targets = list(targets)
        self.interval = interval
        self.timeout = timeout
        self.on_transition = on_transition
        self.clock = clock
        self.on_grade = on_grade
        self.rounds = 0
        # A standing-by metered uplink's sparse interval (None: the check's own).
        self.pace: float | None = None
        self._woken = asyncio.Event()

    def set_pace(self, pace: float | None) -> None:
        """Probe every `pace` seconds from now on, or at the normal rate (None) at once."""
        if pace == self.pace:
            return
        wake = pace is None or (self.pace is not None and pace < self.pace)
        self.pace = pace
        if wake:
            self._woken.set()  # the next round starts now, not after the sparse wait

    async def run(self) -> None:
        """Launch rounds forever; each reports after the round launched before it."""
        previous: asyncio.Event | None = None
        async with asyncio.TaskGroup() as rounds:
            while True:
                done = asyncio.Event()
                rounds.create_task(self._round(previous, done))
                previous = done
                await self._wait(self.pace or self.tracker.next_interval(self.interval))

    async def _wait(self, seconds: float) -> None:
        """Sleep until the next round, or until set_pace asks for one now."""
        self._woken.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    async def _round(self, previous: asyncio.Event | None, done: asyncio.Event) -> None:
        try:
            results: RoundResults
            try:
                results = await probe_round(self.prober, self.targets, self.timeout)
            except OSError as exc:
                # A socket error (device gone, no route) is a failed round, not a crash.
                log.debug("probe.error", extra={"uplink": self.tracker.uplink, "error": str(exc)})
                results = dict.fromkeys(self.targets)
            if previous is not None:
                await previous.wait()
            self.rounds += 1
            transition = self.tracker.on_round(self.clock(), results)
            if transition is not None:
                self.on_transition(transition)
            grade = self.tracker.grade_change
            if grade is not None and self.on_grade is not None:
                self.on_grade(grade)
        finally:
            done.set()
