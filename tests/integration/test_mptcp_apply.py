"""`mptcp: true` through the real CLI in a host-mode lab: apply, ownership, conflicts, down."""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path

import pytest

from ecmpd.lab import netns
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.model import MPTCP_ID_BASE, IPAddress
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.mptcp import endpoints, limits

TWO = {"isps": 2, "shaping": False, "servers": 2}


def mptcp_config(lab: Lab, path: Path, **extra: object) -> Path:
    return write_lab_config(lab, path, ipv6=True, extra={"mptcp": True, **extra})


def ip(ns: str, *args: str) -> None:
    netns.run_in(ns, ["ip", *args], check=True, capture_output=True)


def ok(lab: Lab, config: Path, run: Path, *args: str) -> dict[str, object]:
    r = ecmpd(lab.router, config, run, *args, "--json")
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout)
    return result


@pytest.mark.parametrize("lab", [TWO], indirect=True)
def test_apply_owns_one_endpoint_per_uplink_and_family_and_down_restores(
    lab: Lab, tmp_path: Path
) -> None:
    run, config = tmp_path / "run", mptcp_config(lab, tmp_path / "ecmpd.yaml")
    ip(lab.router, "mptcp", "limits", "set", "subflows", "5")  # what down must restore
    # A foreign endpoint on an address that is no uplink's: never touched.
    ip(lab.router, "addr", "add", "10.1.0.99/24", "dev", lab.isps[0].uplink_if)
    ip(lab.router, "mptcp", "endpoint", "add", "10.1.0.99", "id", "7", "signal")

    first = ok(lab, config, run, "apply")
    eps = {ip_address(e["address"]): e for e in endpoints(lab.router)}
    sources: dict[IPAddress, str] = {isp.address.ip: isp.uplink_if for isp in lab.isps}
    sources |= {isp.address6.ip: isp.uplink_if for isp in lab.isps if isp.address6}
    assert set(eps) == {*sources, ip_address("10.1.0.99")}
    for address, dev in sources.items():
        ep = eps[address]
        assert ep["dev"] == dev and ep["subflow"] and not ep.get("backup")
        assert ep["id"] >= MPTCP_ID_BASE
    assert limits(lab.router)["subflows"] == 2
    assert netns.read_sysctl(lab.router, "net.mptcp.enabled") == "1"
    commands = [op["command"] for op in first["ops"]]  # type: ignore[attr-defined]
    assert "ip mptcp limits set subflows 2" in commands
    assert ok(lab, config, run, "apply")["changes"] == 0

    down = ok(lab, config, run, "down")
    restore = [op["command"] for op in down["ops"]]  # type: ignore[attr-defined]
    assert "ip mptcp limits set subflows 5" in restore
    assert [e["address"] for e in endpoints(lab.router)] == ["10.1.0.99"]
    assert limits(lab.router)["subflows"] == 5
    assert ok(lab, config, run, "down")["changes"] == 0


@pytest.mark.parametrize("lab", [TWO], indirect=True)
def test_a_foreign_endpoint_on_an_uplink_address_is_refused_and_left_alone(
    lab: Lab, tmp_path: Path
) -> None:
    run, config = tmp_path / "run", mptcp_config(lab, tmp_path / "ecmpd.yaml")
    a = lab.isps[0]
    ip(lab.router, "mptcp", "endpoint", "add", str(a.address.ip), "dev", a.uplink_if, "subflow")
    before = endpoints(lab.router)
    r = ecmpd(lab.router, config, run, "apply")
    assert r.returncode == 1
    assert f"uplinks[0]: MPTCP endpoint id 1 on {a.address.ip} is not ecmpd's" in r.stderr
    assert endpoints(lab.router) == before
    # Opting that uplink out settles it; the foreign endpoint stays as it was.
    out = (
        write_lab_config(lab, config, ipv6=True, extra={"mptcp": True})
        .read_text()
        .replace(f"interface: {a.uplink_if}\n", f"interface: {a.uplink_if}\n  mptcp: false\n")
    )
    config.write_text(out)
    ok(lab, config, run, "apply")
    shown = {e["address"]: e for e in endpoints(lab.router)}
    assert shown[str(a.address.ip)] == before[0]
    assert str(lab.isps[1].address.ip) in shown
    ok(lab, config, run, "down")
    assert endpoints(lab.router) == before


@pytest.mark.parametrize("lab", [TWO], indirect=True)
def test_an_endpoint_added_without_an_id_after_ecmpd_s_is_not_read_as_ecmpd_s(
    lab: Lab, tmp_path: Path
) -> None:
    """The kernel gives it the id after ecmpd's highest: ownership is by the record."""
    run, config = tmp_path / "run", mptcp_config(lab, tmp_path / "ecmpd.yaml")
    ok(lab, config, run, "apply")
    ip(lab.router, "addr", "add", "10.2.0.99/24", "dev", lab.isps[1].uplink_if)
    ip(lab.router, "mptcp", "endpoint", "add", "10.2.0.99", "subflow")
    ids = {e["address"]: e["id"] for e in endpoints(lab.router)}
    assert ids["10.2.0.99"] == max(ids.values()) > MPTCP_ID_BASE  # in "ecmpd's" range
    assert ok(lab, config, run, "apply")["changes"] == 0
    ok(lab, config, run, "down")
    assert [e["address"] for e in endpoints(lab.router)] == ["10.2.0.99"]
