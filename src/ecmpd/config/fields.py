"""Annotated field types: each parses one YAML value and says what is wrong with it."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, ValidationInfo

import ecmpd.config.units as units
from ecmpd.config.units import show
from ecmpd.model import TABLE_NAMES, DataCap, PortRange

MAX_TABLE = 2**32 - 1
_NAME = re.compile(r"^[a-z0-9-]+$")
# Validation context key set by the loader: some values are read more strictly from YAML.
FROM_YAML = "from_yaml"


class SubfieldError(ValueError):
    """A ValueError about one element inside the value (e.g. `hash[2]`), carried as `sub`."""

    def __init__(self, message: str, *sub: str | int) -> None:
        super().__init__(message)
        self.sub = sub


def integer_in(low: int, high: int) -> Callable[[object], int]:
    """A parser for an integer in [low, high] (booleans refused: YAML reads `yes` as one)."""

    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {show(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def number_at_least(low: float) -> Callable[[object], float]:
    """A parser for a plain number >= low."""

    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {show(value)}")
        if value < low:
            raise ValueError(f"must be at least {low:g}, got {value}")
        return float(value)

    return parse


def parse_table(value: object) -> int:
    """A routing table id, refusing 0 and the kernel's own tables."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected a table id (an integer), got {show(value)}")
    if value in TABLE_NAMES:
        raise ValueError(f"table {value} is the kernel's {TABLE_NAMES[value]} table")
    if not 1 <= value <= MAX_TABLE:
        raise ValueError(f"must be between 1 and {MAX_TABLE}, got {value}")
    return value


def name_parser(max_length: int) -> Callable[[object], str]:
    """A parser for ecmpd names: lowercase letters, digits and '-', 1..max_length characters."""

    def parse(value: object) -> str:
        if not isinstance(value, str):
            raise ValueError(f"expected a name, got {show(value)}")
        if not _NAME.match(value) or len(value) > max_length:
            raise ValueError(
                f"{show(value)} is not a valid name "
                f"(a-z, 0-9 and '-', at most {max_length} characters)"
            )
        return value

    return parse


def parse_ifname(value: object) -> str:
    """A Linux interface name, by the kernel's dev_valid_name() rules."""
    if not isinstance(value, str):
        raise ValueError(f"expected an interface name, got {show(value)}")
    bad = any(c in "/:" or c.isspace() for c in value)
    if bad or not 1 <= len(value) <= 15 or value in {".", ".."}:
        raise ValueError(
            f"{show(value)} is not a valid interface name "
            "(1 to 15 characters, no '/', ':' or whitespace)"
        )
    return value


def _address(value: object) -> IPv4Address | IPv6Address:
    """Any IP address, with the message the spec shows for garbage."""
    if isinstance(value, IPv4Address | IPv6Address):
        return value
    try:
        if isinstance(value, str):
            return ip_address(value)
    except ValueError:
        pass
    raise ValueError(f"{show(value)} is not an IPv4 or IPv6 address")


def parse_address(value: object) -> IPv4Address | IPv6Address:
    """An IPv4 or IPv6 address."""
    return _address(value)


def ipv4_parser(v6_field: str) -> Callable[[object], IPv4Address | None]:
    """A parser for an optional IPv4 address that points IPv6 ones to `v6_field`."""

    def parse(value: object) -> IPv4Address | None:
        if value is None:
            return None
        address = _address(value)
        if not isinstance(address, IPv4Address):
            raise ValueError(f"{show(str(address))} is an IPv6 address; put it in {v6_field}")
        return address

    return parse


def ipv6_parser(v4_field: str) -> Callable[[object], IPv6Address | None]:
    """A parser for an optional IPv6 address that points IPv4 ones to `v4_field`."""

    def parse(value: object) -> IPv6Address | None:
        if value is None:
            return None
        address = _address(value)
        if not isinstance(address, IPv6Address):
            raise ValueError(f"{show(str(address))} is an IPv4 address; put it in {v4_field}")
        return address

    return parse


def parse_gateway(value: object) -> IPv4Address | Literal["dhcp", "bgp"] | None:
    """An IPv4 gateway, `dhcp`, `bgp` (a router's BGP default), or null for point-to-point."""
    if value in ("dhcp", "bgp"):
        return "bgp" if value == "bgp" else "dhcp"
    return ipv4_parser("gateway6")(value)


