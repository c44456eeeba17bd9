"""Network-namespace primitives for the lab: create, remove, enter, run commands."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2 import netns as pr_netns

from ecmpd.kernel import libnft, threadns

NETNS_DIR = Path("/var/run/netns")
# Namespace names become file names and show up in `ip netns list`; keeping them
# short and plain keeps every tool (and a human reading the list) happy.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
T = TypeVar("T")


NETLINK_ROUTE = 0
# The multipath hash key is random per boot (and per namespace) unless set: a lab
# whose flows must land the same way on every boot sets its own. Kernels before 6.11
# have no such sysctl and keep a random key; tests there rely on enough flows alone.
HASH_SEED_SYSCTL = "net.ipv4.fib_multipath_hash_seed"  # IPv4 and IPv6 alike
LAB_HASH_SEED = "3735928559"


def new_prefix() -> str:
    """Returns a fresh, run-unique namespace prefix such as 'ecmpd-1a2b3c4d-'."""
    return f"ecmpd-{secrets.token_hex(4)}-"


def check_name(name: str) -> str:
    """Returns the name if it is a valid lab namespace name, else raises ValueError."""
    if not _NAME_RE.match(name):
        raise ValueError(f"invalid network namespace name {name!r}")
    return name


def netns_path(name: str) -> Path:
    """Returns the bind-mount path of a named namespace."""
    return NETNS_DIR / check_name(name)


def exists(name: str) -> bool:
    """Tells whether a named namespace exists."""
    return netns_path(name).exists()


def list_netns(prefix: str = "") -> list[str]:
    """Lists named namespaces whose name starts with prefix."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix))


def unavailable_reason() -> str | None:
    """Says why namespaces cannot be used here, or None when they can."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "the 'ip' command (iproute2) is not installed"
    if not Path("/proc/self/ns/net").exists():
        return "the kernel has no network namespace support"
    return None


def create_netns(name: str) -> None:
    """Creates a named namespace with the lab's multipath hash seed; refuses
    (FileExistsError) to adopt an existing one."""
    path = netns_path(name)
    if path.exists():
        raise FileExistsError(errno.EEXIST, "network namespace exists", name)
    try:
        threadns.in_thread(lambda: _unshare_and_attach(name), "netns-create")
    except BaseException:
        # A failure after the mount point was made leaves an empty file that
        # `ip netns list` would show; it is ours (it did not exist above).
        with contextlib.suppress(OSError):
            remove_netns(name)
        raise


def _unshare_and_attach(name: str) -> None:
    """Gives the calling thread a new namespace and bind-mounts it under /run/netns.

    pyroute2's netns.create() forks a helper process and kills it afterwards; a fork
    of a test run or the demo must never run their cleanup, so a thread does it: an
    unshare moves only the calling thread, and the mount keeps the namespace alive
    after the thread ends.
    """
    threadns.unshare()
    pr_netns.attach(name, f"{os.getpid()}/task/{threading.get_native_id()}")
    seed = Path("/proc/sys", *HASH_SEED_SYSCTL.split("."))
    if seed.exists():
        seed.write_text(LAB_HASH_SEED + "\n")


def remove_netns(name: str) -> None:
    """Removes a named namespace, ending the processes inside it; absent is fine."""
    path = netns_path(name)
    if not path.exists():
        return
    kill_processes_in(name)
    with contextlib.suppress(OSError):
        st = os.stat(path)
        libnft.release((st.st_dev, st.st_ino))  # its socket would keep the namespace
    with contextlib.suppress(FileNotFoundError):
        pr_netns.remove(name)


def pids_in(name: str) -> list[int]:
    """Lists the processes whose network namespace is the named one."""
    try:
        target = os.stat(netns_path(name))
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # exited meanwhile, or a kernel thread
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry))
    return pids


def kill_processes_in(name: str, grace: float = 1.0) -> None:
    """Ends the processes left in a lab namespace: SIGTERM, then SIGKILL after grace."""
    # A leftover process (a daemon, a ping) keeps the namespace and its veths
    # alive after the mount is gone, invisible to `ip netns list`.
    pids = [p for p in pids_in(name) if p != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _alive(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def _alive(pid: int) -> bool:
    """Tells whether a process exists and is not a zombie."""
    # Zombies are not reaped here: one may be the caller's Popen child, whose
    # returncode only the caller's wait() should collect. A zombie has already
    # let go of its namespace anyway.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def remove_prefix(prefix: str) -> list[str]:
    """Removes every namespace whose name starts with prefix; returns their names."""
    if not prefix:
        raise ValueError("refusing to remove namespaces with an empty prefix")
    names = list_netns(prefix)
    for name in names:
        remove_netns(name)
    return names


def iproute(name: str) -> IPRoute:
    """Opens an rtnetlink socket inside an existing namespace (never creates one).

    Not IPRoute(netns=...): pyroute2 forks the whole process for that, and a forked
    copy of a test run (or of the demo) can run cleanup code that is not its own.
    The socket is made in a thread that entered the namespace (a socket stays in the
    namespace it was created in); a missing namespace fails there, never created.
    """
    sock = socket_in(name, socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
    try:
        ipr = IPRoute(fileno=sock.fileno())
    except BaseException:
        sock.close()
        raise
    sock.detach()  # ipr.close() closes the descriptor
    ipr.status["netns"] = name
    return ipr


@contextlib.contextmanager
def netns_fd(name: str) -> Iterator[int]:
    """Opens a namespace file descriptor (for IFLA_NET_NS_FD) and closes it after."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def write_sysctls(name: str, values: Mapping[str, str]) -> None:
    """Writes sysctls (dotted names, no dots in interface names) inside a namespace."""

    def write() -> None:
        for key, value in values.items():
            Path("/proc/sys", *key.split(".")).write_text(value + "\n")

    call_in(name, write)


def read_sysctl(name: str, key: str) -> str:
    """Reads one sysctl (dotted name) inside a namespace."""
    return call_in(name, lambda: Path("/proc/sys", *key.split(".")).read_text().strip())


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """Returns a socket that lives in the namespace (usable from any thread)."""
    # A socket belongs to the namespace it was created in, for its lifetime.
    return call_in(name, lambda: socket.socket(family, kind, proto))


def call_in(name: str, func: Callable[[], T]) -> T:
    """Runs func inside the namespace, in a throwaway thread, and returns its result.

    No fork, and no way for func to run in the root namespace (see kernel.threadns).
    """
    with netns_fd(name) as fd:
        return threadns.in_thread(func, f"netns:{name}", fd, name)


def _argv(ns: str, argv: Sequence[str]) -> list[str]:
    """Builds the `ip netns exec` command line; argv must be a list, never a shell string."""
    if isinstance(argv, str):
        raise TypeError("argv must be a sequence of arguments, not a string")
    return ["ip", "netns", "exec", check_name(ns), *argv]


def run_in(ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
    """Runs a command inside a namespace (subprocess.run keywords pass through)."""
    return subprocess.run(_argv(ns, argv), **kwargs)


def popen_in(ns: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """Starts a command inside a namespace (subprocess.Popen keywords pass through)."""
    return subprocess.Popen(_argv(ns, argv), **kwargs)


def stop_process(
    proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int | None:
    """Sends sig to a process started here and waits; SIGKILL if it does not exit in
    time (then returns None). An exited process just gives its status."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None
