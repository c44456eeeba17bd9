"""User hooks: executables run on every uplink state change, never blocking probing.

Health is tracked per address family, so a change is one uplink's in one family. Each
hook's environment (PATH, LANG and TZ kept, nothing else inherited):

  ECMPD_UPLINK      the uplink's name
  ECMPD_FAMILY      the address family that changed: ipv4 or ipv6 (a carrier loss
                    changes every family the uplink carries: one run per family)
  ECMPD_OLD_STATE   health before: unknown, up, falling, down or rising
  ECMPD_NEW_STATE   health after
  ECMPD_REASON      why, in words (an IPv6 change's starts with "ipv6: ")
  ECMPD_IN_SERVICE  1 if the uplink may now carry the family's traffic, else 0
                    (0 while drained, whatever its health)
  ECMPD_EVENT       health

When the tier the balancer carries changes in a family (a backup tier takes over, or
a lower tier returns), hooks run once more with:

  ECMPD_EVENT       tier
  ECMPD_FAMILY      ipv4 or ipv6
  ECMPD_OLD_TIER    the tier that carried before ("" when none did)
  ECMPD_NEW_TIER    the tier carrying now ("" when none does: when_all_down)
  ECMPD_UPLINKS     the balancer's members now, space-separated
  ECMPD_TAKEOVER    1 when a higher tier took over, 0 when a lower one returned
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ecmpd.health.fsm import Transition
from ecmpd.model import FAMILY_NAMES, Family

log = logging.getLogger("ecmpd.hooks")
HOOK_TIMEOUT = 30.0


def hook_programs(directory: Path) -> list[Path]:
    """Executable regular files in the hooks dir, in name order (run-parts style)."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.iterdir()
        if p.is_file() and os.access(p, os.X_OK) and not p.name.startswith(".")
    )


def _base_env() -> dict[str, str]:
    """PATH, LANG and TZ of the daemon's environment, nothing else."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "TZ")}
    env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    return env


def hook_env(t: Transition, family: Family, in_service: bool) -> dict[str, str]:
    """What a hook learns about the change, in its environment."""
    env = _base_env()
    env.update(
        ECMPD_UPLINK=t.uplink,
        ECMPD_FAMILY=FAMILY_NAMES[family],
        ECMPD_OLD_STATE=t.old.value,
        ECMPD_NEW_STATE=t.new.value,
        ECMPD_REASON=t.reason,
        ECMPD_IN_SERVICE="1" if in_service else "0",
        ECMPD_EVENT="health",
    )
    return env


def tier_env(
    family: Family, old: int | None, new: int | None, uplinks: Sequence[str]
) -> dict[str, str]:
    """What a hook learns when the carrying tier changes."""
    env = _base_env()
    env.update(
        ECMPD_EVENT="tier",
        ECMPD_FAMILY=FAMILY_NAMES[family],
        ECMPD_OLD_TIER="" if old is None else str(old),
        ECMPD_NEW_TIER="" if new is None else str(new),
        ECMPD_UPLINKS=" ".join(uplinks),
        ECMPD_TAKEOVER="1" if new is not None and (old is None or new > old) else "0",
    )
    return env


async def run_hooks(directory: Path, t: Transition, family: Family, in_service: bool) -> None:
    """Run every hook with the change in its environment (argv only, no shell)."""
    await run_with(directory, hook_env(t, family, in_service))


async def run_health_hooks(directory: Path, t: Transition, family: Family, drained: bool) -> None:
    """The hooks of one health change, as the daemon runs them.

    ECMPD_IN_SERVICE says whether the uplink may carry the family's traffic now (never
    while drained); an IPv6 change's reason starts with "ipv6: " (ECMPD_FAMILY says it
    too; the prefix stays for hooks that only read the reason).
    """
    heard = replace(t, reason=f"ipv6: {t.reason}") if family is Family.INET6 else t
    await run_hooks(directory, heard, family, t.new.in_service and not drained)


async def run_with(directory: Path, env: dict[str, str]) -> None:
    """Run every hook with this environment, one after the other."""
    for program in hook_programs(directory):
        try:
            proc = await asyncio.create_subprocess_exec(
                str(program),
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            log.warning("hook.failed", extra={"hook": str(program), "error": str(exc)})
            continue
        try:
            _, err = await asyncio.wait_for(proc.communicate(), HOOK_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            log.warning("hook.timeout", extra={"hook": str(program), "timeout": HOOK_TIMEOUT})
            continue
        if proc.returncode != 0:
            log.warning(
                "hook.failed",
                extra={
                    "hook": str(program),
                    "status": proc.returncode,
                    "stderr": err.decode(errors="replace")[-500:],
                },
            )