def parse_gateway6(value: object) -> IPv6Address | Literal["ra", "bgp"] | None:
    """An IPv6 gateway, `ra` (follow router advertisements), `bgp`, or null (point-to-point)."""
    if value in ("ra", "bgp"):
        return "bgp" if value == "bgp" else "ra"
    if value in ("dhcp", "auto", "slaac"):
        # DHCPv6 never hands out a gateway: on IPv6 the routers announce themselves.
        raise ValueError(f"{show(value)} is not a gateway source for IPv6; use ra")
    return ipv6_parser("gateway")(value)


def parse_network(value: object) -> IPv4Network | IPv6Network:
    """A prefix; a bare address means that one host (/32 or /128)."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an address or a prefix like 10.0.0.0/8, got {show(value)}")
    try:
        return ip_network(value, strict=True)
    except ValueError:
        pass
    try:
        loose = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{show(value)} is not an IPv4 or IPv6 address or prefix") from None
    # Host bits set usually means a typo (10.1.2.3/24 for 10.1.2.0/24); say so, don't guess.
    raise ValueError(f"{show(value)} has host bits set; did you mean {loose}?")


def parse_listen(value: object) -> str:
    """A `host:port` (IPv6 as `[::1]:9474`) with an IP host and a port 1..65535."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"expected 'ADDRESS:PORT' like '127.0.0.1:9474', got {show(value)}")
    host, _, port = value.rpartition(":")
    try:
        ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        raise ValueError(f"{show(host)} is not an IPv4 or IPv6 address") from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {show(port)}")
    return value


def _passing(kind: type[Any], parse: Callable[[object], Any]) -> BeforeValidator:
    """A validator that parses YAML values and lets already-typed values through (direct use)."""
    return BeforeValidator(lambda value: value if isinstance(value, kind) else parse(value))


def _duration(value: object) -> float:
    """A duration > 0 in seconds."""
    return units.parse_duration(value)


def _percent(value: object, info: ValidationInfo) -> float:
    """A fraction 0..1: YAML must say `20%`, code may pass the fraction itself."""
    from_yaml = isinstance(info.context, dict) and info.context.get(FROM_YAML, False)
    if from_yaml or isinstance(value, bool) or not isinstance(value, int | float):
        return units.parse_percent(value)
    if not 0 <= value <= 1:
        raise ValueError(f"must be a fraction between 0 and 1, got {value}")
    return float(value)


def _timer(value: object) -> float:
    """A duration >= 0 in seconds."""
    return units.parse_duration(value, allow_zero=True)


Duration = Annotated[float, BeforeValidator(_duration)]
Timer = Annotated[float, BeforeValidator(_timer)]
Percent = Annotated[float, BeforeValidator(_percent)]
Bandwidth = Annotated[int, BeforeValidator(units.parse_bandwidth)]
Size = Annotated[int, BeforeValidator(units.parse_size)]
DataCapField = Annotated[DataCap, BeforeValidator(units.parse_data_cap)]
ProbeBudget = Annotated[float, BeforeValidator(units.parse_probe_budget)]
Ports = Annotated[PortRange, _passing(PortRange, units.parse_port_range)]
Protocol = Annotated[int, BeforeValidator(units.parse_protocol)]
Mark = Annotated[int, BeforeValidator(units.parse_uint32)]
FwMark = Annotated[int, BeforeValidator(units.parse_fwmark)]
Method = Annotated[str, BeforeValidator(units.parse_method)]
Table = Annotated[int, BeforeValidator(parse_table)]
IfName = Annotated[str, BeforeValidator(parse_ifname)]
UplinkName = Annotated[str, BeforeValidator(name_parser(15))]
RuleName = Annotated[str, BeforeValidator(name_parser(32))]
Address = Annotated[IPv4Address | IPv6Address, BeforeValidator(parse_address)]
Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(parse_network)]
Listen = Annotated[str, BeforeValidator(parse_listen)]


def _one_or_more(value: object) -> object:
    """A single name read as a list of one, so `uplink: fiber` keeps working."""
    return [value] if isinstance(value, str) else value


# A pin's uplink, or its ordered fallback list: names are checked against the uplinks later.
UplinkNames = Annotated[tuple[str, ...], BeforeValidator(_one_or_more), Field(min_length=1)]
