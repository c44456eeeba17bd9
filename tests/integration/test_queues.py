"""An uplink's `queue` against the real kernel: built, kept, changed, rebuilt, removed,
refused beside someone else's qdisc, and what it does to the packets of a router's LAN."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import yaml

from ecmpd.config.uplink import FIRST_BYTES
from ecmpd.lab import netns
from ecmpd.lab.groups import group_members
from ecmpd.lab.labconfig import write_lab_config
from ecmpd.lab.layout import Lab
from ecmpd.lab.sources import nat_only
from ecmpd.lab.topology import add_lan_clients
from ecmpd.lab.wait import wait_for
from ecmpd.queues import show_handle
from tests.integration.fixtures.connections import tcp_server
from tests.integration.fixtures.daemon import running_daemon
from tests.integration.fixtures.kernelstate import ecmpd
from tests.integration.fixtures.labs import LabFactory

RATE_MBIT = 20
PORT = 7100
BULK_PORT = 7101


def queue_lab(lab_factory: LabFactory, **queue: Any) -> Lab:
    """2 ISPs (unshaped: the queue is the only bottleneck), a LAN, NAT only; every uplink
    with a `queue` of RATE_MBIT (and the keys given)."""
    lab = lab_factory(isps=2, lan=True, shaping=False, ipv6=False)
    nat_only(lab)
    add_lan_clients(lab, 4)
    per_uplink = {isp.name: {"queue": {"rate": f"{RATE_MBIT}Mbit", **queue}} for isp in lab.isps}
    write_lab_config(lab, lab.config_path, per_uplink=per_uplink)
    return lab


def edit_first_uplink(lab: Lab, change: Callable[[dict[str, Any]], object]) -> None:
    """Changes the first uplink of the lab's config file, as a user edits it."""
    data = yaml.safe_load(lab.config_path.read_text())
    change(data["uplinks"][0])
    lab.config_path.write_text(yaml.safe_dump(data))


def lan(lab: Lab) -> str:
    assert lab.lan is not None
    return lab.lan


def apply(lab: Lab, run: Path) -> dict[str, Any]:
    r = ecmpd(lab.router, lab.config_path, run, "apply", "--json")
    assert r.returncode == 0, r.stderr
    result: dict[str, Any] = json.loads(r.stdout)
    return result


