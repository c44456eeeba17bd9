"""What loading fills in: weights derived from bandwidths, allocated table ids, NAT."""

from __future__ import annotations

from textwrap import dedent

import pytest

from ecmpd.config import parse_config
from ecmpd.config.resolve import allocate_tables, weights_from_bandwidths


@pytest.mark.parametrize(
    ("bandwidths", "weights"),
    [
        ([100_000_000, 200_000_000], [1, 2]),
        ([100_000_000, 100_000_000, 100_000_000], [1, 1, 1]),
        ([1_000_000_000, 100_000_000], [10, 1]),
        ([2_500_000_000, 1_000_000_000], [5, 2]),
        ([300_000_000, 200_000_000, 500_000], [256, 171, 1]),  # 3000:2000:5, scaled
        ([1_000_000_000, 1_000_000], [256, 1]),  # 1000:1 -> 256 and at least 1
        ([1_000, 1_001], [256, 256]),  # 255.74 rounds to 256
        ([7], [1]),
        ([257, 1], [256, 1]),
        ([512, 3], [256, 2]),  # 1.5 rounds half up
        ([100, 200, 50], [2, 4, 1]),  # the lab's default ISP rates (Mbit/s)
        ([1000, 3], [256, 1]),  # coprime: scaled, the ratio kept as the range allows
        ([512, 5], [256, 3]),  # 2.5 rounds half up, not to even (round() would give 2)
    ],
)
def test_weights_from_bandwidths(bandwidths: list[int], weights: list[int]) -> None:
    assert weights_from_bandwidths(bandwidths) == weights


@pytest.mark.parametrize("bandwidths", [[], [0, 100], [-1]])
def test_weights_need_positive_bandwidths(bandwidths: list[int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        weights_from_bandwidths(bandwidths)


def test_weights_scale_keeps_ratio_and_range() -> None:
    weights = weights_from_bandwidths([10_000_000_000, 1_000_000_000, 3_000_000])
    assert weights == [256, 26, 1]
    assert all(1 <= w <= 256 for w in weights)


@pytest.mark.parametrize(
    ("explicit", "reserved", "tables"),
    [
        ([0, 0], [200], [101, 102]),
        ([101, 0, 0], [200], [101, 102, 103]),
        ([0, 102, 0], [200], [101, 102, 103]),
        ([0, 0, 0], [102], [101, 103, 104]),
        ([0, 101, 103], [102], [104, 101, 103]),
        ([5, 7], [200], [5, 7]),
    ],
)
def test_allocate_tables(explicit: list[int], reserved: list[int], tables: list[int]) -> None:
    assert allocate_tables(explicit, reserved) == tables


def test_loaded_weights_from_bandwidth() -> None:
    config = parse_config(
        dedent("""\
        uplinks:
          - name: fiber
            interface: eth0
            bandwidth: 1Gbit
          - name: dsl
            interface: eth1
            bandwidth: 250Mbit
          - name: lte
            interface: wwan0
            bandwidth: 50000000
        """)
    )
    assert [(u.weight, u.bandwidth) for u in config.uplinks] == [
        (20, 1_000_000_000),
        (5, 250_000_000),
        (1, 50_000_000),
    ]


def test_loaded_weights_scaled_into_range() -> None:
    config = parse_config(
        dedent("""\
        uplinks:
          - name: fiber
            interface: eth0
            bandwidth: 10Gbit
          - name: lte
            interface: wwan0
            bandwidth: 3Mbit
        """)
    )
    assert [u.weight for u in config.uplinks] == [256, 1]


def test_loaded_tables_skip_explicit_and_balancer_tables() -> None:
    config = parse_config(
        dedent("""\
        balancer:
          table: 102
        uplinks:
          - name: a
            interface: eth0
          - name: b
            interface: eth1
            table: 101
          - name: c
            interface: eth2
          - name: d
            interface: eth3
            table: 104
          - name: e
            interface: eth4
        """)
    )
    assert [u.table for u in config.uplinks] == [103, 101, 105, 104, 106]


@pytest.mark.parametrize(
    ("mode", "nat", "resolved"),
    [
        ("host", "", False),
        ("router", "", True),
        ("host", "nat: true", True),
        ("router", "nat: false", False),
    ],
)
def test_loaded_nat(mode: str, nat: str, resolved: bool) -> None:
    config = parse_config(f"mode: {mode}\nuplinks:\n  - name: a\n    interface: eth0\n    {nat}\n")
    assert config.uplinks[0].nat is resolved
