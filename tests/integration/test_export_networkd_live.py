"""The real systemd-networkd on ecmpd's exported .network files, in its own namespaces.

Goldens prove the text; this proves networkd builds from it the rules and routes of
both families that `ecmpd apply` would (needs root, unshare and systemd-networkd).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.golden.fixtures import DUAL, FACTS6, networkd_files

# Runs the real systemd-networkd on the exported files in fresh network and mount
# namespaces: /run and /etc/systemd/network are private to it, and a read-only /sys
# tells it there is no udev to wait for. Exit 77: this machine cannot host it.
NETWORKD_RUN = r"""
set -u
net=$1 py=$2 ra_peer=$3 ra_if=$4; shift 4  # then the interfaces to create
mount -t tmpfs tmpfs /run && mkdir -p /run/systemd || exit 77
mount -t sysfs -o ro sysfs /sys || exit 77
mount --bind "$net" /etc/systemd/network || exit 77
ip link set lo up
i=0
for ifname in "$@"; do
    ip link add "$ifname" type veth peer name "peer$i" && ip link set "peer$i" up || exit 77
    i=$((i + 1))
done
/usr/lib/systemd/systemd-networkd 2>/run/networkd.log &
wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
    local until=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge $until ] && return 1
        sleep 0.1
    done
}
wait_for 15 sh -c 'ip -6 rule | grep -q "^10130:"'
# A router advertises itself on ra_if; the address SLAAC would give is added by hand.
ip addr add fe80::4/64 dev "$ra_peer" nodad
ip addr add 2001:db8:4::77/64 dev "$ra_if" nodad
# Again and again: one sent before networkd listens on the link would go unheard.
for _ in $(seq 20); do
    "$py" -c "$SEND_RA" "$ra_peer" fe80::4
    sleep 0.5
    ip -6 route show table 104 | grep -q "^default" && break
done
# The routes of the other links come on their own time (after their addresses' DAD):
# every IPv6 table the test reads gets its default first (a loaded machine once dumped
# before tables 101 and 102 had theirs).
for table in $WAIT6_TABLES; do
    wait_for 15 sh -c "ip -6 route show table $table | grep -q '^default'"
done
for family in -4 -6; do
    echo "== $family rule"; ip -j $family rule show
    echo "== $family route"; ip -j $family route show table all
done
kill %1
echo "== log"; cat /run/networkd.log
"""
# One router advertisement out of an interface of the current namespace.
SEND_RA = """
import sys
from ipaddress import IPv6Address
from ecmpd.lab.ra import send_advertisement
send_advertisement(sys.argv[1], IPv6Address(sys.argv[2]), 600)
"""
NETWORKD = Path("/usr/lib/systemd/systemd-networkd")
TABLES6 = ("101", "102", "103", "104", "200")  # the IPv6 tables whose defaults are read


def run_networkd(out: dict[str, str], tmp_path: Path) -> dict[str, Any]:
    """What the real networkd makes of the files: rules and routes of both families."""
    if os.geteuid() != 0 or not NETWORKD.exists() or shutil.which("unshare") is None:
        pytest.skip("needs root, unshare and systemd-networkd (Debian: systemd)")
    if not Path("/etc/systemd/network").is_dir():
        pytest.skip("no /etc/systemd/network to bind the files over")
    # networkd reads them as its own user: pytest's directories are root's alone.
    tmp_path.chmod(0o755)
    for name, text in out.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o644)
    ifnames = [name.removeprefix("10-ecmpd-").removesuffix(".network") for name in out]
    ra_peer = f"peer{ifnames.index('ra0')}"
    argv = [
        "unshare",
        "--mount",
        "--net",
        "--fork",
        "--kill-child",
        "bash",
        "-c",
        NETWORKD_RUN,
        "networkd",
    ]
    argv += [str(tmp_path), sys.executable, ra_peer, "ra0", *ifnames]
    r = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SEND_RA": SEND_RA, "WAIT6_TABLES": " ".join(TABLES6)},
    )
    if r.returncode == 77:
        pytest.skip(f"cannot run networkd in namespaces here: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    parts = re.split(r"^== (.+)$", r.stdout, flags=re.M)[1:]
    found = dict(zip(parts[::2], parts[1::2], strict=True))
    dumps = {key: json.loads(value) for key, value in found.items() if key != "log"}
    return {**dumps, "log": found.get("log", "")}


@pytest.mark.netns
def test_networkd_itself_builds_both_families_from_the_files(tmp_path: Path) -> None:
    state = run_networkd(networkd_files(DUAL, FACTS6), tmp_path)
    ours = [r for r in state["-6 rule"] if 10000 <= r["priority"] < 11000]
    # Family=both: local and everything-else reach IPv6 too.
    assert [(r["priority"], r.get("src"), r.get("dst"), r["table"]) for r in ours] == [
        (10000, "2001:db8:1::2", None, "101"),
        (10001, "2001:db8:2::2", None, "102"),
        (10002, "2001:db8:9::9", None, "103"),
        (10003, "2001:db8:4::77", None, "104"),
        (10100, "all", None, "main"),
        (10110, "2001:db8:77::", None, "102"),
        (10120, "all", "2001:db8:88::", "main"),
        (10130, "all", None, "200"),
    ]
    v4 = [r["priority"] for r in state["-4 rule"] if 10000 <= r["priority"] < 11000]
    assert v4 == [10000, 10001, 10003, 10100, 10130]
    defaults = {
        r["table"]: r.get("gateway", r.get("nexthops"))
        for r in state["-6 route"]
        if r["dst"] == "default" and r.get("table") in TABLES6
    }
    assert defaults == {
        "101": "fe80::1",
        "102": "2001:db8:2::1",
        "103": None,  # point-to-point: out of the device
        "104": "fe80::4",  # Gateway=_ipv6ra: the router that advertised itself
        "200": [
            {"gateway": "fe80::1", "dev": "wan-a", "weight": 1, "flags": []},
            {"gateway": "2001:db8:2::1", "dev": "wan-b", "weight": 2, "flags": []},
            {"gateway": "fe80::4", "dev": "ra0", "weight": 1, "flags": []},
        ],
    }
    # networkd names the file and line of any setting it could not take.
    assert [line for line in state["log"].splitlines() if ".network:" in line] == []
