"""The multipath hash: a named policy or a custom list of header fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ecmpd.config.fields import SubfieldError
from ecmpd.config.issues import did_you_mean
from ecmpd.config.units import show

# net.ipv4.fib_multipath_hash_policy values for the named policies; 3 is "custom".
POLICIES = {"l3": 0, "l4": 1, "l3-inner": 2}
CUSTOM = 3
# Bits of net.ipv4.fib_multipath_hash_fields (FIB_MULTIPATH_HASH_FIELD_* in the kernel).
FIELD_BITS = {
    "src-ip": 0x1,
    "dst-ip": 0x2,
    "ip-proto": 0x4,
    "flowlabel": 0x8,
    "src-port": 0x10,
    "dst-port": 0x20,
    "inner-src-ip": 0x40,
    "inner-dst-ip": 0x80,
    "inner-ip-proto": 0x100,
    "inner-flowlabel": 0x200,
    "inner-src-port": 0x400,
    "inner-dst-port": 0x800,
}
ALIASES = {"proto": "ip-proto", "inner-proto": "inner-ip-proto"}


@dataclass(frozen=True)
class HashSpec:
    """Which header fields pick the path of a flow, as the kernel's hash policy (and fields)."""

    policy: int
    fields: tuple[str, ...] = ()

    L3: ClassVar[HashSpec]
    L4: ClassVar[HashSpec]
    L3_INNER: ClassVar[HashSpec]

    def fields_mask(self) -> int:
        """The value for net.ipv4.fib_multipath_hash_fields (0 unless the policy is custom)."""
        mask = 0
        for name in self.fields:
            mask |= FIELD_BITS[name]
        return mask

    def __str__(self) -> str:
        named = {policy: name for name, policy in POLICIES.items()}
        return named.get(self.policy) or "[" + ", ".join(self.fields) + "]"


HashSpec.L3 = HashSpec(0)
HashSpec.L4 = HashSpec(1)
HashSpec.L3_INNER = HashSpec(2)


def _field(value: object, index: int) -> str:
    """One custom hash field name, aliases resolved."""
    if not isinstance(value, str):
        raise SubfieldError(f"expected a field name, got {show(value)}", index)
    name = ALIASES.get(value, value)
    if name not in FIELD_BITS:
        hint = did_you_mean(value, [*FIELD_BITS, *ALIASES])
        raise SubfieldError(f"unknown hash field {show(value)}{hint}", index)
    return name


def parse_hash(value: object) -> HashSpec:
    """A HashSpec from `l3`, `l4`, `l3-inner` or a list of field names."""
    if isinstance(value, HashSpec):
        return value
    if isinstance(value, str):
        if value not in POLICIES:
            raise ValueError(
                f"must be one of: l3, l4, l3-inner, or a list of fields (got {show(value)})"
            )
        return HashSpec(POLICIES[value])
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected l3, l4, l3-inner or a list of fields, got {show(value)}")
    if not value:
        raise ValueError("a custom hash needs at least one field")
    fields: list[str] = []
    for index, item in enumerate(value):
        name = _field(item, index)
        if name in fields:
            raise SubfieldError(f"{show(item)} is listed twice", index)
        fields.append(name)
    return HashSpec(CUSTOM, tuple(fields))
