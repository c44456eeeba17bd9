"""Checks across fields and sections, on a config whose every field is already valid.

Pure: no kernel, no files. Each check yields (field path, message) findings.
"""

from __future__ import annotations

from collections.abc import Iterator

from ecmpd.config.enums import RuleActionName
from ecmpd.config.issues import did_you_mean
from ecmpd.config.schema import PRIORITY_SPAN, Config
from ecmpd.config.units import PORT_PROTOCOLS
from ecmpd.config.uplink import UplinkConfig
from ecmpd.marks import FULL, MarkSpace, MarkUse, clashes, mask_problem
from ecmpd.model import IPV6_ID_OFFSET, MAIN_TABLE, CapPeriod

Finding = tuple[str, str]
DAYS_PER_WEEK = 7
# User rules are 10 priorities apart (desired.USER_RULE_STEP): a pin's first choice,
# its fallbacks and a strict pin's final unreachable rule fit in between.
MAX_PIN_LIST = 9

# IPv6 nexthop ids are their IPv4 twins' plus IPV6_ID_OFFSET (model.nexthop_id).
MAX_DUAL_STACK_TABLE = IPV6_ID_OFFSET - 1


def carries_ipv6(uplink: UplinkConfig) -> bool:
    """Whether the uplink routes IPv6: it names an IPv6 gateway or source."""
    return uplink.gateway6 is not None or uplink.source6 is not None


def carries_ipv4(uplink: UplinkConfig) -> bool:
    """Whether the uplink routes IPv4: an IPv4 gateway or source, or no IPv6 at all.

    An uplink with neither is an IPv4 point-to-point link, as before IPv6 existed; an
    IPv6-only one must not grow a gateway-less IPv4 default route.
    """
    return uplink.gateway is not None or uplink.source is not None or not carries_ipv6(uplink)


def _carries(uplink: UplinkConfig, version: int) -> bool:
    return carries_ipv6(uplink) if version == 6 else carries_ipv4(uplink)


def _keys_for(version: int) -> str:
    return "gateway6 or source6" if version == 6 else "gateway or source"


def _unique_uplinks(config: Config) -> Iterator[Finding]:
    """Names, interfaces and tables are one per uplink; the balancer table is nobody's."""
    names: dict[str, str] = {}
    interfaces: dict[str, str] = {}
    tables: dict[int, str] = {config.balancer.table: "the balancer table"}
    if config.announce is not None:
        for key, table in (("table", config.announce.table), ("table6", config.announce.table6)):
            if table is None or table == MAIN_TABLE:
                continue
            if table == config.balancer.table:
                yield f"announce.{key}", f"table {table} is already the balancer table"
            tables.setdefault(table, "the announce table")
    for i, uplink in enumerate(config.uplinks):
        at = f"uplinks[{i}]"
        if uplink.name in names:
            yield f"{at}.name", f"duplicate uplink name '{uplink.name}' (also {names[uplink.name]})"
        names.setdefault(uplink.name, at)
        if uplink.interface in interfaces:
            owner = interfaces[uplink.interface]
            yield f"{at}.interface", f"interface '{uplink.interface}' is already used by {owner}"
        interfaces.setdefault(uplink.interface, f"uplink '{uplink.name}'")
        if uplink.table:  # 0: not given, allocated later from the free ids
            if uplink.table in tables:
                yield f"{at}.table", f"table {uplink.table} is already {tables[uplink.table]}"
            tables.setdefault(uplink.table, f"used by uplink '{uplink.name}'")


def _weights(config: Config) -> Iterator[Finding]:
    """Weights come either from every uplink's bandwidth or from none."""
    with_bandwidth = [u.name for u in config.uplinks if u.bandwidth is not None]
    for i, uplink in enumerate(config.uplinks):
        weighted = "weight" in uplink.model_fields_set
        if uplink.bandwidth is not None and weighted:
            yield f"uplinks[{i}].weight", "give weight or bandwidth, not both"
        elif with_bandwidth and uplink.bandwidth is None:
            field = "weight" if weighted else "bandwidth"
            message = f"'{with_bandwidth[0]}' has a bandwidth, so every uplink needs one"
            yield f"uplinks[{i}].{field}", message + " (weights are then derived from them)"


