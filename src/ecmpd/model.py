"""Typed, frozen values for the kernel objects ecmpd owns.

These are what `desired_state()` produces, what the kernel observer reads back and
what the diff compares: two objects are the same kernel object when their `key`
matches, and need changing when they are not equal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

# Routing protocol id stamped on every route, rule and nexthop ecmpd creates, so
# `ip` shows it as ecmpd's and foreign objects are never mistaken for ours.
# 0xEC: unassigned in iproute2's rt_protos (bird=12, babel=42, bgp=186..).
RTPROT_ECMPD = 236
# Others' protocol ids ecmpd reads: routes the kernel made (a device's prefix), and FRR's
# static routes (staticd, through zebra), which zebra ranks at distance 1.
RTPROT_KERNEL = 2
RTPROT_FRR_STATIC = 196
# The announce route's metric in the main table (`announce: {table6: main}`): below the
# 1024 of router advertisements and DHCPv6, so zebra takes it as the best ::/0 while it
# exists, and unique, so FRR's route-map picks it (`match metric`) and no other default.
ANNOUNCE_MAIN_METRIC = 236

# The kernel's reserved routing tables (RT_TABLE_DEFAULT, _MAIN, _LOCAL), by the names
# `ip` and systemd-networkd give them.
MAIN_TABLE = 254
TABLE_NAMES = {253: "default", MAIN_TABLE: "main", 255: "local"}

# Nexthop object ids are global per network namespace. ecmpd takes ids in its own
# block: uplink nexthops are NH_ID_BASE + the uplink's table id, the balancer group
# is NH_ID_BASE + the balancer table id (tables are unique, so ids are too).
NH_ID_BASE = 0x0ECD0000
# IPv6 nexthop objects and groups take the ids of their IPv4 twins plus this offset.
# With plan.SWAP_ID_OFFSET (0x8000) above both, every id of every family stays apart
# as long as ecmpd's tables are at most 0x3FFF (config.semantic checks it).
IPV6_ID_OFFSET = 0x4000

# A nexthop group member's weight: 1..256 (kernel.nexthop sends weight - 1, low byte
# and high byte apart; config and lab weights are kept in this range).
MAX_WEIGHT = 256

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network


class Family(enum.IntEnum):
    """Address family, with the kernel's AF_* values."""

    INET = 2
    INET6 = 10


# How ecmpd names a family wherever people read it: status, --json, metrics labels,
# hook environments (and nftables' `meta nfproto` keywords are the same words).
FAMILY_NAMES = {Family.INET: "ipv4", Family.INET6: "ipv6"}


def nexthop_id(table: int, family: Family = Family.INET) -> int:
    """The id of an object ecmpd owns for a table (uplink nexthop or balancer group)."""
    return NH_ID_BASE + table + (IPV6_ID_OFFSET if family is Family.INET6 else 0)


SCOPE_LINK = 253
DEFAULT4 = IPv4Network("0.0.0.0/0")
DEFAULT6 = IPv6Network("::/0")
DEFAULT_ROUTE: dict[Family, IPNetwork] = {Family.INET: DEFAULT4, Family.INET6: DEFAULT6}

# The kernel stores an IPv6 route added with metric 0 as 1024 (IP6_RT_PRIO_USER) and
# reports it so: asking for 1024 up front keeps a second apply from seeing a change.
IPV6_METRIC = 1024


class RuleAction(enum.Enum):
    """What an ip rule does when it matches (FR_ACT_*)."""

    LOOKUP = 1  # FR_ACT_TO_TBL
    UNREACHABLE = 7  # FR_ACT_UNREACHABLE


class RouteType(enum.Enum):
    """rtm_type of a route."""

    UNICAST = 1
    UNREACHABLE = 7


class GroupType(enum.Enum):
    """Nexthop group type: hash-threshold (mpath) rehashes on change, resilient keeps buckets."""

    HASH_THRESHOLD = "hash-threshold"
    RESILIENT = "resilient"


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive L4 port range, as FRA_SPORT_RANGE/FRA_DPORT_RANGE hold it."""

    start: int
    end: int

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}-{self.end}"


class CapPeriod(enum.StrEnum):
    """The period a data cap counts over (`20GB/month`)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"


@dataclass(frozen=True)
class DataCap:
    """A data cap: bytes sent plus received per period, as an ISP bills a metered line."""

    limit: int  # bytes
    period: CapPeriod

    def __str__(self) -> str:
        return f"{self.limit}B/{self.period}"


