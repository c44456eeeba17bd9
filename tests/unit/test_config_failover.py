"""The failover-order keys: tiers, metered uplinks, data caps, failback, pin lists, spillover."""

from __future__ import annotations

from textwrap import dedent

import pytest

from ecmpd.config import ConfigError, parse_config
from ecmpd.config.enums import Failback
from ecmpd.config.units import parse_data_cap
from ecmpd.model import CapPeriod, DataCap

THREE = """\
uplinks:
  - name: fiber
    interface: eth0
    bandwidth: 1Gbit
  - name: cable
    interface: eth1
    bandwidth: 500Mbit
  - name: lte
    interface: wwan0
    bandwidth: 50Mbit
    tier: 2
    metered: true
"""


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(dedent(text), "ecmpd.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_defaults() -> None:
    config = parse_config(THREE)
    fiber, _, lte = config.uplinks
    assert (fiber.tier, fiber.metered, fiber.data_cap, fiber.failback) == (
        1,
        False,
        None,
        Failback.KEEP,
    )
    assert (lte.tier, lte.metered, lte.failback) == (2, True, Failback.RESET)
    assert config.balancer.spillover is None


def test_failback_given_wins_over_the_metered_default() -> None:
    config = parse_config(THREE + "    failback: keep\n")
    assert config.uplink("lte").failback is Failback.KEEP


def test_pin_list_and_single_name() -> None:
    config = parse_config(
        THREE
        + "rules:\n"
        + "  - {name: vpn, action: pin, from: 10.0.0.5, uplink: [fiber, cable], strict: true}\n"
        + "  - {name: bank, action: pin, from: 10.0.0.6, uplink: cable}\n"
    )
    assert [r.uplink for r in config.rules] == [("fiber", "cable"), ("cable",)]


def test_spillover_section() -> None:
    config = parse_config(THREE + "balancer:\n  spillover: {above: 80%, below: 50%, for: 10s}\n")
    spill = config.balancer.spillover
    assert spill is not None and (spill.above, spill.below, spill.for_) == (0.8, 0.5, 10.0)
    empty = parse_config(THREE + "balancer:\n  spillover:\n")
    assert empty.balancer.spillover is not None and empty.balancer.spillover.for_ == 5.0


@pytest.mark.parametrize(
    ("text", "cap"),
    [
        ("20GB/month", DataCap(20 * 10**9, CapPeriod.MONTH)),
        ("1.5 TB / month", DataCap(15 * 10**11, CapPeriod.MONTH)),
        ("500MB/day", DataCap(500 * 10**6, CapPeriod.DAY)),
        ("2GiB/week", DataCap(2 * 2**30, CapPeriod.WEEK)),
        ("10gb/Month", DataCap(10 * 10**9, CapPeriod.MONTH)),
    ],
)
def test_data_cap(text: str, cap: DataCap) -> None:
    assert parse_data_cap(text) == cap


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("20GB", "expected a volume per period like '20GB/month', got '20GB'"),
        ("20Gbit/month", "expected a volume per period like '20GB/month', got '20Gbit/month'"),
        ("20GB/year", "the period must be one of: day, week, month (got '20GB/year')"),
        ("0GB/month", "must be greater than 0, got '0GB/month'"),
        (20, "expected a volume per period like '20GB/month', got 20"),
    ],
)
def test_bad_data_cap(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        parse_data_cap(value)


def test_every_failover_error_at_once() -> None:
    """The issue's four mistakes (field and cross-field) in one report, file:line: field."""
    text = """\
        balancer:
          spillover: {above: 90%, below: 70%, for: 5s}
        uplinks:
          - name: fiber
            interface: eth0
          - name: cable
            interface: eth1
          - name: lte
            interface: wwan0
            tier: 2
            data_cap: 20 gigs a month
        rules:
          - name: vpn
            action: pin
            uplink: [fiber, cabel, fiber]
        """
    assert errors(text) == [
        "ecmpd.yaml:4: uplinks[0].bandwidth: required by balancer.spillover"
        " (the load is measured against it)",
        "ecmpd.yaml:6: uplinks[1].bandwidth: required by balancer.spillover"
        " (the load is measured against it)",
        "ecmpd.yaml:11: uplinks[2].data_cap: expected a volume per period like '20GB/month',"
        " got '20 gigs a month'",
        "ecmpd.yaml:15: rules[0].uplink[1]: no uplink named 'cabel'; did you mean 'cable'?",
        "ecmpd.yaml:15: rules[0].uplink[2]: 'fiber' is listed twice"
        " (a fallback list names each uplink once)",
    ]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            "balancer:\n  spillover: {above: 70%, below: 70%}\n",
            [
                "ecmpd.yaml:14: balancer.spillover.below: must be lower than above (70%),"
                " for hysteresis"
            ],
            id="no-hysteresis",
        ),
        pytest.param(
            "    data_cap_reset_day: 3\n",
            ["ecmpd.yaml:13: uplinks[2].data_cap_reset_day: needs data_cap"],
            id="reset-day-without-cap",
        ),
        pytest.param(
            "    data_cap: 1GB/day\n    data_cap_reset_day: 3\n",
            [
                "ecmpd.yaml:14: uplinks[2].data_cap_reset_day: a cap per day resets every day;"
                " remove data_cap_reset_day"
            ],
            id="reset-day-daily",
        ),
        pytest.param(
            "    data_cap: 1GB/week\n    data_cap_reset_day: 9\n",
            [
                "ecmpd.yaml:14: uplinks[2].data_cap_reset_day: a weekly cap resets on a day 1..7"
                " (1 = Monday), got 9"
            ],
            id="reset-day-weekly",
        ),
        pytest.param(
            "    failback: later\n",
            ["ecmpd.yaml:13: uplinks[2].failback: must be one of: keep, reset (got 'later')"],
            id="failback-enum",
        ),
        pytest.param(
            "rules:\n  - {name: vpn, action: pin, uplink: []}\n",
            ["ecmpd.yaml:14: rules[0].uplink: must not be empty"],
            id="empty-pin-list",
        ),
    ],
)
def test_failover_errors(extra: str, expected: list[str]) -> None:
    assert errors(THREE + extra) == expected


def test_tier_range() -> None:
    assert errors(THREE.replace("tier: 2", "tier: 0")) == [
        "ecmpd.yaml:11: uplinks[2].tier: must be between 1 and 16, got 0"
    ]


def test_spillover_needs_a_next_tier() -> None:
    one_tier = THREE.replace("    tier: 2\n", "")
    assert errors(one_tier + "balancer:\n  spillover: {}\n") == [
        "ecmpd.yaml:13: balancer.spillover: every uplink is in tier 1:"
        " there is no next tier to spill into"
    ]
