"""Golden: a backup tier and a pin with a fallback list in every export format."""
# ruff: noqa: E501  (golden texts hold the exports' own long command lines)

from __future__ import annotations

from ipaddress import ip_interface

import pytest

from ecmpd.config import parse_config
from ecmpd.export import render
from ecmpd.facts import InterfaceFacts, KernelFacts

FACTS = KernelFacts(
    interfaces={
        f"wan-{x}": InterfaceFacts(f"wan-{x}", 100 + i, addresses=(ip_interface(f"10.{i}.0.2/24"),))
        for i, x in enumerate("abcd", start=1)
    }
)
CONFIG = """\
uplinks:
  - {name: fiber, interface: wan-a, gateway: 10.1.0.1}
  - {name: cable, interface: wan-b, gateway: 10.2.0.1}
  - {name: lte, interface: wan-c, gateway: 10.3.0.1, tier: 2, metered: true}
  - {name: sat, interface: wan-d, gateway: 10.4.0.1, tier: 2}
rules:
  - {name: vpn, action: pin, from: 10.200.1.5, uplink: [fiber, lte], strict: true}
  - {name: everything-else, action: balance}
"""

ROUTEROS = """\
# ecmpd export --format routeros: the policy of ecmpd.yaml as a RouterOS v7
# script (/import ecmpd.rsc). Interface names are this host's: replace them with
# the router's (ether1, pppoe-out1, ...). Everything added carries a comment
# starting "ecmpd", to find it again ([find comment~"^ecmpd"]).
# check-gateway=ping probes every 10 s and fails after two losses (RouterOS's fixed
# timing); ecmpd's interval, timeout, down_after/up_after, min_up, max_loss and
# max_rtt have no equivalent.
# Weights: RouterOS ECMP routes have no weights. Each gateway is repeated in
# gateway= as often as its weight (divided by their gcd; at most 16 in all), and
# RouterOS spreads flows evenly over the list. Chosen over PCC mangle rules: it
# stays one route in one table, like ecmpd's nexthop group; it needs no connection
# marks (so fasttrack and the router's own traffic work); and check-gateway drops
# a failed uplink from the list by itself.

/ip settings
set ipv4-multipath-hash-policy=l4

/routing table
add name=ecmp fib comment="ecmpd balancer (table 200)"
add name=fiber fib comment="ecmpd uplink fiber (table 101)"
add name=cable fib comment="ecmpd uplink cable (table 102)"
add name=lte fib comment="ecmpd uplink lte (table 103)"
add name=sat fib comment="ecmpd uplink sat (table 104)"
add name=pin-vpn fib comment="ecmpd pin vpn: fiber then lte"

/ip route
add dst-address=0.0.0.0/0 gateway=10.1.0.1 check-gateway=ping \\
    pref-src=10.1.0.2 routing-table=fiber comment="ecmpd fiber default"
add dst-address=10.1.0.0/24 gateway=wan-a pref-src=10.1.0.2 \\
    routing-table=fiber comment="ecmpd fiber connected"
add dst-address=0.0.0.0/0 gateway=10.2.0.1 check-gateway=ping \\
    pref-src=10.2.0.2 routing-table=cable comment="ecmpd cable default"
add dst-address=10.2.0.0/24 gateway=wan-b pref-src=10.2.0.2 \\
    routing-table=cable comment="ecmpd cable connected"
add dst-address=0.0.0.0/0 gateway=10.3.0.1 check-gateway=ping \\
    pref-src=10.3.0.2 routing-table=lte comment="ecmpd lte default"
add dst-address=10.3.0.0/24 gateway=wan-c pref-src=10.3.0.2 routing-table=lte \\
    comment="ecmpd lte connected"
add dst-address=0.0.0.0/0 gateway=10.4.0.1 check-gateway=ping \\
    pref-src=10.4.0.2 routing-table=sat comment="ecmpd sat default"
add dst-address=10.4.0.0/24 gateway=wan-d pref-src=10.4.0.2 routing-table=sat \\
    comment="ecmpd sat connected"
# fiber:cable weights 1:1 -> gateways repeated 1:1
add dst-address=0.0.0.0/0 gateway=10.1.0.1,10.2.0.1 check-gateway=ping \\
    routing-table=ecmp comment="ecmpd balancer"
# lte:sat weights 1:1 -> gateways repeated 1:1
# standby: RouterOS uses distance 2 while no lower one is active
add dst-address=0.0.0.0/0 gateway=10.3.0.1,10.4.0.1 check-gateway=ping \\
    distance=2 routing-table=ecmp comment="ecmpd balancer tier 2"
add dst-address=0.0.0.0/0 gateway=10.1.0.1 check-gateway=ping distance=1 \\
    routing-table=pin-vpn comment="ecmpd pin vpn 1: fiber"
add dst-address=0.0.0.0/0 gateway=10.3.0.1 check-gateway=ping distance=2 \\
    routing-table=pin-vpn comment="ecmpd pin vpn 2: lte"

/routing rule
# Appended after any rules already there: move them up (place-before=) if needed.
add src-address=10.1.0.2/32 action=lookup-only-in-table table=fiber \\
    comment="ecmpd reply:fiber"
add src-address=10.2.0.2/32 action=lookup-only-in-table table=cable \\
    comment="ecmpd reply:cable"
add src-address=10.3.0.2/32 action=lookup-only-in-table table=lte \\
    comment="ecmpd reply:lte"
add src-address=10.4.0.2/32 action=lookup-only-in-table table=sat \\
    comment="ecmpd reply:sat"
add src-address=10.200.1.5/32 action=lookup-only-in-table table=pin-vpn \\
    comment="ecmpd vpn"
# everything-else: when_all_down keep: falls back to main when every gateway fails
add action=lookup table=ecmp comment="ecmpd everything-else"
"""

