"""Hooks: the environment a hook hears, and a real run of one (no network involved)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ecmpd.health.fsm import HealthState, Transition
from ecmpd.hooks import hook_env, run_hooks, tier_env
from ecmpd.model import Family

DOWN = Transition("isp-b", HealthState.FALLING, HealthState.DOWN, 12.5, "ipv6: 3 of 3 lost")


@pytest.mark.parametrize(("family", "name"), [(Family.INET, "ipv4"), (Family.INET6, "ipv6")])
def test_hook_env_names_the_family(family: Family, name: str) -> None:
    env = hook_env(DOWN, family, in_service=False)
    assert {k: v for k, v in env.items() if k.startswith("ECMPD_")} == {
        "ECMPD_UPLINK": "isp-b",
        "ECMPD_FAMILY": name,
        "ECMPD_OLD_STATE": "falling",
        "ECMPD_NEW_STATE": "down",
        "ECMPD_REASON": "ipv6: 3 of 3 lost",
        "ECMPD_IN_SERVICE": "0",
        "ECMPD_EVENT": "health",
    }


def test_tier_env_says_who_took_over() -> None:
    env = tier_env(Family.INET, 1, 2, ["lte"])
    assert {k: v for k, v in env.items() if k.startswith("ECMPD_")} == {
        "ECMPD_EVENT": "tier",
        "ECMPD_FAMILY": "ipv4",
        "ECMPD_OLD_TIER": "1",
        "ECMPD_NEW_TIER": "2",
        "ECMPD_UPLINKS": "lte",
        "ECMPD_TAKEOVER": "1",
    }
    back = tier_env(Family.INET6, 2, 1, ["fiber", "cable"])
    assert (back["ECMPD_TAKEOVER"], back["ECMPD_UPLINKS"]) == ("0", "fiber cable")
    assert tier_env(Family.INET, 1, None, [])["ECMPD_NEW_TIER"] == ""


def test_hook_env_inherits_only_path_lang_and_tz(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "x")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("PATH", raising=False)
    env = hook_env(DOWN, Family.INET, in_service=True)
    assert "SECRET_TOKEN" not in env
    assert env["LANG"] == "C.UTF-8"
    assert env["PATH"] == "/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["ECMPD_IN_SERVICE"] == "1"


def test_run_hooks_hands_the_family_to_every_hook(tmp_path: Path) -> None:
    hooks, out = tmp_path / "hooks.d", tmp_path / "out"
    hooks.mkdir()
    for name in ("10-first", "20-second"):
        script = hooks / name
        script.write_text(f'#!/bin/sh\necho "$0 $ECMPD_UPLINK $ECMPD_FAMILY" >> {out}\n')
        script.chmod(0o755)
    asyncio.run(run_hooks(hooks, DOWN, Family.INET6, False))
    assert out.read_text().splitlines() == [
        f"{hooks / '10-first'} isp-b ipv6",
        f"{hooks / '20-second'} isp-b ipv6",
    ]
