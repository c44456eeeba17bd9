"""`ecmpd lab up|down|demo|bench`: the network-namespace lab, its demo and the benchmarks."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ecmpd.cli.common import EXIT_OK, CommandError, print_json
from ecmpd.lab import netns
from ecmpd.lab.demo import (
    DEFAULT_DURATION_S,
    FLOWS,
    DemoError,
    DemoOptions,
    render_summary,
    run_demo,
)
from ecmpd.lab.topology import build_lab, destroy_lab, load_lab
from ecmpd.live import LiveView, Snapshot

DEFAULT_LAB_DIR = os.environ.get("ECMPD_LAB_DIR", "/run/ecmpd-lab")
# (key in the merged document, script under bench/), in the order they run.
BENCHES = (
    ("apply", "apply_bench.py"),
    ("failover", "failover_bench.py"),
    ("flows", "flows_bench.py"),
    ("table", "table_bench.py"),
)
# A benchmark told to stop (Ctrl-C, SIGTERM) removes its namespaces first: give it time.
BENCH_STOP_GRACE_S = 60.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="network-namespace lab with simulated ISPs, and the demo")
    labsub = p.add_subparsers(dest="lab_command", required=True, metavar="up|down|demo|bench")
    up = labsub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--dir", type=Path, default=Path(DEFAULT_LAB_DIR), help="lab state dir")
    up.add_argument("--isps", type=int, default=3)
    up.add_argument("--lan", action="store_true", help="add a LAN namespace behind the router")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=lab_up)
    down = labsub.add_parser("down", help="remove the lab built by `lab up`")
    down.add_argument("--dir", type=Path, default=Path(DEFAULT_LAB_DIR))
    down.set_defaults(func=lab_down)
    demo = labsub.add_parser(
        "demo", help="ecmpd under real traffic: a gray failure, the failover, the recovery"
    )
    demo.add_argument(
        "--duration",
        type=_positive,
        default=DEFAULT_DURATION_S,
        metavar="S",
        help="seconds of traffic, split steady/failure/recovery 30/30/40%% "
        "(phases stretch until their events happened; default %(default)g)",
    )
    demo.add_argument("--no-live", action="store_true", help="progress lines, no live view")
    demo.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    demo.add_argument(
        "--plot", type=Path, metavar="FILE", help="timeline of the run (.png or .svg; matplotlib)"
    )
    demo.add_argument("--fail", metavar="ISP", help="the ISP to fail (default: the heaviest)")
    demo.add_argument("--flows", type=int, default=FLOWS, help="concurrent TCP flows")
    demo.add_argument("--prefix", help="namespace name prefix (default: a fresh ecmpd-xxxx-)")
    demo.add_argument("--seed", type=int, default=1, help="flow lifetimes")
    demo.set_defaults(func=lab_demo)
    bench = labsub.add_parser(
        "bench", help="every benchmark in one run, merged into one JSON document"
    )
    bench.add_argument("--quick", action="store_true", help="each benchmark's short mode")
    bench.add_argument("--json", action="store_true", help="the merged document on stdout")
    bench.add_argument(
        "--table", type=Path, metavar="FILE", help="also write the README's performance table"
    )
    bench.add_argument(
        "--only",
        metavar="NAMES",
        help=f"comma-separated subset of {','.join(name for name, _ in BENCHES)}",
    )
    bench.add_argument("--bench-dir", type=Path, help="where the bench scripts are")
    bench.add_argument("--prefix", help="namespace name prefix handed to each benchmark")
    bench.set_defaults(func=lab_bench)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _need_netns() -> None:
    reason = netns.unavailable_reason()
    if reason:
        raise CommandError(f"the lab needs network namespaces: {reason}", 1)


def lab_up(args: argparse.Namespace) -> int:
    _need_netns()
    if (args.dir / "lab.json").exists():
        raise CommandError(f"{args.dir}: a lab is already up there (ecmpd lab down first)", 1)
    lab = build_lab(workdir=args.dir, isps=args.isps, lan=args.lan)
    if args.json:
        print_json(
            {"namespaces": lab.namespaces(), "router": lab.router, "config": str(lab.config_path)}
        )
        return EXIT_OK
    print(f"lab up: {' '.join(lab.namespaces())}")
    print(f"config: {lab.config_path}")
    print("try:")
    print(f"  ip netns exec {lab.router} ecmpd -c {lab.config_path} --run-dir {args.dir}/run apply")
    print(
        f"  ip netns exec {lab.router} ecmpd -c {lab.config_path} "
        f"--run-dir {args.dir}/run explain {lab.servers[0]} --proto tcp --dport 443"
    )
    print(f"  ecmpd lab down --dir {args.dir}")
    return EXIT_OK


def lab_down(args: argparse.Namespace) -> int:
    state = args.dir / "lab.json"
    if not state.exists():
        print(f"no lab in {args.dir}")
        return EXIT_OK
    lab = load_lab(state)
    destroy_lab(lab)
    state.unlink()
    print(f"lab down: removed {' '.join(lab.namespaces())}")
    return EXIT_OK


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so `kill` cleans up as Ctrl-C does."""

    def handler(signum: int, frame: types.FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def lab_demo(args: argparse.Namespace) -> int:
    _need_netns()
    if args.plot is not None:
        from ecmpd.lab.plot import PlotUnavailable, check_plot

        try:
            check_plot(args.plot)  # before the lab: a missing matplotlib is known up front
        except PlotUnavailable as exc:
            raise CommandError(str(exc), 1) from exc
    err = Console(stderr=True, highlight=False)

    def progress(message: str) -> None:
        err.print(f"[dim]\\[demo][/] {message}", markup=True, soft_wrap=True)

    live: Callable[[Callable[[], Snapshot]], contextlib.AbstractContextManager[Any]] | None = None
    if not args.no_live and err.is_terminal:
        live = lambda snapshot: LiveView(err, snapshot)  # noqa: E731
    options = DemoOptions(
        duration_s=args.duration,
        fail=args.fail,
        flows=args.flows,
        prefix=args.prefix,
        seed=args.seed,
    )
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="ecmpd-demo-") as tmp:
        try:
            result = run_demo(Path(tmp), options, progress=progress, live=live)
        except DemoError as exc:
            raise CommandError(f"demo: {exc}", 1) from exc
        except KeyboardInterrupt:
            # run_demo's exits have run by now: the daemon is stopped, the lab removed.
            progress("interrupted: traffic and daemon stopped, lab removed")
            raise
    if args.plot is not None:
        from ecmpd.lab.plot import plot_timeline

        plot_timeline(result, args.plot)
        progress(f"timeline written to {args.plot}")
    if args.json:
        print_json(result)
    else:
        Console().print(render_summary(result))
    return EXIT_OK


