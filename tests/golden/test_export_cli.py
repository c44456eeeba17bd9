"""`ecmpd export`: format choice, where the facts come from, stdout or files; and the dispatcher."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, ip_interface
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ecmpd.cli import export
from ecmpd.cli.common import CommandError, add_global_options, load
from ecmpd.config import parse_config
from ecmpd.export import render
from ecmpd.facts import InterfaceFacts, KernelFacts

CONFIG = """\
uplinks:
  - {name: isp-a, interface: wan-a, gateway: 10.1.0.1, source: 10.1.0.2}
  - {name: cable, interface: dhcp0, gateway: dhcp}
"""
LIVE = KernelFacts(
    interfaces={
        "wan-a": InterfaceFacts("wan-a", 2, addresses=(ip_interface("10.1.0.2/24"),)),
        "dhcp0": InterfaceFacts(
            "dhcp0",
            3,
            carrier=False,
            addresses=(ip_interface("10.5.0.77/24"),),
            dhcp_gateway=IPv4Address("10.5.0.1"),
        ),
    }
)


def main(argv: list[str]) -> int:
    """The export command as `ecmpd` runs it (global options, then the sub-command)."""
    parser = argparse.ArgumentParser(prog="ecmpd")
    add_global_options(parser)
    export.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "ecmpd.yaml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
def live_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """`session` as if netlink answered with LIVE (no kernel is touched)."""

    @contextmanager
    def fake(args: argparse.Namespace, *, check: bool = True) -> Iterator[Any]:
        assert check is False  # export must not refuse a config over kernel conflicts
        yield SimpleNamespace(config=load(args), facts=LIVE)

    monkeypatch.setattr(export, "session", fake)


@pytest.fixture
def no_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """`session` as if netlink could not be opened at all."""

    @contextmanager
    def fake(args: argparse.Namespace, *, check: bool = True) -> Iterator[Any]:
        load(args)  # a config error still comes first
        raise PermissionError(1, "Operation not permitted")
        yield  # pragma: no cover

    monkeypatch.setattr(export, "session", fake)


def test_an_unknown_format_is_an_argparse_error(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["-c", str(config_path), "export", "--format", "junos"])
    assert exit_.value.code == 2
    assert "invalid choice: 'junos'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["-c", str(config_path), "export"])  # --format is required


@pytest.mark.usefixtures("live_kernel")
def test_live_facts_resolve_dhcp_and_ip_keeps_links_as_they_are(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(config_path), "export", "--format", "ip"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(export.LIVE_NOTE + "\n# ecmpd export --format ip:")
    # dhcp0 has no carrier: `apply` would add no nexthop on it, so neither does the script.
    assert "route add default via 10.5.0.1 dev dhcp0 src 10.5.0.77 table 102" in out
    assert "dev dhcp0 proto 236" not in out


@pytest.mark.usefixtures("live_kernel")
def test_other_formats_describe_every_link_whatever_its_carrier(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(config_path), "export", "--format", "networkd"]) == 0
    out = capsys.readouterr().out
    assert "MultiPathRoute=10.5.0.1@dhcp0 1\n" in out
    assert out.count(export.LIVE_NOTE) == 2  # one per file
    assert "# --- FILE: 10-ecmpd-dhcp0.network ---\n" + export.LIVE_NOTE in out


@pytest.mark.usefixtures("no_kernel")
def test_without_the_kernel_the_config_alone_is_used_and_said(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-c", str(config_path), "export", "--format", "routeros"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "# Kernel facts: none (cannot read the kernel: [Errno 1] Operation not permitted).\n"
        "# Source addresses come from the config alone; no DHCP gateway or prefix is known.\n"
        "# ecmpd export --format routeros:"
    )
    assert "# cable: no gateway known at export time (no DHCP lease?)\n" in out


@pytest.mark.usefixtures("no_kernel")
def test_a_bad_config_is_still_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("uplinks: []\n")
    with pytest.raises(CommandError) as err:
        main(["-c", str(bad), "export", "--format", "ip"])
    assert err.value.status == 1


def test_offline_and_output_dir(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "out"
    argv = ["-c", str(config_path), "export", "--format", "networkd", "--offline"]
    assert main([*argv, "--output-dir", str(out_dir)]) == 0
    names = ["10-ecmpd-wan-a.network", "10-ecmpd-dhcp0.network"]
    assert capsys.readouterr().out.splitlines() == [str(out_dir / n) for n in names]
    written = (out_dir / names[0]).read_text()
    assert written.startswith(export.OFFLINE_NOTE.format(reason="--offline") + "\n# ecmpd")
    config = parse_config(CONFIG, str(config_path))
    expected = render.render_files("networkd", config, render.config_facts(config))
    assert written.endswith(expected[names[0]])


def test_render_dispatch_and_file_layout() -> None:
    config = parse_config(textwrap.dedent(CONFIG), "ecmpd.yaml")
    assert set(render.FORMATS) == {"ip", "netplan", "networkd", "routeros", "frr"}
    with pytest.raises(KeyError):
        render.render("junos", config, LIVE)
    single = render.render("netplan", config, LIVE)
    assert single == render.render_files("netplan", config, LIVE)["90-ecmpd.yaml"]
    several = render.render("networkd", config, LIVE)
    assert several.startswith("# --- FILE: 10-ecmpd-wan-a.network ---\n# ecmpd export")
    assert "\n# --- FILE: 10-ecmpd-dhcp0.network ---\n" in several


def test_config_facts_and_links_up() -> None:
    config = parse_config(textwrap.dedent(CONFIG), "ecmpd.yaml")
    assumed = render.config_facts(config)
    assert assumed.interfaces["wan-a"] == InterfaceFacts(
        "wan-a", render.ASSUMED_IFINDEX, addresses=(ip_interface("10.1.0.2/32"),)
    )
    assert assumed.interfaces["dhcp0"].dhcp_gateway is None
    up = render.links_up(config, LIVE)
    assert up.interfaces["dhcp0"].carrier and up.interfaces["dhcp0"].dhcp_gateway is not None
    partial = KernelFacts(interfaces={"wan-a": LIVE.interfaces["wan-a"]})
    assert render.links_up(config, partial).interfaces["dhcp0"] == assumed.interfaces["dhcp0"]
