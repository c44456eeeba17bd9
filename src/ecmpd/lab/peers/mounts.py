"""Start a program with private directories bind-mounted over fixed paths (no shell).

Run as `python -m ecmpd.lab.peers.mounts --bind SRC:DST ... -- PROGRAM ARGS`: it moves
to a mount namespace of its own, binds each SRC over DST there, and execs the program
(same pid). Programs like dhcpcd keep leases, pid files and control sockets at paths
fixed at build time (/var/lib/dhcpcd, /run/dhcpcd); this gives each lab peer its own,
and the host's directories are neither read nor written.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
from collections.abc import Sequence
from pathlib import Path

CLONE_NEWNS = 0x00020000  # linux/sched.h
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000  # linux/mount.h

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def bind_privately(binds: Sequence[tuple[Path, Path]]) -> None:
    """Moves the calling process to a new mount namespace and bind-mounts SRC over DST."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Private first: nothing mounted below may propagate back to the host's namespace.
    _check(_libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "mount --make-rprivate /")
    for src, dst in binds:
        _check(_libc.mount(bytes(src), bytes(dst), None, MS_BIND, None), f"bind {src} {dst}")


def launch_argv(binds: Sequence[tuple[Path, Path]], argv: Sequence[str]) -> list[str]:
    """The command line that runs argv with these private bind mounts."""
    args = [arg for src, dst in binds for arg in ("--bind", f"{src}:{dst}")]
    return [sys.executable, "-m", "ecmpd.lab.peers.mounts", *args, "--", *argv]


def main(argv: Sequence[str] | None = None) -> None:
    """Parses --bind SRC:DST pairs and the program, binds, execs."""
    parser = argparse.ArgumentParser(prog="ecmpd.lab.peers.mounts")
    parser.add_argument("--bind", action="append", default=[], metavar="SRC:DST")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    if not program:
        parser.error("no program to run")
    binds = [(Path(src), Path(dst)) for src, _, dst in (b.partition(":") for b in args.bind)]
    bind_privately(binds)
    os.execvp(program[0], program)


if __name__ == "__main__":
    main()
