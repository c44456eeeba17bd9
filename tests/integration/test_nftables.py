"""The nftables adapter against the real kernel, in a lab router's namespace."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import socket
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from ipaddress import IPv4Address, ip_network
from pathlib import Path
from typing import Any

import pytest

from ecmpd.kernel import libnft
from ecmpd.kernel import nftables as nft
from ecmpd.kernel.apply import MODIFIED_TABLE, KernelWriter
from ecmpd.kernel.nftdoc import render_table, update_document
from ecmpd.kernel.record import Record
from ecmpd.kernel.transport import NetlinkSocket
from ecmpd.lab import netns
from ecmpd.lab.faults import load_nft
from ecmpd.lab.layout import Lab
from ecmpd.lab.measure import ECHO_PORT, echo_server
from ecmpd.lab.topology import add_lan_clients
from ecmpd.model import ALL_PORTS, NftTable, PinReset, PortRange
from ecmpd.plan import Op, OpKind
from tests.integration.fixtures.labs import LabFactory, nat_lab
from tests.unit.test_nftables_update import TABLES, TWO

FOREIGN = """\
table inet foreign {
    chain post {
        type nat hook postrouting priority srcnat + 10; policy accept;
        oifname "wan-b" counter masquerade
    }
}
"""


def in_router(lab: Lab, func: Callable[[], Any]) -> Any:
    """Runs an adapter function in the lab router's namespace."""
    return netns.call_in(lab.router, func)


def nft_text(ns: str, *args: str) -> str:
    """`nft list ...` output in a lab namespace."""
    return str(netns.run_in(ns, ["nft", *args], check=True, capture_output=True, text=True).stdout)


def add_foreign_table(ns: str) -> str:
    """Adds someone else's table (with a rule) and returns its listing."""
    load_nft(ns, FOREIGN)
    return nft_text(ns, "-j", "list", "table", "inet", "foreign")


