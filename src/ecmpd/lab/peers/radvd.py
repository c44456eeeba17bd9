"""radvd as an ISP's router announcing itself on one interface (router advertisements).

Each instance announces one router: its link-local source address is pinned with
AdvRASrcAddress, so two instances on one link are two routers (a new router before
the old one leaves). `set_lifetime(0)` withdraws the router while radvd keeps running
(reloaded by SIGHUP); stopping radvd sends a final advertisement with lifetime 0, as a
router shutting down does. The advertising side must forward IPv6 (radvd checks).
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, replace
from ipaddress import IPv6Address
from pathlib import Path

from ecmpd.lab.peers.process import Peer

RADVD = "radvd"


@dataclass(frozen=True)
class Advertisement:
    """What radvd announces: a default router for `lifetime_s` (0: not a default router)."""

    source: IPv6Address
    lifetime_s: int = 600
    min_interval_s: float = 3.0  # radvd's lower limit
    max_interval_s: float = 4.0

    def __post_init__(self) -> None:
        if not self.source.is_link_local:
            raise ValueError(f"{self.source}: router advertisements come from link-local")
        if not 0 <= self.lifetime_s <= 9000:
            raise ValueError(f"router lifetime {self.lifetime_s} s is outside 0..9000")


def radvd_config(interface: str, ad: Advertisement) -> str:
    """radvd.conf for one interface."""
    return (
        f"interface {interface} {{\n"
        "  AdvSendAdvert on;\n"
        f"  MinRtrAdvInterval {ad.min_interval_s:g};\n"
        f"  MaxRtrAdvInterval {ad.max_interval_s:g};\n"
        f"  AdvDefaultLifetime {ad.lifetime_s};\n"
        f"  AdvRASrcAddress {{ {ad.source}; }};\n"
        "};\n"
    )


class RouterAdvertiser(Peer):
    """radvd announcing `ad` on `interface` of namespace `ns`."""

    def __init__(self, ns: str, interface: str, ad: Advertisement, workdir: Path) -> None:
        super().__init__(ns, workdir, f"radvd-{interface}-{ad.source}".replace(":", "_"))
        self.interface, self.ad = interface, ad
        self.config = self.dir / "radvd.conf"
        self.pid_file = self.dir / "radvd.pid"
        self._write(ad)

    def argv(self) -> list[str]:
        return [
            RADVD,
            "--nodaemon",
            "--config",
            str(self.config),
            "--pidfile",
            str(self.pid_file),
            "--logmethod",
            "stderr",
        ]

    def ready(self) -> bool:
        return self.pid_file.exists()

    def set_lifetime(self, lifetime_s: int) -> None:
        """Announce a new router lifetime (0 withdraws the router) from now on."""
        self._write(replace(self.ad, lifetime_s=lifetime_s))
        self.send(signal.SIGHUP)

    def _write(self, ad: Advertisement) -> None:
        self.ad = ad
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(radvd_config(self.interface, ad))
        tmp.replace(self.config)