def _health_checks(config: Config) -> Iterator[Finding]:
    """Enough distinct targets for min_up; soft limits below the hard ones."""
    for i, uplink in enumerate(config.uplinks):
        check = uplink.check
        at = f"uplinks[{i}].check"
        seen = set()
        for j, target in enumerate(check.targets):
            if target in seen:
                yield f"{at}.targets[{j}]", f"{target} is listed twice"
            seen.add(target)
            if not _carries(uplink, target.version):
                has = _keys_for(target.version)
                message = f"{target} is IPv{target.version}, but this uplink has no {has}"
                yield f"{at}.targets[{j}]", message
        for soft, hard in (("degraded_loss", "max_loss"), ("degraded_rtt", "max_rtt")):
            low, high = getattr(check, soft), getattr(check, hard)
            if low is not None and high is not None and low >= high:
                yield f"{at}.{soft}", f"must be below {hard} (degraded comes before down)"
        # No targets means "probe the gateway": one target.
        count = len(seen) or 1
        if check.min_up > count:
            yield f"{at}.min_up", f"{check.min_up} is more than the number of targets ({count})"


def _rule_actions(config: Config) -> Iterator[Finding]:
    """pin names known uplinks, each once; uplink and strict belong to pin alone."""
    uplinks = [u.name for u in config.uplinks]
    for i, rule in enumerate(config.rules):
        at = f"rules[{i}]"
        if rule.action is RuleActionName.PIN:
            if rule.uplink is None:
                yield f"{at}.uplink", "required for action pin"
                continue
            single = len(rule.uplink) == 1
            if len(rule.uplink) > MAX_PIN_LIST:
                why = "exports chain the fallbacks in the priorities between two rules"
                yield f"{at}.uplink", f"lists at most {MAX_PIN_LIST} uplinks ({why})"
            for j, name in enumerate(rule.uplink):
                path = f"{at}.uplink" if single else f"{at}.uplink[{j}]"
                if name not in uplinks:
                    yield path, f"no uplink named '{name}'{did_you_mean(name, uplinks)}"
                elif name in rule.uplink[:j]:
                    yield path, f"'{name}' is listed twice (a fallback list names each uplink once)"
            continue
        if rule.uplink is not None:
            yield f"{at}.uplink", f"only allowed with action pin, not {rule.action}"
        if rule.strict:
            yield f"{at}.strict", f"only allowed with action pin, not {rule.action}"


def _dual_stack_tables(config: Config) -> Iterator[Finding]:
    """With IPv6, tables stay at most MAX_DUAL_STACK_TABLE so nexthop ids never collide."""
    if not any(carries_ipv6(u) for u in config.uplinks):
        return
    owned = [(f"uplinks[{i}].table", u.table) for i, u in enumerate(config.uplinks)]
    owned.append(("balancer.table", config.balancer.table))
    for path, table in owned:
        if table > MAX_DUAL_STACK_TABLE:
            why = f"ecmpd's IPv6 nexthop ids are its table ids + {IPV6_ID_OFFSET:#x}"
            message = f"must be at most {MAX_DUAL_STACK_TABLE} when an uplink has IPv6 ({why})"
            yield path, f"{message}, got {table}"


def _rule_matches(config: Config) -> Iterator[Finding]:
    """Unique names, and match keys that make sense together."""
    names: dict[str, str] = {}
    for i, rule in enumerate(config.rules):
        at = f"rules[{i}]"
        if rule.name in names:
            yield f"{at}.name", f"duplicate rule name '{rule.name}' (also {names[rule.name]})"
        names.setdefault(rule.name, at)
        for key, ports in (("sport", rule.sport), ("dport", rule.dport)):
            if ports is not None and rule.proto not in PORT_PROTOCOLS:
                yield f"{at}.{key}", "ports need proto tcp, udp or sctp"
        if rule.fwmask is not None and rule.fwmark is None:
            yield f"{at}.fwmask", "needs fwmark"
        if rule.from_ is not None and rule.to is not None and rule.from_.version != rule.to.version:
            yield f"{at}.to", f"is IPv{rule.to.version} but from is IPv{rule.from_.version}"


