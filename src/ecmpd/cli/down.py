"""`ecmpd down`: remove everything ecmpd owns and restore the sysctls it changed."""

from __future__ import annotations

import argparse

from ecmpd.cli.common import EXIT_KERNEL, EXIT_OK, CommandError, print_json, run_lock
from ecmpd.cli.plan import op_json
from ecmpd.export.iptext import op_command
from ecmpd.kernel.apply import ApplyError, KernelWriter, reconcile
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.record import Record
from ecmpd.model import DesiredState


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("down", help="remove everything ecmpd owns, restore sysctls")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # No config needed: ownership is by protocol id and the run-dir record.
    with run_lock(args.run_dir):
        ipr = open_iproute()
        record = Record(args.run_dir)
        restored = record.restorable()  # what `down` writes back (the record empties)
        try:
            result = reconcile(KernelWriter(ipr, record), DesiredState())
        except ApplyError as err:
            raise CommandError(f"down failed: {err}", EXIT_KERNEL) from err
        finally:
            ipr.close()
    if args.json:
        print_json(
            {"changes": len(result.ops), "ops": [op_json(op, restored) for op in result.ops]}
        )
    else:
        for op in result.ops:
            print(op_command(op, restored))
        print(f"# {len(result.ops)} objects removed or restored")
    return EXIT_OK
