"""What the commands share: paths, config loading with errors, the kernel pipeline."""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecmpd.config import (
    Config,
    ConfigError,
    ConfigIssue,
    check_against_kernel,
    load_config,
    warnings_against_kernel,
)
from ecmpd.desired import desired_state
from ecmpd.facts import KernelFacts
from ecmpd.kernel.apply import KernelWriter
from ecmpd.kernel.netlink import open_iproute
from ecmpd.kernel.record import Record
from ecmpd.model import DesiredState

DEFAULT_CONFIG = "/etc/ecmpd/ecmpd.yaml"
DEFAULT_RUN_DIR = "/run/ecmpd"

EXIT_OK, EXIT_CONFIG, EXIT_KERNEL = 0, 1, 2


class CommandError(Exception):
    """A failure to report as one line on stderr, with an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def add_global_options(parser: argparse.ArgumentParser) -> None:
    """-c/--config and --run-dir, with the environment defaults of the contract."""
    parser.add_argument(
        "-c",
        "--config",
        default=os.environ.get("ECMPD_CONFIG", DEFAULT_CONFIG),
        help="config file (default $ECMPD_CONFIG or %(default)s)",
    )
    parser.add_argument(
        "--run-dir",
        default=os.environ.get("ECMPD_RUN_DIR", DEFAULT_RUN_DIR),
        type=Path,
        help="control socket and recorded state (default $ECMPD_RUN_DIR or %(default)s)",
    )


def load(args: argparse.Namespace) -> Config:
    """The config, or a CommandError carrying every issue (exit 1)."""
    try:
        return load_config(args.config)
    except ConfigError as err:
        raise CommandError(str(err), EXIT_CONFIG) from err
    except OSError as err:
        raise CommandError(f"{args.config}: {err.strerror}", EXIT_CONFIG) from err


@dataclass
class Session:
    """A config matched against the live kernel: what plan/apply/status work from."""

    config: Config
    writer: KernelWriter
    observed: DesiredState
    facts: KernelFacts
    warnings: tuple[ConfigIssue, ...] = ()  # what the kernel does not have yet

    def desired(self) -> DesiredState:
        """The desired state with every uplink assumed healthy (no daemon yet)."""
        return desired_state(self.config, {}, self.facts)


def kernel_issues(config: Config, facts: KernelFacts) -> list[ConfigIssue]:
    """Conflicts between the config and the kernel's foreign objects."""
    return check_against_kernel(config, facts)


@contextmanager
def session(args: argparse.Namespace, *, check: bool = True) -> Iterator[Session]:
    """Open netlink, observe, and (with `check`) refuse a config that conflicts (exit 1)."""
    config = load(args)
    ipr = open_iproute()
    try:
        writer = KernelWriter.for_config(ipr, Record(args.run_dir), config)
        try:
            observed, facts = writer.observe(config if check else None)
            if check:
                issues = kernel_issues(config, facts)
                if issues:
                    raise CommandError("\n".join(str(i) for i in issues), EXIT_CONFIG)
            # Not there yet (an interface, a lease): said, and the rest goes ahead.
            warnings = tuple(warnings_against_kernel(config, facts)) if check else ()
            for warning in warnings:
                print(warning, file=sys.stderr)
            yield Session(config, writer, observed, facts, warnings)
        finally:
            writer.close()
    finally:
        ipr.close()


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One writer at a time per run dir (two applies racing would interleave plans)."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(run_dir / "lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def print_json(data: Any) -> None:
    """JSON for scripts, on stdout."""
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: a stable event name plus its fields."""

    _skip = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._skip})
        return json.dumps(entry, default=str)


def setup_logging(verbose: bool) -> None:
    """Structured logs on stderr (journald picks them up under systemd)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("ecmpd")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
