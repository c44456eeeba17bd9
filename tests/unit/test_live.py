"""The live view, rendered from hand-made snapshots; its feeder for `ecmpd watch`."""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pytest
from rich.console import Console

from ecmpd.cli.watch import parse_capacities
from ecmpd.health.fsm import HealthState
from ecmpd.kernel.netdev import InterfaceCounters
from ecmpd.live import (
    Snapshot,
    UplinkView,
    bar,
    render,
    sparkline,
    target_shares,
)
from ecmpd.livecells import FamilyView, OrderCell, family_views, health_figures, mptcp_text
from ecmpd.livefeed import Feed
from ecmpd.liveview import LiveView
from ecmpd.status import (
    DaemonCounters,
    DisplayState,
    FamilyStatus,
    MptcpStatus,
    Status,
    TargetStatus,
    UplinkStatus,
)


def view(name: str, state: str, weight: int, mbit: float, **more: Any) -> UplinkView:
    """One uplink of a snapshot; in the balancer when up."""
    more.setdefault("in_balancer", state == "up")
    return UplinkView(
        name=name, interface=f"wan-{name[-1]}", state=state, weight=weight, mbit=mbit, **more
    )


def text_of(snapshot: Snapshot, width: int = 100) -> str:
    """The frame as plain text, as a 100-column terminal shows it."""
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(render(snapshot))
    return console.export_text()


FAILURE = Snapshot(
    title="ecmpd lab demo · 3 ISPs · 48 TCP flows",
    uplinks=(
        view(
            "isp-a",
            "up",
            2,
            97.6,
            capacity_mbit=100,
            rtt_ms=48.25,
            loss=0.0,
            flows=30,
            history=(96.0, 97.0, 98.0),
        ),
        view(
            "isp-b",
            "down",
            4,
            0.0,
            capacity_mbit=200,
            rtt_ms=51.7,
            loss=0.33,
            flows=0,
            history=(195.0, 100.0, 0.0),
        ),
        view(
            "isp-c",
            "up",
            1,
            48.8,
            capacity_mbit=50,
            rtt_ms=47.0,
            loss=0.16,
            flows=18,
            history=(48.0, 49.0, 49.0),
        ),
    ),
    elapsed_s=24.0,
    phase="failure",
    phases=("steady", "failure", "recovery", "summary"),
    events=(
        (18.0, "gray failure on [bold]isp-b[/]"),
        (18.7, "isp-b out of the group [bold]730 ms[/] after the fault"),
    ),
    history_step_s=0.5,
    caption="isp-b is out of the group: its flows come back on the others",
    note="Ctrl-C stops and removes the lab",
)


def test_render_shows_every_uplink_with_its_figures() -> None:
    text = text_of(FAILURE)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    row_a = next(line for line in lines if line.startswith("│ isp-a"))
    assert "● up" in row_a and "48.2 ms" in row_a and "0%" in row_a and " 30 " in row_a
    assert "98/100" in row_a
    row_b = next(line for line in lines if line.startswith("│ isp-b"))
    # Down: no RTT now (the window's answers are old), the loss the daemon reports.
    assert "● down" in row_b and " - " in row_b and "33%" in row_b and "0/200" in row_b
    row_c = next(line for line in lines if line.startswith("│ isp-c"))
    assert "49/50" in row_c and "16%" in row_c


def test_shares_are_set_against_the_weights_of_the_uplinks_in_service() -> None:
    lines = text_of(FAILURE).splitlines()
    share = {
        n: next(line for line in lines if line.startswith(f"│ {n}")) for n in ("isp-a", "isp-c")
    }
    # isp-b is out: isp-a's weight 2 of the remaining 3 is 67%, isp-c's 33%.
    assert share["isp-a"].rstrip(" │").endswith("67%  67%")
    assert share["isp-c"].rstrip(" │").endswith("33%  33%")
    assert "┃" in share["isp-a"]  # the weight's marker on the bar
    assert target_shares(FAILURE.uplinks) == pytest.approx(
        {"isp-a": 2 / 3, "isp-b": 0.0, "isp-c": 1 / 3}
    )


