"""`ecmpd lab up|down|demo`: the network-namespace lab and its demo (benchmarks: `./dev bench`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import tempfile
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from rich.console import Console

from ecmpd.cli.common import EXIT_OK, CommandError, print_json
from ecmpd.lab import netns
from ecmpd.lab.demo import DEFAULT_DURATION_S, FLOWS, DemoOptions, run_demo
from ecmpd.lab.demoparts import DemoError
from ecmpd.lab.edgedemo import DEFAULT_DURATION_S as EDGE_DURATION_S
from ecmpd.lab.edgedemo import EdgeDemoOptions, run_edge_demo
from ecmpd.lab.edgelayout import plan_edge_lab
from ecmpd.lab.edgerun import whole
from ecmpd.lab.edges import EdgeRouters, build_edge_lab, destroy_edge_lab
from ecmpd.lab.edgesummary import render_edge_summary
from ecmpd.lab.edgetraffic import BUSY
from ecmpd.lab.peers.frr import frr_available
from ecmpd.lab.summarytext import render_summary
from ecmpd.lab.topology import build_lab, destroy_lab, load_lab
from ecmpd.live import Snapshot
from ecmpd.liveview import LiveView

DEFAULT_LAB_DIR = os.environ.get("ECMPD_LAB_DIR", "/run/ecmpd-lab")
EDGES_STATE = "edges.json"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="network-namespace lab with simulated ISPs, and the demo")
    labsub = p.add_subparsers(dest="lab_command", required=True, metavar="up|down|demo")
    up = labsub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--dir", type=Path, default=Path(DEFAULT_LAB_DIR), help="lab state dir")
    up.add_argument("--isps", type=int, default=3)
    up.add_argument("--lan", action="store_true", help="add a LAN namespace behind the router")
    up.add_argument(
        "--edges",
        type=int,
        help="the scale-out lab instead: LAN, core, N edges (2 ISPs each) with FRR and ecmpd",
    )
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
        metavar="S",
        help="seconds of traffic, split steady/failure/recovery 30/30/40%% "
        f"(phases stretch until their events happened; default {DEFAULT_DURATION_S:g}, "
        f"with --edges {EDGE_DURATION_S:g})",
    )
    demo.add_argument("--no-live", action="store_true", help="progress lines, no live view")
    demo.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    demo.add_argument(
        "--plot", type=Path, metavar="FILE", help="timeline of the run (.png or .svg; matplotlib)"
    )
    demo.add_argument(
        "--fail",
        metavar="ISP",
        help="the ISP to fail (default: the heaviest); with --edges, the edge (default edge1)",
    )
    demo.add_argument(
        "--edges",
        type=int,
        metavar="N",
        help="the scale-out demo: LAN, core, N edges (ecmpd + FRR each, 2 ISPs each): an "
        "edge's ISPs fail and it returns, another forwards nothing",
    )
    demo.add_argument(
        "--flows",
        type=int,
        help=f"concurrent TCP flows (default {FLOWS}; with --edges, busy connections per "
        f"family, default {BUSY})",
    )
    demo.add_argument("--prefix", help="namespace name prefix (default: a fresh ecmpd-xxxx-)")
    demo.add_argument("--seed", type=int, default=1, help="flow lifetimes")
    demo.add_argument(
        "--no-queue",
        action="store_true",
        help="no `queue` on the uplinks: uploads wait in the lab's drop-tail modems",
    )
    demo.set_defaults(func=lab_demo)


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
    if (args.dir / "lab.json").exists() or (args.dir / EDGES_STATE).exists():
        raise CommandError(f"{args.dir}: a lab is already up there (ecmpd lab down first)", 1)
    if args.edges is not None:
        return _edges_up(args)
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


def _edges_up(args: argparse.Namespace) -> int:
    """The scale-out lab, left running: its daemons outlive this command."""
    reason = frr_available()
    if reason is not None:
        raise CommandError(reason, 1)
    try:
        lab = build_edge_lab(args.edges, netns.new_prefix(), args.dir)
    except ValueError as err:
        raise CommandError(str(err), 1) from err
    routers = EdgeRouters(lab)
    try:
        routers.start()
        whole(routers)
    except BaseException:
        routers.stop()
        destroy_edge_lab(lab)
        raise
    state = {
        "prefix": lab.prefix,
        "edges": len(lab.edges),
        "frr_dirs": [str(r.dir) for r in routers.frr.values()],
    }
    (args.dir / EDGES_STATE).write_text(json.dumps(state))
    if args.json:
        print_json({"namespaces": lab.namespaces(), **state})
        return EXIT_OK
    print(f"lab up: {' '.join(lab.namespaces())}")
    for name, router in routers.frr.items():
        print(f"  {name}: vtysh --vty_socket {router.dir}   config {routers.configs[name]}")
    print(f"  ecmpd lab down --dir {args.dir}")
    return EXIT_OK


def _edges_down(args: argparse.Namespace) -> int:
    path = args.dir / EDGES_STATE
    state = json.loads(path.read_text())
    lab = plan_edge_lab(state["edges"], state["prefix"], args.dir)
    destroy_edge_lab(lab)
    for directory in state["frr_dirs"]:
        shutil.rmtree(directory, ignore_errors=True)
    path.unlink()
    print(f"lab down: removed {' '.join(lab.namespaces())}")
    return EXIT_OK


def lab_down(args: argparse.Namespace) -> int:
    if (args.dir / EDGES_STATE).exists():
        return _edges_down(args)
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
    if args.edges is not None and args.plot is not None:
        raise CommandError("--plot draws the single-router demo only (not with --edges)", 1)
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
    run = _edge_demo(args) if args.edges is not None else _router_demo(args)
    with sigterm_as_interrupt(), tempfile.TemporaryDirectory(prefix="ecmpd-demo-") as tmp:
        try:
            result = run(Path(tmp), progress, live)
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
        render = render_edge_summary if args.edges is not None else render_summary
        Console().print(render(result))
    return EXIT_OK


Progress = Callable[[str], None]
Live = Callable[[Callable[[], Snapshot]], contextlib.AbstractContextManager[Any]]
DemoRun = Callable[[Path, Progress, Live | None], dict[str, Any]]


def _router_demo(args: argparse.Namespace) -> DemoRun:
    """The single-router demo, as asked."""
    options = DemoOptions(
        duration_s=args.duration or DEFAULT_DURATION_S,
        fail=args.fail,
        flows=args.flows or FLOWS,
        prefix=args.prefix,
        seed=args.seed,
        queues=not args.no_queue,
    )
    return lambda workdir, progress, live: run_demo(workdir, options, progress=progress, live=live)


def _edge_demo(args: argparse.Namespace) -> DemoRun:
    """The scale-out demo, as asked (--flows: busy connections per family)."""
    options = EdgeDemoOptions(
        edges=args.edges,
        duration_s=args.duration or EDGE_DURATION_S,
        fail=args.fail or "edge1",
        busy=args.flows or BUSY,
        prefix=args.prefix,
    )
    return lambda workdir, progress, live: run_edge_demo(
        workdir, options, progress=progress, live=live
    )
