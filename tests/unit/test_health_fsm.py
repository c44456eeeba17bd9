"""HealthTracker: the enforced table, rise/fall counting, windows, carrier, timing bounds."""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import statistics
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecmpd.config import CheckConfig
from ecmpd.health import fsm
from ecmpd.health.fsm import (
    FAST_PROBE_FACTOR,
    TRANSITIONS,
    HealthState,
    HealthTracker,
    IllegalTransition,
    RoundResults,
    Target,
    Transition,
    check_transition,
    detection_time,
    recovery_time,
)
from ecmpd.health.window import (
    MAX_WINDOW,
    MIN_WINDOW,
    ProbeWindow,
    default_window,
    quality,
    rounds_to_clear,
)

S = HealthState
GW = IPv4Address("192.0.2.1")
A, B, C = IPv4Address("198.51.100.1"), IPv4Address("198.51.100.2"), IPv6Address("2001:db8::1")
RTT = 0.01

LEGAL = {(old, new) for old, news in TRANSITIONS.items() for new in news}
ILLEGAL = sorted(set(itertools.product(S, S)) - LEGAL)


def cfg(**fields: Any) -> CheckConfig:
    """A CheckConfig built the way the loader would, with these fields."""
    return CheckConfig(**fields)


def answered(targets: Sequence[Target], rtt: float = RTT) -> RoundResults:
    """A round in which every target answered."""
    return dict.fromkeys(targets, rtt)


def lost(targets: Sequence[Target]) -> RoundResults:
    """A round in which every target was lost."""
    return dict.fromkeys(targets, None)


@dataclass
class Run:
    """A tracker driven in virtual time, one second per round, logging its transitions."""

    check: CheckConfig = field(default_factory=lambda: cfg(down_after=3, up_after=3))
    targets: tuple[Target, ...] = (GW,)
    window: int | None = None
    now: float = 0.0
    log: list[Transition] = field(default_factory=list)
    tracker: HealthTracker = field(init=False)

    def __post_init__(self) -> None:
        self.tracker = HealthTracker("isp-a", self.check, self.targets, self.now, self.window)

    def round(self, results: RoundResults) -> Transition | None:
        """Report one round one second after the previous one."""
        self.now += 1.0
        return self._logged(self.tracker.on_round(self.now, results))

    def good(self, n: int = 1) -> list[Transition | None]:
        """Report n rounds in which every target answered."""
        return [self.round(answered(self.targets)) for _ in range(n)]

    def bad(self, n: int = 1) -> list[Transition | None]:
        """Report n rounds in which every target was lost."""
        return [self.round(lost(self.targets)) for _ in range(n)]

    def carrier(self, up: bool) -> Transition | None:
        """Report a carrier change half a second on."""
        self.now += 0.5
        return self._logged(self.tracker.on_carrier(self.now, up))

    def force(self, state: HealthState) -> Transition:
        """Force a state half a second on."""
        self.now += 0.5
        transition = self.tracker.force(self.now, state, "forced by test")
        self.log.append(transition)
        return transition

    def _logged(self, transition: Transition | None) -> Transition | None:
        if transition is not None:
            self.log.append(transition)
        return transition


def run_in(state: HealthState, **kwargs: Any) -> Run:
    """A Run (down_after = up_after = 3) brought to `state` by rounds alone."""
    run = Run(**kwargs)
    if state is not S.UNKNOWN:
        run.good()
    if state in (S.FALLING, S.DOWN, S.RISING):
        run.bad(1 if state is S.FALLING else 3)
    if state is S.RISING:
        run.good()
    assert run.tracker.state is state
    return run


# --- the table -----------------------------------------------------------------------------


def test_table_is_exactly_the_specified_one() -> None:
    assert dict(TRANSITIONS) == {
        S.UNKNOWN: {S.UP, S.DOWN},
        S.UP: {S.FALLING, S.DOWN},
        S.FALLING: {S.UP, S.DOWN},
        S.DOWN: {S.RISING},
        S.RISING: {S.UP, S.DOWN},
    }
    assert isinstance(TRANSITIONS, MappingProxyType)


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=lambda s: str(s))
def test_every_illegal_pair_raises(old: HealthState, new: HealthState) -> None:
    with pytest.raises(IllegalTransition) as raised:
        check_transition(old, new)
    assert (raised.value.old, raised.value.new) == (old, new)


