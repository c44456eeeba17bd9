"""update_document: the one transaction from the table the kernel holds to the next (pure).

A small model of the nf_tables objects executes the documents with the kernel's
refusals that matter here (flushing or deleting what is not there, deleting a chain
something still jumps to or a set a rule still looks up, a rule naming what does not
exist); test_nftables.py runs the same pairs against the real kernel.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, replace
from ipaddress import ip_network
from typing import Any

import pytest

from ecmpd.kernel.nftdoc import BASE_CHAINS, render_table, update_document
from ecmpd.model import ALL_PORTS, NftTable, PinReset, PortRange

M = 0xFF000000
A, B, C = 0x65000000, 0x66000000, 0x67000000
PIN4 = PinReset(ip_network("10.200.1.5/32"), ip_network("0.0.0.0/0"), ALL_PORTS, ALL_PORTS, B)
PIN4_WEB = PinReset(
    ip_network("10.200.1.0/24"), ip_network("198.51.100.0/24"), ALL_PORTS, PortRange(443, 443), A
)
PIN6 = PinReset(
    ip_network("2001:db8:200::/64"), ip_network("::/0"), PortRange(1000, 2000), ALL_PORTS, B
)
TWO = NftTable(mask=M, marks=(("wan-a", A), ("wan-b", B)), masquerade=("wan-a", "wan-b"))
# What a router's table goes through: failures, pins, a new uplink, a new mark range.
TABLES = {
    "nat only": NftTable(masquerade=("wan-a",)),
    "two uplinks": TWO,
    "a fails (v4)": replace(TWO, reset4=(A,)),
    "a fails (both)": replace(TWO, reset4=(A,), reset6=(A,)),
    "both fail": replace(TWO, reset4=(A, B), reset6=(A, B)),
    "a pin resets": replace(TWO, pins4=(PIN4,)),
    "pins grow": replace(TWO, pins4=(PIN4_WEB, PIN4), pins6=(PIN6,)),
    "pin and failure": replace(TWO, reset4=(B,), pins4=(PIN4_WEB,)),
    "three uplinks": NftTable(
        mask=M,
        marks=(("wan-a", A), ("wan-b", B), ("wan-c", C)),
        reset6=(C,),
        masquerade=("wan-a", "wan-b", "wan-c"),
    ),
    "queues": replace(TWO, queues=(("wan-a", 20), ("wan-b", 20))),
    "a fails, one queue": replace(TWO, reset4=(A,), queues=(("wan-b", 5),)),
    "other mark range": NftTable(
        mask=0xFF00, marks=(("wan-a", 0x100), ("wan-b", 0x200)), masquerade=("wan-b",)
    ),
}
PAIRS = [pytest.param(a, b, id=f"{a} -> {b}") for a, b in itertools.permutations(TABLES, 2)]


class Refused(Exception):
    """What the kernel would refuse (the whole transaction)."""


def _targets(node: Any) -> set[str]:
    """The chains a rule jumps to and the sets it looks up (as '@name')."""
    found: set[str] = set()
    if isinstance(node, dict):
        if "jump" in node:
            found.add(node["jump"]["target"])
        for value in node.values():
            found |= _targets(value)
    elif isinstance(node, list):
        for value in node:
            found |= _targets(value)
    elif isinstance(node, str) and node.startswith("@"):
        found.add(node)
    return found


@dataclass
class Model:
    """table inet ecmpd as chains (their attributes and rules) and sets (elements)."""

    chains: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    sets: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def run(self, doc: dict[str, Any]) -> None:
        for command in doc["nftables"]:
            ((verb, body),) = command.items()
            ((kind, obj),) = body.items()
            getattr(self, f"_{verb}")(kind, obj)
        self._check_references()

    def _add(self, kind: str, obj: dict[str, Any]) -> None:
        name = obj.get("name", "")
        if kind == "table":
            return
        if kind == "chain":
            attrs = json.dumps({k: v for k, v in obj.items() if k != "name"}, sort_keys=True)
            self.chains.setdefault(name, (attrs, []))
        elif kind == "set":
            attrs = json.dumps({k: v for k, v in obj.items() if k != "elem"}, sort_keys=True)
            elems = [json.dumps(e) for e in obj.get("elem", [])]
            self.sets[name] = (attrs, elems)
        elif kind == "element":
            self._need(self.sets, name)[1].extend(json.dumps(e) for e in obj["elem"])
        elif kind == "rule":
            rules = self._need(self.chains, obj["chain"])[1]
            rules.append(json.dumps(obj["expr"]))
        else:
            raise AssertionError(kind)

    def _flush(self, kind: str, obj: dict[str, Any]) -> None:
        target = self.chains if kind == "chain" else self.sets
        self._need(target, obj["name"])[1].clear()

    def _delete(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "table":
            self.chains.clear()
            self.sets.clear()
            return
        target = self.chains if kind == "chain" else self.sets
        name = obj["name"]
        self._need(target, name)
        in_use = name if kind == "chain" else f"@{name}"
        for _, rules in self.chains.values():
            if any(in_use in _targets(json.loads(rule)) for rule in rules):
                raise Refused(f"{kind} {name} is in use")
        del target[name]

    @staticmethod
    def _need(objects: dict[str, Any], name: str) -> Any:
        if name not in objects:
            raise Refused(f"no such object {name}")
        return objects[name]

    def _check_references(self) -> None:
        for _, rules in self.chains.values():
            for rule in rules:
                for target in _targets(json.loads(rule)):
                    where = self.sets if target.startswith("@") else self.chains
                    if target.lstrip("@") not in where:
                        raise Refused(f"a rule names {target}, which does not exist")

    def listing(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """What `nft list` would show, order of sets' elements aside."""
        sets = {n: (attrs, sorted(elems)) for n, (attrs, elems) in self.sets.items()}
        return dict(self.chains), sets


