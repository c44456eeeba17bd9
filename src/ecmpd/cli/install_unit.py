"""`ecmpd install-unit`: write the systemd unit, pointing at this installation of ecmpd."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib import resources
from pathlib import Path

from ecmpd.cli.common import DEFAULT_CONFIG, EXIT_CONFIG, EXIT_OK, CommandError

DAEMON_UNIT = "ecmpd.service"
ONESHOT_UNIT = "ecmpd-apply.service"
DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
# What the shipped units call ecmpd by; replaced with the installed path.
TEMPLATE_EXE = "/usr/local/bin/ecmpd"
# ProtectHome=yes hides these: an ecmpd installed below them would not start.
HOME_DIRS = (Path("/home"), Path("/root"), Path("/run/user"))
# PrivateTmp=yes gives the service empty ones of these: an ecmpd (or a config) below
# them is not there at run time, and would not outlive a reboot's clean-up anyway.
TMP_DIRS = (Path("/tmp"), Path("/var/tmp"))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("install-unit", help="write the systemd unit for this ecmpd")
    p.add_argument(
        "--dir",
        type=Path,
        default=DEFAULT_UNIT_DIR,
        help="where to write it (default %(default)s)",
    )
    p.add_argument(
        "--oneshot",
        action="store_true",
        help=f"{ONESHOT_UNIT}: apply at boot, down at stop, no daemon",
    )
    p.add_argument("--print", action="store_true", help="print the unit instead of writing it")
    p.set_defaults(func=run)


def template(name: str) -> str:
    """A unit file as shipped in the package."""
    return resources.files("ecmpd").joinpath("systemd", name).read_text(encoding="utf-8")


def ecmpd_command() -> list[str]:
    """How to start this ecmpd from a unit: its console script, else this Python with -m."""
    # Not shutil.which("ecmpd"): PATH may hold another installation than the one
    # running; the script being run, or the one beside this interpreter, is this one.
    candidates = [Path(sys.executable).parent / "ecmpd"]
    argv0 = Path(sys.argv[0])
    if argv0.name == "ecmpd":
        candidates.insert(0, argv0)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            # Absolute, but not resolved: a venv's python is a symlink that must stay
            # one (the venv is found from the link's own location).
            return [os.path.abspath(candidate)]
    return [os.path.abspath(sys.executable), "-m", "ecmpd"]


def render(name: str, command: list[str], config: str | None = None) -> str:
    """The unit text with ExecStart/ExecStop/ExecReload running `command` (and -c config)."""
    prefix = shlex.join(command)
    if config is not None:
        prefix += " -c " + shlex.quote(config)
    lines = []
    for line in template(name).splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("Exec") and value.startswith(TEMPLATE_EXE + " "):
            line = f"{key}={prefix}{value[len(TEMPLATE_EXE) :]}"
        elif line == "ProtectHome=yes" and _under_home(command[0]):
            # Unit files have no trailing comments: the reason goes on a line of its own.
            lines.append("# ecmpd is installed below a home directory, which must stay visible")
            line = "ProtectHome=read-only"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _installation(executable: str) -> tuple[Path, ...]:
    """The paths a unit starting `executable` needs: it, its Python and the ecmpd package."""
    package = Path(__file__).resolve().parent.parent
    # The console script's interpreter is this one (pip wrote its shebang from it),
    # and a venv's python is often a link into a home (pyenv, uv).
    python = Path(sys.executable).resolve()
    return (Path(executable), Path(executable).resolve(), python, package)


def _below(paths: tuple[Path, ...], dirs: tuple[Path, ...]) -> list[Path]:
    """The paths that lie below one of dirs."""
    return [p for p in paths if any(p.is_relative_to(d) for d in dirs)]


def _under_home(executable: str) -> bool:
    """Whether ProtectHome=yes would hide the executable, its Python or the ecmpd package."""
    return bool(_below(_installation(executable), HOME_DIRS))


def hidden_by_private_tmp(command: list[str], config: str | None) -> list[Path]:
    """What PrivateTmp=yes would hide from the unit: installation paths, the config."""
    paths = _installation(command[0])
    if config is not None:
        paths += (Path(config), Path(config).resolve())
    return list(dict.fromkeys(_below(paths, TMP_DIRS)))


def run(args: argparse.Namespace) -> int:
    name = ONESHOT_UNIT if args.oneshot else DAEMON_UNIT
    # A config other than the default is baked in: systemd does not see this shell's
    # $ECMPD_CONFIG.
    config = None if args.config == DEFAULT_CONFIG else os.path.abspath(args.config)
    command = ecmpd_command()
    text = render(name, command, config)
    hidden = hidden_by_private_tmp(command, config)
    if hidden:
        why = (
            f"{', '.join(map(str, hidden))}: below /tmp, which the unit's PrivateTmp=yes hides"
            " (and a reboot may clear): install ecmpd and its config elsewhere"
        )
        if not args.print:
            raise CommandError(why, EXIT_CONFIG)
        print(f"ecmpd: warning: {why}", file=sys.stderr)
    if args.print:
        sys.stdout.write(text)
        return EXIT_OK
    target = args.dir / name
    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o644)
        tmp.replace(target)  # a half-written unit is never seen by systemd
    except OSError as err:
        raise CommandError(f"{target}: {err.strerror or err}", EXIT_CONFIG) from err
    unit = name.removesuffix(".service")
    print(f"wrote {target}")
    print(f"next: systemctl daemon-reload && systemctl enable --now {unit}")
    return EXIT_OK
