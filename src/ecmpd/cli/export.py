"""`ecmpd export --format ip|netplan|networkd|routeros|frr`: the policy for another system."""

from __future__ import annotations

import argparse
from ipaddress import ip_address
from pathlib import Path

from ecmpd.cli.common import EXIT_OK, CommandError, load, session
from ecmpd.config import Config
from ecmpd.export.frr import FrrOptions
from ecmpd.export.frr import files as frr_files
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
    frr = p.add_argument_group("--format frr (the BGP side ecmpd's config does not hold)")
    frr.add_argument("--bgp-asn", type=_asn, help="this router's AS: writes `router bgp ASN`")
    frr.add_argument(
        "--bgp-neighbor",
        type=ip_address,
        action="append",
        default=[],
        help="a BGP peer (repeat), put in ecmpd's peer group",
    )
    frr.add_argument(
        "--bfd", type=_bfd, default=(100, 3), help="BFD interval (ms) x multiplier, e.g. 100x3"
    )
    p.set_defaults(func=run)


def _asn(text: str) -> int:
    asn = int(text)
    if not 1 <= asn <= 2**32 - 1:
        raise argparse.ArgumentTypeError(f"{text} is not an AS number (1..4294967295)")
    return asn


def _bfd(text: str) -> tuple[int, int]:
    interval, _, multiplier = text.partition("x")
    try:
        pair = int(interval), int(multiplier)
    except ValueError:
        message = f"{text!r}: expected INTERVALxMULTIPLIER, e.g. 100x3"
        raise argparse.ArgumentTypeError(message) from None
    if not (10 <= pair[0] <= 60000 and 2 <= pair[1] <= 255):
        raise argparse.ArgumentTypeError(f"{text!r}: interval 10..60000 ms, multiplier 2..255")
    return pair


def run(args: argparse.Namespace) -> int:
    config, facts, note = inputs(args)
    if args.format == "frr":
        options = FrrOptions(args.bgp_asn, tuple(args.bgp_neighbor), *args.bfd)
        rendered = frr_files(config, facts, options)
        note = note.replace("# ", "! ")
    else:
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
