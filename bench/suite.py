"""The benchmarks `python -m bench` runs, in order, each with the README table rows it owns.

A new benchmark is a package bench/<name> (run as `python -m bench.<name>`, printing
one JSON document, accepting --quick and --prefix) with a rows module; it joins the
suite and the README table with one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.apply import rows as apply_rows
from bench.cells import Row
from bench.connections import rows as connections_rows
from bench.demo import rows as demo_rows
from bench.edges import rows as edges_rows
from bench.failover import rows as failover_rows
from bench.flows import rows as flows_rows
from bench.mptcp import rows as mptcp_rows
from bench.table import rows as table_rows
from bench.tiers import rows as tiers_rows


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: its key in the merged document and its rows from its own document."""

    name: str
    rows: Callable[[dict[str, Any]], list[Row]]

    @property
    def module(self) -> str:
        """What `python -m` runs."""
        return f"bench.{self.name}"


BENCHES = (
    Benchmark("apply", apply_rows.rows),
    Benchmark("failover", failover_rows.rows),
    Benchmark("flows", flows_rows.rows),
    Benchmark("connections", connections_rows.rows),
    Benchmark("demo", demo_rows.rows),
    Benchmark("table", table_rows.rows),
    Benchmark("mptcp", mptcp_rows.rows),
    Benchmark("tiers", tiers_rows.rows),
    Benchmark("edges", edges_rows.rows),
)
