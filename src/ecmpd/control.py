"""The daemon's control socket: one JSON request per line, one JSON answer per line.

A unix socket in the run dir, mode 0600 (root only): `status`, `reload`, `drain`,
`undrain`, `health`, each answered by `dispatch` from the daemon (a `Controlled`). The
CLI's `status`, `watch`, `drain` and `undrain` talk to it; a status travels as
`Status.to_json()`, read back with `request_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Protocol

from ecmpd.model import Family
from ecmpd.status import Status

SOCKET_NAME = "ecmpd.sock"


class Controlled(Protocol):
    """What the control socket asks of the daemon."""

    def status(self) -> Status: ...
    async def reload(self) -> dict[str, Any]: ...
    async def drain(self, name: str, drained: bool) -> dict[str, Any]: ...
    def service(self, family: Family = Family.INET) -> dict[str, bool]: ...


async def dispatch(daemon: Controlled, request: dict[str, Any]) -> dict[str, Any]:
    """One request's answer."""
    cmd = request.get("cmd")
    if cmd == "status":
        return {"ok": True, "status": daemon.status().to_json()}
    if cmd == "reload":
        return await daemon.reload()
    if cmd in ("drain", "undrain"):
        return await daemon.drain(str(request.get("uplink")), cmd == "drain")
    if cmd == "health":
        return {"ok": True, "health": daemon.service(), "health6": daemon.service(Family.INET6)}
    return {"ok": False, "error": f"unknown command {cmd!r}"}


def socket_path(run_dir: Path) -> Path:
    """Where the daemon of this run dir listens."""
    return run_dir / SOCKET_NAME


async def serve(run_dir: Path, daemon: Controlled) -> asyncio.Server:
    """Listen on the control socket (replacing a stale one) with owner-only access."""
    path = socket_path(run_dir)
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    if not isinstance(request, dict):
                        raise ValueError("a request is a JSON object")
                    answer = await dispatch(daemon, request)
                except (ValueError, KeyError) as exc:
                    answer = {"ok": False, "error": str(exc)}
                writer.write(json.dumps(answer, default=str).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    # umask so the socket is never briefly world-accessible.
    old = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(client, path=str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    return server


class DaemonNotRunning(Exception):
    """No daemon answers on this run dir's control socket."""


def request(run_dir: Path, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon and return its answer (blocking; for the CLI)."""
    path = socket_path(run_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        sock.close()
        raise DaemonNotRunning(f"no ecmpd daemon answers on {path}") from exc
    with sock, sock.makefile("rwb") as stream:
        stream.write(json.dumps(message).encode() + b"\n")
        stream.flush()
        line = stream.readline()
    if not line:
        raise DaemonNotRunning(f"the daemon on {path} closed the connection")
    answer: dict[str, Any] = json.loads(line)
    return answer


def request_status(run_dir: Path, timeout: float = 5.0) -> Status:
    """The daemon's status (DaemonNotRunning, OSError, or ValueError for a bad answer)."""
    answer = request(run_dir, {"cmd": "status"}, timeout)
    if not answer.get("ok", True) or "status" not in answer:
        raise ValueError(f"the daemon did not give its status: {answer.get('error', answer)}")
    return Status.from_json(answer["status"])
