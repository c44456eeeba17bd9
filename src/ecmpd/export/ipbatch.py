"""`export --format ip`: the exact state `ecmpd apply` builds, as an `ip -batch` script.

`ip -batch` takes one `ip` command per line without the leading `ip`, cannot set
sysctls, and reads every line in the address family given on its own command line
(iproute2 6.1 refuses `-6` inside a line, and `rule add` defaults to IPv4 even for an
IPv6 prefix). So sysctls and IPv6 rules/routes ride along as marked comment lines,
which `ip -batch` skips and the header shows how to extract. Nexthops of both families
stay in the IPv4 run, before the groups made of them: their gateway says their family
(`via ::` for an IPv6 one without a gateway).
"""

from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv6Address

from ecmpd.config import Config, Mode
from ecmpd.connections import without_connections
from ecmpd.desired import desired_state
from ecmpd.export.iptext import op_command
from ecmpd.export.standby import daemon_notes
from ecmpd.facts import KernelFacts
from ecmpd.model import DesiredState, Family, Nexthop, Route, Rule, Sysctl
from ecmpd.plan import Op, diff

FILENAME = "ecmpd.batch"
# Prefixes of the comment lines that carry what `ip -batch FILE` cannot run itself.
SYSCTL_MARK = "# "
IPV6_MARK = "#6 "
# How an IPv6 nexthop without a gateway is written in the IPv4 run.
NO_GATEWAY6 = " via :: "


def files(config: Config, facts: KernelFacts) -> dict[str, str]:
    """The script, under the name the header refers to."""
    return {FILENAME: render(config, facts)}


def render(config: Config, facts: KernelFacts) -> str:
    """The `ip -batch` script for this config, with what `ip` cannot do as comments."""
    sysctls, ipv4, ipv6 = split_commands(without_connections(desired_state(config, {}, facts)))
    lines = _header(config, sysctls, bool(ipv6))
    if any(NO_GATEWAY6 in line for line in ipv4):
        lines.append(f"# `{NO_GATEWAY6.strip()}` adds an IPv6 nexthop without a gateway.")
    if sysctls:
        lines += ["", "# sysctls (run these first; `ip -batch` cannot set them):"]
        lines += [SYSCTL_MARK + s for s in sysctls]
    lines += ["", *ipv4]
    if ipv6:
        lines += ["", "# IPv6 (for `ip -6 -batch`, see above):"]
        lines += [IPV6_MARK + c for c in ipv6]
    return "\n".join(lines) + "\n"


def split_commands(state: DesiredState) -> tuple[list[str], list[str], list[str]]:
    """(sysctl commands, IPv4 batch lines, IPv6 batch lines) that build `state`, in order."""
    sysctls: list[str] = []
    ipv4: list[str] = []
    ipv6: list[str] = []
    for op in diff(state, DesiredState()):
        text = op_command(op)
        if isinstance(op.obj, Sysctl):
            sysctls.append(text)
        elif isinstance(op.obj, Rule | Route) and op.obj.family is Family.INET6:
            ipv6.append(text.removeprefix("ip -6 "))
        else:
            # Nexthops take their family from the gateway address, so they stay here
            # whatever it is: the groups after them need them, and a group cannot be
            # added under `ip -6` (the kernel: "Invalid family for group").
            ipv4.append(_family_in_line(op, text).removeprefix("ip -6 ").removeprefix("ip "))
    return sysctls, ipv4, ipv6


def _family_in_line(op: Op, text: str) -> str:
    """The command, with a gateway-less IPv6 nexthop made IPv6 by `via ::`.

    Without a gateway only `ip -6` would say the family, which this IPv4 run has not:
    `via ::` does (iproute2 takes the family from the address), and the kernel takes the
    unspecified address for no gateway, so the nexthop is the one `ip -6` would add.
    """
    nh = op.obj
    if isinstance(nh, Nexthop) and nh.family is Family.INET6 and nh.gateway is None:
        return op_command(replace(op, obj=replace(nh, gateway=IPv6Address("::"))))
    return text


def _header(config: Config, sysctls: list[str], has_ipv6: bool) -> list[str]:
    """How to run the script, with the exact commands."""
    steps = []
    if sysctls:
        # One `sysctl -w` takes them all.
        steps.append(" ".join(["sysctl -w", *(s.removeprefix("sysctl -w ") for s in sysctls)]))
    steps.append(f"ip -batch {FILENAME}")
    if has_ipv6:
        steps.append(f"sed -n 's/^{IPV6_MARK}//p' {FILENAME} | ip -6 -batch -")
    lines = [
        f"# ecmpd export --format ip: the kernel state `ecmpd apply` builds for {config.filename}",
        "# (every uplink assumed healthy), as a script for `ip -batch`. Save it as",
        f"# {FILENAME} and run, as root:",
        f"#   {' && '.join(steps)}",
        "# Every object carries ecmpd's protocol id (236), so `ecmpd apply` later finds them",
        "# in place and takes them for its own.",
    ]
    if has_ipv6:
        lines.append(
            f"# The `{IPV6_MARK.strip()}` lines are IPv6: `ip -batch` reads one family per run."
        )
    nat = " and NAT" if config.mode is Mode.ROUTER else ""
    lines.append(f"# Not here: ecmpd's nftables table (connection marks{nat}) and its rules.")
    return lines + daemon_notes(config)