@dataclass(frozen=True)
class Rule:
    """One ip rule ecmpd owns; identified by (family, priority, fwmark).

    An uplink's connection-mark rule shares its reply rule's priority (both look up the
    uplink's table, so their order does not matter): the fwmark tells them apart.
    """

    family: Family
    priority: int
    action: RuleAction
    table: int | None = None
    src: IPNetwork | None = None
    dst: IPNetwork | None = None
    iif: str | None = None
    fwmark: int | None = None
    fwmask: int | None = None
    ip_proto: int | None = None
    sport: PortRange | None = None
    dport: PortRange | None = None
    suppress_prefixlength: int | None = None

    @property
    def key(self) -> tuple[Family, int, int | None]:
        return (self.family, self.priority, self.fwmark)


@dataclass(frozen=True)
class Nexthop:
    """A nexthop object: a gateway (or none, for point-to-point) on a device."""

    id: int
    family: Family
    ifname: str
    gateway: IPAddress | None = None
    onlink: bool = False

    @property
    def key(self) -> int:
        return self.id


@dataclass(frozen=True)
class NexthopGroup:
    """A nexthop group: members as (nexthop id, weight), in ascending id order."""

    id: int
    type: GroupType
    members: tuple[tuple[int, int], ...]
    buckets: int = 0  # resilient only
    idle_timer: int = 0  # resilient only, seconds
    unbalanced_timer: int = 0  # resilient only, seconds

    @property
    def key(self) -> int:
        return self.id

    def immutable(self) -> tuple[GroupType, int]:
        """What the kernel cannot change in place (a change needs a new group)."""
        return (self.type, self.buckets)


@dataclass(frozen=True)
class Route:
    """A route in a table ecmpd owns; identified by (family, table, dst, metric)."""

    family: Family
    table: int
    dst: IPNetwork
    type: RouteType = RouteType.UNICAST
    ifname: str | None = None
    gateway: IPAddress | None = None
    nhid: int | None = None
    prefsrc: IPAddress | None = None
    scope: int = 0  # RT_SCOPE_UNIVERSE; 253 = link
    metric: int = 0
    onlink: bool = False

    @property
    def key(self) -> tuple[Family, int, IPNetwork, int]:
        return (self.family, self.table, self.dst, self.metric)


@dataclass(frozen=True)
class Sysctl:
    """A sysctl ecmpd sets, by its dotted name (net.ipv4.fib_multipath_hash_policy)."""

    name: str
    value: str

    @property
    def key(self) -> str:
        return self.name


# ecmpd's egress queue on an uplink (`queue`): the interface's root qdisc, an HTB of
# handle ec: (a root qdisc of handle 0: is the kernel's default, any other is someone
# else's and never touched). One class at the shaped rate, under it a class for every
# connection's first packets (its packets' priority set to that class by table inet
# ecmpd) and the default class for the rest; each has its own FIFO.
QUEUE_HANDLE = 0x00EC0000  # ec:
QUEUE_TOP = QUEUE_HANDLE | 0x1  # ec:1, at the shaped rate
QUEUE_FIRST = QUEUE_HANDLE | 0x10  # ec:10, first packets: served first
QUEUE_BULK = QUEUE_HANDLE | 0x20  # ec:20, the default class
# The leaves' handles (fixed, so a second build changes them in place).
QUEUE_FIRST_LEAF = 0x00ED0000  # ed:, the first-packets class's pfifo
QUEUE_BULK_LEAF = 0x00EE0000  # ee:, the bulk class's bfifo
# The first-packets class's FIFO, in packets: room for a failover's burst of
# reconnects (every interrupted connection's first flight at once).
QUEUE_FIRST_LIMIT = 1000


@dataclass(frozen=True)
class Queue:
    """ecmpd's egress queue on one interface (rates in bytes/s, as the kernel keeps them).

    `intact` is False when the tree under ec: was read back other than ecmpd builds it
    (a class or FIFO changed or gone): unequal to any desired queue, so it is rebuilt.
    """

    ifname: str
    rate: int  # bytes/s, the whole queue's
    first: int  # bytes/s assured to the first-packets class (it may borrow up to rate)
    limit: int  # bytes: the bulk FIFO's depth
    intact: bool = True

    @property
    def key(self) -> str:
        return self.ifname


ALL_PORTS = PortRange(0, 65535)


