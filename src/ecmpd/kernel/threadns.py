"""Running a function in another network namespace from a throwaway thread (no fork).

setns() moves only the calling thread, and /proc/sys/net and new sockets follow the
thread's namespace: the function runs there, only after setns succeeded and was
checked, and never in the namespace the caller is in. Used by the kernel adapter
(a raw socket beside an IPRoute's) and the lab (everything it does in a namespace).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

CLONE_NEWNET = 0x40000000
NsKey = tuple[int, int]  # (st_dev, st_ino) of a network namespace
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def thread_netns() -> NsKey:
    """The network namespace of the calling thread."""
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def enter(ns_fd: int, what: str = "") -> None:
    """Moves the calling thread into the namespace `ns_fd` and verifies it got there."""
    if _libc.setns(ns_fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), *([what] if what else []))
    want = os.fstat(ns_fd)
    if thread_netns() != (want.st_dev, want.st_ino):
        raise RuntimeError(f"setns {what or 'into the namespace'} did not take effect")


def unshare() -> None:
    """Moves the calling thread into a new, empty network namespace."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_thread(func: Callable[[], T], name: str, ns_fd: int | None = None, what: str = "") -> T:
    """Runs func in a throwaway thread (moved into the namespace `ns_fd` first, if given).

    The thread's namespace changes die with it; func's exception is re-raised here.
    """
    result: list[T] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            if ns_fd is not None:
                enter(ns_fd, what)
            result.append(func())
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=worker, name=name, daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]
