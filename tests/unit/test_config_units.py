"""Parsing of the config's human units: durations, percentages, bandwidths, ports, marks, hashes."""

from __future__ import annotations

import pytest

from ecmpd.config import HashSpec
from ecmpd.config.hashspec import FIELD_BITS, parse_hash
from ecmpd.config.units import (
    parse_bandwidth,
    parse_duration,
    parse_method,
    parse_percent,
    parse_port_range,
    parse_protocol,
    parse_uint32,
    split_mark,
)
from ecmpd.model import PortRange


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("200ms", 0.2),
        ("1s", 1.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        (".5s", 0.5),
        ("250 ms", 0.25),
        (3, 3.0),
        (0.05, 0.05),
        ("7", 7.0),
    ],
)
def test_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0", "must be greater than 0, got '0'"),
        (0, "must be greater than 0, got 0"),
        (-1, "must be greater than 0, got -1"),
        ("1d", "expected a duration like '200ms', '1s' or '2m', got '1d'"),
        ("fast", "expected a duration like '200ms', '1s' or '2m', got 'fast'"),
        (True, "expected a duration like '200ms', '1s' or '2m', got true"),
        (None, "expected a duration like '200ms', '1s' or '2m', got null"),
    ],
)
def test_bad_duration(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


def test_duration_zero_allowed_for_timers() -> None:
    assert parse_duration("0s", allow_zero=True) == 0.0
    with pytest.raises(ValueError, match="must be at least 0, got -1"):
        parse_duration(-1, allow_zero=True)


@pytest.mark.parametrize(
    ("text", "fraction"),
    [("20%", 0.2), ("0%", 0.0), ("100%", 1.0), ("2.5%", 0.025), (" 50 % ", 0.5)],
)
def test_percent(text: str, fraction: float) -> None:
    assert parse_percent(text) == pytest.approx(fraction)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("101%", "must be between 0% and 100%, got '101%'"),
        ("-1%", "expected a percentage like '20%', got '-1%'"),
        (20, "expected a percentage like '20%', got 20"),
        ("20", "expected a percentage like '20%', got '20'"),
    ],
)
def test_bad_percent(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_percent(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("100Mbit", 100_000_000),
        ("1Gbit", 1_000_000_000),
        ("500kbit", 500_000),
        ("2.5Gbit", 2_500_000_000),
        ("10 mbit", 10_000_000),
        ("1tbit", 10**12),
        ("64000", 64_000),
        ("300bit", 300),
        ("1G", 1_000_000_000),
        (1_000_000, 1_000_000),
    ],
)
def test_bandwidth(text: object, bits: int) -> None:
    assert parse_bandwidth(text) == bits


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("100Mbps", "expected a bandwidth like '100Mbit' or '1Gbit', got '100Mbps'"),
        ("fast", "expected a bandwidth like '100Mbit' or '1Gbit', got 'fast'"),
        (1.5, "expected a bandwidth like '100Mbit' or '1Gbit', got 1.5"),
        (0, "must be greater than 0, got 0"),
        ("0Mbit", "must be greater than 0, got '0Mbit'"),
        (False, "expected a bandwidth like '100Mbit' or '1Gbit', got false"),
    ],
)
def test_bad_bandwidth(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_bandwidth(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "ports"),
    [
        (443, PortRange(443, 443)),
        ("443", PortRange(443, 443)),
        ("1000-2000", PortRange(1000, 2000)),
        ("1-65535", PortRange(1, 65535)),
        ("80-80", PortRange(80, 80)),
    ],
)
def test_port_range(text: object, ports: PortRange) -> None:
    assert parse_port_range(text) == ports


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (0, "ports must be between 1 and 65535, got 0"),
        (65536, "ports must be between 1 and 65535, got 65536"),
        ("10-70000", "ports must be between 1 and 65535, got '10-70000'"),
        ("2000-1000", "range start is above its end in '2000-1000'"),
        ("http", "expected a port or a range like '1000-2000', got 'http'"),
        ("1000-", "expected a port or a range like '1000-2000', got '1000-'"),
        ([80], "expected a port or a range like '1000-2000', got a list"),
    ],
)
def test_bad_port_range(text: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_port_range(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("text", "number"), [(16, 16), ("0x10", 16), ("16", 16), ("0xffffffff", 2**32 - 1), (0, 0)]
)
def test_uint32(text: object, number: int) -> None:
    assert parse_uint32(text) == number


@pytest.mark.parametrize(
    ("text", "split"),
    [
        ("0x10/0xff", (16, 255)),
        ("0x10", (16, None)),
        (7, (7, None)),
        ("1/0xffffffff", (1, 2**32 - 1)),
    ],
)
def test_split_mark(text: object, split: tuple[int, int | None]) -> None:
    assert split_mark(text) == split


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("tcp", 6),
        ("udp", 17),
        ("icmp", 1),
        ("icmpv6", 58),
        ("sctp", 132),
        ("TCP", 6),
        (0, 0),
        (255, 255),
    ],
)
def test_protocol(text: object, number: int) -> None:
    assert parse_protocol(text) == number


@pytest.mark.parametrize(
    ("text", "method"), [("icmp", "icmp"), ("tcp:443", "tcp:443"), ("tcp:080", "tcp:80")]
)
def test_method(text: str, method: str) -> None:
    assert parse_method(text) == method


@pytest.mark.parametrize("text", ["tcp", "tcp:", "tcp:0", "tcp:65536", "udp:53", "ICMP", 1])
def test_bad_method(text: object) -> None:
    with pytest.raises(ValueError, match="expected 'icmp' or 'tcp:PORT'"):
        parse_method(text)


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("l3", HashSpec(0)),
        ("l4", HashSpec(1)),
        ("l3-inner", HashSpec(2)),
        (["src-ip", "dst-ip"], HashSpec(3, ("src-ip", "dst-ip"))),
        (["proto", "inner-proto"], HashSpec(3, ("ip-proto", "inner-ip-proto"))),
    ],
)
def test_hash(text: object, spec: HashSpec) -> None:
    assert parse_hash(text) == spec


def test_hash_named_constants() -> None:
    assert (HashSpec(0), HashSpec(1), HashSpec(2)) == (HashSpec.L3, HashSpec.L4, HashSpec.L3_INNER)
    assert str(HashSpec.L3_INNER) == "l3-inner"
    assert str(HashSpec(3, ("src-ip", "dst-port"))) == "[src-ip, dst-port]"
    assert HashSpec.L4.fields_mask() == 0


@pytest.mark.parametrize(
    ("field", "bit"),
    [
        ("src-ip", 0x1),
        ("dst-ip", 0x2),
        ("ip-proto", 0x4),
        ("flowlabel", 0x8),
        ("src-port", 0x10),
        ("dst-port", 0x20),
        ("inner-src-ip", 0x40),
        ("inner-dst-ip", 0x80),
        ("inner-ip-proto", 0x100),
        ("inner-flowlabel", 0x200),
        ("inner-src-port", 0x400),
        ("inner-dst-port", 0x800),
        ("proto", 0x4),
    ],
)
def test_hash_field_bits(field: str, bit: int) -> None:
    assert parse_hash([field]).fields_mask() == bit


def test_hash_all_fields_mask() -> None:
    assert parse_hash(list(FIELD_BITS)).fields_mask() == 0xFFF