def _spillover(config: Config) -> Iterator[Finding]:
    """Spillover measures load against bandwidths, and needs a next tier to spill into."""
    spill = config.balancer.spillover
    if spill is None:
        return
    for i, uplink in enumerate(config.uplinks):
        if uplink.bandwidth is None:
            why = "the load is measured against it"
            yield f"uplinks[{i}].bandwidth", f"required by balancer.spillover ({why})"
    if spill.below >= spill.above:
        above = f"{spill.above:.0%}"
        yield "balancer.spillover.below", f"must be lower than above ({above}), for hysteresis"
    tiers = {u.tier for u in config.uplinks}
    if len(tiers) == 1:
        only = f"every uplink is in tier {tiers.pop()}"
        yield "balancer.spillover", f"{only}: there is no next tier to spill into"


def _data_caps(config: Config) -> Iterator[Finding]:
    """A reset day needs a cap, and must exist in the cap's period."""
    for i, uplink in enumerate(config.uplinks):
        day, cap = uplink.data_cap_reset_day, uplink.data_cap
        at = f"uplinks[{i}].data_cap_reset_day"
        if day is None:
            continue
        if cap is None:
            yield at, "needs data_cap"
        elif cap.period is CapPeriod.DAY:
            yield at, "a cap per day resets every day; remove data_cap_reset_day"
        elif cap.period is CapPeriod.WEEK and day > DAYS_PER_WEEK:
            yield at, f"a weekly cap resets on a day 1..7 (1 = Monday), got {day}"


def _capacity(config: Config) -> Iterator[Finding]:
    """One reply rule per uplink plus the user's rules must fit ecmpd's priority block."""
    needed = len(config.uplinks) + len(config.rules)
    if needed > PRIORITY_SPAN:
        counts = f"{len(config.uplinks)} uplinks and {len(config.rules)} rules"
        yield "rules", f"{counts} need {needed} priorities; ecmpd owns only {PRIORITY_SPAN}"


def _connection_marks(config: Config) -> Iterator[Finding]:
    """The mark range is usable, has a slot per uplink, and no rule of the user tests it."""
    mask = config.connections.mark
    problem = mask_problem(mask)
    if problem is not None:
        yield "connections.mark", problem
        return
    room = MarkSpace(mask).max_uplinks
    if len(config.uplinks) > room:
        message = f"{mask:#010x} has room for {room} uplinks, the config has {len(config.uplinks)}"
        yield "connections.mark", message + " (give it more bits)"
    for i, rule in enumerate(config.rules):
        if rule.fwmark is None:
            continue
        use = MarkUse(f"rules[{i}]", FULL if rule.fwmask is None else rule.fwmask, rule.fwmark)
        if clashes(use, mask):
            message = f"tests bits of connections.mark ({mask:#010x}), which ecmpd sets itself"
            yield f"rules[{i}].fwmark", message


def _announce(config: Config) -> Iterator[Finding]:
    """The announced families exist, and their minimum can be met."""
    if config.announce is None:
        return
    wanted = config.announce.min_uplinks
    if wanted.ipv4 is None and wanted.ipv6 is None:
        yield "announce.min_uplinks", "names neither ipv4 nor ipv6: nothing would be announced"
    for version, minimum in ((4, wanted.ipv4), (6, wanted.ipv6)):
        count = sum(1 for u in config.uplinks if _carries(u, version))
        # A family no uplink carries is simply not announced.
        if minimum is not None and 0 < count < minimum:
            have = f"{count} uplink{'s carry' if count != 1 else ' carries'} IPv{version}"
            yield (
                "announce.min_uplinks",
                f"{minimum} for IPv{version}, but only {have}: it would never be announced"
                " (a mapping sets each family: {ipv4: N, ipv6: M})",
            )


CHECKS = (
    _unique_uplinks,
    _weights,
    _health_checks,
    _rule_actions,
    _rule_matches,
    _capacity,
    _dual_stack_tables,
    _spillover,
    _data_caps,
    _connection_marks,
    _announce,
)


def semantic_findings(config: Config) -> list[Finding]:
    """Every cross-field problem of a schema-valid config."""
    return [finding for check in CHECKS for finding in check(config)]
