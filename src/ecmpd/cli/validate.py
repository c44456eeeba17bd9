"""`ecmpd validate`: check the config (and, unless --offline, against this kernel).

What the kernel only does not have yet (an uplink's interface, its DHCP lease) is a
warning on stderr, `file:line: field: warning: ...`, and the config stays valid.
"""

from __future__ import annotations

import argparse

from ecmpd.cli.common import EXIT_CONFIG, EXIT_OK, CommandError, load, print_json, session


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="check the config; changes nothing")
    p.add_argument("--offline", action="store_true", help="skip the checks against this kernel")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    warnings: list[str] = []
    try:
        if args.offline:
            config = load(args)
        else:
            with session(args) as s:
                config = s.config
                warnings = [str(w) for w in s.warnings]
    except CommandError as err:
        if args.json:
            print_json({"valid": False, "errors": str(err).splitlines()})
            return EXIT_CONFIG
        raise
    if args.json:
        print_json(
            {
                "valid": True,
                "uplinks": len(config.uplinks),
                "rules": len(config.rules),
                "warnings": warnings,
            }
        )
    else:
        print(f"{args.config}: valid ({len(config.uplinks)} uplinks, {len(config.rules)} rules)")
    return EXIT_OK
