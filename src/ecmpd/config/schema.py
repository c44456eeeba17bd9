"""Schema of the whole config file: the top-level settings, the balancer and metrics."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, PrivateAttr

from ecmpd.config.enums import Mode, RuleActionName, WhenAllDown
from ecmpd.config.fields import (
    Duration,
    Listen,
    Mark,
    Percent,
    Table,
    Timer,
    integer_in,
    parse_table,
)
from ecmpd.config.hashspec import HashSpec, parse_hash
from ecmpd.config.rule import RuleConfig
from ecmpd.config.section import Section, none_as_empty
from ecmpd.config.uplink import UplinkConfig
from ecmpd.config.yamlsource import line_for
from ecmpd.marks import DEFAULT_MASK
from ecmpd.model import MAIN_TABLE, Family, GroupType

# ecmpd owns priorities [rule_priority, rule_priority + 999]; the main table's rule sits
# at 32766, so the block must end below it, and 0 is the kernel's local rule.
PRIORITY_SPAN = 1000
MAX_RULE_PRIORITY = 32765 - (PRIORITY_SPAN - 1)
DEFAULT_BALANCER_TABLE = 200


class SpilloverConfig(Section):
    """When a tier's load stays above `above` of its bandwidth for `for_`, the next tier helps."""

    above: Percent = 0.9  # a fraction of the tier's summed bandwidth
    below: Percent = 0.7  # spilling stops once the load drops below this
    for_: Duration = Field(default=5.0, validation_alias="for", serialization_alias="for")


class BalancerConfig(Section):
    """The balanced routing table and the nexthop group behind its default route."""

    table: Table = DEFAULT_BALANCER_TABLE
    group: GroupType = GroupType.RESILIENT
    when_all_down: WhenAllDown = WhenAllDown.KEEP
    buckets: Annotated[int, BeforeValidator(integer_in(2, 32768))] = 512  # resilient only
    # Resilient only, seconds. 0: a bucket moves as soon as the balance asks for it, so
    # a recovered uplink takes its share of new connections at once; established ones
    # are kept on their uplink by their connection mark, not by the bucket.
    idle_timer: Timer = 0.0
    unbalanced_timer: Timer = 0.0  # resilient only, seconds; 0: never force a rebalance
    # New connections also go to the next tier while a tier is loaded (needs bandwidths).
    spillover: Annotated[SpilloverConfig | None, BeforeValidator(none_as_empty)] = None


class ConnectionsConfig(Section):
    """How established connections are kept on their uplink."""

    # The packet/conntrack mark bits ecmpd owns (see ecmpd.marks for the default).
    mark: Mark = DEFAULT_MASK


class MinUplinks(Section):
    """Per family: how many uplinks in service keep the announced default (None: never)."""

    ipv4: Annotated[int, BeforeValidator(integer_in(1, 1000))] | None = None
    ipv6: Annotated[int, BeforeValidator(integer_in(1, 1000))] | None = None

    def of(self, family: Family) -> int | None:
        """The minimum for one family, None when that family is not announced."""
        return self.ipv6 if family is Family.INET6 else self.ipv4


def _min_uplinks(value: object) -> object:
    """`min_uplinks: 2` is the same minimum for both families; a mapping names each one."""
    if isinstance(value, int) and not isinstance(value, bool):
        return {"ipv4": value, "ipv6": value}
    return value


def _table_or_main(value: object) -> object:
    """`main` (the kernel's main table, 254) or an ordinary table id."""
    return MAIN_TABLE if value == "main" else parse_table(value)


class AnnounceConfig(Section):
    """A plain default route in `table` while enough uplinks are in service (for FRR to import)."""

    table: Table
    # Where ::/0 goes (default: `table`). FRR 8.4 has no `ipv6 import-table`: `main`
    # puts it in the main table at ANNOUNCE_MAIN_METRIC, for `redistribute kernel`.
    table6: Annotated[int, BeforeValidator(_table_or_main)] | None = None
    min_uplinks: Annotated[MinUplinks, BeforeValidator(_min_uplinks)] = Field(
        default_factory=lambda: MinUplinks(ipv4=1, ipv6=1)
    )

    def table_of(self, family: Family) -> int:
        """The table of one family's announce route."""
        return self.table6 or self.table if family is Family.INET6 else self.table

    def tables(self) -> list[int]:
        """The announce tables ecmpd owns (main is never one: it only owns a route there)."""
        return sorted({self.table_of(f) for f in Family} - {MAIN_TABLE})


