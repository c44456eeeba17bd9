"""Entry point: global options, one sub-command per module, exit statuses."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ecmpd import __version__
from ecmpd.cli import (
    apply,
    completion,
    down,
    drain,
    explain,
    export,
    install_unit,
    lab,
    plan,
    run,
    status,
    validate,
    watch,
)
from ecmpd.cli.common import CommandError, add_global_options, setup_logging


def build_parser() -> argparse.ArgumentParser:
    """The full command-line parser."""
    parser = argparse.ArgumentParser(
        prog="ecmpd", description="Self-healing multi-path uplinks for Linux."
    )
    parser.add_argument("--version", action="version", version=f"ecmpd {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (
        validate,
        plan,
        apply,
        run,
        status,
        watch,
        explain,
        drain,
        down,
        export,
        install_unit,
        lab,
    ):
        module.register(sub)
    completion.register(sub, parser)  # last: it completes what the others registered
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors go to stderr as one line each, with the contract's status."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        status: int = args.func(args)
    except CommandError as err:
        print(str(err), file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
