"""The control socket's commands, answered by `dispatch` from a fake daemon."""

from __future__ import annotations

import asyncio
from typing import Any

from ecmpd.control import dispatch
from ecmpd.model import Family
from ecmpd.status import Status


class FakeDaemon:
    """Records what the socket asked of it."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, ...]] = []

    def status(self) -> Status:
        return Status(source="daemon", uplinks=())

    async def reload(self) -> dict[str, Any]:
        self.asked.append(("reload",))
        return {"ok": True, "ops": 0}

    async def drain(self, name: str, drained: bool) -> dict[str, Any]:
        self.asked.append(("drain" if drained else "undrain", name))
        return {"ok": True, "ops": 1}

    def service(self, family: Family = Family.INET) -> dict[str, bool]:
        return {"isp-a": family is Family.INET}


def ask(daemon: FakeDaemon, request: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(dispatch(daemon, request))


def test_each_command_reaches_the_daemon() -> None:
    d = FakeDaemon()
    assert ask(d, {"cmd": "status"}) == {"ok": True, "status": {"source": "daemon", "uplinks": []}}
    assert ask(d, {"cmd": "reload"}) == {"ok": True, "ops": 0}
    assert ask(d, {"cmd": "drain", "uplink": "isp-a"}) == {"ok": True, "ops": 1}
    assert ask(d, {"cmd": "undrain", "uplink": "isp-a"}) == {"ok": True, "ops": 1}
    assert d.asked == [("reload",), ("drain", "isp-a"), ("undrain", "isp-a")]
    assert ask(d, {"cmd": "health"}) == {
        "ok": True, "health": {"isp-a": True}, "health6": {"isp-a": False},
    }  # fmt: skip


def test_an_unknown_command_is_an_answer_not_an_error() -> None:
    answer = ask(FakeDaemon(), {"cmd": "reboot"})
    assert answer == {"ok": False, "error": "unknown command 'reboot'"}
