"""The failover order at run time: what carries, failback resets, tier changes, metering."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from ipaddress import ip_interface
from pathlib import Path
from textwrap import dedent

from ecmpd.carrying import carrying, carrying_tiers, takeover_time, uplink_roles
from ecmpd.config import Config, parse_config
from ecmpd.desired import desired_state
from ecmpd.facts import InterfaceFacts, KernelFacts
from ecmpd.failback import failback_ending
from ecmpd.health.fsm import HealthState, detection_time
from ecmpd.kernel.netdev import InterfaceCounters
from ecmpd.kernel.resets import Ending
from ecmpd.meter import Meter
from ecmpd.metering import standby_interval
from ecmpd.model import DesiredState, Family
from ecmpd.order import Role
from ecmpd.orderwatch import OrderWatch, TierChange
from ecmpd.status import Status, UplinkStatus, with_order
from ecmpd.status.order import daemon_order_view, kernel_order_view
from ecmpd.usagestore import load_ledgers

FACTS = KernelFacts(
    interfaces={
        f"wan{i}": InterfaceFacts(f"wan{i}", 10 + i, addresses=(ip_interface(f"10.{i}.0.2/24"),))
        for i in (1, 2, 3)
    }
)
TEXT = """\
uplinks:
  - {name: fiber, interface: wan1, gateway: 10.1.0.1, table: 101}
  - {name: cable, interface: wan2, gateway: 10.2.0.1, table: 102}
  - {name: lte, interface: wan3, gateway: 10.3.0.1, table: 103, tier: 2, metered: true,
     data_cap: 1MB/day}
rules:
  - {name: vpn, action: pin, from: 10.9.0.5, uplink: [fiber, lte]}
  - {name: everything-else, action: balance}
