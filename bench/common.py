"""What every benchmark shares: its error, progress on stderr, the JSON document, statistics."""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import statistics
import sys
import threading
import time
import types
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pyroute2

from ecmpd.lab import netns

T = TypeVar("T")


class BenchError(Exception):
    """The benchmark saw ecmpd (or an anchor, or a fault) do something other than
    expected: its figures would mean nothing."""


def check(condition: bool, message: str) -> None:
    """Raises BenchError unless condition holds (asserts vanish under python -O)."""
    if not condition:
        raise BenchError(message)


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries only the JSON document)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def emit(document: dict[str, Any]) -> None:
    """Prints the benchmark's one JSON document on stdout."""
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()


def machine() -> dict[str, Any]:
    """The facts a reader needs to compare runs: kernel, CPUs, Python and pyroute2."""
    return {
        "kernel": os.uname().release,
        "cpus": os.cpu_count() or 1,
        "python": sys.version.split()[0],
        "pyroute2": pyroute2.__version__,
    }


def summary(samples: Sequence[float]) -> dict[str, float]:
    """Median and max of millisecond samples (the median is what ratios quote)."""
    if not samples:
        raise ValueError("no samples")
    return {
        "median": round(statistics.median(samples), 4),
        "max": round(max(samples), 4),
        "n": len(samples),
    }


def timed(func: Callable[[], T]) -> tuple[float, T]:
    """Runs func once and returns (wall milliseconds, its result)."""
    # A collection left over from the previous step would land in this sample.
    gc.collect()
    start = time.perf_counter_ns()
    result = func()
    return (time.perf_counter_ns() - start) / 1e6, result


def ratio(value: float, anchor: float) -> float | None:
    """value / anchor, or None when the anchor is too small to divide by."""
    return round(value / anchor, 3) if anchor > 1e-6 else None


def install_sigterm() -> None:
    """Turns SIGTERM into KeyboardInterrupt so a killed benchmark still removes its namespaces."""

    def handler(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def thread_in(ns: str, target: Callable[[], None], name: str) -> threading.Thread:
    """Starts a daemon thread running target inside ns (its own sockets and children are there)."""
    thread = threading.Thread(target=lambda: netns.call_in(ns, target), name=name, daemon=True)
    thread.start()
    return thread


def arguments(package: types.ModuleType, quick: str) -> argparse.ArgumentParser:
    """A benchmark's command line, with the --quick and --prefix that `python -m bench` passes.

    package: the benchmark's package (its docstring's first line describes it).
    """
    name = package.__name__
    p = argparse.ArgumentParser(
        prog=f"python -m {name}", description=(package.__doc__ or name).splitlines()[0]
    )
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--prefix", help="namespace name prefix (default: a fresh ecmpd-xxxx-)")
    return p


def namespaces_missing(package: types.ModuleType) -> bool:
    """Says on stderr why the benchmark cannot run here (no network namespaces), if so."""
    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"{package.__name__}: {reason}", file=sys.stderr)
    return reason is not None
