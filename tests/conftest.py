"""Shared fixtures: network-namespace labs, always destroyed, even on Ctrl-C."""

from __future__ import annotations

import os
import signal
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecmpd.lab import netns
from ecmpd.lab.layout import Lab
from ecmpd.lab.topology import build_lab, destroy_lab, lab_session
from tests.integration.fixtures.bench import BenchRuns
from tests.integration.fixtures.labs import RUN_PREFIX, LabFactory, next_lab_prefix, require_netns

_main_pid = -1
LAB_FIXTURES = frozenset({"lab", "lab_module", "lab_factory", "lab_prefix", "bench_runs"})


def pytest_configure(config: pytest.Config) -> None:
    """Turns SIGTERM into KeyboardInterrupt so a cancelled run still tears labs down."""
    global _main_pid
    in_main = threading.current_thread() is threading.main_thread()
    if in_main and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        _main_pid = os.getpid()
        signal.signal(signal.SIGTERM, _sigterm)


def _sigterm(signum: int, frame: types.FrameType | None) -> None:
    """Raises KeyboardInterrupt, which pytest answers with a full teardown."""
    if os.getpid() != _main_pid:
        # A forked child (multiprocessing, a library's helper stopped with
        # SIGTERM) inherits this handler; raising there would run a clone of
        # the test session and its teardown. Die as the default action would.
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_report_header(config: pytest.Config) -> str:
    """Shows this run's namespace prefix, to tell its labs from other runs'."""
    return f"ecmpd lab namespaces: {RUN_PREFIX}*"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test that uses a lab fixture with `netns`."""
    for item in items:
        if LAB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.netns)


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Iterator[None]:
    """Safety net: after all teardown, removes any namespace of this run still present."""
    # A wrapper's finally runs even when fixture teardown raised (pytest's own
    # tmp_path teardown does after a Ctrl-C), which a plain hook would not.
    try:
        return (yield)
    finally:
        leftovers = netns.remove_prefix(RUN_PREFIX)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if leftovers and reporter is not None:
            reporter.write_line(f"ecmpd lab: removed leftover namespaces {leftovers}", red=True)


def _lab_kwargs(request: pytest.FixtureRequest, workdir: Path) -> dict[str, Any]:
    """Returns lab_session keywords: the indirect parameter over run-safe defaults."""
    kwargs: dict[str, Any] = {"workdir": workdir, "prefix": next_lab_prefix()}
    kwargs.update(getattr(request, "param", None) or {})
    return kwargs


@pytest.fixture(scope="session")
def bench_runs() -> BenchRuns:
    """Each benchmark run once per session, for its smoke test and the suite's merge test."""
    return BenchRuns()


@pytest.fixture
def lab_prefix() -> str:
    """A fresh prefix for a lab the test builds itself (skips when namespaces can't be used)."""
    require_netns()
    return next_lab_prefix()


@pytest.fixture
def lab(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Lab]:
    """A lab for one test (build_lab keywords via indirect parametrize)."""
    require_netns()
    with lab_session(**_lab_kwargs(request, tmp_path / "lab")) as built:
        yield built


@pytest.fixture(scope="module")
def lab_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Lab]:
    """A lab shared by a module's tests (build_lab keywords via indirect parametrize)."""
    require_netns()
    with lab_session(**_lab_kwargs(request, tmp_path_factory.mktemp("lab"))) as built:
        yield built


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """Builds labs with any build_lab keywords; destroys all of them after the test."""
    require_netns()
    built: list[Lab] = []

    def factory(**kwargs: Any) -> Lab:
        n = len(built)
        kwargs.setdefault("workdir", tmp_path / f"lab{n}")
        kwargs.setdefault("prefix", next_lab_prefix())
        new = build_lab(**kwargs)
        built.append(new)
        return new

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for each in reversed(built):
            try:
                destroy_lab(each)
            except BaseException as exc:  # destroy the others first
                errors.append(exc)
        if errors:
            raise errors[0]