"""
ALL = {"fiber", "cable", "lte"}


def config(text: str = TEXT) -> Config:
    return parse_config(dedent(text))


def state(
    cfg: Config,
    down: Collection[str] = frozenset(),
    ending: Mapping[Family, Collection[str]] | None = None,
) -> DesiredState:
    health = {n: n not in down for n in ALL}
    return desired_state(cfg, health, FACTS, ending=ending or {})


def test_carrying_roles_and_takeover_time() -> None:
    cfg = config()
    st = state(cfg)
    now = carrying(cfg, st, dict(st.rule_names))
    assert now.balanced[Family.INET] == {"fiber", "cable"} and now.pinned == {"fiber"}
    assert carrying_tiers(cfg, now)[Family.INET] == 1
    roles = uplink_roles(cfg, now, ALL - {"cable"}, ())
    assert roles == {"fiber": Role.CARRYING, "cable": Role.CARRYING, "lte": Role.STANDBY}
    assert uplink_roles(cfg, now, {"fiber"}, {"cable"})["lte"] is Role.DOWN
    assert takeover_time(cfg, "lte", ALL) == detection_time(cfg.uplink("fiber").check)
    assert takeover_time(cfg, "fiber", ALL) == 0.0
    both_down = state(cfg, {"fiber", "cable"})
    after = carrying(cfg, both_down, dict(both_down.rule_names))
    assert after.balanced[Family.INET] == {"lte"} and after.pinned == {"lte"}


def test_failback_resets_only_a_standing_by_uplink_with_reset() -> None:
    cfg = config()
    st = state(cfg)
    now = carrying(cfg, st, dict(st.rule_names))
    service = {Family.INET: ALL, Family.INET6: set()}
    assert failback_ending(cfg, now, service)[Family.INET] == {"lte"}
    assert failback_ending(cfg, now, {Family.INET: {"fiber"}})[Family.INET] == frozenset()
    kept = config(TEXT.replace("metered: true,", "metered: true, failback: keep,"))
    assert failback_ending(kept, now, service)[Family.INET] == frozenset()


class Fake:
    """Interface counters and clocks the tests move by hand."""

    def __init__(self) -> None:
        self.counters: InterfaceCounters = {}
        self.t = 0.0
        self.wall = datetime(2025, 3, 10, 12, tzinfo=UTC)
        self.changes: list[str] = []

    def set(self, ifname: str, rx: int, tx: int) -> None:
        self.counters[ifname] = {"rx_bytes": rx, "tx_bytes": tx}

    def meter(self, run_dir: Path) -> Meter:
        return Meter(
            run_dir,
            self.changes.append,
            read=lambda names: {n: c for n, c in self.counters.items() if n in set(names)},
            clock=lambda: self.t,
            wall=lambda: self.wall,
        )


def test_takeover_and_failback_through_the_order_watch(tmp_path: Path) -> None:
    cfg = config()
    fake = Fake()
    watch = OrderWatch(fake.meter(tmp_path))
    watch.meter.use_config(cfg)

    def reconcile(down: set[str]) -> tuple[list[TierChange], list[tuple[str, Ending]]]:
        service = {Family.INET: ALL - down, Family.INET6: set()}
        watch.desired(cfg, lambda ending: state(cfg, down, ending), service)
        return watch.applied(cfg, FACTS)

    assert reconcile(set()) == ([], [])  # standing by from the start: nothing to end
    assert watch.ending[Family.INET] == {"lte"}
    changes, ends = reconcile({"fiber", "cable"})
    assert [(c.old, c.new, c.takeover) for c in changes] == [(1, 2, True)]
    assert ends == [] and watch.ending[Family.INET] == frozenset()
    changes, ends = reconcile({"cable"})
    assert [(c.old, c.new, c.takeover) for c in changes] == [(2, 1, False)]
    ((name, ending),) = ends
    assert name == "lte" and ending.families == (Family.INET,)
    assert ending.sources == (ip_interface("10.3.0.2/24").ip,)
    assert watch.takeovers == 1


def test_paces_spare_a_standby_only_while_its_lower_tier_is_settled(tmp_path: Path) -> None:
    cfg = config()
    watch = OrderWatch(Fake().meter(tmp_path))
    service = {Family.INET: ALL, Family.INET6: set()}
    watch.desired(cfg, lambda ending: state(cfg, set(), ending), service)
    watch.applied(cfg, FACTS)

    up = {"fiber": HealthState.UP, "cable": HealthState.UP, "lte": HealthState.UP}
    interval = standby_interval(cfg.uplink("lte").check, {Family.INET: 2})
    targets = {n: {Family.INET: 2} for n in ALL}

    def paces(states: dict[str, HealthState]) -> dict[str, float]:
        health = {(n, Family.INET): s for n, s in states.items()}
        return watch.paces(cfg, health, targets, service, ())

    assert paces(up) == {"lte": interval}
    one_falling = {**up, "fiber": HealthState.FALLING}
    assert paces(one_falling) == {"lte": interval}
    # Every carrying uplink short of up: the standby may be needed in a second.
    assert paces({**one_falling, "cable": HealthState.FALLING}) == {}


def test_a_data_cap_demotes_and_survives_a_restart(tmp_path: Path) -> None:
    cfg = config()
    fake = Fake()
    meter = fake.meter(tmp_path)
    meter.use_config(cfg)
    fake.set("wan3", 5_000, 0)
    meter.tick({})
    fake.set("wan3", 600_000, 300_000)  # 895 kB this day
    fake.t += 1
    meter.tick({})
    assert meter.order.last_resort == frozenset() and fake.changes == []
    fake.set("wan3", 700_000, 400_000)  # 1095 kB: over the 1 MB cap
    fake.t += 1
    meter.tick({})
    assert meter.order.last_resort == {"lte"} and fake.changes == ["lte reached its data cap"]
    assert load_ledgers(tmp_path)["lte"].used == 1_095_000  # saved at once
    # A restart reads it back and keeps counting from the same interface counters.
    again = Fake()
    again.counters, again.wall = fake.counters, fake.wall
    restarted = again.meter(tmp_path)
    restarted.use_config(cfg)
    assert restarted.order.last_resort == {"lte"}  # before its first reading
    restarted.tick({})
    assert restarted.order.last_resort == {"lte"}
    # The next day the cap is fresh again.
    again.wall += timedelta(days=1)
    again.set("wan3", 710_000, 400_000)
    restarted.tick({})
    assert restarted.order.last_resort == frozenset()
    assert again.changes == ["lte's data cap reset"]


def test_status_shows_tier_role_bytes_takeover_and_cap() -> None:
    cfg = config()
    st = state(cfg)
    now = carrying(cfg, st, dict(st.rule_names))
    entries = tuple(
        UplinkStatus.model_validate(
            {
                "name": u.name,
                "interface": u.interface,
                "table": u.table,
                "state": "up",
                "in_balancer": True,
                "weight": 1,
            }
        )
        for u in cfg.uplinks
    )
    base = Status(source="daemon", uplinks=entries)
    view = daemon_order_view(cfg, now, ALL, (), {"lte": (10, 20)}, {}, ())
    lte = with_order(base, cfg, view).uplink("lte")
    assert (lte.tier, lte.role, lte.metered, lte.bytes_in, lte.bytes_out) == (
        2, Role.STANDBY, True, 10, 20,
    )  # fmt: skip
    assert lte.takeover_time_s == round(detection_time(cfg.uplink("fiber").check), 3)
    assert (lte.data_cap, lte.data_used, lte.last_resort) == (10**6, None, False)
    uplinks = with_order(base, cfg, view).to_json()["uplinks"]
    assert isinstance(uplinks, list)
    fiber = next(u for u in uplinks if u["name"] == "fiber")
    assert fiber["role"] == "carrying" and "takeover_time_s" not in fiber
    # The kernel's view: lte's nexthop is there, out of the group tier 1 fills.
    kview = kernel_order_view(cfg, st, st.rule_names, {})
    assert kview.roles == {"fiber": Role.CARRYING, "cable": Role.CARRYING, "lte": Role.STANDBY}