def test_render_shows_totals_phase_timeline_and_events() -> None:
    text = text_of(FAILURE)
    assert "aggregate 146 Mbit/s of 350 summed capacity (42%); 150 in service (98%)" in text
    assert "48 flows" in text
    assert "steady ▸ failure ▸ recovery ▸ summary" in text and "t  24.0 s" in text
    assert "last 2 s" in text  # 3 points of 0.5 s
    sparks = {line[:7]: line[7:] for line in text.splitlines() if line.startswith(" isp-")}
    # Scaled to each uplink's capacity: isp-b full, half, then nothing.
    assert sparks == {" isp-a ": "███", " isp-b ": "█▅ ", " isp-c ": "███"}
    assert "18.0 s  gray failure on isp-b" in text  # markup rendered, not shown
    assert "730 ms after the fault" in text and "[bold]" not in text
    assert "Ctrl-C stops and removes the lab" in text
    lines = text.splitlines()
    assert lines[1] == "isp-b is out of the group: its flows come back on the others"


def test_render_without_capacity_flows_or_history() -> None:
    snap = Snapshot(
        title="ecmpd watch · 2 uplinks",
        uplinks=(
            view("up-a", "up", 1, 40.0, tx_mbit=40.0, rx_mbit=2.0),
            view("up-b", "unknown", 3, 120.0, tx_mbit=3.0, rx_mbit=120.0),
        ),
    )
    text = text_of(snap)
    assert "flows" not in text and "last " not in text
    assert "↑40 ↓2" in text and "↑3 ↓120" in text
    # Unknown still counts as in service when the balancer says so: here it does not.
    row_b = next(line for line in text.splitlines() if line.startswith("│ up-b"))
    assert "75%" in row_b and row_b.rstrip(" │").endswith("0%")
    assert "aggregate 160 Mbit/s" in text and "summed capacity" not in text


def test_render_fits_narrow_and_wide_terminals() -> None:
    for width in (80, 100, 160):
        assert max(len(line) for line in text_of(FAILURE, width).splitlines()) <= width


def row_of(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"│ {name} "))


def dual(
    v4: str, v6: str, *, in4: bool | None = None, in6: bool | None = None
) -> tuple[FamilyView, FamilyView]:
    """The families of a dual-stack uplink; each in its group when up unless told."""
    return (
        FamilyView("ipv4", v4, v4 == "up" if in4 is None else in4),
        FamilyView("ipv6", v6, v6 == "up" if in6 is None else in6),
    )


def test_a_dual_stack_uplink_whose_families_agree_shows_one_state() -> None:
    a, b, c = FAILURE.uplinks
    snap = replace(
        FAILURE,
        uplinks=(
            replace(a, families=dual("up", "up")),
            replace(b, families=dual("down", "down")),
            replace(c, families=(FamilyView("ipv4", "up", True),)),
        ),
    )
    assert not any(u.mixed for u in snap.uplinks)
    # The same frame as without families: nothing to tell apart.
    assert text_of(snap) == text_of(FAILURE)


def test_a_degraded_uplink_shows_each_family_at_100_columns() -> None:
    a, b, c = FAILURE.uplinks
    snap = replace(
        FAILURE,
        uplinks=(
            replace(a, families=dual("up", "up")),
            # IPv4 answers, IPv6 does not: still in the (IPv4) balancer, out of the IPv6 one.
            replace(b, state="up", in_balancer=True, families=dual("up", "down")),
            replace(c, families=dual("up", "up")),
        ),
    )
    text = text_of(snap)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text  # the bars made room, no figure was cut
    row_b = row_of(text, "isp-b")
    assert "v4 ● up · v6 ● down" in row_b and "51.7 ms" in row_b and "33%" in row_b
    assert "● up " in row_of(text, "isp-a") and "v6" not in row_of(text, "isp-a")
    assert row_b.rstrip(" │").endswith("0%  57%")  # its IPv4 weight counts again


