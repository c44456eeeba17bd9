"""`ecmpd export --format ip|netplan|networkd|routeros`: the same policy for another system."""

from __future__ import annotations

import argparse
from pathlib import Path

from ecmpd.cli.common import EXIT_OK, CommandError, load, session
from ecmpd.config import Config
from ecmpd.export.render import FORMATS, config_facts, join, render_files, write
from ecmpd.facts import KernelFacts

LIVE_NOTE = "# Kernel facts: read from this host at export time (addresses, DHCP gateways)."
OFFLINE_NOTE = (
    "# Kernel facts: none ({reason}).\n"
    "# Source addresses come from the config alone; no DHCP gateway or prefix is known."
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="the same policy for another system, on stdout")
    p.add_argument("--format", required=True, choices=FORMATS, help="target system")
    p.add_argument("--output-dir", type=Path, help="write the file(s) into this directory instead")
    p.add_argument(
        "--offline",
        action="store_true",
        help="render from the config alone, without reading this kernel (for another machine)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, facts, note = inputs(args)
    rendered = render_files(args.format, config, facts)
    files = {name: f"{note}\n{text}" for name, text in rendered.items()}
    if args.output_dir is None:
        print(join(files), end="")
        return EXIT_OK
    try:
        for path in write(files, args.output_dir):
            print(path)
    except OSError as err:
        raise CommandError(f"{args.output_dir}: {err.strerror}", 1) from err
    return EXIT_OK


def inputs(args: argparse.Namespace) -> tuple[Config, KernelFacts, str]:
    """The config and the facts to render from, with a comment saying where they came from."""
    if args.offline:
        config = load(args)
        return config, config_facts(config), OFFLINE_NOTE.format(reason="--offline")
    try:
        with session(args, check=False) as s:
            return s.config, s.facts, LIVE_NOTE
    except CommandError:
        raise  # the config itself is wrong: that is the user's to fix, not a fallback
    except Exception as err:
        # No netlink here (a container, another OS, no permission): any of these means
        # exporting from the config alone, said so in the output.
        config = load(args)
        reason = f"cannot read the kernel: {err}".replace("\n", " ")
        return config, config_facts(config), OFFLINE_NOTE.format(reason=reason)