# --- lab bench ------------------------------------------------------------------------


def find_bench_dir(explicit: Path | None = None) -> Path | None:
    """The repository's bench/ directory: given, beside the package's source tree, or ./bench."""
    candidates = [explicit] if explicit is not None else []
    # src/ecmpd/cli/lab.py -> the repository root is three levels above the package.
    candidates += [Path(__file__).resolve().parents[3] / "bench", Path.cwd() / "bench"]
    for path in candidates:
        if path is not None and (path / "common.py").is_file():
            return path
    return None


def run_bench_script(argv: Sequence[str], cwd: Path) -> tuple[int, str]:
    """Runs one benchmark (stderr passes through); returns (exit status, stdout).

    Not subprocess.run: on Ctrl-C it kills the child after a quarter second, before the
    benchmark could remove its namespaces. Here the child gets SIGTERM (which the scripts
    turn into their own clean-up) and time to finish it.
    """
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = proc.communicate()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(BENCH_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return proc.returncode, out


def _accepts(script: Path, option: str, cwd: Path) -> bool:
    """Whether a benchmark script's --help mentions an option."""
    done = subprocess.run(
        [sys.executable, str(script), "--help"], cwd=cwd, capture_output=True, text=True
    )
    return done.returncode == 0 and option in done.stdout


def lab_bench(args: argparse.Namespace) -> int:
    _need_netns()
    bench_dir = find_bench_dir(args.bench_dir)
    if bench_dir is None:
        raise CommandError(
            "no bench/ directory found (run from the repository, or give --bench-dir)", 1
        )
    known = [name for name, _ in BENCHES]
    wanted = known if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise CommandError(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(known)}", 1)
    prefix = args.prefix or netns.new_prefix()
    doc: dict[str, Any] = {
        "benchmark": "all",
        "quick": bool(args.quick),
        "netns_prefix": prefix,
        "machine": {"kernel": os.uname().release, "cpus": os.cpu_count() or 1},
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
        "missing": [],
        "failed": {},
        "seconds": {},
    }
    with sigterm_as_interrupt():
        for name, script in BENCHES:
            if name not in wanted:
                continue
            path = bench_dir / script
            if not path.is_file():
                doc["missing"].append(name)
                _say(f"{name}: {path} is missing, skipped")
                continue
            argv = [sys.executable, str(path)]
            if args.quick:
                argv.append("--quick")
            if _accepts(path, "--prefix", bench_dir.parent):
                argv += ["--prefix", f"{prefix}{name[:2]}-"]
            _say(f"{name}: {' '.join(argv[1:])}")
            start = time.monotonic()
            status, out = run_bench_script(argv, bench_dir.parent)
            doc["seconds"][name] = round(time.monotonic() - start, 1)
            if status != 0:
                doc["failed"][name] = f"exit status {status}"
                _say(f"{name}: FAILED (exit status {status})")
                continue
            try:
                doc[name] = json.loads(out)
            except ValueError as exc:
                doc["failed"][name] = f"not one JSON document on stdout: {exc}"
                _say(f"{name}: FAILED (its output is not JSON)")
    table = markdown_table(doc)
    if args.table is not None:
        args.table.write_text(table, encoding="utf-8")
        _say(f"performance table written to {args.table}")
    if args.json:
        print_json(doc)
    else:
        print(table, end="")
    return 1 if doc["failed"] else EXIT_OK


def _say(message: str) -> None:
    print(f"[lab bench] {message}", file=sys.stderr, flush=True)


# --- the README's performance table -----------------------------------------------------

Row = tuple[str, str, str, str]  # what, ecmpd, anchor (same run), target
TIMES = "\N{MULTIPLICATION SIGN}"


def markdown_table(doc: dict[str, Any]) -> str:
    """The README's performance table (markdown) from a merged `lab bench` document.

    Each row sets ecmpd beside the anchor measured in the same run on the same machine,
    so the comparison holds where the machine's absolute speed does not.
    """
    rows: list[Row] = []
    if "apply" in doc:
        rows += _apply_rows(doc["apply"])
    if "failover" in doc:
        rows += _failover_rows(doc["failover"])
    if "flows" in doc:
        rows += _flows_rows(doc["flows"])
    if "table" in doc:
        rows += _table_rows(doc["table"])
    for name in doc.get("missing", []):
        rows.append((f"`{name}` benchmark", "not run: its script is missing", "", ""))
    for name, why in doc.get("failed", {}).items():
        rows.append((f"`{name}` benchmark", f"failed: {why}", "", ""))
    machine = doc.get("machine", {})
    load = ", ".join(str(x) for x in doc.get("loadavg_at_start", []))
    lines = [
        f"Measured by `ecmpd lab bench{' --quick' if doc.get('quick') else ''}` on Linux "
        f"{machine.get('kernel', '?')}, {machine.get('cpus', '?')} CPUs (load average {load} "
        "at the start); every anchor ran in the same run. ✓/✗: target met or not.",
        "",
        "| what | ecmpd | anchor (same run) | target |",
        "|---|---|---|---|",
        *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def _fmt(value: Any, unit: str = "", digits: int = 2) -> str:
    """A figure for the table: '-' when missing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _times(value: Any) -> str:
    """A ratio as 'N' and the multiplication sign, two significant figures at most."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"{value:.2g}{TIMES}" if value < 10 else f"{value:.0f}{TIMES}"


def _get(doc: Any, *path: str | int) -> Any:
    """doc[path0][path1]..., None where any step is missing."""
    for key in path:
        try:
            doc = doc[key]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _met(doc: dict[str, Any], *keys: str) -> str:
    marks = []
    for key in keys:
        met = _get(doc, "met", key)
        if met is not None:
            marks.append("✓" if met else "✗")
    return f" {''.join(marks)}" if marks else ""


def _table_rows(doc: dict[str, Any]) -> list[Row]:
    routes = doc.get("routes")
    full, empty = doc.get("full_table") or {}, doc.get("empty_table") or {}
    return [
        (
            f"kernel read (observe) with {routes} BGP routes in main (`table_bench.py`)",
            f"{_fmt(_get(full, 'observe_ms', 'median'), ' ms')} "
            f"(empty table: {_fmt(_get(empty, 'observe_ms', 'median'), ' ms')})",
            "one unfiltered route dump: "
            f"{_fmt(_get(full, 'anchor_unfiltered_dump_ms', 'median'), ' ms')} "
            f"(ecmpd takes {_times(doc.get('ratio_observe_vs_unfiltered_dump'))})",
            "-",
        ),
        (
            f"carrier loss to uplink out of the group, {routes} routes in main",
            f"{_fmt(_get(full, 'carrier_path_ms', 'median'), ' ms')} "
            f"(empty table: {_fmt(_get(empty, 'carrier_path_ms', 'median'), ' ms')})",
            "-",
            "-",
        ),
    ]


def _apply_rows(doc: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    results = doc.get("results") or []
    for r in results:
        n = r.get("uplinks")
        rows.append(
            (
                f"`apply` of {n} uplinks from scratch (median; `apply_bench.py`)",
                f"{_fmt(_get(r, 'apply_ms', 'median'), ' ms')} ({r.get('apply_ops')} ops)",
                f"`ip -batch` of the same commands: {_fmt(r.get('anchor_ip_batch_ms'), ' ms')} "
                f"(ecmpd takes {_times(r.get('ratio_apply_vs_ip_batch'))})",
                f"≤ {_get(doc, 'targets', 'apply_64_ms')} ms at 64" + _met(doc, "apply_64_ms")
                if n == 64
                else "",
            )
        )
    if results:
        last = results[-1]
        rows.append(
            (
                f"re-apply, {last.get('uplinks')} uplinks",
                f"{_fmt(_get(last, 'reapply_ms', 'median'), ' ms')}, {last.get('reapply_ops')} ops",
                "-",
                "0 changes",
            )
        )
        worst = max(results, key=lambda r: _get(r, "failover_ms", "median") or 0)
        rows.append(
            (
                f"failover operation (one group replace), {worst.get('uplinks')} uplinks",
                f"{_fmt(_get(worst, 'failover_ms', 'median'), ' ms', 3)} median, "
                f"{_fmt(_get(worst, 'failover_ms', 'max'), ' ms', 3)} max",
                "classic multipath `ip route replace`: "
                f"{_fmt(worst.get('anchor_multipath_replace_ms'), ' ms', 3)} "
                f"(ecmpd takes {_times(worst.get('ratio_failover_vs_multipath_replace'))})",
                f"≤ {_get(doc, 'targets', 'failover_ms')} ms" + _met(doc, "failover_ms"),
            )
        )
    return rows


def _failover_rows(doc: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    cron = _get(doc, "anchor_cron", "modelled_restore_s") or {}
    period = _get(doc, "anchor_cron", "period_s")
    for name, target_key in (("default", "restore_default_s"), ("tuned", "restore_tuned_s")):
        udp = _get(doc, name, "restore_udp_s") or {}
        check = _get(doc, name, "check") or {}
        how = (
            f"{_fmt(check.get('interval_s'), ' s', 3)} / {_fmt(check.get('timeout_s'), ' s', 3)}"
            f" {TIMES} {check.get('down_after')}"
            if check
            else name
        )
        ratio = _get(doc, "ratios", f"{name}_vs_cron_median")
        rows.append(
            (
                f"traffic restored after a gray failure, {name} check ({how}; "
                f"{_get(doc, 'runs')} runs, `failover_bench.py`)",
                f"{_fmt(udp.get('median'), ' s')} median, {_fmt(udp.get('max'), ' s')} worst",
                f"cron ping every {_fmt(period, ' s', 0)}: {_fmt(cron.get('median'), ' s', 1)} "
                f"median, {_fmt(cron.get('max'), ' s', 1)} worst"
                + (
                    f" (≈{1 / ratio:.0f}{TIMES} slower)"
                    if isinstance(ratio, float) and ratio
                    else ""
                ),
                f"≤ {_fmt(_get(doc, 'targets', target_key), ' s')}" + _met(doc, target_key),
            )
        )
    rows += _ipv6_rows(doc)
    carrier = _get(doc, "default", "carrier_removal_ms") or {}
    rows.append(
        (
            "carrier loss → uplink out of the group",
            f"{_fmt(carrier.get('median'), ' ms', 1)} median, "
            f"{_fmt(carrier.get('max'), ' ms', 1)} worst",
            "-",
            "",
        )
    )
    loss = doc.get("false_transitions") or {}
    anchor = loss.get("anchor_cron") or {}
    rows.append(
        (
            f"false failovers, {_fmt(loss.get('duration_s'), ' s', 0)} of "
            f"{_fmt(100 * (loss.get('loss') or 0), '%', 0)} random loss on every ISP",
            _fmt(loss.get("count")),
            f"cron monitor: {_fmt(anchor.get('false_removals'))} wrong removal(s) in "
            f"{_fmt(anchor.get('ticks'))} ticks",
            f"{_fmt(_get(doc, 'targets', 'false_transitions'))}" + _met(doc, "false_transitions"),
        )
    )
    cost = doc.get("daemon_cost") or {}
    rows.append(
        (
            f"daemon cost, {cost.get('uplinks')} uplinks {TIMES} {cost.get('targets')} targets at "
            f"{_fmt(cost.get('rate_hz'), ' Hz', 0)}",
            f"{_fmt(cost.get('cpu_percent'), '% of a core')}, {_fmt(cost.get('rss_mb'), ' MB', 0)}"
            " RSS",
            "-",
            f"≤ {_fmt(_get(doc, 'targets', 'cpu_percent'), '%', 0)}, "
            f"≤ {_fmt(_get(doc, 'targets', 'rss_mb'), ' MB', 0)}"
            + _met(doc, "cpu_percent", "rss_mb"),
        )
    )
    return rows


def _ipv6_rows(doc: dict[str, Any]) -> list[Row]:
    """The dual-stack lab's row: IPv6 out of / back in its group, beside IPv4 in the same lab."""
    dual = doc.get("ipv6")
    if not isinstance(dual, dict):
        return []  # a document from before the IPv6 phase

    def pair(family: str, stat: str) -> str:
        removal = _get(dual, f"{family}_removal_s", stat)
        return f"{_fmt(removal, ' s')} / {_fmt(_get(dual, f'{family}_recovery_s', stat), ' s')}"

    # During the IPv6 faults, the IPv4 group must keep every uplink.
    changed = _get(dual, "other_family_changes", "ipv6")
    untouched = ""
    if changed == 0:
        untouched = "; IPv4 group untouched"
    elif changed is not None:
        untouched = f"; IPv4 group changed in {changed} run(s)"
    ratios = [_get(doc, "ratios", f"ipv6_vs_ipv4_{k}_median") for k in ("removal", "recovery")]
    return [
        (
            "IPv6 gray failure: out of the IPv6 group / back (default check, worst case "
            f"{_fmt(dual.get('detection_bound_s'), ' s')} / "
            f"{_fmt(dual.get('recovery_bound_s'), ' s')}; "
            f"{_fmt(_get(dual, 'ipv6_removal_s', 'n'))} runs)",
            f"{pair('ipv6', 'median')} median, {pair('ipv6', 'max')} worst{untouched}",
            f"IPv4 gray failure, same lab: {pair('ipv4', 'median')} median, "
            f"{pair('ipv4', 'max')} worst (IPv6 takes {' / '.join(_times(r) for r in ratios)})",
            f"≤ {_fmt(_get(doc, 'targets', 'ipv6_detection_s'), ' s')} / "
            f"≤ {_fmt(_get(doc, 'targets', 'ipv6_recovery_s'), ' s')}"
            + _met(doc, "ipv6_detection_s", "ipv6_recovery_s"),
        )
    ]


def _flows_rows(doc: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    lookups = doc.get("moved_lookups") or {}
    ours = _get(lookups, "variants", "ecmpd_resilient") or {}
    anchor = _get(lookups, "variants", "anchor_multipath_route") or {}
    if ours:
        rows.append(
            (
                f"healthy flows moved when an uplink fails ({lookups.get('flows')} flows by "
                "kernel lookup, `flows_bench.py`)",
                f"{_fmt(_get(ours, 'failure', 'healthy_moved'))} "
                f"({_pct(_get(ours, 'failure', 'healthy_moved_fraction'))})",
                f"classic multipath route: {_fmt(_get(anchor, 'failure', 'healthy_moved'))} "
                f"({_pct(_get(anchor, 'failure', 'healthy_moved_fraction'))})",
                "0" + _met(doc, "healthy_moved_on_failure"),
            )
        )
        rows.append(
            (
                "flows moved when it comes back",
                f"{_fmt(_get(ours, 'recovery', 'moved'))} "
                f"({_pct(_get(ours, 'recovery', 'moved_fraction'))})",
                f"classic multipath route: {_fmt(_get(anchor, 'recovery', 'moved'))} "
                f"({_pct(_get(anchor, 'recovery', 'moved_fraction'))})",
                "0" + _met(doc, "moved_on_recovery"),
            )
        )
    tcp = doc.get("moved_tcp") or {}
    ours_t = _get(tcp, "variants", "ecmpd_resilient") or {}
    anchor_t = _get(tcp, "variants", "anchor_multipath_route") or {}
    if ours_t:
        rows.append(
            (
                f"healthy NATed TCP connections broken by a failure / a recovery "
                f"({tcp.get('connections')} connections)",
                f"{_fmt(_get(ours_t, 'failure', 'healthy_broken'))} / "
                f"{_fmt(_get(ours_t, 'recovery', 'broken'))}",
                f"classic multipath route: {_fmt(_get(anchor_t, 'failure', 'healthy_broken'))} / "
                f"{_fmt(_get(anchor_t, 'recovery', 'broken'))}",
                "0 / 0",
            )
        )
    share = doc.get("recovered_share") or {}
    runs = share.get("runs") or []
    if runs:
        timers = "; ".join(
            f"{_fmt(r.get('t_share_s'), ' s', 1)} with a {r.get('idle_timer_s')} s idle timer "
            f"(load {r.get('load')})"
            for r in runs
        )
        default = share.get("extrapolated_default") or {}
        rows.append(
            (
                "a recovered uplink back to its weighted share of new flows",
                f"{timers}; at the default {share.get('default_idle_timer_s')} s "
                f"≈{_fmt(default.get('load_stops_t_share_s'), ' s', 0)} (extrapolated)",
                "-",
                "",
            )
        )
    for key, good in (doc.get("goodput") or {}).items():
        if not isinstance(good, dict):  # e.g. the unshaped ceiling figure of a full run
            continue
        ours_g, single = good.get("ecmpd") or {}, good.get("anchor_single_route") or {}
        rows.append(
            (
                f"bulk TCP goodput through NAT, {key.replace('_', ' ')} "
                f"({'+'.join(str(r) for r in good.get('rates_mbit', []))} Mbit/s)",
                f"{_fmt(ours_g.get('mbit'), ' Mbit/s', 0)} "
                f"({_pct(ours_g.get('fraction'))} of the sum)",
                f"a single default route: {_fmt(single.get('mbit'), ' Mbit/s', 0)} "
                f"(ecmpd carries {_times(good.get('ratio_vs_anchor'))})",
                f"≥ {_pct(_get(doc, 'targets', 'goodput_fraction'))} of the sum"
                + _met(doc, "goodput_fraction"),
            )
        )
    return rows


def _pct(value: Any) -> str:
    return f"{value:.0%}" if isinstance(value, int | float) else "-"
