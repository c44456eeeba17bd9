"""Labs that must prove NAT: no route back to the LAN but the router's translation, and
ISPs that drop foreign sources (BCP 38) and record the flows they dropped."""

from __future__ import annotations

import json
from typing import Any

from ecmpd.lab import netns
from ecmpd.lab.faults import load_nft
from ecmpd.lab.layout import ISP_CUSTOMER_IF, LAN_PREFIX, Lab, core_link


def nat_only(lab: Lab) -> None:
    """Removes the internet's route back to the LAN: only the router's NAT reaches it now."""
    with netns.iproute(lab.internet) as ipr:
        ipr.route("del", dst=str(LAN_PREFIX), gateway=str(core_link(0)[0].ip))


def validate_sources(lab: Lab) -> None:
    """Each ISP drops what its customer sends from a foreign source (BCP 38), as real ISPs do.

    A NATed flow moved to another uplink with its old public address breaks here as it
    would in reality; each ISP records such a TCP flow's (address, port) in a set.
    """
    for isp in lab.isps:
        script = f"""
            table inet bcp38 {{
                set moved {{ type ipv4_addr . inet_service; flags dynamic; size 65536; }}
                chain forward {{
                    type filter hook forward priority -10; policy accept;
                    iifname "{ISP_CUSTOMER_IF}" ip saddr != {isp.address.network} \\
                        meta l4proto tcp add @moved {{ ip saddr . tcp sport }}
                    iifname "{ISP_CUSTOMER_IF}" ip saddr != {isp.address.network} counter drop
                }}
            }}
        """
        load_nft(isp.ns, script)


def moved_flows(lab: Lab) -> dict[str, set[tuple[str, int]]]:
    """Per ISP: the (public address, port) of the TCP flows it dropped for a foreign source."""
    moved: dict[str, set[tuple[str, int]]] = {}
    for isp in lab.isps:
        out = netns.run_in(
            isp.ns,
            ["nft", "-j", "list", "set", "inet", "bcp38", "moved"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        sets = [o["set"] for o in json.loads(out)["nftables"] if "set" in o]
        moved[isp.name] = {_elem_key(e) for e in sets[0].get("elem", [])}
    return moved


def _elem_key(elem: Any) -> tuple[str, int]:
    """(address, port) of one element of the moved set, as `nft -j` writes it."""
    value = elem["elem"]["val"] if isinstance(elem, dict) and "elem" in elem else elem
    address, port = value["concat"]
    return str(address), int(port)
