"""`ecmpd apply`: make the kernel match the config; roll back on any failure.

All or nothing (kernel/apply.py `reconcile`): a one-shot says with its exit status
whether the kernel took the config (0) or was put back as it was (2). With a daemon
running, the daemon applies instead, under its own policy (ecmpd.refusals: what the
kernel refuses is reported and retried, the rest applied): exit 2 then says some
operations are still refused, `ecmpd status` lists them.
"""

from __future__ import annotations

import argparse

from ecmpd.cli.common import (
    EXIT_CONFIG,
    EXIT_KERNEL,
    EXIT_OK,
    CommandError,
    print_json,
    run_lock,
    session,
)
from ecmpd.cli.plan import op_json
from ecmpd.control import DaemonNotRunning, request
from ecmpd.export.iptext import op_command
from ecmpd.kernel.apply import ApplyError, reconcile


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("apply", help="make the kernel match the config")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # With a daemon running, it knows uplink health better than "all up": let it apply.
    try:
        answer = request(args.run_dir, {"cmd": "reload"})
    except DaemonNotRunning:
        pass
    else:
        if not answer.get("ok"):
            raise CommandError(str(answer.get("error")), EXIT_CONFIG)
        refused = int(answer.get("refused", 0))
        if args.json:
            print_json({"changes": answer.get("ops", 0), "via": "daemon", "refused": refused})
        else:
            print(f"# applied by the running daemon: {answer.get('ops', 0)} changes")
        if refused:
            raise CommandError(
                f"the daemon applied the rest; {refused} operations are refused by the kernel"
                " (it retries them; `ecmpd status` lists them)",
                EXIT_KERNEL,
            )
        return EXIT_OK
    with run_lock(args.run_dir), session(args) as s:
        try:
            # The session observed under the run lock already: no second observe.
            restored = s.writer.record.restorable()  # a sysctl left behind gets these back
            result = reconcile(s.writer, s.desired(), before=s.observed)
        except ApplyError as err:
            raise CommandError(f"apply failed: {err}", EXIT_KERNEL) from err
    if args.json:
        print_json(
            {"changes": len(result.ops), "ops": [op_json(op, restored) for op in result.ops]}
        )
    elif not result.ops:
        print("# already in step: no changes")
    else:
        for op in result.ops:
            print(op_command(op, restored))
        print(f"# {len(result.ops)} changes applied")
    return EXIT_OK