def tc(ns: str, *args: str) -> Any:
    out = netns.run_in(ns, ["tc", "-j", "-s", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")


def classes(lab: Lab, ifname: str) -> dict[str, dict[str, int]]:
    """The interface's HTB classes by tc's name for them (ec:10): parameters and counters,
    read with pyroute2 (this iproute2's `tc -j class show` is no JSON for HTB)."""
    with netns.iproute(lab.router) as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        out = {}
        for c in ipr.get_classes(index=index):
            parms = c.get_attr("TCA_OPTIONS").get_attr("TCA_HTB_PARMS")
            stats = c.get_attr("TCA_STATS2")
            basic, queue = stats.get_attr("TCA_STATS_BASIC"), stats.get_attr("TCA_STATS_QUEUE")
            out[show_handle(c["handle"])] = {
                "rate": parms["rate"],
                "ceil": parms["ceil"],
                "prio": parms["prio"],
                "packets": basic["packets"],
                "bytes": basic["bytes"],
                "drops": queue["drops"],
            }
        return out


def root(lab: Lab, ifname: str) -> dict[str, Any]:
    roots = [q for q in tc(lab.router, "qdisc", "show", "dev", ifname) if q.get("root")]
    assert len(roots) == 1, roots
    return dict(roots[0])


def test_apply_builds_the_queue_and_a_second_apply_changes_nothing(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = queue_lab(lab_factory)
    first = apply(lab, tmp_path / "run")
    commands = [op["command"] for op in first["ops"] if op["type"] == "Queue"]
    assert sorted(c.split(" && ")[0] for c in commands) == [
        f"tc qdisc replace dev {isp.uplink_if} root handle ec: htb default 20" for isp in lab.isps
    ]
    rate = RATE_MBIT * 1_000_000 // 8
    for isp in lab.isps:
        top = root(lab, isp.uplink_if)
        assert (top["kind"], top["handle"]) == ("htb", "ec:")
        got = classes(lab, isp.uplink_if)
        assert got["ec:1"]["rate"] == got["ec:1"]["ceil"] == rate
        assert got["ec:10"]["prio"] == 0 and got["ec:20"]["prio"] == 1
        assert got["ec:10"]["rate"] + got["ec:20"]["rate"] == rate
        assert got["ec:10"]["ceil"] == got["ec:20"]["ceil"] == rate
    listing = netns.run_in(
        lab.router,
        ["nft", "list", "chain", "inet", "ecmpd", "first_bytes"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"ct original bytes <= {FIRST_BYTES} meta priority set ec:10" in listing
    assert apply(lab, tmp_path / "run")["changes"] == 0


def test_a_connections_first_bytes_go_first_and_the_rest_by_the_bulk_class(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = queue_lab(lab_factory, first_bytes=1000)
    apply(lab, tmp_path / "run")
    with ping_pong_server(lab) as server:
        before = class_counts(lab)
        # One packet each way per round (no Nagle, each answer awaited): the client's
        # SYN (60 bytes), its ACK (52) and its 30 requests (54), ACKs riding on them.
        client = netns.socket_in(lan(lab), socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            client.bind((str(lab.lan_clients[0]), 0))
            client.settimeout(5)
            client.connect((str(server), PORT))
            for i in range(30):
                client.sendall(b"%02d" % i)
                assert client.recv(2) == b"%02d" % i
        after = class_counts(lab)
    first = [a - b for a, b in zip(after["ec:10"], before["ec:10"], strict=True)]
    bulk = [a - b for a, b in zip(after["ec:20"], before["ec:20"], strict=True)]
    # (packets, bytes as sent: IP packets plus 14 bytes of Ethernet header each)
    first_ip_bytes = first[1] - ETHERNET * first[0]
    # Exactly the packets that fit in the first 1000 bytes: the next would not have.
    assert 1000 - MAX_PACKET < first_ip_bytes <= 1000, first
    assert bulk[0] >= 30 + 2 - first[0]


ETHERNET = 14
MAX_PACKET = 60  # the largest packet the client sends here (its SYN)


def class_counts(lab: Lab) -> dict[str, tuple[int, int]]:
    """(packets, bytes) each class sent, summed over the uplinks."""
    out: dict[str, tuple[int, int]] = {}
    for isp in lab.isps:
        for handle, c in classes(lab, isp.uplink_if).items():
            p, b = out.get(handle, (0, 0))
            out[handle] = (p + c["packets"], b + c["bytes"])
    return out


def test_new_connections_are_not_dropped_behind_a_full_bulk_queue(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """Uploads fill the bulk FIFO until it drops; meanwhile 40 new connections open and
    exchange a first request: none of their first packets is dropped, all answer."""
    lab = queue_lab(lab_factory)
    apply(lab, tmp_path / "run")
    with ping_pong_server(lab) as server, bulk_uploads(lab, server, 8):
        deadline = time.monotonic() + 20
        while bulk_drops(lab) == 0:  # the uploads have filled the queue
            assert time.monotonic() < deadline, "the uploads never filled the bulk queue"
            time.sleep(0.1)
        sockets = []
        for i in range(40):
            s = netns.socket_in(lan(lab), socket.AF_INET, socket.SOCK_STREAM)
            s.bind((str(lab.lan_clients[i % len(lab.lan_clients)]), 0))
            s.settimeout(10)
            sockets.append(s)
        try:
            for s in sockets:
                s.connect((str(server), PORT))
                s.sendall(b"hi")
            assert all(s.recv(2) == b"hi" for s in sockets)
        finally:
            for s in sockets:
                s.close()
        assert bulk_drops(lab) > 0
    drops = [classes(lab, isp.uplink_if)["ec:10"]["drops"] for isp in lab.isps]
    assert drops == [0, 0]


def bulk_drops(lab: Lab) -> int:
    return sum(int(classes(lab, isp.uplink_if)["ec:20"]["drops"]) for isp in lab.isps)


def test_a_changed_rate_is_changed_in_place_and_a_damaged_queue_rebuilt(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = queue_lab(lab_factory)
    run = tmp_path / "run"
    apply(lab, run)
    edit_first_uplink(lab, lambda uplink: uplink["queue"].update(rate="30Mbit"))
    changed = apply(lab, run)
    assert changed["changes"] == 1, changed["ops"]
    assert classes(lab, "wan-a")["ec:1"]["rate"] == 30_000_000 // 8
    # By hand: the bulk FIFO made shallower. Read back as it is, changed back in place.
    shallower = "tc qdisc replace dev wan-b parent ec:20 handle ee: bfifo limit 3000"
    netns.run_in(lab.router, shallower.split(), check=True)
    rebuilt = apply(lab, run)
    assert rebuilt["changes"] == 1, rebuilt["ops"]
    leaves = {q["handle"]: q for q in tc(lab.router, "qdisc", "show", "dev", "wan-b")}
    assert leaves["ee:"]["options"]["limit"] == RATE_MBIT * 1_000_000 // 8 // 20  # 50 ms
    # A class deleted by hand: the tree is not ecmpd's any more, it is built again whole.
    netns.run_in(lab.router, ["tc", "class", "del", "dev", "wan-b", "classid", "ec:10"], check=True)
    assert "ec:10" not in classes(lab, "wan-b")
    assert apply(lab, run)["changes"] == 1
    assert set(classes(lab, "wan-b")) == {"ec:1", "ec:10", "ec:20"}
    assert apply(lab, run)["changes"] == 0


def test_dropping_the_queue_and_down_give_the_interface_back(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = queue_lab(lab_factory)
    run = tmp_path / "run"
    apply(lab, run)
    edit_first_uplink(lab, lambda uplink: uplink.pop("queue"))
    apply(lab, run)
    assert root(lab, "wan-a")["handle"] == "0:"  # the kernel's default again
    assert root(lab, "wan-b")["handle"] == "ec:"
    r = ecmpd(lab.router, lab.config_path, run, "down", "--json")
    assert r.returncode == 0, r.stderr
    assert [root(lab, i)["handle"] for i in ("wan-a", "wan-b")] == ["0:", "0:"]


def test_someone_elses_root_qdisc_is_refused_before_any_change(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = queue_lab(lab_factory)
    foreign_tbf(lab, "wan-b")
    before = root(lab, "wan-b")
    checked = ecmpd(lab.router, lab.config_path, tmp_path / "run", "validate")
    r = ecmpd(lab.router, lab.config_path, tmp_path / "run", "apply")
    for done in (checked, r):
        assert done.returncode == 1
        line = next(x for x in done.stderr.splitlines() if "uplinks[1].queue" in x)
        assert line.startswith(f"{lab.config_path}:")
        assert "wan-b has a root qdisc ecmpd does not own (tbf 1:)" in line
    after = root(lab, "wan-b")
    assert (after["kind"], after["handle"], after["options"]) == (
        before["kind"],
        before["handle"],
        before["options"],
    )
    assert root(lab, "wan-a")["handle"] == "0:"  # nothing of the config was applied


def test_the_daemon_builds_queues_as_interfaces_come_and_around_a_foreign_qdisc(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    """`ecmpd run`: an uplink whose interface comes late gets its queue when it comes, and
    again after it vanished and came back; an uplink whose interface has someone else's
    root qdisc is a conflict in the status (naming it), every other uplink is served, and
    the queue is built once that qdisc is gone. The daemon starts (an uplink's queue must
    not stop failover: `validate` and `apply` refuse such a config) and never stops."""
    lab = queue_lab(lab_factory)
    data = yaml.safe_load(lab.config_path.read_text())
    data["uplinks"].append(
        {"name": "late", "interface": "late0", "table": 104, "queue": {"rate": "5Mbit"}}
    )
    lab.config_path.write_text(yaml.safe_dump(data))
    foreign_tbf(lab, "wan-b")
    with running_daemon(lab, lab.config_path, tmp_path / "daemon") as daemon:
        wait_for(lambda: group_members(lab) == {"isp-a", "isp-b"}, 10, "both ISPs balanced")
        wait_for(lambda: root(lab, "wan-a")["handle"] == "ec:", 5, "wan-a's queue")
        # The health probes pass the queue (its HTB's direct queue), never wait in it.
        wait_for(lambda: direct_packets(lab, "wan-a") > 5, 5, "probes sent direct")
        # (They are tracked, as any ICMP: without the exception they would go by ec:10.)
        assert classes(lab, "wan-a")["ec:10"]["packets"] == 0

        def conflict() -> str:
            refused = daemon.status().refused or ()
            return next((r.error for r in refused if r.kind == "conflict"), "")

        wait_for(lambda: bool(conflict()), 5, "the foreign qdisc in the status")
        assert "wan-b has a root qdisc ecmpd does not own (tbf 1:)" in conflict()
        assert next(r.uplink for r in daemon.status().refused or ()) == "isp-b"
        assert root(lab, "wan-b")["kind"] == "tbf"
        for _ in range(2):  # the late interface comes, goes and comes again
            for argv in (["ip", "link", "add", "late0", "type", "veth", "peer", "name", "late1"],
                         ["ip", "link", "set", "late1", "up"],
                         ["ip", "link", "set", "late0", "up"]):  # fmt: skip
                netns.run_in(lab.router, argv, check=True)
            wait_for(lambda: interface_root(lab, "late0") == "ec:", 5, "late0's queue")
            assert classes(lab, "late0")["ec:1"]["rate"] == 5_000_000 // 8
            netns.run_in(lab.router, ["ip", "link", "del", "late0"], check=True)
            time.sleep(0.5)
            daemon.alive()
        netns.run_in(lab.router, ["tc", "qdisc", "del", "dev", "wan-b", "root"], check=True)
        # Retried on its backoff (1 s doubling; a few seconds here).
        wait_for(lambda: root(lab, "wan-b")["handle"] == "ec:", 20, "wan-b's queue")
        wait_for(lambda: not daemon.status().refused, 5, "nothing refused any more")
        assert group_members(lab) == {"isp-a", "isp-b"}
        daemon.alive()
        assert "Traceback" not in daemon.log()


def direct_packets(lab: Lab, ifname: str) -> int:
    """Packets ecmpd's HTB sent from its direct queue (past the classes)."""
    return int(root(lab, ifname)["options"]["direct_packets_stat"])


def interface_root(lab: Lab, ifname: str) -> str | None:
    """The handle of the interface's root qdisc; None while the interface is not there."""
    done = netns.run_in(
        lab.router, ["tc", "-j", "qdisc", "show", "dev", ifname], capture_output=True, text=True
    )
    if done.returncode != 0:
        return None
    roots = [q for q in json.loads(done.stdout or "[]") if q.get("root")]
    return str(roots[0]["handle"]) if roots else None


def foreign_tbf(lab: Lab, ifname: str) -> None:
    """Someone else's root qdisc on the interface (as `tc` or an SQM script leaves it)."""
    argv = ["tc", "qdisc", "add", "dev", ifname, "root", "handle", "1:", "tbf", "rate", "10mbit"]
    netns.run_in(lab.router, [*argv, "burst", "32kb", "latency", "50ms"], check=True)


@contextlib.contextmanager
def ping_pong_server(lab: Lab) -> Iterator[IPv4Address]:
    """A server in the internet namespace that echoes each 2-byte request, and sinks
    everything sent to BULK_PORT."""
    address = lab.servers[0]

    def echo(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(2):
                conn.sendall(data)

    def sink(conn: socket.socket) -> None:
        with conn:
            while conn.recv(65536):
                pass

    with (
        tcp_server(lab.internet, address, PORT, echo),
        tcp_server(lab.internet, address, BULK_PORT, sink),
    ):
        yield address


@contextlib.contextmanager
def bulk_uploads(lab: Lab, server: IPv4Address, n: int) -> Iterator[None]:
    """n connections from the LAN sending as fast as they can until the block ends."""
    stop = threading.Event()
    chunk = b"x" * 65536

    def upload(i: int) -> None:
        s = netns.socket_in(lan(lab), socket.AF_INET, socket.SOCK_STREAM)
        with s:
            s.bind((str(lab.lan_clients[i % len(lab.lan_clients)]), 0))
            s.settimeout(5)
            s.connect((str(server), BULK_PORT))
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    s.sendall(chunk)

    threads = [threading.Thread(target=upload, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    try:
        yield
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
