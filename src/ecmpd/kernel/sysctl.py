"""Read and write sysctls of the current network namespace through /proc/sys."""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")


def _path(name: str, root: Path) -> Path:
    """net.ipv4.conf.eth0.100.rp_filter -> net/ipv4/conf/eth0.100/rp_filter."""
    parts = name.split(".")
    if len(parts) > 5 and parts[2] == "conf":
        # Interface names may hold dots (VLANs): all between conf and the key is one name.
        parts = [*parts[:3], ".".join(parts[3:-1]), parts[-1]]
    return root.joinpath(*parts)


def read_sysctl(name: str, root: Path = PROC_SYS) -> str | None:
    """The current value, or None when the kernel has no such key."""
    try:
        return _path(name, root).read_text().strip()
    except FileNotFoundError:
        return None


def write_sysctl(name: str, value: str, root: Path = PROC_SYS) -> None:
    """Set a sysctl (raises OSError when the kernel refuses the value)."""
    _path(name, root).write_text(f"{value}\n")