@pytest.mark.parametrize(("old", "new"), ILLEGAL, ids=lambda s: str(s))
def test_force_refuses_illegal_pairs_and_changes_nothing(
    old: HealthState, new: HealthState
) -> None:
    run = run_in(old)
    before = (run.tracker.state, run.tracker.since, run.tracker.reason)
    with pytest.raises(IllegalTransition):
        run.tracker.force(99.0, new, "nope")
    assert (run.tracker.state, run.tracker.since, run.tracker.reason) == before


def test_down_to_down_is_not_a_transition() -> None:
    assert (S.DOWN, S.DOWN) in ILLEGAL
    with pytest.raises(IllegalTransition):
        run_in(S.DOWN).force(S.DOWN)


@pytest.mark.parametrize(("old", "new"), sorted(LEGAL), ids=lambda s: str(s))
def test_force_takes_every_legal_pair(old: HealthState, new: HealthState) -> None:
    run = run_in(old)
    transition = run.force(new)
    assert transition == Transition("isp-a", old, new, run.now, "forced by test")
    assert (run.tracker.state, run.tracker.since, run.tracker.reason) == (
        new,
        run.now,
        "forced by test",
    )


def test_round_logic_goes_through_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    # The trap: a table nobody consults. Remove up -> falling and a bad round must fail.
    crippled = dict(TRANSITIONS) | {S.UP: frozenset({S.DOWN})}
    run = run_in(S.UP)
    monkeypatch.setattr(fsm, "TRANSITIONS", MappingProxyType(crippled))
    with pytest.raises(IllegalTransition):
        run.bad()
    assert run.tracker.state is S.UP


# Each legal pair reached by the events that cause it in the daemon.
NATURAL: list[tuple[str, HealthState, Callable[[Run], object], HealthState]] = [
    ("first good round", S.UNKNOWN, lambda r: r.good(), S.UP),
    ("down_after bad rounds", S.UNKNOWN, lambda r: r.bad(3), S.DOWN),
    ("carrier lost at start", S.UNKNOWN, lambda r: r.carrier(False), S.DOWN),
    ("first bad round", S.UP, lambda r: r.bad(), S.FALLING),
    ("carrier lost", S.UP, lambda r: r.carrier(False), S.DOWN),
    ("drain", S.UP, lambda r: r.force(S.DOWN), S.DOWN),
    ("good while falling", S.FALLING, lambda r: r.good(), S.UP),
    ("down_after-th bad", S.FALLING, lambda r: r.bad(2), S.DOWN),
    ("carrier lost falling", S.FALLING, lambda r: r.carrier(False), S.DOWN),
    ("first good while down", S.DOWN, lambda r: r.good(), S.RISING),
    ("up_after-th good", S.RISING, lambda r: r.good(2), S.UP),
    ("bad while rising", S.RISING, lambda r: r.bad(), S.DOWN),
    ("carrier lost rising", S.RISING, lambda r: r.carrier(False), S.DOWN),
]


@pytest.mark.parametrize(("name", "old", "event", "new"), NATURAL, ids=[n[0] for n in NATURAL])
def test_natural_transitions(
    name: str, old: HealthState, event: Callable[[Run], object], new: HealthState
) -> None:
    run = run_in(old)
    logged = len(run.log)
    event(run)
    assert [(t.old, t.new) for t in run.log[logged:]] == [(old, new)]
    assert run.tracker.state is new
    assert run.tracker.since == run.now == run.log[-1].at


def test_natural_events_cover_every_legal_pair() -> None:
    assert {(old, new) for _, old, _, new in NATURAL} == LEGAL


@pytest.mark.parametrize("state", list(S))
def test_in_service(state: HealthState) -> None:
    assert state.in_service is (state in (S.UNKNOWN, S.UP, S.FALLING))
    assert run_in(state).tracker.in_service is state.in_service


