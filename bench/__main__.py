"""`python -m bench` (`./dev bench`): every benchmark in one run, merged into one JSON document.

Each benchmark runs as its own `python -m bench.<name>` process (its own namespaces,
under a prefix derived from the run's), in suite order; a failed one is recorded and
the others still run. Prints the README's performance table, or with --json the
merged document; --table FILE also writes the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import emit, install_sigterm
from bench.report import markdown_table
from bench.suite import BENCHES
from ecmpd.lab import netns

# The directory `python -m bench.<name>` must run from: the one holding this package.
ROOT = Path(__file__).resolve().parents[1]
# A benchmark told to stop (Ctrl-C, SIGTERM) removes its namespaces first: give it time.
STOP_GRACE_S = 60.0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's short mode")
    p.add_argument("--json", action="store_true", help="the merged document on stdout")
    p.add_argument("--table", type=Path, metavar="FILE", help="also write the README's table")
    known = ",".join(b.name for b in BENCHES)
    p.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of {known}")
    p.add_argument("--prefix", help="namespace name prefix handed to each benchmark")
    return p.parse_args(argv)


def run_benchmark(argv: Sequence[str]) -> tuple[int, str]:
    """Runs one benchmark (stderr passes through); returns (exit status, stdout).

    Not subprocess.run: on Ctrl-C it kills the child after a quarter second, before the
    benchmark could remove its namespaces. Here the child gets SIGTERM (which the
    benchmarks turn into their own clean-up) and time to finish it.
    """
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return proc.returncode, out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the chosen benchmarks, merges their documents, prints the table or the document."""
    args = parse_args(argv)
    reason = netns.unavailable_reason()
    if reason is not None:
        print(f"bench: the benchmarks need network namespaces: {reason}", file=sys.stderr)
        return 2
    known = [b.name for b in BENCHES]
    wanted = known if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        print(f"bench: unknown benchmark {', '.join(unknown)}; known: {', '.join(known)}",
              file=sys.stderr)  # fmt: skip
        return 2
    prefix = args.prefix or netns.new_prefix()
    doc = merged_document(prefix, bool(args.quick))
    install_sigterm()
    for bench in BENCHES:
        if bench.name not in wanted:
            continue
        argv_ = [sys.executable, "-m", bench.module, "--prefix", f"{prefix}{bench.name[:2]}-"]
        if args.quick:
            argv_.append("--quick")
        say(f"{bench.name}: {' '.join(argv_[1:])}")
        start = time.monotonic()
        status, out = run_benchmark(argv_)
        merge(doc, bench.name, status, out, time.monotonic() - start)
    table = markdown_table(doc)
    if args.table is not None:
        args.table.write_text(table, encoding="utf-8")
        say(f"performance table written to {args.table}")
    if args.json:
        emit(doc)
    else:
        print(table, end="")
    return 1 if doc["failed"] else 0


def merged_document(prefix: str, quick: bool) -> dict[str, Any]:
    """The merged document before any benchmark ran: the run's facts, nothing failed."""
    return {
        "benchmark": "all",
        "quick": quick,
        "netns_prefix": prefix,
        "machine": {"kernel": os.uname().release, "cpus": os.cpu_count() or 1},
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "failed": {},
        "seconds": {},
    }


def merge(doc: dict[str, Any], name: str, status: int, out: str, seconds: float) -> None:
    """One benchmark's run into the merged document: its own under its name, or failed."""
    doc["seconds"][name] = round(seconds, 1)
    if status != 0:
        doc["failed"][name] = f"exit status {status}"
        say(f"{name}: FAILED (exit status {status})")
        return
    try:
        doc[name] = json.loads(out)
    except ValueError as exc:
        doc["failed"][name] = f"not one JSON document on stdout: {exc}"
        say(f"{name}: FAILED (its output is not JSON)")


def say(message: str) -> None:
    """One progress line on stderr."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
