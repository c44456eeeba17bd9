"""Pick an export format, decide which kernel facts it sees, and lay out its files."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from ipaddress import IPv4Interface
from pathlib import Path

from ecmpd.config import Config
from ecmpd.export import frr, ipbatch, netplan, networkd, routeros
from ecmpd.facts import InterfaceFacts, KernelFacts

Renderer = Callable[[Config, KernelFacts], dict[str, str]]

RENDERERS: dict[str, Renderer] = {
    "ip": ipbatch.files,
    "netplan": netplan.files,
    "networkd": networkd.files,
    "routeros": routeros.files,
    "frr": frr.files,
}
FORMATS = tuple(RENDERERS)
# Formats that configure another system describe every uplink whatever its carrier
# is at export time: that system brings links up and down itself. `ip` is the exact
# state `apply` would build now, so it sees the links as they are.
LIVE_FORMATS = frozenset({"ip"})
SEPARATOR = "# --- FILE: {name} ---"
ASSUMED_IFINDEX = 0


def render_files(fmt: str, config: Config, facts: KernelFacts) -> dict[str, str]:
    """The export as file names and contents (KeyError for an unknown format)."""
    renderer = RENDERERS[fmt]
    return renderer(config, facts if fmt in LIVE_FORMATS else links_up(config, facts))


def render(fmt: str, config: Config, facts: KernelFacts) -> str:
    """The export as one text: a single file as it is, several behind FILE separators."""
    return join(render_files(fmt, config, facts))


def join(files: dict[str, str]) -> str:
    """Several files in one text, each behind a `# --- FILE: name ---` line."""
    if len(files) == 1:
        return next(iter(files.values()))
    return "\n".join(f"{SEPARATOR.format(name=name)}\n{text}" for name, text in files.items())


def write(files: dict[str, str], directory: Path) -> list[Path]:
    """Write each file into `directory` (created if needed); the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def config_facts(config: Config) -> KernelFacts:
    """Facts from the config alone, for when the kernel cannot be read.

    Each uplink interface is up with its configured source as its only address (the
    prefix is unknown, so no connected route), and no DHCP lease is known.
    """
    interfaces: dict[str, InterfaceFacts] = {}
    for uplink in config.uplinks:
        if uplink.interface in interfaces:
            continue
        addresses = (IPv4Interface(uplink.source),) if uplink.source is not None else ()
        # ifindex 0 is never a real link: it tells renderers these facts are assumed.
        interfaces[uplink.interface] = InterfaceFacts(
            uplink.interface, ASSUMED_IFINDEX, addresses=addresses
        )
    return KernelFacts(interfaces=interfaces)


def links_up(config: Config, facts: KernelFacts) -> KernelFacts:
    """The facts with every uplink interface up, with carrier; unknown ones from the config."""
    fallback = config_facts(config).interfaces
    interfaces = dict(facts.interfaces)
    for name, assumed in fallback.items():
        known = interfaces.get(name)
        interfaces[name] = (
            assumed if known is None else dataclasses.replace(known, up=True, carrier=True)
        )
    return dataclasses.replace(facts, interfaces=interfaces)
