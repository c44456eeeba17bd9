"""`ecmpd drain NAME` / `undrain NAME`: maintenance, through the running daemon."""

from __future__ import annotations

import argparse

from ecmpd.cli.common import EXIT_KERNEL, EXIT_OK, CommandError, print_json
from ecmpd.control import DaemonNotRunning, request


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name, doc in (("drain", "take an uplink out of service"), ("undrain", "put it back")):
        p = sub.add_parser(name, help=f"{doc} (through the running daemon)")
        p.add_argument("uplink")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=run, drain_cmd=name)


def run(args: argparse.Namespace) -> int:
    try:
        answer = request(args.run_dir, {"cmd": args.drain_cmd, "uplink": args.uplink})
    except DaemonNotRunning as err:
        raise CommandError(f"{err} (drain needs `ecmpd run`)", EXIT_KERNEL) from err
    if args.json:
        print_json(answer)
    if not answer.get("ok"):
        raise CommandError(str(answer.get("error")), EXIT_KERNEL)
    if not args.json:
        print(f"{args.uplink}: {args.drain_cmd}ed ({answer.get('ops', 0)} kernel changes)")
    return EXIT_OK