def test_transition_is_frozen() -> None:
    transition = Transition("isp-a", S.UP, S.FALLING, 1.0, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        transition.new = S.DOWN  # type: ignore[misc]


# --- unknown start -------------------------------------------------------------------------


def test_starts_unknown_and_in_service() -> None:
    tracker = HealthTracker("isp-a", cfg(), [GW], now=42.0)
    assert (tracker.state, tracker.since, tracker.reason) == (S.UNKNOWN, 42.0, "starting")
    assert tracker.in_service


@pytest.mark.parametrize("down_after", [1, 2, 3, 5, 8])
def test_unknown_goes_down_only_on_the_down_after_th_bad_round(down_after: int) -> None:
    run = Run(check=cfg(down_after=down_after))
    assert run.bad(down_after - 1) == [None] * (down_after - 1)
    assert run.tracker.state is S.UNKNOWN and run.tracker.in_service
    transition = run.bad()[0]
    assert transition is not None and (transition.old, transition.new) == (S.UNKNOWN, S.DOWN)
    assert "consecutive bad rounds" in transition.reason


def test_unknown_bad_bad_good_is_up() -> None:
    run = Run()
    run.bad(2)
    transition = run.good()[0]
    assert transition is not None and (transition.old, transition.new) == (S.UNKNOWN, S.UP)
    assert [(t.old, t.new) for t in run.log] == [(S.UNKNOWN, S.UP)]


# --- exact round counts and hysteresis -----------------------------------------------------


@pytest.mark.parametrize("down_after", [1, 2, 3, 4, 7, 100])
def test_exact_rounds_to_go_down(down_after: int) -> None:
    run = run_in(S.UP, check=cfg(down_after=down_after, up_after=3))
    steps = run.bad(down_after)
    expected_first = (S.UP, S.DOWN) if down_after == 1 else (S.UP, S.FALLING)
    first = steps[0]
    assert first is not None and (first.old, first.new) == expected_first
    assert steps[1:-1] == [None] * (down_after - 2 if down_after > 1 else 0)
    last = steps[-1]
    assert last is not None and last.new is S.DOWN
    assert last.reason.startswith(f"{down_after} consecutive bad rounds")


@pytest.mark.parametrize("up_after", [1, 2, 3, 4, 7, 100])
def test_exact_rounds_to_come_back(up_after: int) -> None:
    run = run_in(S.DOWN, check=cfg(down_after=3, up_after=up_after))
    need = max(2, up_after)  # down may only go to rising, so at least two rounds
    steps = run.good(need)
    first, last = steps[0], steps[-1]
    assert first is not None and (first.old, first.new) == (S.DOWN, S.RISING)
    assert steps[1:-1] == [None] * (need - 2)
    assert last is not None and (last.old, last.new) == (S.RISING, S.UP)
    assert fsm.rounds_to_recover(run.check) == need


# Rounds from a start state: g good, b bad; the expected state after each round.
HYSTERESIS = [
    (S.UP, "bbg", "FFU"),
    (S.UP, "bbgbbg", "FFUFFU"),
    (S.UP, "bbb", "FFD"),
    (S.UP, "bgbgbgbg", "FUFUFUFU"),
    (S.DOWN, "gbg", "RDR"),
    (S.DOWN, "ggbggg", "RRDRRU"),
    (S.DOWN, "bbbggg", "DDDRRU"),
    (S.UNKNOWN, "bbg", "??U"),
    (S.UNKNOWN, "bbbg", "??DR"),
]
LETTER = {"U": S.UP, "F": S.FALLING, "D": S.DOWN, "R": S.RISING, "?": S.UNKNOWN}


@pytest.mark.parametrize(("start", "rounds", "states"), HYSTERESIS)
def test_hysteresis(start: HealthState, rounds: str, states: str) -> None:
    run = run_in(start)  # down_after = up_after = 3
    seen = []
    for kind in rounds:
        run.good() if kind == "g" else run.bad()
        seen.append(run.tracker.state)
    assert seen == [LETTER[c] for c in states]


# --- quorum --------------------------------------------------------------------------------

QUORUM_CASES = [
    (targets, min_up, frozenset(subset))
    for targets in ((A,), (A, B), (A, B, C))
    for min_up in range(1, len(targets) + 1)
    for size in range(len(targets) + 1)
    for subset in itertools.combinations(targets, size)
]


@pytest.mark.parametrize(("targets", "min_up", "subset"), QUORUM_CASES)
def test_min_up_quorum(targets: tuple[Target, ...], min_up: int, subset: frozenset[Target]) -> None:
    run = run_in(S.UP, check=cfg(min_up=min_up, down_after=3), targets=targets)
    # Targets outside the subset are sometimes reported lost, sometimes left out.
    results = {t: RTT for t in subset} | {t: None for t in targets[:1] if t not in subset}
    transition = run.round(results)
    if len(subset) >= min_up:
        assert transition is None and run.tracker.state is S.UP
    else:
        assert transition is not None and transition.new is S.FALLING
        assert f"{len(subset)}/{len(targets)} targets answered, min_up {min_up}" in (
            transition.reason
        )


def test_min_up_above_this_familys_targets_needs_all_of_them() -> None:
    run = Run(check=cfg(min_up=3), targets=(A, B))  # the third target is IPv6
    assert run.round({A: RTT, B: RTT}) is not None and run.tracker.state is S.UP
    transition = run.round({A: RTT, B: None})
    assert transition is not None and "min_up 2" in transition.reason


def test_targets_are_checked() -> None:
    with pytest.raises(ValueError, match="needs a target"):
        HealthTracker("isp-a", cfg(), [], 0.0)
    with pytest.raises(ValueError, match="duplicate"):
        HealthTracker("isp-a", cfg(), [A, A], 0.0)
    with pytest.raises(ValueError, match="does not probe"):
        HealthTracker("isp-a", cfg(), [A], 0.0).on_round(1.0, {B: RTT})


# --- the loss window -----------------------------------------------------------------------


def binomial_tail(n: int, p: float, above: float) -> float:
    """P(X > above) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1) if k > above)


def random_rounds(run: Run, rounds: int, loss: float, seed: int) -> None:
    """Report rounds where each target is lost independently with probability `loss`."""
    rng = random.Random(seed)
    for _ in range(rounds):
        run.round({t: None if rng.random() < loss else RTT for t in run.targets})


RANDOM_LOSS_ROUNDS = 5000


@pytest.mark.parametrize("max_loss", [None, 0.2], ids=["no max_loss", "max_loss 20%"])
def test_five_percent_random_loss_never_takes_two_targets_down(max_loss: float | None) -> None:
    check = cfg(max_loss=max_loss)  # defaults: down_after 3, up_after 5, min_up 1
    run = run_in(S.UNKNOWN, check=check, targets=(A, B))
    n, loss, size = len(run.targets), 0.05, default_window(check)
    # A round fails the quorum when both targets are lost; down needs 3 such in a row, or
    # a window over max_loss. Union bound on the chance of any down over the whole run:
    p_bad = loss**n
    tail = 0.0 if max_loss is None else binomial_tail(size, loss, max_loss * size)
    p_any_down = RANDOM_LOSS_ROUNDS * (p_bad**check.down_after + n * tail)
    assert p_any_down < 1e-3
    random_rounds(run, RANDOM_LOSS_ROUNDS, loss, seed=7)
    assert not [t for t in run.log if t.new is S.DOWN]
    assert run.tracker.in_service
    # Falling excursions do happen, about p_bad per round (12.5 expected): each one recovers.
    falls = [t for t in run.log if t.new is S.FALLING]
    expected = RANDOM_LOSS_ROUNDS * p_bad
    assert expected / 4 <= len(falls) <= expected * 3
    assert all(t.new in (S.UP, S.FALLING) for t in run.log)


def test_five_percent_loss_on_a_single_target_downs_it_at_the_computed_rate() -> None:
    # Why down_after is not 3 by default: with one target, three losses in a row
    # happen every ~8400 rounds (~28 min at 200ms).
    rounds, loss = 100_000, 0.05
    run = run_in(S.UNKNOWN, check=cfg(down_after=3))
    random_rounds(run, rounds, loss, seed=11)
    downs = len([t for t in run.log if t.new is S.DOWN])
    expected = rounds * (1 - loss) * loss**3  # a run of three losses after an answer
    assert 10 < expected < 13
    assert expected / 3 <= downs <= expected * 2


def test_five_percent_loss_never_downs_a_single_target_with_the_defaults() -> None:
    # down_after 5: 0.05**5 per round, ~0.03 expected downs in 100k rounds (4 hours).
    rounds, loss = 100_000, 0.05
    assert rounds * loss**5 < 0.05
    run = run_in(S.UNKNOWN, check=cfg())
    random_rounds(run, rounds, loss, seed=11)
    assert [t for t in run.log if t.new is S.DOWN] == []


@pytest.mark.parametrize(
    ("targets", "max_loss"), [((GW,), None), ((A, B), 0.2), ((A, B), None)], ids=str
)
def test_heavy_loss_takes_it_down(targets: tuple[Target, ...], max_loss: float | None) -> None:
    run = run_in(S.UNKNOWN, check=cfg(max_loss=max_loss), targets=targets)
    run.good(200)  # a clean window first
    random_rounds(run, 3000, 0.6, seed=3)
    assert [t for t in run.log if t.new is S.DOWN]


def test_window_loss_makes_answered_rounds_bad() -> None:
    run = run_in(S.UNKNOWN, check=cfg(max_loss=0.2, down_after=5), window=10)
    run.good(10)
    run.bad(3)  # falling, then two more bad rounds: 3 of 10 lost
    transition = run.good()[0]  # answered, but the window holds 30 % loss
    assert transition is None and run.tracker.state is S.FALLING
    transition = run.good()[0]
    assert transition is not None and transition.new is S.DOWN
    assert "window loss 30% > max_loss 20%" in transition.reason
    assert str(GW) in transition.reason


def test_coming_back_needs_the_window_under_max_loss_and_up_after_rounds() -> None:
    size, max_loss, up_after = 20, 0.2, 3
    run = run_in(S.UNKNOWN, check=cfg(max_loss=max_loss, up_after=up_after), window=size)
    run.good(size)
    run.bad(5)  # down at the third; the window now ends with 5 losses (25 %)
    assert run.tracker.state is S.DOWN
    # The losses leave the window only after the 15 older answers: 16 rounds until 4/20.
    clear = rounds_to_clear(size, max_loss)
    assert clear == 16
    assert run.good(clear - 1) == [None] * (clear - 1)
    assert run.tracker.state is S.DOWN
    rising = run.good()[0]
    assert rising is not None and rising.new is S.RISING
    assert run.good(up_after - 2) == [None] * (up_after - 2)
    up = run.good()[0]
    assert up is not None and up.new is S.UP


def test_one_lossy_target_does_not_count_but_the_quorum_holds() -> None:
    run = run_in(S.UNKNOWN, check=cfg(max_loss=0.2), targets=(A, B), window=10)
    run.good(10)
    for _ in range(5):
        run.round({A: RTT, B: None})
    run.round({A: RTT, B: RTT})  # B answered but is at 50 % loss: A alone makes the quorum
    assert run.tracker.state is S.UP
    assert [(t.old, t.new) for t in run.log] == [(S.UNKNOWN, S.UP)]


# --- max_rtt -------------------------------------------------------------------------------


def test_max_rtt_uses_the_window_median() -> None:
    run = run_in(S.UNKNOWN, check=cfg(max_rtt=0.1, down_after=2), window=10)
    run.good(10)
    # One 2 s reply lifts the mean to 0.218 s but not the median: no verdict change.
    assert run.round({GW: 2.0}) is None
    window = run.tracker.stats()[0]
    assert window.rtt_avg is not None and window.rtt_avg > 0.1
    assert window.rtt_median == RTT
    # A sustained rise does: after 4 slow rounds the median is (0.01 + 0.3) / 2 > 0.1.
    assert run.round({GW: 0.3}) is None
    assert run.round({GW: 0.3}) is None
    assert run.round({GW: 0.3}) is None
    falling = run.round({GW: 0.3})
    assert falling is not None and falling.new is S.FALLING
    assert "window median rtt 155ms > max_rtt 100ms" in falling.reason
    down = run.round({GW: 0.3})
    assert down is not None and down.new is S.DOWN and "max_rtt" in down.reason


def test_max_rtt_recovers_once_the_median_is_back() -> None:
    run = run_in(S.UNKNOWN, check=cfg(max_rtt=0.1, down_after=1, up_after=2), window=4)
    run.round({GW: 0.5})
    assert run.tracker.state is S.DOWN
    steps = [run.round({GW: RTT}) for _ in range(4)]
    # Window [.5, .01] -> median .255; [.5, .01, .01] -> .01: good from the second round.
    assert [s.new if s else None for s in steps] == [None, S.RISING, S.UP, None]


# --- carrier -------------------------------------------------------------------------------


@pytest.mark.parametrize("state", [S.UNKNOWN, S.UP, S.FALLING, S.RISING])
def test_carrier_loss_takes_it_down_at_once(state: HealthState) -> None:
    run = run_in(state)
    transition = run.carrier(False)
    assert transition == Transition("isp-a", state, S.DOWN, run.now, "carrier lost")
    assert not run.tracker.in_service and not run.tracker.carrier


def test_carrier_loss_while_down_is_no_transition() -> None:
    run = run_in(S.DOWN)
    since, reason = run.tracker.since, run.tracker.reason
    assert run.carrier(False) is None
    assert (run.tracker.state, run.tracker.since, run.tracker.reason) == (S.DOWN, since, reason)


def test_rounds_without_carrier_are_ignored() -> None:
    run = run_in(S.UP)
    run.carrier(False)
    sent = run.tracker.stats()[0].sent
    assert run.good(10) == [None] * 10
    assert run.tracker.state is S.DOWN
    assert run.tracker.stats()[0].sent == sent


def test_carrier_return_keeps_it_down_until_probes_bring_it_back() -> None:
    run = run_in(S.UP)
    run.carrier(False)
    assert run.carrier(True) is None
    assert run.carrier(True) is None
    assert run.tracker.state is S.DOWN and run.tracker.carrier
    assert run.tracker.next_interval(1.0) == 1.0  # down probes at the base interval
    steps = run.good(3)
    assert [s.new if s else None for s in steps] == [S.RISING, None, S.UP]


def test_carrier_flap_restarts_the_rising_count() -> None:
    run = run_in(S.RISING)
    run.carrier(False)
    run.carrier(True)
    steps = run.good(3)
    assert [s.new if s else None for s in steps] == [S.RISING, None, S.UP]


# --- probing pace --------------------------------------------------------------------------


@pytest.mark.parametrize("state", list(S))
def test_next_interval_is_faster_while_undecided(state: HealthState) -> None:
    fast = state in (S.UNKNOWN, S.FALLING, S.RISING)
    expected = 0.2 * FAST_PROBE_FACTOR if fast else 0.2
    assert run_in(state).tracker.next_interval(0.2) == pytest.approx(expected)


# --- statistics ----------------------------------------------------------------------------


def test_target_stats() -> None:
    run = Run(targets=(A, B), window=2)
    run.round({A: 0.01, B: 0.1})
    run.round({A: None, B: 0.3})
    run.round({A: 0.03})  # B left out: lost
    a, b = run.tracker.stats()
    assert (a.target, a.rtt_last, a.loss, a.sent, a.received) == (A, 0.03, 0.5, 3, 2)
    assert a.rtt_avg == a.rtt_median == 0.03
    assert (b.target, b.rtt_last, b.loss, b.sent, b.received) == (B, None, 0.5, 3, 2)
    assert b.rtt_avg == b.rtt_median == 0.3
    overall = run.tracker.overall()
    assert (overall.samples, overall.loss) == (4, 0.5)
    assert overall.rtt_mean == pytest.approx(0.165)
    assert overall.rtt_median == pytest.approx(0.165)


def test_stats_before_any_probe() -> None:
    (stats,) = Run().tracker.stats()
    assert (stats.rtt_last, stats.rtt_avg, stats.loss, stats.sent, stats.received) == (
        None,
        None,
        0.0,
        0,
        0,
    )


@given(st.lists(st.one_of(st.none(), st.floats(0.0, 5.0)), max_size=60), st.integers(1, 20))
def test_window_keeps_the_last_results(results: list[float | None], size: int) -> None:
    window = ProbeWindow(GW, size)
    for rtt in results:
        window.record(rtt)
    kept = results[-size:]
    assert window.samples == tuple(kept)
    assert window.lost == kept.count(None)
    assert window.quality() == quality(kept)
    answered_rtts = [r for r in kept if r is not None]
    if answered_rtts:
        assert window.quality().rtt_median == statistics.median(answered_rtts)


@pytest.mark.parametrize(
    ("interval", "size"), [(0.2, 150), (1.0, 30), (0.1, 300), (0.05, MAX_WINDOW), (5.0, MIN_WINDOW)]
)
def test_default_window(interval: float, size: int) -> None:
    assert default_window(cfg(interval=interval)) == size


@pytest.mark.parametrize(
    ("size", "max_loss", "rounds"), [(20, 0.2, 16), (150, 0.2, 120), (10, 0.0, 10), (10, 1.0, 1)]
)
def test_rounds_to_clear(size: int, max_loss: float, rounds: int) -> None:
    assert rounds_to_clear(size, max_loss) == rounds


# --- any sequence of events keeps the bookkeeping honest -------------------------------------

EVENTS = st.one_of(
    st.sampled_from(["good", "bad", "carrier-", "carrier+", "partial"]),
    st.sampled_from(list(S)),
)


@given(st.lists(EVENTS, max_size=80), st.integers(1, 4), st.integers(1, 4))
def test_random_event_sequences_keep_the_invariants(
    events: list[str | HealthState], down_after: int, up_after: int
) -> None:
    run = Run(check=cfg(down_after=down_after, up_after=up_after, min_up=2), targets=(A, B))
    for event in events:
        before = (run.tracker.state, run.tracker.since)
        transition: Transition | None
        if isinstance(event, HealthState):
            if (before[0], event) not in LEGAL:
                with pytest.raises(IllegalTransition):
                    run.force(event)
                assert (run.tracker.state, run.tracker.since) == before
                continue
            transition = run.force(event)
        elif event.startswith("carrier"):
            transition = run.carrier(event == "carrier+")
        else:
            rtt = {"good": RTT, "bad": None, "partial": None}[event]
            transition = run.round({A: RTT if event == "partial" else rtt, B: rtt})
        if transition is None:
            assert (run.tracker.state, run.tracker.since) == before
        else:
            assert (transition.old, transition.new) in LEGAL
            assert transition.old is before[0]
            assert transition.new is run.tracker.state
            assert transition.at == run.tracker.since == run.now
            assert transition.reason == run.tracker.reason
        assert run.tracker.in_service is run.tracker.state.in_service
        if event == "carrier-":
            assert run.tracker.state is S.DOWN


# --- detection and recovery time against a simulated scheduler -------------------------------


@dataclass
class Sim:
    """A scheduler keeping fsm's contract, probing one target over a path that breaks or heals.

    Rounds launch every next_interval() (read at launch), and are reported in launch order
    once answered (after rtt) or timed out. A probe is answered only if the path works both
    when it leaves and when the reply is back.
    """

    check: CheckConfig
    rtt: float
    reports_first: bool  # a report and a launch at the same instant: which goes first
    window: int | None = None

    def run(self, path_ok: Callable[[float], bool], until: float) -> list[Transition]:
        """Simulate until `until` and return the transitions."""
        tracker = HealthTracker("isp-a", self.check, [GW], 0.0, self.window)
        log: list[Transition] = []
        pending: deque[tuple[float, RoundResults]] = deque()
        launch = last_report = 0.0
        while min(launch, pending[0][0] if pending else math.inf) <= until:
            due = pending[0][0] if pending else math.inf
            if due < launch or (due == launch and self.reports_first):
                at, results = pending.popleft()
                if (transition := tracker.on_round(at, results)) is not None:
                    log.append(transition)
                continue
            ok = path_ok(launch) and path_ok(launch + self.rtt)
            last_report = max(last_report, launch + (self.rtt if ok else self.check.timeout))
            pending.append((last_report, {GW: self.rtt if ok else None}))
            launch += tracker.next_interval(self.check.interval)
        return log


def state_at(log: list[Transition], at: float) -> HealthState:
    """The state the log says the tracker was in just before time `at`."""
    return next((t.new for t in reversed(log) if t.at < at), S.UNKNOWN)


def measure_detection(check: CheckConfig, phase: float, rtt: float, reports_first: bool) -> float:
    """Seconds from a total failure (at a phase within an interval) to the uplink's removal."""
    fail_at = check.timeout + 10 * check.interval + phase * check.interval
    sim = Sim(check, rtt, reports_first)
    log = sim.run(lambda t: t < fail_at, fail_at + 2 * detection_time(check) + check.timeout)
    assert state_at(log, fail_at) is S.UP
    removed = next(t.at for t in log if t.at >= fail_at and not t.new.in_service)
    return removed - fail_at


def measure_recovery(
    check: CheckConfig, window: int, phase: float, rtt: float, reports_first: bool
) -> float:
    """Seconds from a full repair (after an outage filling the window) to back in service."""
    repair = check.timeout + (window + check.down_after + 5) * check.interval
    repair += phase * check.interval
    sim = Sim(check, rtt, reports_first, window)
    log = sim.run(lambda t: t >= repair, repair + 2 * recovery_time(check, window) + 1.0)
    assert state_at(log, repair) is S.DOWN
    back = next(t.at for t in log if t.at >= repair and t.new is S.UP)
    return back - repair


DURATIONS = st.floats(0.01, 5.0)
PHASES = st.floats(0.0, 1.0, exclude_max=True)


@settings(max_examples=300, deadline=None)
@given(DURATIONS, DURATIONS, st.integers(1, 10), PHASES, PHASES, st.booleans())
def test_detection_time_bounds_every_simulated_failure(
    interval: float, timeout: float, down_after: int, phase: float, rtt: float, first: bool
) -> None:
    check = cfg(interval=interval, timeout=timeout, down_after=down_after)
    measured = measure_detection(check, phase, rtt * timeout, first)
    # 0 happens: a round launched one timeout before the failure whose answer would have
    # come back at the very instant of it (rtt within an ulp of the timeout) is lost.
    assert 0 <= measured <= detection_time(check) * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(
    DURATIONS,
    DURATIONS,
    st.integers(1, 10),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
    st.integers(1, 40),
    PHASES,
    PHASES,
    st.booleans(),
)
def test_recovery_time_bounds_every_simulated_repair(
    interval: float,
    timeout: float,
    up_after: int,
    max_loss: float | None,
    window: int,
    phase: float,
    rtt: float,
    first: bool,
) -> None:
    check = cfg(interval=interval, timeout=timeout, up_after=up_after, max_loss=max_loss)
    measured = measure_recovery(check, window, phase, rtt * timeout, first)
    assert 0 < measured <= recovery_time(check, window) * (1 + 1e-9)


TIMING_EXAMPLES = [
    # interval, timeout, down_after, detection_time
    (0.2, 0.3, 3, 0.9),  # I + 2I + T: the second and third rounds launch before falling
    (1.0, 0.3, 3, 2.8),  # I + I + F + T: falling before the second launch
    (0.25, 1.0, 8, 2.75),  # I + 5I + 2F + T
    (0.2, 1.0, 1, 1.2),  # I + T
]


@pytest.mark.parametrize(("interval", "timeout", "down_after", "expected"), TIMING_EXAMPLES)
def test_detection_time_formula_and_tightness(
    interval: float, timeout: float, down_after: int, expected: float
) -> None:
    check = cfg(interval=interval, timeout=timeout, down_after=down_after)
    assert detection_time(check) == pytest.approx(expected)
    # The bound is reached: a failure just after an answered launch takes all of it.
    worst = max(measure_detection(check, k / 100, 0.0, False) for k in range(100))
    assert expected - interval / 50 <= worst <= expected + 1e-9


def test_detection_time_counts_a_whole_ratio_of_timeout_to_interval_as_whole() -> None:
    # 0.3 / 0.1 is 2.9999999999999996 in floats: the round launched at the very instant
    # the first failure is judged must still count as launched at the base interval.
    check = cfg(interval=0.1, timeout=0.3, down_after=5)
    assert detection_time(check) == pytest.approx(0.1 + 4 * 0.1 + 0.3)


def test_recovery_time_formula_and_tightness() -> None:
    check = cfg(interval=0.2, timeout=0.3, up_after=5)
    assert recovery_time(check) == pytest.approx(0.2 + 2 * 0.2 + 2 * 0.1 + 0.3)
    # The worst repair: replies take just under the timeout.
    worst = max(measure_recovery(check, 20, k / 100, 0.2999, False) for k in range(100))
    assert recovery_time(check) - 0.2 / 50 <= worst <= recovery_time(check) + 1e-9


def test_recovery_time_includes_draining_the_loss_window() -> None:
    check = cfg(interval=0.2, timeout=0.3, up_after=5, max_loss=0.2)
    drain = (rounds_to_clear(default_window(check), 0.2) - 1) * 0.2
    assert drain == pytest.approx(119 * 0.2)
    assert recovery_time(check) == pytest.approx(
        recovery_time(cfg(interval=0.2, timeout=0.3)) + drain
    )
