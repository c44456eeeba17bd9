"""Parsers for the human units the config accepts: durations, percentages, bandwidths, ports.

Each raises ValueError with the message a user should read; `fields.py` turns them
into pydantic validators.
"""

from __future__ import annotations

import re

from ecmpd.model import CapPeriod, DataCap, PortRange

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")
_BANDWIDTH = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:bit)?\s*$", re.IGNORECASE)
# SI multiples as tc(8) reads "kbit", "mbit", ...; "bps" is deliberately not accepted
# because tc reads it as bytes per second, a factor-of-8 trap.
_BANDWIDTH_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
# Volumes as ISPs bill them: decimal (GB = 10**9 bytes), or binary with an i (GiB).
# Bytes only: a cap in bits ("20Gbit") is a mistake worth a message, not a guess.
_DATA_CAP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?B\s*/\s*(\w+)\s*$", re.IGNORECASE)
_PROBE_BUDGET = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?B\s*/\s*(s|min|h)\s*$", re.IGNORECASE)
_BUDGET_PERIODS = {"s": 1.0, "min": 60.0, "h": 3600.0}
_VOLUME_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_BINARY_UNITS = {"ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
PROTOCOLS = {"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmpv6": 58, "sctp": 132}
PORT_PROTOCOLS = frozenset({6, 17, 132})


def show(value: object) -> str:
    """A YAML value as a message quotes it: strings quoted, null/true/false as YAML spells them."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return f"'{text}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return str(value)


def _number(value: object) -> float | None:
    """A YAML int or float (booleans excluded, YAML reads `yes` as one), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def parse_duration(value: object, *, allow_zero: bool = False) -> float:
    """Seconds from `200ms`, `1.5s`, `2m`, `1h` or a bare number of seconds."""
    seconds = _number(value)
    if seconds is None:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected a duration like '200ms', '1s' or '2m', got {show(value)}")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(
            f"must be {'at least 0' if allow_zero else 'greater than 0'}, got {show(value)}"
        )
    return seconds


def parse_percent(value: object) -> float:
    """A fraction 0..1 from `20%`; a bare number is refused as ambiguous (0.2 or 20%?)."""
    match = _PERCENT.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected a percentage like '20%', got {show(value)}")
    percent = float(match.group(1))
    if percent > 100:
        raise ValueError(f"must be between 0% and 100%, got {show(value)}")
    return percent / 100


def parse_bandwidth(value: object) -> int:
    """Bits per second from `100Mbit`, `2.5Gbit`, `500kbit` or a bare number of bits/s."""
    if isinstance(value, int) and not isinstance(value, bool):
        bits = float(value)
    else:
        match = _BANDWIDTH.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected a bandwidth like '100Mbit' or '1Gbit', got {show(value)}")
        bits = float(match.group(1)) * _BANDWIDTH_UNITS[match.group(2).lower()]
    if round(bits) < 1:
        raise ValueError(f"must be greater than 0, got {show(value)}")
    return round(bits)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?)?B\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Bytes from `32KiB`, `64kB`, `1MB` or a bare number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = float(value)
    else:
        match = _SIZE.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"expected a size like '32KiB' or '64kB', got {show(value)}")
        unit = (match.group(2) or "").lower()
        size = float(match.group(1)) * {**_VOLUME_UNITS, **_BINARY_UNITS}[unit]
    if round(size) < 1:
        raise ValueError(f"must be at least 1 byte, got {show(value)}")
    return round(size)


def parse_data_cap(value: object) -> DataCap:
    """A DataCap from `20GB/month`, `500MB/day` or `1TiB/week`."""
    if isinstance(value, DataCap):
        return value
    match = _DATA_CAP.match(value) if isinstance(value, str) else None
    periods = ", ".join(p.value for p in CapPeriod)
    if match is None:
        raise ValueError(f"expected a volume per period like '20GB/month', got {show(value)}")
    unit = (match.group(2) or "").lower()
    if match.group(3).lower() not in {p.value for p in CapPeriod}:
        raise ValueError(f"the period must be one of: {periods} (got {show(value)})")
    limit = round(float(match.group(1)) * {**_VOLUME_UNITS, **_BINARY_UNITS}[unit])
    if limit < 1:
        raise ValueError(f"must be greater than 0, got {show(value)}")
    return DataCap(limit, CapPeriod(match.group(3).lower()))


