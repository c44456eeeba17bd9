"""A running MPTCP download when an uplink fails and returns: the gap, the way back."""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import check, progress
from ecmpd.kernel import mptcp
from ecmpd.kernel.mptcpdiag import Subflow
from ecmpd.lab import netns
from ecmpd.lab.daemon import running_daemon
from ecmpd.lab.faults import gray_failure, heal
from ecmpd.lab.layout import IspInfo, Lab
from ecmpd.lab.mptcp import Download, Server, SubflowWatch
from ecmpd.lab.wait import wait_for
from ecmpd.model import IPAddress

OUTAGE_S = 4.0  # how long the uplink stays failed (detection takes < 1 s)
RETURN_WAIT_S = 10.0  # longer than any return: None past it
POLL_S = 0.01
CARRYING_BYTES = 64 * 1024
STEADY_S = 2.0  # the download's warm-up before the cut


def longest_gap(progress_log: list[tuple[float, int]], start: float, end: float) -> float:
    """The longest time without data between start and end (reads as (time, bytes))."""
    times = [start] + [t for t, _ in progress_log if start < t < end] + [end]
    return max(b - a for a, b in itertools.pairwise(times))


def apply(lab: Lab, config: Path, workdir: Path) -> None:
    """`ecmpd apply` in the lab's host (every uplink assumed up: all endpoints in)."""
    argv = [sys.executable, "-m", "ecmpd", "-c", str(config), "--run-dir", str(workdir / "run"),
            "apply"]  # fmt: skip
    done = netns.run_in(lab.router, argv, capture_output=True, text=True)
    check(done.returncode == 0, f"ecmpd apply failed: {done.stderr}")


@contextlib.contextmanager
def endpoints_kept(lab: Lab, config: Path, workdir: Path, managed: bool) -> Iterator[None]:
    """`ecmpd run` keeping the endpoints, or (the anchor) `ecmpd apply` once and no daemon.

    One `workdir` for every run: its run dir's record is what makes the endpoints ecmpd's.
    """
    if not managed:
        apply(lab, config, workdir)
        yield
        return
    with running_daemon(lab.router, config, workdir) as daemon:
        wait_for(daemon.all_in_service, 10, "every uplink in service")
        yield


def _new_bytes(sub: Subflow | None, old: Subflow | None) -> int:
    """What the uplink's subflow received since `old` was read (all of it, if a new one)."""
    if sub is None:
        return 0
    same = old is not None and sub.local_port == old.local_port
    return sub.bytes_received - (old.bytes_received if same and old else 0)


def _way_back(
    lab: Lab, isp: IspInfo, watch: SubflowWatch, managed: bool
) -> tuple[float | None, float | None]:
    """Heal; (endpoint back, uplink carrying again) in seconds after it, None if not seen."""
    old = watch.now().get(isp.name)
    healed = time.monotonic()
    heal(isp.ns)
    back = None if managed else 0.0
    carrying = None
    # Both are waited for: the first subflow (id 0, no endpoint of its own) may outlive a
    # short outage and carry again before the endpoint is back.
    while (now := time.monotonic() - healed) < RETURN_WAIT_S:
        if back is None and any(
            e.address == isp.address.ip for e in mptcp.dump_endpoints(watch.ipr)
        ):
            back = now
        if carrying is None and _new_bytes(watch.now().get(isp.name), old) > CARRYING_BYTES:
            carrying = now
        if back is not None and carrying is not None:
            break
        time.sleep(POLL_S)
    return back, carrying


def one_run(lab: Lab, config: Path, workdir: Path, managed: bool) -> dict[str, Any]:
    """Fail the uplink of the first subflow mid-download (gray), heal it, time the way back."""
    sources: dict[IPAddress, str] = {isp.address.ip: isp.name for isp in lab.isps}
    with endpoints_kept(lab, config, workdir, managed), Server(
        lab.internet, lab.servers[0]
    ) as server, SubflowWatch(lab.router, sources) as watch:  # fmt: skip
        dl = Download(lab.router, lab.servers[0], server.port, 1 << 40).start()
        check(dl.is_mptcp(), "the download fell back to plain TCP")
        wait_for(lambda: all(watch.carrying(i.name) for i in lab.isps), 5, "every uplink")
        time.sleep(STEADY_S)
        isp = lab.isp(next(u for u, s in watch.now().items() if s.local_id == 0))
        cut = time.monotonic()
        before = dl.rate_mbit(cut - 1, cut)
        gray_failure(isp.ns)
        time.sleep(OUTAGE_S)
        gap = longest_gap(dl.progress, cut, cut + OUTAGE_S)
        during = dl.rate_mbit(cut + OUTAGE_S / 2, cut + OUTAGE_S)
        back, carrying = _way_back(lab, isp, watch, managed)
        check(dl.error is None, f"the download failed: {dl.error}")
    run = {
        "cut_uplink": isp.name,
        "mbit_before": round(before, 1),
        "gap_s": round(gap, 3),
        "mbit_during_outage": round(during, 1),
        "endpoint_back_after_heal_s": None if not managed or back is None else round(back, 3),
        "carrying_after_heal_s": None if carrying is None else round(carrying, 3),
        # 0.0 when it carried again before its return (the first subflow outlived the cut).
        "carrying_after_return_s": (
            None
            if not managed or back is None or carrying is None
            else round(max(0.0, carrying - back), 3)
        ),
    }
    progress(f"{'ecmpd' if managed else 'kernel alone'}: {run}")
    return run