def test_a_degraded_uplink_stands_out_in_colour() -> None:
    a, b, _ = FAILURE.uplinks
    snap = replace(
        FAILURE,
        uplinks=(replace(a, families=dual("up", "up")), replace(b, families=dual("down", "up"))),
    )
    console = Console(record=True, width=100, file=io.StringIO(), color_system="standard")
    console.print(render(snap))
    rows = [line for line in console.export_text(styles=True).splitlines() if "●" in line]
    row_a, row_b = (next(line for line in rows if name in line) for name in ("isp-a", "isp-b"))
    # Its name in bold yellow (isp-a's in plain bold), each family's state in its colour.
    assert "\x1b[1misp-a " in row_a and "\x1b[1;33misp-b " in row_b
    assert "\x1b[31m● down\x1b[0m" in row_b and "\x1b[32m● up" in row_b


def test_a_family_out_of_its_group_for_no_reason_its_state_gives_is_marked() -> None:
    a, b, _ = FAILURE.uplinks
    up_but_out = replace(a, families=dual("up", "up", in6=False))
    drained = replace(b, state="drained", families=dual("drained", "drained"))
    snap = replace(FAILURE, uplinks=(up_but_out, drained))
    assert up_but_out.mixed and not drained.mixed
    text = text_of(snap)
    assert "v4 ● up · v6 ● up out" in row_of(text, "isp-a")
    assert "● drained" in row_of(text, "isp-b") and "out" not in row_of(text, "isp-b")


def test_rtt_is_hidden_only_when_every_family_is_down() -> None:
    a, b, _ = FAILURE.uplinks
    half = replace(a, state="down", rtt_ms=20.0, families=dual("down", "up"))
    whole = replace(b, rtt_ms=20.0, families=dual("down", "down"))
    text = text_of(replace(FAILURE, uplinks=(half, whole)))
    assert "v4 ● down · v6 ● up" in row_of(text, "isp-a") and "20.0 ms" in row_of(text, "isp-a")
    assert "20.0 ms" not in row_of(text, "isp-b")


def test_the_watch_columns_fit_100_columns_with_a_degraded_uplink() -> None:
    for families in ((), dual("up", "down")):
        snap = Snapshot(
            title="ecmpd watch · 2 uplinks",
            uplinks=(
                view("up-a", "up", 1, 40.0, tx_mbit=40.0, rx_mbit=2.0, families=families),
                view("up-b", "unknown", 3, 120.0, tx_mbit=3.0, rx_mbit=120.0, rtt_ms=5.0),
            ),
        )
        text = text_of(snap)
        assert max(len(line) for line in text.splitlines()) <= 100
        # out / in makes the table wider than the bars' estimate: they narrow, nothing is cut.
        assert "…" not in text and "throughput, Mbit/s" in text and "5.0 ms" in text
        assert ("v4 ● up · v6 ● down" in text) == bool(families)


def test_bar_and_sparkline_primitives() -> None:
    assert bar(0.5, 4, "cyan").plain == "██  "
    assert bar(1.7, 3, "cyan").plain == "███"
    assert bar(-1, 3, "cyan").plain == "   "
    assert bar(1 / 16, 2, "cyan").plain == "▏ "
    assert sparkline([0, 50, 100], 100, 5) == "   ▅█"
    assert sparkline([0.01], 100, 1) == " "  # probes alone are not traffic


def fam(state: str, *targets: tuple[float | None, float], up: bool | None = None) -> FamilyStatus:
    """A family of a daemon's status with targets of these (average RTT ms, loss)."""
    return FamilyStatus(
        state=DisplayState(state),
        health=HealthState.UP if state == "up" else HealthState.DOWN,
        in_balancer=state == "up" if up is None else up,
        weight=1,
        targets=tuple(
            TargetStatus(target=f"10.0.0.{i}", rtt_avg_ms=rtt, loss=loss)
            for i, (rtt, loss) in enumerate(targets)
        ),
    )


def entry(name: str, interface: str = "wan", **families: FamilyStatus) -> UplinkStatus:
    """An uplink of a daemon's status."""
    return UplinkStatus(name=name, interface=interface, table=101, families=families)


def test_health_figures_take_the_best_rtt_and_the_worst_loss() -> None:
    status = entry("a", ipv4=fam("up", (12.5, 0.0), (9.0, 0.25), (None, 1.0)))
    assert health_figures(status) == (9.0, 1.0)
    assert health_figures(entry("a", ipv4=fam("up"))) == (None, None)


