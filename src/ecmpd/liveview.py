"""Redrawing the live view (live.py's `render`) from a thread until closed.

`ecmpd watch` and `ecmpd lab demo` hand it a callable that takes a fresh Snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from rich.console import Console
from rich.live import Live

from ecmpd.live import Snapshot, render


@dataclass
class LiveView:
    """Redraws render(snapshot()) fps times a second until closed (a context manager)."""

    console: Console
    snapshot: Callable[[], Snapshot]
    fps: float = 4.0
    _live: Live | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    error: BaseException | None = field(default=None, init=False)

    def __enter__(self) -> LiveView:
        # Redrawn by this object's thread only: the snapshot is taken where the data
        # is consistent, and Live's own refresher would redraw a stale renderable.
        self._live = Live(
            render(self.snapshot()),
            console=self.console,
            auto_refresh=False,
            transient=False,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        self._live.start()
        self._thread = threading.Thread(target=self._run, name="live-view", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1 / self.fps):
            self.refresh()

    def refresh(self) -> None:
        """Draws a fresh frame now."""
        if self._live is None:
            return
        try:
            self._live.update(render(self.snapshot()), refresh=True)
        except Exception as exc:  # a bad frame must not end the run: keep the last one
            self.error = exc

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._live is not None:
            if kind is None:
                self.refresh()
            self._live.stop()
            self._live = None