NETPLAN = """\
# ecmpd export --format netplan: the policy of ecmpd.yaml for netplan
# (checked against netplan 0.106, Debian bookworm). Save as /etc/netplan/90-ecmpd.yaml:
# netplan merges it with the files that already configure these interfaces (move
# an interface under vlans:/bonds:/bridges: if it is one). Static: no health checks
# and no failover; for those run `ecmpd run` instead (it owns rule priorities
# 10000-10999: do not use both).
# netplan wants from or to in a rule: `from: 0.0.0.0/0` is `from all`.
# Failover order: each standby tier is a balancer default route of a higher
# metric, and a pin list a chain of rules (priority +1, +2, ...) tried in turn.
# The kernel skips a route whose links have no carrier only with the sysctls
# net.ipv4.conf.all.ignore_routes_with_linkdown = 1 (and net.ipv6.conf.all...);
# a failure beyond the link (a dead ISP behind a live modem) needs ecmpd's checks.
#
# netplan cannot express:
#   - the balanced route of table 200 (netplan has no nexthop groups or multipath routes)
#   - sysctls (or put them in /etc/sysctl.d/90-ecmpd.conf)
#   - rule vpn: none of fiber, lte usable (10102): unreachable
# Run these once netplan has brought the links up, e.g. from a networkd-dispatcher
# hook (/etc/networkd-dispatcher/routable.d/50-ecmpd) or a oneshot unit ordered
# After=systemd-networkd-wait-online.service:
#   sysctl -w net.ipv4.conf.wan-a.rp_filter=2
#   sysctl -w net.ipv4.conf.wan-b.rp_filter=2
#   sysctl -w net.ipv4.conf.wan-c.rp_filter=2
#   sysctl -w net.ipv4.conf.wan-d.rp_filter=2
#   sysctl -w net.ipv4.fib_multipath_hash_policy=1
#   ip nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236
#   ip nexthop add id 248316006 via 10.2.0.1 dev wan-b proto 236
#   ip nexthop add id 248316007 via 10.3.0.1 dev wan-c proto 236
#   ip nexthop add id 248316008 via 10.4.0.1 dev wan-d proto 236
#   ip nexthop add id 248316104 group 248316005,1/248316006,1 type resilient buckets 512 idle_timer 0 unbalanced_timer 0 proto 236
#   ip route add default nhid 248316104 table 200 proto 236
#   ip rule add priority 10102 from 10.200.1.5 unreachable proto 236
# standby tier 2 (lte, sat) is multipath: netplan cannot
# hold it; give that tier one uplink, or use networkd or ecmpd run.
network:
  version: 2
  ethernets:
    wan-a:  # uplink fiber
      routes:
        - to: default
          via: 10.1.0.1
          from: 10.1.0.2
          table: 101
        - to: 10.1.0.0/24
          from: 10.1.0.2
          scope: link
          table: 101
      routing-policy:
        - from: 10.1.0.2  # reply:fiber
          table: 101
          priority: 10000
        - from: 10.200.1.5  # vpn
          table: 101
          priority: 10100
        - from: 0.0.0.0/0  # everything-else
          table: 200
          priority: 10110
    wan-b:  # uplink cable
      routes:
        - to: default
          via: 10.2.0.1
          from: 10.2.0.2
          table: 102
        - to: 10.2.0.0/24
          from: 10.2.0.2
          scope: link
          table: 102
      routing-policy:
        - from: 10.2.0.2  # reply:cable
          table: 102
          priority: 10001
    wan-c:  # uplink lte
      routes:
        - to: default
          via: 10.3.0.1
          from: 10.3.0.2
          table: 103
        - to: 10.3.0.0/24
          from: 10.3.0.2
          scope: link
          table: 103
      routing-policy:
        - from: 10.3.0.2  # reply:lte
          table: 103
          priority: 10002
        - from: 10.200.1.5  # vpn fallback 1: lte
          table: 103
          priority: 10101
    wan-d:  # uplink sat
      routes:
        - to: default
          via: 10.4.0.1
          from: 10.4.0.2
          table: 104
        - to: 10.4.0.0/24
          from: 10.4.0.2
          scope: link
          table: 104
      routing-policy:
        - from: 10.4.0.2  # reply:sat
          table: 104
          priority: 10003
"""