@dataclass(frozen=True, order=True)
class PinReset:
    """A pin's TCP connections on one uplink (its mark) that get resets: the pin's match
    (source, destination, ports; whole ranges where it has none) while its first choice
    carries again (ecmpd.pinresets)."""

    src: IPNetwork
    dst: IPNetwork
    sport: PortRange
    dport: PortRange
    mark: int

    def covers(self, src: IPAddress, dst: IPAddress, sport: int | None, dport: int | None) -> bool:
        """Whether a connection's original direction (a LAN client's packet) matches."""
        if sport is None or dport is None:
            return False
        return (
            src in self.src
            and dst in self.dst
            and self.sport.start <= sport <= self.sport.end
            and self.dport.start <= dport <= self.dport.end
        )


@dataclass(frozen=True)
class NftTable:
    """ecmpd's nftables table `inet ecmpd`: connection marks, resets and (router mode) NAT.

    Tuples are sorted, so equal tables compare equal. `mask` 0 means no mark chains.
    """

    mask: int = 0  # the connection-mark bits; the probe mark is all of them
    marks: tuple[tuple[str, int], ...] = ()  # (uplink interface, its mark value)
    reset4: tuple[int, ...] = ()  # mark values whose LAN TCP connections get resets (IPv4)
    reset6: tuple[int, ...] = ()  # the same for IPv6
    masquerade: tuple[str, ...] = ()  # outgoing interface names (IPv4 only)
    # (interface, N): the packets of a connection's first N bytes each way leaving by the
    # interface go to ecmpd's first-packets queue class there (model.QUEUE_FIRST).
    queues: tuple[tuple[str, int], ...] = ()
    pins4: tuple[PinReset, ...] = ()  # a pin's connections reset on one uplink (IPv4)
    pins6: tuple[PinReset, ...] = ()  # the same for IPv6

    @property
    def key(self) -> str:
        return "ecmpd"


# MPTCP endpoint ids are u8, per namespace. ecmpd gives its endpoints the lowest free id
# from here up, so `ip mptcp endpoint show` tells them apart at a glance; ownership is
# by the run dir's record of (id, address), not by the id alone: the kernel hands a
# foreign endpoint added without an id the next id after the highest one in use.
MPTCP_ID_BASE = 0xC0
# The kernel's maximum for each path-manager limit (MPTCP_PM_ADDR_MAX).
MPTCP_MAX_SUBFLOWS = 8


@dataclass(frozen=True)
class MptcpEndpoint:
    """An MPTCP `subflow` endpoint: new subflows leave from this address and device."""

    address: IPAddress
    ifname: str
    backup: bool = False  # used only when no other subflow works (MP_PRIO when it flips)
    # The kernel's id, when read from it (0 in a desired state: the writer picks one).
    id: int = field(default=0, compare=False)

    @property
    def key(self) -> IPAddress:
        return self.address

    @property
    def family(self) -> Family:
        return Family.INET if self.address.version == 4 else Family.INET6

    def immutable(self) -> str:
        """What the kernel cannot change in place (only `backup` flips by SET_FLAGS)."""
        return self.ifname


@dataclass(frozen=True)
class MptcpLimits:
    """The path manager's per-namespace `subflows` limit (per connection)."""

    subflows: int

    @property
    def key(self) -> str:
        return "mptcp-limits"  # kernel.record.MPTCP_LIMITS_KEY


@dataclass(frozen=True)
class DesiredState:
    """Everything ecmpd wants in the kernel; what `desired_state()` returns."""

    rules: frozenset[Rule] = frozenset()
    routes: frozenset[Route] = frozenset()
    nexthops: frozenset[Nexthop] = frozenset()
    groups: frozenset[NexthopGroup] = frozenset()
    sysctls: frozenset[Sysctl] = frozenset()
    nft: frozenset[NftTable] = frozenset()  # at most one: the `ecmpd` nftables table
    endpoints: frozenset[MptcpEndpoint] = frozenset()
    mptcp_limits: frozenset[MptcpLimits] = frozenset()  # at most one
    queues: frozenset[Queue] = frozenset()
    # Human names for rule priorities, so `explain` and `plan` can say which rule.
    rule_names: tuple[tuple[int, str], ...] = field(default=(), compare=False)
    # Each uplink's connection-mark slot (name, slot), for the run-dir record.
    mark_slots: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    # Tables whose routes only announce (`announce`): plan orders their changes apart.
    announce_tables: frozenset[int] = field(default=frozenset(), compare=False)


# The observed state has the same shape: what ecmpd owns, as read from the kernel.
ObservedState = DesiredState
