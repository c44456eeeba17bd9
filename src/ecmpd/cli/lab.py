"""`ecmpd lab up|down|demo`: the network-namespace lab, and the demo that runs in it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
from pathlib import Path

from rich.console import Console

from ecmpd.cli.common import EXIT_OK, CommandError, print_json
from ecmpd.lab import netns
from ecmpd.lab.demo import render, run_demo
from ecmpd.lab.topology import build_lab, destroy_lab, load_lab

DEFAULT_LAB_DIR = os.environ.get("ECMPD_LAB_DIR", "/run/ecmpd-lab")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("lab", help="network-namespace lab with simulated ISPs, and the demo")
    labsub = p.add_subparsers(dest="lab_command", required=True, metavar="up|down|demo")
    up = labsub.add_parser("up", help="build a lab and leave it running")
    up.add_argument("--dir", type=Path, default=Path(DEFAULT_LAB_DIR), help="lab state dir")
    up.add_argument("--isps", type=int, default=3)
    up.add_argument("--lan", action="store_true", help="add a LAN namespace behind the router")
    up.add_argument("--json", action="store_true")
    up.set_defaults(func=lab_up)
    down = labsub.add_parser("down", help="remove the lab built by `lab up`")
    down.add_argument("--dir", type=Path, default=Path(DEFAULT_LAB_DIR))
    down.set_defaults(func=lab_down)
    demo = labsub.add_parser("demo", help="build a lab, apply ecmpd, show the weighted split")
    demo.add_argument("--flows", type=int, default=10000, help="flows to look up")
    demo.add_argument("--connections", type=int, default=600, help="real TCP connections")
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=lab_demo)


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


def lab_demo(args: argparse.Namespace) -> int:
    _need_netns()
    console = Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="ecmpd-demo-") as tmp:
        result = run_demo(
            Path(tmp), flows=args.flows, connections=args.connections, console=console
        )
    if args.json:
        print_json(dataclasses.asdict(result))
    else:
        render(result, Console())
    return EXIT_OK