def built(table: NftTable) -> Model:
    model = Model()
    model.run(render_table(table))
    return model


@pytest.mark.parametrize(("held", "wanted"), PAIRS)
def test_an_update_makes_the_same_table_as_a_replace(held: str, wanted: str) -> None:
    model = built(TABLES[held])
    model.run(update_document(TABLES[held], TABLES[wanted]))
    assert model.listing() == built(TABLES[wanted]).listing()


@pytest.mark.parametrize(("held", "wanted"), PAIRS)
def test_an_update_never_touches_the_table_or_an_unchanged_chain(held: str, wanted: str) -> None:
    before, after = built(TABLES[held]).chains, built(TABLES[wanted]).chains
    for command in update_document(TABLES[held], TABLES[wanted])["nftables"]:
        ((verb, body),) = command.items()
        ((kind, obj),) = body.items()
        assert kind != "table"
        name = obj.get("chain", obj.get("name")) if kind in ("chain", "rule") else None
        if name is not None:
            assert before.get(name) != after.get(name), f"{verb} {kind} {name}: unchanged"


def test_a_failure_only_adds_the_reset_chains() -> None:
    commands = update_document(TWO, replace(TWO, reset4=(A,)))["nftables"]
    added = [c["add"]["chain"]["name"] for c in commands if "chain" in c.get("add", {})]
    assert added == ["reset_ipv4", "conn_reset"]
    assert not [c for c in commands if "flush" in c or "delete" in c]


def test_a_recovery_flushes_then_deletes_the_reset_chains() -> None:
    commands = update_document(replace(TWO, reset4=(A,)), TWO)["nftables"]
    assert commands == [
        {"flush": {"chain": {"family": "inet", "table": "ecmpd", "name": "conn_reset"}}},
        {"flush": {"chain": {"family": "inet", "table": "ecmpd", "name": "reset_ipv4"}}},
        {"delete": {"chain": {"family": "inet", "table": "ecmpd", "name": "conn_reset"}}},
        {"delete": {"chain": {"family": "inet", "table": "ecmpd", "name": "reset_ipv4"}}},
    ]


def test_a_changed_pin_set_is_refilled_and_its_chain_left_alone() -> None:
    held = replace(TWO, pins4=(PIN4,))
    commands = update_document(held, replace(held, pins4=(PIN4, PIN4_WEB)))["nftables"]
    assert [next(iter(next(iter(c.values())))) for c in commands] == ["set", "element"]
    assert commands[0] == {"flush": {"set": {"family": "inet", "table": "ecmpd", "name": "pins4"}}}
    assert len(commands[1]["add"]["element"]["elem"]) == 2


def test_an_update_from_the_wrong_table_is_refused() -> None:
    # The kernel holds two uplinks; the caller thinks a failure's reset chains are there.
    model = built(TWO)
    with pytest.raises(Refused):
        model.run(update_document(replace(TWO, reset4=(A,)), TWO))


def test_base_chains_are_added_with_their_hooks() -> None:
    commands = update_document(TWO, replace(TWO, reset6=(B,)))["nftables"]
    chain = next(
        c["add"]["chain"]
        for c in commands
        if "chain" in c.get("add", {}) and c["add"]["chain"]["name"] == "conn_reset"
    )
    kind, hook, prio = BASE_CHAINS["conn_reset"]
    assert (chain["type"], chain["hook"], chain["prio"]) == (kind, hook, prio)


def test_an_update_checks_the_new_table() -> None:
    with pytest.raises(ValueError):
        update_document(TWO, replace(TWO, marks=(("wan*", A),)))
