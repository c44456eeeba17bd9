"""Filling in what the config leaves implicit: weights from bandwidths, table ids, NAT."""

from __future__ import annotations

import math
from collections.abc import Iterable

from ecmpd.config.schema import Config
from ecmpd.config.uplink import UplinkConfig
from ecmpd.model import MAX_WEIGHT

FIRST_UPLINK_TABLE = 101


def weights_from_bandwidths(bandwidths: list[int]) -> list[int]:
    """Weights in the bandwidths' ratio: divided by their gcd, scaled into 1..256 if needed.

    The one rounding of a rate into a weight: a config's bandwidths and the lab's ISP
    rates (lab.topology) both go through here.
    """
    if not bandwidths or min(bandwidths) < 1:
        raise ValueError(f"bandwidths must be positive, got {bandwidths}")
    divisor = math.gcd(*bandwidths)
    reduced = [b // divisor for b in bandwidths]
    largest = max(reduced)
    if largest <= MAX_WEIGHT:
        return reduced
    # Round half up in integers: floats would make 2.5 round to 2 (banker's rounding).
    return [max(1, (2 * r * MAX_WEIGHT + largest) // (2 * largest)) for r in reduced]


def allocate_tables(explicit: list[int], reserved: Iterable[int]) -> list[int]:
    """Table ids for uplinks whose entry is 0, from 101 upwards, skipping every id in use."""
    used = {*explicit, *reserved}
    candidate = FIRST_UPLINK_TABLE
    tables = []
    for table in explicit:
        if table == 0:
            while candidate in used:
                candidate += 1
            used.add(candidate)
            table = candidate
        tables.append(table)
    return tables


def resolve(config: Config) -> Config:
    """The config with every uplink's weight, table, nat and failback set (semantically valid)."""
    weights = [u.weight for u in config.uplinks]
    bandwidths = [u.bandwidth for u in config.uplinks]
    if all(b is not None for b in bandwidths):
        weights = weights_from_bandwidths([b for b in bandwidths if b is not None])
    reserved = [config.balancer.table, *(config.announce.tables() if config.announce else [])]
    tables = allocate_tables([u.table for u in config.uplinks], reserved)
    uplinks: list[UplinkConfig] = [
        u.model_copy(
            update={
                "weight": w,
                "table": t,
                "nat": u.nat_enabled(config.mode),
                "failback": u.failback_mode(),
            }
        )
        for u, w, t in zip(config.uplinks, weights, tables, strict=True)
    ]
    return config.model_copy(update={"uplinks": uplinks})
