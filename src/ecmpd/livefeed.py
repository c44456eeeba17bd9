"""Status and interface counters sampled over time, turned into live-view snapshots.

`ecmpd watch` feeds it a running daemon's status and the counters of the namespace it
runs in; `ecmpd lab demo --edges` the core's daemon and the core's counters.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence

from ecmpd.control import DaemonNotRunning
from ecmpd.kernel.netdev import InterfaceCounters, read_interface_counters
from ecmpd.live import Snapshot, UplinkView
from ecmpd.livecells import family_views, health_figures, order_cell
from ecmpd.status import Status

HISTORY_STEP_S = 1.0
HISTORY_POINTS = 300

StatusFn = Callable[[], Status]
CountersFn = Callable[[Sequence[str]], InterfaceCounters]


class Feed:
    """Status and counters sampled over time, turned into live-view snapshots."""

    def __init__(
        self,
        status: StatusFn,
        counters: CountersFn = read_interface_counters,
        *,
        capacities: Mapping[str, float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._status_fn, self._counters_fn, self._clock = status, counters, clock
        self.capacities = dict(capacities or {})
        self.started = clock()
        self.status: Status | None = None
        self.note: str | None = None
        self._last: tuple[float, InterfaceCounters] | None = None
        self.rates: dict[str, tuple[float, float]] = {}  # interface -> (tx, rx) Mbit/s
        self.history: dict[str, deque[float]] = {}  # uplink -> throughput per step
        self._bin: dict[str, list[float]] = {}
        self._bin_index: int | None = None
        self._lock = threading.Lock()

    def sample(self) -> None:
        """Takes a status and the counters of its interfaces; rates since the last sample."""
        status: Status | None
        note: str | None
        try:
            status = self._status_fn()
            note = None
        except (
            DaemonNotRunning,
            OSError,
            ValueError,
            KeyError,
        ) as exc:
            # Keep showing the last status, marked stale: a daemon restart is worth seeing.
            status, note = self.status, f"daemon not answering ({exc}); figures may be stale"
        if status is None:
            raise DaemonNotRunning(note or "no status")
        now = self._clock()
        counters = self._counters_fn(status.interfaces())
        with self._lock:
            self.status, self.note = status, note
            if self._last is not None:
                then, before = self._last
                dt = now - then
                if dt > 0:
                    self.rates = {
                        name: (
                            _mbit(c["tx_bytes"] - before[name]["tx_bytes"], dt),
                            _mbit(c["rx_bytes"] - before[name]["rx_bytes"], dt),
                        )
                        for name, c in counters.items()
                        if name in before
                    }
                    self._record(now)
            self._last = (now, counters)

    def _record(self, now: float) -> None:
        """Adds the current rates to the history, one point per HISTORY_STEP_S."""
        index = int((now - self.started) // HISTORY_STEP_S)
        if self._bin_index is not None and index != self._bin_index:
            for name, values in self._bin.items():
                self.history.setdefault(name, deque(maxlen=HISTORY_POINTS)).append(
                    sum(values) / len(values)
                )
            self._bin = {}
        self._bin_index = index
        for u in self.status.uplinks if self.status else ():
            tx, rx = self.rates.get(u.interface, (0.0, 0.0))
            self._bin.setdefault(u.name, []).append(max(tx, rx))

    def snapshot(self) -> Snapshot:
        """The frame for the latest sample."""
        with self._lock:
            status = self.status
            views = []
            for u in status.uplinks if status else ():
                tx, rx = self.rates.get(u.interface, (0.0, 0.0))
                rtt, loss = health_figures(u)
                views.append(
                    UplinkView(
                        name=u.name,
                        interface=u.interface,
                        state=u.state.value,
                        health=u.health.value if u.health else None,
                        weight=u.weight,
                        in_balancer=u.in_balancer,
                        # The busier direction: each direction of a link is its own capacity.
                        mbit=max(tx, rx),
                        tx_mbit=tx,
                        rx_mbit=rx,
                        capacity_mbit=self.capacities.get(u.name),
                        rtt_ms=rtt,
                        loss=loss,
                        history=tuple(self.history.get(u.name, ())),
                        families=family_views(u),
                        order=order_cell(u),
                        mptcp=u.mptcp,
                    )
                )
            daemon = status.daemon if status else None
            note = self.note or (
                f"ecmpd pid {daemon.pid}, up {daemon.uptime_s:.0f} s, "
                f"{daemon.reconciles} kernel updates · Ctrl-C quits"
                if daemon
                else "Ctrl-C quits"
            )
            return Snapshot(
                title=f"ecmpd watch · {len(views)} uplinks",
                uplinks=tuple(views),
                elapsed_s=self._clock() - self.started,
                history_step_s=HISTORY_STEP_S,
                note=note,
            )


def _mbit(nbytes: int, seconds: float) -> float:
    # Counters can go backwards when an interface is re-created: no negative rates.
    return max(0, nbytes) * 8 / 1e6 / seconds