class MetricsConfig(Section):
    """Where the Prometheus exposition listens."""

    listen: Listen

    @property
    def host(self) -> str:
        """The listen address, without IPv6 brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        """The listen port."""
        return int(self.listen.rpartition(":")[2])


def default_rules() -> list[RuleConfig]:
    """What `rules` means when omitted: bypass for local destinations, balance the rest."""
    return [
        RuleConfig(name="local", action=RuleActionName.BYPASS),
        RuleConfig(name="everything-else", action=RuleActionName.BALANCE),
    ]


def _rules_or_default(value: object) -> object:
    """An empty `rules:` key means the default rules, like an omitted one."""
    return default_rules() if value is None else value


class Config(Section):
    """A whole, validated ecmpd config, with the file and lines it came from."""

    mode: Mode = Mode.HOST
    hash: Annotated[HashSpec, BeforeValidator(parse_hash)] = HashSpec.L4
    balancer: Annotated[BalancerConfig, BeforeValidator(none_as_empty)] = Field(
        default_factory=BalancerConfig
    )
    rule_priority: Annotated[int, BeforeValidator(integer_in(1, MAX_RULE_PRIORITY))] = 10000
    connections: Annotated[ConnectionsConfig, BeforeValidator(none_as_empty)] = Field(
        default_factory=ConnectionsConfig
    )
    hooks: Path | None = None
    metrics: MetricsConfig | None = None
    # Multipath TCP endpoints on every uplink in service (host mode: the host's own
    # connections; uplinks opt out with their own `mptcp: false`).
    mptcp: bool = False
    uplinks: Annotated[list[UplinkConfig], Field(min_length=1)]
    rules: Annotated[list[RuleConfig], BeforeValidator(_rules_or_default)] = Field(
        default_factory=default_rules
    )
    # Route health injection: the route FRR's zebra imports (`ip import-table`) and
    # announces by BGP while this router can reach the internet.
    announce: AnnounceConfig | None = None

    _filename: str = PrivateAttr(default="<string>")
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    def __eq__(self, other: object) -> bool:
        # Two loads of the same settings are equal even if comments or layout moved lines.
        if not isinstance(other, Config):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # lists inside: unhashable, say so plainly

    @property
    def filename(self) -> str:
        """The file this config was read from ("<string>" when parsed from text)."""
        return self._filename

    def line_of(self, field_path: str) -> int | None:
        """The YAML line of a field path like `uplinks[1].gateway`, else of its nearest parent."""
        return line_for(self._lines, field_path)

    def uplink(self, name: str) -> UplinkConfig:
        """The uplink with this name; KeyError if there is none."""
        for uplink in self.uplinks:
            if uplink.name == name:
                return uplink
        raise KeyError(name)

    def tables(self) -> list[int]:
        """Every routing table ecmpd fills: the uplinks', the balancer's, the announce one."""
        announce = self.announce.tables() if self.announce is not None else []
        return [*(u.table for u in self.uplinks), self.balancer.table, *announce]

    def mptcp_uplinks(self) -> list[UplinkConfig]:
        """The uplinks that carry MPTCP subflows."""
        return [u for u in self.uplinks if u.mptcp_enabled(self.mptcp)]

    def follows_defaults(self) -> bool:
        """Whether an uplink takes its gateway from a default route (`dhcp`, `ra`)."""
        return any(u.gateway == "dhcp" or u.gateway6 == "ra" for u in self.uplinks)

    def follows_bgp(self) -> bool:
        """Whether an uplink takes its gateway from a BGP default route (a core's edges)."""
        return any(u.gateway == "bgp" or u.gateway6 == "bgp" for u in self.uplinks)

    def with_source(self, filename: str, lines: Mapping[str, int]) -> Config:
        """A copy that knows which file and lines it came from (for `line_of`)."""
        located = self.model_copy()
        located._filename = filename
        located._lines = dict(lines)
        return located