def test_health_figures_time_the_families_not_down() -> None:
    v4 = (5.0, 1.0)  # a down family's RTT is from before it failed
    v6 = (8.0, 0.0)
    assert health_figures(entry("a", ipv4=fam("down", v4), ipv6=fam("up", v6))) == (8.0, 1.0)
    assert health_figures(entry("a", ipv4=fam("down", v4), ipv6=fam("down", v6))) == (None, 1.0)


def test_family_views_come_ipv4_first_from_the_status() -> None:
    assert family_views(entry("a", ipv6=fam("down"), ipv4=fam("up"))) == dual("up", "down")
    assert family_views(entry("a", ipv4=fam("up"))) == (FamilyView("ipv4", "up", True),)


def test_live_view_redraws_from_fresh_snapshots_and_stops() -> None:
    calls = threading.Semaphore(0)

    def snapshot() -> Snapshot:
        calls.release()
        return FAILURE

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=100, color_system=None)
    with LiveView(console, snapshot, fps=50) as live:
        for _ in range(5):  # the first frame, then redraws from the thread
            assert calls.acquire(timeout=5)
    assert live.error is None
    assert "isp-b" in out.getvalue()
    assert not any(t.name == "live-view" for t in threading.enumerate())


# --- the feeder of `ecmpd watch` -------------------------------------------------------