IP = """\
# ecmpd export --format ip: the kernel state `ecmpd apply` builds for ecmpd.yaml
# (every uplink assumed healthy), as a script for `ip -batch`. Save it as
# ecmpd.batch and run, as root:
#   sysctl -w net.ipv4.conf.wan-a.rp_filter=2 net.ipv4.conf.wan-b.rp_filter=2 net.ipv4.conf.wan-c.rp_filter=2 net.ipv4.conf.wan-d.rp_filter=2 net.ipv4.fib_multipath_hash_policy=1 && ip -batch ecmpd.batch
# Every object carries ecmpd's protocol id (236), so `ecmpd apply` later finds them
# in place and takes them for its own.
# Not here: ecmpd's nftables table (connection marks) and its rules.
# tier 2 (lte, sat) stands by: its nexthops and tables are here,
# but not in the balancer group; `ecmpd run` puts them there when no
# lower tier has an uplink in service (one group change), and back.
# pin vpn (fiber -> lte): this script points it at fiber;
# `ecmpd run` points it at the next in service when one fails.
# lte: metering, data caps and failback are the daemon's.

# sysctls (run these first; `ip -batch` cannot set them):
# sysctl -w net.ipv4.conf.wan-a.rp_filter=2
# sysctl -w net.ipv4.conf.wan-b.rp_filter=2
# sysctl -w net.ipv4.conf.wan-c.rp_filter=2
# sysctl -w net.ipv4.conf.wan-d.rp_filter=2
# sysctl -w net.ipv4.fib_multipath_hash_policy=1

nexthop add id 248316005 via 10.1.0.1 dev wan-a proto 236
nexthop add id 248316006 via 10.2.0.1 dev wan-b proto 236
nexthop add id 248316007 via 10.3.0.1 dev wan-c proto 236
nexthop add id 248316008 via 10.4.0.1 dev wan-d proto 236
nexthop add id 248316104 group 248316005,1/248316006,1 type resilient buckets 512 idle_timer 0 unbalanced_timer 0 proto 236
route add default via 10.1.0.1 dev wan-a src 10.1.0.2 table 101 proto 236
route add 10.1.0.0/24 dev wan-a scope link src 10.1.0.2 table 101 proto 236
route add default via 10.2.0.1 dev wan-b src 10.2.0.2 table 102 proto 236
route add 10.2.0.0/24 dev wan-b scope link src 10.2.0.2 table 102 proto 236
route add default via 10.3.0.1 dev wan-c src 10.3.0.2 table 103 proto 236
route add 10.3.0.0/24 dev wan-c scope link src 10.3.0.2 table 103 proto 236
route add default via 10.4.0.1 dev wan-d src 10.4.0.2 table 104 proto 236
route add 10.4.0.0/24 dev wan-d scope link src 10.4.0.2 table 104 proto 236
route add default nhid 248316104 table 200 proto 236
rule add priority 10000 from 10.1.0.2 lookup 101 proto 236
rule add priority 10001 from 10.2.0.2 lookup 102 proto 236
rule add priority 10002 from 10.3.0.2 lookup 103 proto 236
rule add priority 10003 from 10.4.0.2 lookup 104 proto 236
rule add priority 10100 from 10.200.1.5 lookup 101 proto 236
rule add priority 10110 lookup 200 proto 236
"""

