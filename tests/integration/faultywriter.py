"""A kernel writer that refuses one operation on purpose: the test double for rollback.

`FaultyWriter(..., fail_after=N)` executes N operations, refuses the next one with an
OSError, and then executes everything again (so a rollback can run). As a program,
`python -m tests.integration.faultywriter N ARGS...` is the real `ecmpd ARGS...` whose
writer is a FaultyWriter: the CLI's rollback proven against the real kernel, with the
fault injection kept out of src/.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from ecmpd.cli import common
from ecmpd.cli.main import main
from ecmpd.config import Config
from ecmpd.kernel.apply import KernelWriter, ReadScope
from ecmpd.kernel.record import Record
from ecmpd.plan import Op


class FaultyWriter(KernelWriter):
    """Refuses the operation after `fail_after` executed ones, once."""

    def __init__(
        self, ipr: Any, record: Record, scope: ReadScope | None = None, fail_after: int = 0
    ) -> None:
        super().__init__(ipr, record, scope or ReadScope())
        self.fail_after: int | None = fail_after
        self.refused: list[Op] = []

    def execute(self, op: Op) -> None:
        if self.fail_after is not None:
            if self.fail_after <= 0:
                self.fail_after = None
                self.refused.append(op)
                raise OSError(f"injected fault at {op}")
            self.fail_after -= 1
        super().execute(op)


def run_cli(fail_after: int, argv: Sequence[str]) -> int:
    """The CLI with every writer it builds refusing the operation after `fail_after`."""

    class Armed(FaultyWriter):
        @classmethod
        def for_config(cls, ipr: Any, record: Record, config: Config) -> KernelWriter:
            return cls(ipr, record, ReadScope.of(config), fail_after=fail_after)

    common.KernelWriter = Armed  # type: ignore[attr-defined]  # what cli.common.session builds
    return main(argv)


if __name__ == "__main__":
    sys.exit(run_cli(int(sys.argv[1]), sys.argv[2:]))
