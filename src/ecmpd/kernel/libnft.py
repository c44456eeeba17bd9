"""libnftables (the library `nft` is a front end of) in-process, through ctypes.

One call is one `nft -j -f -` run: a JSON document (one transaction) and the text it
printed. The library's context, with its netlink socket, is kept between calls for the
network namespace of the *calling thread* (opened there, as a `nft` child of that
thread would run there), so callers that setns() in a thread (ecmpd.lab.netns.call_in)
reach their namespace's tables, and the daemon's kernel thread keeps one context.

Why: the `nft` process costs more than the kernel's work on a failover's path (≈3.5 ms
for the reset chains' update on a quiet machine, ≈8 ms with both cores busy, against
0.9 and 0.7 ms in-process, measured). And why the context is kept: closing its socket
waits until the kernel has released what the transactions removed (an RCU grace
period: the netlink release flushes nf_tables' pending destroy work). A failover's
update refills the reset chains when they are there already (a metered standby stays in
them, `failback: reset`), and in the demo the close then cost 10-30 ms of the time to
the resets; a kept context does not close (the failover's apply: 0.7 ms). Why not
Debian's python3-nftables: the same C calls, untyped, outside the project's virtual
environment.

The limits (run() keeps to them; when it cannot, it returns None and the caller runs
the `nft` program):
- libnftables 1.0.6 waits for the kernel with select(), whose fd_set holds descriptors
  below FD_SETSIZE (1024) only; if a context's socket gets a higher one, glibc aborts
  the whole process ("bit out of range 0 - FD_SETSIZE on fd_set"). A new descriptor is
  the lowest free one: a context is opened only while enough below the limit (and the
  process's RLIMIT_NOFILE) are free that another thread opening some meanwhile cannot
  push it over (`fits()`); once open, its descriptor stays what it was.
- nft_ctx_new() calls exit() when it cannot open its netlink socket (no
  NETLINK_NETFILTER in the kernel or the sandbox, no descriptor left): a socket of that
  kind is opened and closed first, and the program runs instead if that fails.
- A run that failed leaves its socket in an unknown state (answers of an interrupted
  wait may still be queued): its context is closed, the next run opens a new one.
A kept context keeps its namespace alive: ecmpd.lab.netns.remove_netns releases it; a
namespace deleted otherwise lives on until this process uses another one or ends. The
daemon uses one namespace for its whole life.
"""

from __future__ import annotations

import ctypes
import os
import resource
import socket
import threading
from dataclasses import dataclass

LIBRARY = "libnftables.so.1"  # Debian's libnftables1, which `nft` itself needs
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4  # JSON output; input is then tried as JSON first
FD_SETSIZE = 1024
SPARE_FDS = 64  # free below FD_SETSIZE for a new context to be opened
NETLINK_NETFILTER = 12  # linux/netlink.h (the socket module has no name for it)


class NftError(RuntimeError):
    """nft refused a command (or nftables is missing); the message carries its error."""


def fits() -> bool:
    """Whether a new socket is sure of a descriptor below FD_SETSIZE (SPARE_FDS free)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    limit = FD_SETSIZE if soft == resource.RLIM_INFINITY else min(FD_SETSIZE, soft)
    used = sum(1 for name in names if int(name) < limit)
    return limit - used >= SPARE_FDS


def _netlink_opens() -> bool:
    """Whether a NETLINK_NETFILTER socket opens here (nft_ctx_new exits if not)."""
    try:
        probe = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    except OSError:
        return False
    probe.close()
    return True


@dataclass(frozen=True)
class _Lib:
    """The loaded library, its functions' C types declared."""

    cdll: ctypes.CDLL

    @classmethod
    def load(cls) -> _Lib | None:
        """The library, or None when it is missing or not the API this expects."""
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError:
            return None
        ctx, text = ctypes.c_void_p, ctypes.c_char_p
        signatures: dict[str, tuple[list[type], type | None]] = {
            "nft_ctx_new": ([ctypes.c_uint32], ctx),
            "nft_ctx_free": ([ctx], None),
            "nft_ctx_output_set_flags": ([ctx, ctypes.c_uint], None),
            "nft_ctx_buffer_output": ([ctx], ctypes.c_int),
            "nft_ctx_buffer_error": ([ctx], ctypes.c_int),
            "nft_ctx_get_output_buffer": ([ctx], text),
            "nft_ctx_get_error_buffer": ([ctx], text),
            "nft_run_cmd_from_buffer": ([ctx, text], ctypes.c_int),
        }
        for name, (args, result) in signatures.items():
            fn = getattr(lib, name, None)
            if fn is None:
                return None
            fn.argtypes, fn.restype = args, result
        return cls(lib)


NetnsId = tuple[int, int]  # the namespace file's (device, inode)


@dataclass(frozen=True)
class _Context:
    """A libnftables context whose socket was opened in namespace `netns`."""

    netns: NetnsId
    pointer: int


_lib: _Lib | None = None
_loaded = False  # tried: _lib None then means missing (the program runs instead)
_context: _Context | None = None  # one: the daemon's namespace (tests move between many)
# One run at a time in this process: the library's documentation promises nothing
# about threads, and a run takes a millisecond.
_lock = threading.Lock()


def _thread_netns() -> NetnsId:
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


def _open(lib: ctypes.CDLL, netns: NetnsId) -> _Context:
    pointer = lib.nft_ctx_new(NFT_CTX_DEFAULT)
    if not pointer:
        raise NftError("libnftables could not make a context")
    lib.nft_ctx_output_set_flags(pointer, NFT_CTX_OUTPUT_JSON)
    lib.nft_ctx_buffer_output(pointer)
    lib.nft_ctx_buffer_error(pointer)
    return _Context(netns, pointer)


def _release_locked() -> None:
    global _context
    if _context is not None and _lib is not None:
        _lib.cdll.nft_ctx_free(_context.pointer)
    _context = None


def release(netns: NetnsId | None = None) -> None:
    """Closes the kept context (of any namespace, or only of `netns`): its socket keeps
    its namespace alive, so a lab closes it before deleting the namespace."""
    with _lock:
        if _context is not None and netns in (None, _context.netns):
            _release_locked()


def run(document: str) -> str | None:
    """Runs a JSON document as `nft -j -f -` would, in the calling thread's network
    namespace; returns what it printed (JSON for a listing, "" for a change), or None
    when it cannot run here (the library missing; no context for this namespace yet and
    none can be opened safely): run the `nft` program then."""
    global _lib, _loaded, _context
    netns = _thread_netns()
    with _lock:
        if not _loaded:
            _lib, _loaded = _Lib.load(), True
        if _lib is None:
            return None
        lib = _lib.cdll
        if _context is None or _context.netns != netns:
            if not (fits() and _netlink_opens()):
                return None
            _release_locked()
            _context = _open(lib, netns)
        status = lib.nft_run_cmd_from_buffer(_context.pointer, document.encode())
        # Each read hands the buffer over and starts it afresh for the next run.
        out: bytes = lib.nft_ctx_get_output_buffer(_context.pointer) or b""
        err: bytes = lib.nft_ctx_get_error_buffer(_context.pointer) or b""
        if status != 0:
            _release_locked()  # its socket may hold answers of an interrupted wait
    if status != 0:
        raise NftError(err.decode(errors="replace").strip() or f"nft failed ({status})")
    return out.decode()
