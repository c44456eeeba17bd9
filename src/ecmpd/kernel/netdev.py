"""Interface counters from /proc/net/dev, for the metrics, `ecmpd watch` and the lab."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# /proc/net is a link to /proc/self/net, which shows the namespace of the process's
# main thread; thread-self shows the reading thread's (what netns.call_in moved).
PROC_NET_DEV = Path("/proc/thread-self/net/dev")
# /proc/net/dev column -> the kind in ecmpd's keys (rx_bytes, tx_dropped, ...).
_PROC_FIELDS = {"bytes": "bytes", "packets": "packets", "errs": "errors", "drop": "dropped"}

InterfaceCounters = dict[str, dict[str, int]]


def parse_proc_net_dev(text: str) -> InterfaceCounters:
    """Per-interface counters of a /proc/net/dev text: {rx,tx}_{bytes,packets,errors,dropped}."""
    lines = text.splitlines()
    if len(lines) < 2 or lines[1].count("|") != 2:
        raise ValueError("not a /proc/net/dev table: no column header")
    # Columns are read from the header rather than by position, so a kernel that
    # adds columns cannot shift what each number means.
    _, rx_head, tx_head = lines[1].split("|")
    columns = [f"rx_{c}" for c in rx_head.split()] + [f"tx_{c}" for c in tx_head.split()]
    result: InterfaceCounters = {}
    for line in lines[2:]:
        name, sep, numbers = line.partition(":")  # names never contain ':' (dev_valid_name)
        if not sep:
            continue
        values = dict(zip(columns, (int(v) for v in numbers.split()), strict=False))
        result[name.strip()] = {
            f"{direction}_{ours}": values.get(f"{direction}_{theirs}", 0)
            for direction in ("rx", "tx")
            for theirs, ours in _PROC_FIELDS.items()
        }
    return result


def read_interface_counters(
    ifnames: Iterable[str] | None = None, path: Path = PROC_NET_DEV
) -> InterfaceCounters:
    """The kernel's counters of the calling thread's namespace (only ifnames, if given)."""
    counters = parse_proc_net_dev(path.read_text(encoding="ascii"))
    if ifnames is None:
        return counters
    wanted = set(ifnames)
    return {name: c for name, c in counters.items() if name in wanted}
