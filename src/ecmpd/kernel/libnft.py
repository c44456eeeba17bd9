"""libnftables (the library `nft` is a front end of) in-process, through ctypes.

One call is one `nft -j` run: a fresh context, JSON output, one JSON document (one
transaction) and the text it printed. The context's netlink socket is opened in the
network namespace of the *calling thread*, as a `nft` child of that thread would be, so
callers that setns() in a thread (ecmpd.lab.netns.call_in) get their namespace's tables.

Why: the `nft` process costs more than the kernel's work on a failover's path: ≈3.5 ms
for the reset chains' update on a quiet machine, ≈8 ms with both cores busy, where
in-process it takes 0.9 and 0.7 ms (measured, kernel/nftables.py's update).
Why not Debian's python3-nftables: the same C calls, untyped, outside the project's
virtual environment.

The limit (kernel/nftables.py keeps to it): libnftables 1.0.6 waits for the kernel with
select(), whose fd_set holds descriptors below FD_SETSIZE (1024) only; if its socket
gets a higher one, glibc aborts the whole process ("bit out of range 0 - FD_SETSIZE on
fd_set"). A new descriptor is the lowest free one: `fits()` says whether enough below
the limit are free that another thread opening some meanwhile cannot push it over.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass

LIBRARY = "libnftables.so.1"  # Debian's libnftables1, which `nft` itself needs
NFT_CTX_DEFAULT = 0
NFT_CTX_OUTPUT_JSON = 1 << 4  # JSON output; input is then tried as JSON first
FD_SETSIZE = 1024
SPARE_FDS = 64  # free below FD_SETSIZE for a call to go ahead


class NftError(RuntimeError):
    """nft refused a command (or nftables is missing); the message carries its error."""


def fits() -> bool:
    """Whether libnftables' socket is sure of a descriptor below FD_SETSIZE."""
    try:
        used = sum(1 for name in os.listdir("/proc/self/fd") if int(name) < FD_SETSIZE)
    except OSError:
        return False
    return FD_SETSIZE - used >= SPARE_FDS


@dataclass(frozen=True)
class _Lib:
    """The loaded library, its functions' C types declared."""

    cdll: ctypes.CDLL

    @classmethod
    def load(cls) -> _Lib:
        try:
            lib = ctypes.CDLL(LIBRARY)
        except OSError as exc:
            raise NftError(f"{LIBRARY} is missing (Debian: nftables, libnftables1)") from exc
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
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, result
        return cls(lib)


_lib: _Lib | None = None
# One run at a time in this process: contexts are independent, but the library's
# documentation promises nothing about threads, and a run takes a millisecond.
_lock = threading.Lock()


def run(document: str) -> str:
    """Runs a JSON document as `nft -j -f -` would, in the calling thread's network
    namespace; returns what it printed (JSON for a listing, "" for a change).

    Call only when fits() (kernel/nftables.py does)."""
    global _lib
    with _lock:
        if _lib is None:
            _lib = _Lib.load()
        lib = _lib.cdll
        ctx = lib.nft_ctx_new(NFT_CTX_DEFAULT)
        if not ctx:
            raise NftError("libnftables could not make a context")
        try:
            lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            status = lib.nft_run_cmd_from_buffer(ctx, document.encode())
            out: bytes = lib.nft_ctx_get_output_buffer(ctx) or b""
            err: bytes = lib.nft_ctx_get_error_buffer(ctx) or b""
        finally:
            lib.nft_ctx_free(ctx)
    if status != 0:
        raise NftError(err.decode(errors="replace").strip() or f"nft failed ({status})")
    return out.decode()
