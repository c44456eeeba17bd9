"""`ecmpd plan`: the operations `apply` would run, as `ip` commands or JSON."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from ecmpd.cli.common import EXIT_OK, print_json, session
from ecmpd.export.iptext import op_command
from ecmpd.plan import Op, diff


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("plan", help="print the operations apply would do")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def op_json(op: Op, restored: Mapping[str, str] | None = None) -> dict[str, Any]:
    """An operation for scripts: kind, object type, the equivalent command, the object."""
    return {
        "op": op.kind.value,
        "type": type(op.obj).__name__,
        "command": op_command(op, restored),
        "object": {k: v for k, v in vars(op.obj).items() if v is not None},
    }


def run(args: argparse.Namespace) -> int:
    with session(args) as s:
        ops = diff(s.desired(), s.observed)
    if args.json:
        print_json({"changes": len(ops), "ops": [op_json(op) for op in ops]})
    elif not ops:
        print("# nothing to do: the kernel matches the config")
    else:
        for op in ops:
            print(op_command(op))
    return EXIT_OK