def parse_probe_budget(value: object) -> float:
    """Bytes per minute from `1KB/min`, `500B/min` or `60KB/h`."""
    number = _number(value)
    if number is not None:
        if number <= 0:
            raise ValueError(f"must be greater than 0, got {show(value)}")
        return number  # from code: bytes per minute
    match = _PROBE_BUDGET.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"expected bytes per time like '1KB/min', got {show(value)}")
    unit = (match.group(2) or "").lower()
    volume = float(match.group(1)) * {**_VOLUME_UNITS, **_BINARY_UNITS}[unit]
    per_minute = volume * 60 / _BUDGET_PERIODS[match.group(3).lower()]
    if per_minute <= 0:
        raise ValueError(f"must be greater than 0, got {show(value)}")
    return per_minute


def _port(text: str, original: object) -> int:
    """One port number 1..65535."""
    if not text.strip().isdigit():
        raise ValueError(f"expected a port or a range like '1000-2000', got {show(original)}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"ports must be between 1 and 65535, got {show(original)}")
    return port


def parse_port_range(value: object) -> PortRange:
    """A PortRange from `443` or `1000-2000`."""
    if isinstance(value, int) and not isinstance(value, bool):
        port = _port(str(value), value)
        return PortRange(port, port)
    if not isinstance(value, str):
        raise ValueError(f"expected a port or a range like '1000-2000', got {show(value)}")
    start_text, dash, end_text = value.partition("-")
    start = _port(start_text, value)
    end = _port(end_text, value) if dash else start
    if start > end:
        raise ValueError(f"range start is above its end in {show(value)}")
    return PortRange(start, end)


def parse_uint32(value: object) -> int:
    """An integer 0..2**32-1, written in decimal or hex (`0x10`)."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        try:
            number = int(value.strip(), 0)
        except ValueError:
            number = None
    if number is None:
        raise ValueError(f"expected an integer like 16 or 0x10, got {show(value)}")
    if not 0 <= number <= 0xFFFFFFFF:
        raise ValueError(f"must be between 0 and 0xffffffff, got {show(value)}")
    return number


def split_mark(value: object) -> tuple[int, int | None]:
    """(mark, mask) from `0x10/0xff`, or (mark, None) from a mark alone."""
    if not isinstance(value, str) or "/" not in value:
        return parse_uint32(value), None
    mark, _, mask = value.partition("/")
    try:
        return parse_uint32(mark), parse_uint32(mask)
    except ValueError as error:
        raise ValueError(f"{error} in {show(value)}") from None


def parse_fwmark(value: object) -> int:
    """A firewall mark; a `/MASK` part reaches here only when fwmask is given as well."""
    mark, mask = split_mark(value)
    if mask is not None:
        raise ValueError("the mask is given both here and in fwmask; keep one")
    return mark


def parse_protocol(value: object) -> int:
    """An IP protocol number from a name (tcp, udp, icmp, ...) or 0..255."""
    if isinstance(value, str) and value.lower() in PROTOCOLS:
        return PROTOCOLS[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255:
        return value
    names = ", ".join(PROTOCOLS)
    raise ValueError(f"expected a protocol ({names}) or a number 0..255, got {show(value)}")


def parse_method(value: object) -> str:
    """A probe method: `icmp` or `tcp:PORT`."""
    if value == "icmp":
        return "icmp"
    if isinstance(value, str) and value.startswith("tcp:"):
        port = value[4:]
        if port.isdigit() and 1 <= int(port) <= 65535:
            return f"tcp:{int(port)}"
    raise ValueError(f"expected 'icmp' or 'tcp:PORT' (port 1..65535), got {show(value)}")