def echo_source(lab: Lab, client: IPv4Address, server: IPv4Address, timeout: float = 3) -> str:
    """The source address the echo server saw for a connection from a LAN client."""
    assert lab.lan is not None
    sock = netns.socket_in(lab.lan, socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(timeout)
        sock.bind((str(client), 0))
        sock.connect((str(server), ECHO_PORT))
        return sock.makefile().readline().strip()


def test_nft_runs_in_the_namespace_of_the_calling_thread(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=1, shaping=False)

    def child_netns() -> str:
        argv = ["stat", "-L", "-c", "%d:%i", "/proc/self/ns/net"]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    want = os.stat(netns.netns_path(lab.router))
    assert in_router(lab, child_netns) == f"{want.st_dev}:{want.st_ino}"
    in_router(lab, lambda: nft.apply_table(NftTable(masquerade=("wan-a",))))
    assert netns.call_in(lab.internet, nft.read_table) is None
    assert in_router(lab, nft.read_table) is not None


@contextlib.contextmanager
def low_descriptors_taken() -> Iterator[None]:
    """Every descriptor below FD_SETSIZE in use (libnftables' select() would abort)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    room = 2 * libnft.FD_SETSIZE
    if hard != resource.RLIM_INFINITY:  # the tests run as root, who may raise it
        room = max(room, soft)
        resource.setrlimit(resource.RLIMIT_NOFILE, (room, max(hard, room)))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, room), hard))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(libnft.FD_SETSIZE)]
    try:
        assert not libnft.fits()
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_short_of_low_descriptors_a_new_namespace_gets_the_nft_program(
    lab_factory: LabFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = lab_factory(isps=2, shaping=False)
    runs = counted_program(monkeypatch)
    table = TABLES["a fails (v4)"]
    libnft.release()
    with low_descriptors_taken():
        in_router(lab, partial(nft.apply_table, TABLES["two uplinks"]))
        in_router(lab, partial(nft.apply_table, table, TABLES["two uplinks"]))
        assert in_router(lab, nft.current_table) == table
        # The wrong table held: nft's refusal reaches apply_table, which replaces.
        in_router(lab, partial(nft.apply_table, TABLES["pins grow"], TABLES["both fail"]))
        assert "nftables.update_refused" in caplog.messages
    assert len(runs) == 5  # replace, update, list, the refused update, replace
    assert in_router(lab, nft.current_table) == TABLES["pins grow"]  # in-process again
    assert len(runs) == 5


def test_a_kept_context_goes_on_when_low_descriptors_run_short(
    lab_factory: LabFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = lab_factory(isps=2, shaping=False)
    in_router(lab, partial(nft.apply_table, TABLES["two uplinks"]))  # opens the context
    monkeypatch.setattr(nft, "_nft_process", lambda doc: pytest.fail("nft program run"))
    with low_descriptors_taken():
        in_router(lab, partial(nft.apply_table, TABLES["both fail"], TABLES["two uplinks"]))
        assert in_router(lab, nft.current_table) == TABLES["both fail"]


def counted_program(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The documents the `nft` program runs from now on (it still runs them)."""
    runs: list[str] = []
    program = nft._nft_process

    def counted(document: str) -> str:
        runs.append(document)
        return program(document)

    monkeypatch.setattr(nft, "_nft_process", counted)
    return runs


def test_without_libnftables_or_a_netfilter_socket_the_nft_program_runs(
    lab_factory: LabFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    lab = lab_factory(isps=2, shaping=False)
    runs = counted_program(monkeypatch)
    libnft.release()
    # Where no netfilter netlink socket opens (a sandbox), nft_ctx_new() would exit().
    monkeypatch.setattr(libnft, "_netlink_opens", lambda: False)
    in_router(lab, partial(nft.apply_table, TABLES["two uplinks"]))
    assert len(runs) == 1 and libnft._context is None
    monkeypatch.undo()
    runs = counted_program(monkeypatch)
    monkeypatch.setattr(libnft, "LIBRARY", "libnftables-absent.so.1")
    monkeypatch.setattr(libnft, "_loaded", False)
    monkeypatch.setattr(libnft, "_lib", None)
    in_router(lab, partial(nft.apply_table, TABLES["both fail"], TABLES["two uplinks"]))
    assert in_router(lab, nft.current_table) == TABLES["both fail"]
    assert len(runs) == 2 and libnft._lib is None


def test_a_failed_run_closes_its_context(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2, shaping=False)
    in_router(lab, partial(nft.apply_table, TABLES["two uplinks"]))
    kept = libnft._context
    assert kept is not None
    with pytest.raises(nft.NftError):
        in_router(lab, partial(nft._run_document, update_document(TABLES["a fails (v4)"], TWO)))
    assert libnft._context is None  # its socket may hold answers nobody reads
    assert in_router(lab, nft.current_table) == TABLES["two uplinks"]  # a new one
    assert libnft._context is not None


def test_removing_a_namespace_closes_its_kept_context(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2, shaping=False)
    in_router(lab, partial(nft.apply_table, TABLES["two uplinks"]))
    assert in_router(lab, nft.current_table) == TABLES["two uplinks"]
    netns.remove_netns(lab.internet)  # not the context's
    assert libnft._context is not None
    netns.remove_netns(lab.router)
    assert libnft._context is None


def test_apply_creates_the_nat_chain_and_reads_back(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2, shaping=False)
    assert in_router(lab, nft.read_table) is None
    assert in_router(lab, nft.current_table) is None
    plan = NftTable(masquerade=("wan-a", "wan-b"))
    in_router(lab, lambda: nft.apply_table(plan))

    listed = in_router(lab, nft.read_table)
    kinds = [next(iter(item)) for item in listed["nftables"]]
    assert kinds == ["metainfo", "table", "chain", "rule", "rule"]
    chain = listed["nftables"][2]["chain"]
    assert (chain["type"], chain["hook"], chain["prio"]) == ("nat", "postrouting", 100)
    text = nft_text(lab.router, "list", "table", "inet", "ecmpd")
    assert "type nat hook postrouting priority srcnat; policy accept;" in text
    assert 'meta nfproto ipv4 oifname "wan-a" masquerade' in text
    assert in_router(lab, nft.current_table) == plan

    in_router(lab, lambda: nft.apply_table(plan))  # re-apply: same table content
    assert in_router(lab, nft.current_table) == plan


def test_apply_replace_and_delete_leave_foreign_tables_alone(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=3, shaping=False)
    foreign = add_foreign_table(lab.router)

    first = NftTable(masquerade=("wan-a", "wan-b"))
    in_router(lab, lambda: nft.apply_table(first))
    assert nft_text(lab.router, "-j", "list", "table", "inet", "foreign") == foreign

    second = NftTable(mask=0xFF000000, marks=(("wan-c", 0x67000000),), masquerade=("wan-c",))
    in_router(lab, lambda: nft.apply_table(second))
    assert in_router(lab, nft.current_table) == second
    assert nft_text(lab.router, "-j", "list", "table", "inet", "foreign") == foreign
    assert "wan-b" not in nft_text(lab.router, "list", "table", "inet", "ecmpd")

    in_router(lab, nft.delete_table)
    assert in_router(lab, nft.read_table) is None
    in_router(lab, nft.delete_table)  # absent is fine
    assert nft_text(lab.router, "-j", "list", "table", "inet", "foreign") == foreign
    tables = nft_text(lab.router, "list", "tables")
    assert tables.split() == ["table", "inet", "foreign"]


def test_a_failed_replace_changes_nothing(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2, shaping=False)
    old = NftTable(masquerade=("wan-a",))
    in_router(lab, lambda: nft.apply_table(old))
    # The replacement document with one command the kernel refuses at the end: the
    # delete at its start must not have happened (one transaction, all or nothing).
    doc = render_table(NftTable(masquerade=("wan-b",)))
    bad_rule = {"family": "inet", "table": "ecmpd", "chain": "nope", "expr": [{"accept": None}]}
    doc["nftables"].append({"add": {"rule": bad_rule}})
    with pytest.raises(nft.NftError):
        in_router(lab, lambda: nft._run_document(doc))
    assert in_router(lab, nft.current_table) == old


def test_an_update_from_each_table_to_each_other_reads_back_as_written(
    lab_factory: LabFactory,
) -> None:
    # The kernel's verdict on update_document: the pairs the unit tests run on a model.
    lab = lab_factory(isps=3, shaping=False)
    foreign = add_foreign_table(lab.router)
    for held, wanted in itertools.permutations(TABLES.values(), 2):
        in_router(lab, partial(nft.apply_table, held))  # replaced whole
        in_router(lab, partial(nft._run_document, update_document(held, wanted)))
        assert in_router(lab, nft.current_table) == wanted, (held, wanted)
    assert nft_text(lab.router, "-j", "list", "table", "inet", "foreign") == foreign


def chain_handles(lab: Lab) -> dict[str, int]:
    """Table inet ecmpd's chains' handles by name, and the table's own (as "")."""
    listed = json.loads(nft_text(lab.router, "-j", "list", "table", "inet", "ecmpd"))
    handles = {}
    for item in listed["nftables"]:
        if "chain" in item:
            handles[item["chain"]["name"]] = item["chain"]["handle"]
        elif "table" in item:
            handles[""] = item["table"]["handle"]
    return handles


def test_a_failover_update_keeps_every_chain_it_does_not_change(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2, shaping=False)
    two, failed = TABLES["two uplinks"], TABLES["a fails (v4)"]
    in_router(lab, lambda: nft.apply_table(two))
    before = chain_handles(lab)
    in_router(lab, lambda: nft.apply_table(failed, held=two))
    after = chain_handles(lab)
    assert set(after) - set(before) == {"conn_reset", "reset_ipv4"}
    assert {name: after[name] for name in before} == before  # the same chains, hooks kept
    in_router(lab, lambda: nft.apply_table(two, held=failed))
    assert chain_handles(lab) == before
    in_router(lab, lambda: nft.apply_table(failed))  # no held table: replaced whole
    assert chain_handles(lab)[""] != before[""]


def test_the_writer_updates_what_it_saw_and_replaces_a_hand_edit_it_reads(
    lab_factory: LabFactory, tmp_path: Path
) -> None:
    lab = lab_factory(isps=2, shaping=False)
    two, failed = TABLES["two uplinks"], TABLES["a fails (v4)"]
    sock = in_router(lab, NetlinkSocket.open)
    writer = KernelWriter(sock, Record(tmp_path))
    try:
        in_router(lab, writer.observe)
        in_router(lab, partial(writer.execute, Op(OpKind.ADD, two)))
        first = chain_handles(lab)
        in_router(lab, partial(writer.execute, Op(OpKind.REPLACE, failed)))
        assert chain_handles(lab)[""] == first[""]  # updated in place
        in_router(lab, partial(writer.execute, Op(OpKind.REPLACE, two)))
        netns.run_in(lab.router, ["nft", "add", "rule", "inet", "ecmpd", "nat", "counter"])
        observed, _ = in_router(lab, writer.observe)
        assert observed.nft == {MODIFIED_TABLE}
        in_router(lab, partial(writer.execute, Op(OpKind.REPLACE, failed)))
        assert chain_handles(lab)[""] != first[""]  # replaced whole: the edit is gone
        assert in_router(lab, nft.current_table) == failed
    finally:
        sock.close()


def test_an_update_from_a_table_the_kernel_does_not_hold_replaces_it(
    lab_factory: LabFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lab = lab_factory(isps=2, shaping=False)
    two, failed = TABLES["two uplinks"], TABLES["a fails (v4)"]
    in_router(lab, lambda: nft.apply_table(two))
    # The caller believes a failure's reset chains are there (someone deleted them).
    in_router(lab, lambda: nft.apply_table(TABLES["pins grow"], held=failed))
    assert in_router(lab, nft.current_table) == TABLES["pins grow"]
    assert "nftables.update_refused" in caplog.messages
    caplog.clear()
    in_router(lab, nft.delete_table)
    in_router(lab, lambda: nft.apply_table(two, held=failed))  # no table at all
    assert in_router(lab, nft.current_table) == two
    assert "nftables.update_refused" in caplog.messages


def test_current_table_is_none_when_someone_changed_our_table(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=2, shaping=False)
    in_router(lab, lambda: nft.apply_table(NftTable(masquerade=("wan-a",))))
    netns.run_in(
        lab.router,
        ["nft", "add", "rule", "inet", "ecmpd", "nat", "counter"],
        check=True,
    )
    assert in_router(lab, nft.read_table) is not None
    assert in_router(lab, nft.current_table) is None


def test_lan_clients_reach_the_internet_through_nat(lab_factory: LabFactory) -> None:
    lab = nat_lab(lab_factory)
    client = add_lan_clients(lab, 1)[0]
    uplink = lab.isps[0]
    with echo_server(lab) as server:
        # Without NAT the internet has no way back to the LAN.
        with pytest.raises(OSError):
            echo_source(lab, client, server, timeout=1)

        in_router(lab, lambda: nft.apply_table(NftTable(masquerade=(uplink.uplink_if,))))
        assert echo_source(lab, client, server) == str(uplink.address.ip)


def test_nat_plan_json_is_what_nft_accepts_as_a_file(lab_factory: LabFactory) -> None:
    lab = lab_factory(isps=1, shaping=False)
    doc = render_table(NftTable(masquerade=("wan-a",)))
    # `nft -c` checks a document without committing it: the rendering is valid nft JSON.
    netns.run_in(
        lab.router, ["nft", "-c", "-j", "-f", "-"], input=json.dumps(doc), check=True, text=True
    )
    assert netns.call_in(lab.router, nft.read_table) is None


MARK_TABLES = [
    NftTable(mask=0xFF000000, marks=(("wan-a", 0x65000000), ("wan-b", 0x66000000))),
    NftTable(
        mask=0xFF000000,
        marks=(("wan-a", 0x65000000), ("wan-b", 0x66000000)),
        reset4=(0x65000000,),
        reset6=(0x65000000, 0x66000000),
        masquerade=("wan-a", "wan-b"),
    ),
    NftTable(mask=0x0000FF00, marks=(("wan-a", 0x100),), reset6=(0x100,)),
    NftTable(mask=0x00000300, marks=(("wan-a", 0x100), ("wan-b", 0x200)), reset4=(0x200,)),
    NftTable(
        mask=0xFF000000,
        marks=(("wan-a", 0x65000000), ("wan-b", 0x66000000)),
        reset4=(0x65000000,),
        pins4=(
            PinReset(
                ip_network("10.200.1.0/24"),
                ip_network("198.51.100.0/24"),
                ALL_PORTS,
                PortRange(443, 443),
                0x65000000,
            ),
            PinReset(
                ip_network("10.200.1.5/32"),
                ip_network("0.0.0.0/0"),
                PortRange(1024, 2047),
                ALL_PORTS,
                0x66000000,
            ),
        ),
        pins6=(
            PinReset(
                ip_network("2001:db8:200::/64"),
                ip_network("::/0"),
                ALL_PORTS,
                ALL_PORTS,
                0x66000000,
            ),
        ),
    ),
]


def test_mark_tables_read_back_as_written(lab_factory: LabFactory) -> None:
    """nft lists some rules differently than they were written (prefixes, one-element
    sets, masks): parse_table reads every form back to the same table."""
    lab = lab_factory(isps=2, shaping=False)
    for table in MARK_TABLES:
        in_router(lab, lambda t=table: nft.apply_table(t))  # type: ignore[misc]
        assert in_router(lab, nft.current_table) == table
