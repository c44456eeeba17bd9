"""A lab part used as a with block: started on entry (stopped again if starting fails),
stopped on exit. The daemon in a namespace, the traffic generators, the chat server and
pool, and the peer daemons (FRR, dnsmasq, ...) share it."""

from __future__ import annotations

from typing import Self


class Running:
    """Mixin: subclasses define start() and stop(); stop() must be safe to call twice."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> object:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