NETWORKD_A = """\
# ecmpd export --format networkd: uplink fiber (wan-a) of ecmpd.yaml,
# for /etc/systemd/network/. Static: no health checks and no failover; for those
# run `ecmpd run` instead (it owns rule priorities 10000-10999: do not use both).
# Failover order: each standby tier is a balancer default route of a higher
# metric, and a pin list a chain of rules (priority +1, +2, ...) tried in turn.
# The kernel skips a route whose links have no carrier only with the sysctls
# net.ipv4.conf.all.ignore_routes_with_linkdown = 1 (and net.ipv6.conf.all...);
# a failure beyond the link (a dead ISP behind a live modem) needs ecmpd's checks.
# This first file also holds what belongs to no single link (the balanced
# route, and the rules that do not look up an uplink's table).
# networkd cannot set sysctls: put these in /etc/sysctl.d/90-ecmpd.conf:
#   net.ipv4.conf.wan-a.rp_filter = 2
#   net.ipv4.conf.wan-b.rp_filter = 2
#   net.ipv4.conf.wan-c.rp_filter = 2
#   net.ipv4.conf.wan-d.rp_filter = 2
#   net.ipv4.fib_multipath_hash_policy = 1

[Match]
Name=wan-a

[Network]
# networkd applies only the first .network file (in lexical order) matching a
# link; this one sorts early and takes the link over, so it carries its addresses.
# To keep your own file instead, copy the sections below [Network] into a drop-in
# of it (/etc/systemd/network/<your file>.network.d/ecmpd.conf).
Address=10.1.0.2/24

[Route]
# uplink table 101: default route
Destination=0.0.0.0/0
Gateway=10.1.0.1
PreferredSource=10.1.0.2
Table=101

[Route]
# uplink table 101: connected prefix
Destination=10.1.0.0/24
PreferredSource=10.1.0.2
Scope=link
Table=101

[Route]
# balancer (table 200): the weighted default route
Destination=0.0.0.0/0
# ecmpd uses a resilient nexthop group (512 buckets); networkd has
# none, so a member change here rehashes flows (hash-threshold multipath).
MultiPathRoute=10.1.0.1@wan-a 1
MultiPathRoute=10.2.0.1@wan-b 1
Table=200

[Route]
# balancer (table 200): standby tier 2 (lte, sat), metric 1: the kernel uses it
# while no route of a lower metric has a live link.
# The kernel skips a route whose links have no carrier only with the sysctls
# net.ipv4.conf.all.ignore_routes_with_linkdown = 1 (and net.ipv6.conf.all...);
# a failure beyond the link (a dead ISP behind a live modem) needs ecmpd's checks.
Destination=0.0.0.0/0
# ecmpd uses a resilient nexthop group (512 buckets); networkd has
# none, so a member change here rehashes flows (hash-threshold multipath).
MultiPathRoute=10.3.0.1@wan-c 1
MultiPathRoute=10.4.0.1@wan-d 1
Metric=1
Table=200

[RoutingPolicyRule]
# reply:fiber
From=10.1.0.2
Table=101
Priority=10000

[RoutingPolicyRule]
# vpn
From=10.200.1.5
Table=101
Priority=10100

[RoutingPolicyRule]
# vpn: none of fiber, lte usable
From=10.200.1.5
Type=unreachable
Priority=10102

[RoutingPolicyRule]
# everything-else
Table=200
Priority=10110
"""

NETWORKD_C = """\
# ecmpd export --format networkd: uplink lte (wan-c) of ecmpd.yaml,
# for /etc/systemd/network/. Static: no health checks and no failover; for those
# run `ecmpd run` instead (it owns rule priorities 10000-10999: do not use both).

[Match]
Name=wan-c

[Network]
# networkd applies only the first .network file (in lexical order) matching a
# link; this one sorts early and takes the link over, so it carries its addresses.
# To keep your own file instead, copy the sections below [Network] into a drop-in
# of it (/etc/systemd/network/<your file>.network.d/ecmpd.conf).
Address=10.3.0.2/24

[Route]
# uplink table 103: default route
Destination=0.0.0.0/0
Gateway=10.3.0.1
PreferredSource=10.3.0.2
Table=103

[Route]
# uplink table 103: connected prefix
Destination=10.3.0.0/24
PreferredSource=10.3.0.2
Scope=link
Table=103

[RoutingPolicyRule]
# reply:lte
From=10.3.0.2
Table=103
Priority=10002

[RoutingPolicyRule]
# vpn fallback 1: lte
From=10.200.1.5
Table=103
Priority=10101
"""


@pytest.mark.parametrize(
    ("fmt", "name", "expected"),
    [
        ("routeros", "ecmpd.rsc", ROUTEROS),
        ("netplan", "90-ecmpd.yaml", NETPLAN),
        ("ip", "ecmpd.batch", IP),
        ("networkd", "10-ecmpd-wan-a.network", NETWORKD_A),
        ("networkd", "10-ecmpd-wan-c.network", NETWORKD_C),
    ],
)
def test_failover_order_export(fmt: str, name: str, expected: str) -> None:
    files = render.render_files(fmt, parse_config(CONFIG, "ecmpd.yaml"), FACTS)
    assert files[name] == expected