class Fake:
    """A daemon status and interface counters that advance with a fake clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.bytes = {"wan-a": [0, 0], "wan-b": [0, 0]}
        self.state_b = "up"

    def status(self) -> Status:
        b = fam(self.state_b).model_copy(update={"weight": 3, "health": HealthState.UP})
        return Status(
            source="daemon",
            uplinks=(
                entry("a", "wan-a", ipv4=fam("up", (5.0, 0.0))),
                entry("b", "wan-b", ipv4=b),
            ),
            daemon=DaemonCounters(pid=42, uptime_s=7.0, reconciles=2),
        )

    def counters(self, names: Sequence[str]) -> InterfaceCounters:
        assert sorted(names) == ["wan-a", "wan-b"]
        return {n: {"tx_bytes": tx, "rx_bytes": rx} for n, (tx, rx) in self.bytes.items()}

    def advance(self, seconds: float, mbit: Mapping[str, tuple[float, float]]) -> None:
        self.now += seconds
        for name, (tx, rx) in mbit.items():
            self.bytes[name][0] += int(tx * 1e6 / 8 * seconds)
            self.bytes[name][1] += int(rx * 1e6 / 8 * seconds)


def test_feed_turns_status_and_counters_into_rates_and_shares() -> None:
    fake = Fake()
    feed = Feed(fake.status, fake.counters, capacities={"b": 300.0}, clock=lambda: fake.now)
    feed.sample()
    assert [u.mbit for u in feed.snapshot().uplinks] == [0.0, 0.0]  # one sample: no rate yet
    fake.advance(0.5, {"wan-a": (100.0, 4.0), "wan-b": (6.0, 300.0)})
    feed.sample()
    a, b = feed.snapshot().uplinks
    assert (a.tx_mbit, a.rx_mbit, a.mbit) == pytest.approx((100.0, 4.0, 100.0))
    assert (b.tx_mbit, b.rx_mbit, b.mbit) == pytest.approx((6.0, 300.0, 300.0))  # busier way
    assert (a.rtt_ms, a.loss, b.rtt_ms, b.capacity_mbit) == (5.0, 0.0, None, 300.0)
    text = text_of(feed.snapshot())
    assert "ecmpd pid 42, up 7 s, 2 kernel updates" in text
    assert "25%  25%" in text and "75%  75%" in text


def test_feed_shows_each_family_of_a_degraded_uplink() -> None:
    fake = Fake()
    plain = fake.status

    def dual_stack() -> Status:
        status = plain()
        # IPv6 failed on its own.
        b = entry("b", "wan-b", ipv4=fam("up"), ipv6=fam("down"))
        return status.model_copy(update={"uplinks": (status.uplinks[0], b)})

    feed = Feed(dual_stack, fake.counters, clock=lambda: fake.now)
    feed.sample()
    a, b = feed.snapshot().uplinks
    assert not a.mixed and b.families == dual("up", "down") and b.mixed
    text = text_of(feed.snapshot())
    assert "v4 ● up · v6 ● down" in row_of(text, "b") and "v6" not in row_of(text, "a")


def test_feed_keeps_history_per_step_and_survives_a_silent_daemon() -> None:
    fake = Fake()
    feed = Feed(fake.status, fake.counters, clock=lambda: fake.now)
    feed.sample()
    for _ in range(9):  # 2.25 s at 4 Hz
        fake.advance(0.25, {"wan-a": (80.0, 0.0), "wan-b": (0.0, 0.0)})
        feed.sample()
    a, _ = feed.snapshot().uplinks
    assert a.history == pytest.approx((80.0, 80.0))  # two whole seconds, the third still open

    def silent() -> Status:
        raise OSError("connection refused")

    feed._status_fn = silent
    fake.state_b = "down"
    fake.advance(0.25, {"wan-a": (80.0, 0.0)})
    feed.sample()  # the last status is kept, marked stale
    snap = feed.snapshot()
    assert snap.uplinks[1].state == "up" and "daemon not answering" in (snap.note or "")


def test_parse_capacities() -> None:
    assert parse_capacities(["isp-a=100", "isp-b=2.5"]) == {"isp-a": 100.0, "isp-b": 2.5}
    for bad in ("isp-a", "=5", "isp-a=fast", "isp-a=0"):
        with pytest.raises(ValueError, match="--capacity"):
            parse_capacities([bad])


def test_a_standing_by_backup_shows_its_tier_role_and_bytes() -> None:
    uplinks = (
        view("fiber", "up", 1, 40.0, order=OrderCell(1, "carrying", 2_500_000_000, 340_000_000)),
        view("lte", "up", 1, 0.0, in_balancer=False, order=OrderCell(2, "standby", 1_200, 900)),
    )
    text = text_of(Snapshot(title="t", uplinks=uplinks), width=140)
    assert "2 standby" in row_of(text, "lte") and "1.2k / 900" in row_of(text, "lte")
    assert "1 carrying" in row_of(text, "fiber") and "2.5G / 340.0M" in row_of(text, "fiber")
    # Without a failover order the columns stay away.
    plain = text_of(Snapshot(title="t", uplinks=(view("a", "up", 1, 1.0),)))
    assert "tier" not in plain and "sent / received" not in plain


def test_the_daemons_mptcp_figures_get_a_column_in_watch() -> None:
    fake = Fake()
    plain = fake.status
    mptcp = MptcpStatus(endpoints=("10.1.0.2",), backup=True, connections=2, subflows=3)

    def with_mptcp() -> Status:
        status = plain()
        a = status.uplinks[0].model_copy(update={"mptcp": mptcp})
        return status.model_copy(update={"uplinks": (a, status.uplinks[1])})

    feed = Feed(with_mptcp, fake.counters, clock=lambda: fake.now)
    feed.sample()
    a, b = feed.snapshot().uplinks
    assert (a.mptcp, b.mptcp) == (mptcp, None)
    text = text_of(feed.snapshot(), width=140)
    assert "mptcp" in text
    assert "2 conn, 3 subflows (backup)" in row_of(text, "a")
    assert "off" in row_of(text, "b")  # `mptcp: false` on it
    # Without MPTCP in the config the column stays away.
    assert "mptcp" not in text_of(Feed(plain, fake.counters, clock=lambda: fake.now).snapshot())


def test_an_mptcp_uplink_out_of_service_has_no_endpoint_yet_may_carry_a_first_subflow() -> None:
    gone = MptcpStatus(endpoints=(), backup=False, connections=1, subflows=1)
    assert mptcp_text(gone) == "no endpoint, 1 subflows"
    assert mptcp_text(None) == "off"
    text = text_of(Snapshot(title="t", uplinks=(view("a", "down", 1, 0.0, mptcp=gone),)))
    assert "no endpoint, 1 subflows" in row_of(text, "a")
