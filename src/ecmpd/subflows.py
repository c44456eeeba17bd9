"""The MPTCP subflows of the daemon's namespace, read on its kernel thread while `mptcp` is on.

sock_diag lists this host's own TCP sockets only (forwarded connections are none), on a
netlink socket already open beside the daemon's, so one dump every READ_INTERVAL is
cheap; nothing is read while the config has no MPTCP uplink. The status, the metrics and
`ecmpd watch` show the last read (ecmpd.status.with_mptcp), at most READ_INTERVAL old.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ecmpd.kernel.mptcpdiag import Subflow

log = logging.getLogger("ecmpd.mptcp")

READ_INTERVAL = 1.0  # seconds: the metrics' own refresh, and a frame of `watch` at most


class SubflowReader:
    """The subflows as last read; `run` reads them every interval while enabled."""

    def __init__(
        self, read: Callable[[], Awaitable[list[Subflow]]], interval: float = READ_INTERVAL
    ) -> None:
        self._read = read
        self._interval = interval
        self.latest: tuple[Subflow, ...] = ()

    async def refresh(self) -> None:
        """Read now; a failed read keeps the last figures (logged, never fatal)."""
        try:
            self.latest = tuple(await self._read())
        except OSError as exc:
            log.warning("mptcp.read_failed", extra={"error": str(exc)})

    async def run(self, enabled: Callable[[], bool]) -> None:
        """Read every interval while `enabled()` (a reload may turn MPTCP on or off)."""
        while True:
            if enabled():
                await self.refresh()
            else:
                self.latest = ()
            await asyncio.sleep(self._interval)
