"""Pure: the connection-mark bits ecmpd owns, each uplink's value in them, and clashes.

Every connection remembers the uplink it first left (or arrived) by in its conntrack
mark, inside one contiguous bit range (`connections.mark`). An uplink's value is a
*slot* number shifted into that range. Slots are kept per uplink name across reloads
and restarts (the run dir records them), so an uplink whose table id is renumbered by
a reload keeps its connections. The all-ones slot is ecmpd's probe mark (the packets it
sends to elicit resets), never an uplink's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The default range, bits 24-31, is where the marks of the programs found on a
# multi-uplink Linux box are not: tailscale uses 0x00ff0000, kube-proxy 0x4000 and
# 0x8000, mwan3 0x3f00, Cilium 0x0f00, AWS VPC CNI 0x80, wg-quick and Istio exact
# values below 0x10000 (0xca6c, 0x539). Only Kubernetes CNIs reach up here (Calico's
# mask 0xffff0000, Cilium's identity bits), and Calico's mask is configurable.
DEFAULT_MASK = 0xFF000000
FULL = 0xFFFFFFFF
MIN_BITS = 2  # one uplink slot and the probe slot


def mask_problem(mask: int) -> str | None:
    """Why a mask cannot be ecmpd's bit range, or None when it can."""
    if not 0 < mask <= FULL:
        return "must name some of the 32 mark bits, like 0xff000000"
    low = mask & -mask
    if (mask + low) & mask:
        return f"{mask:#010x} is not one contiguous range of bits (like 0xff000000)"
    if mask.bit_count() < MIN_BITS:
        return f"{mask:#010x} has {mask.bit_count()} bit; ecmpd needs at least {MIN_BITS}"
    return None


@dataclass(frozen=True)
class MarkSpace:
    """A contiguous mark bit range: slot numbers <-> mark values."""

    mask: int = DEFAULT_MASK

    def __post_init__(self) -> None:
        problem = mask_problem(self.mask)
        if problem is not None:
            raise ValueError(problem)

    @property
    def shift(self) -> int:
        return (self.mask & -self.mask).bit_length() - 1

    @property
    def probe_slot(self) -> int:
        return self.mask >> self.shift

    @property
    def max_uplinks(self) -> int:
        """Slots 1 .. probe_slot - 1 (0 is "no mark yet")."""
        return self.probe_slot - 1

    @property
    def probe(self) -> int:
        """The mark of ecmpd's probe packets (all bits of the range set)."""
        return self.mask

    def value(self, slot: int) -> int:
        """The mark value of a slot."""
        if not 0 < slot < self.probe_slot:
            raise ValueError(f"slot {slot} is outside 1..{self.probe_slot - 1}")
        return slot << self.shift

    def slot(self, value: int) -> int:
        """The slot a (masked or full) mark value holds; 0 for none."""
        return (value & self.mask) >> self.shift


def assign_slots(
    uplinks: Sequence[tuple[str, int]], previous: Mapping[str, int], space: MarkSpace
) -> dict[str, int]:
    """Each uplink's slot: its recorded one, else its table id when free, else the lowest free.

    `uplinks` is (name, table id) in config order. A recorded slot that no longer fits
    the range (the mask changed) is dropped. Pure and deterministic: the same inputs
    give the same answer, so `plan` and the daemon agree.
    """
    top = space.probe_slot
    slots: dict[str, int] = {}
    used: set[int] = set()
    for name, _ in uplinks:
        kept = previous.get(name)
        if kept is not None and 0 < kept < top and kept not in used:
            slots[name] = kept
            used.add(kept)
    # Slots recorded for uplinks that are gone stay out of reach for this round: their
    # connections may still be in conntrack (with `on_failure: wait`).
    retired = {s for n, s in previous.items() if n not in slots and 0 < s < top}
    for name, table in uplinks:
        if name in slots:
            continue
        if 0 < table < top and table not in used and table not in retired:
            choice = table
        else:
            free = (s for s in range(1, top) if s not in used and s not in retired)
            choice = next(free, None) or next(s for s in range(1, top) if s not in used)
        slots[name] = choice
        used.add(choice)
    return slots


@dataclass(frozen=True)
class MarkUse:
    """A foreign kernel object that reads or writes packet/connection mark bits."""

    where: str  # how a user finds it: "ip rule 5000", "nft table inet fw chain pre"
    mask: int  # the bits it tests or changes
    value: int = 0  # for tests: the value it compares the masked bits with
    writes: bool = False


def clashes(use: MarkUse, mask: int) -> bool:
    """Whether a foreign use gets in the way of ecmpd's bits.

    Writing any of them clashes; so does testing them with a partial mask or testing
    for one of them set. An exact whole-mark test of a value with none of ecmpd's bits
    (wg-quick's `fwmark 0xca6c`) is the common idiom and is let through: it matches
    the packets ecmpd never marked, and ecmpd's own rules decide the ones it did.
    """
    if not use.mask & mask:
        return False
    if use.writes:
        return True
    return use.mask != FULL or bool(use.value & mask)


def clashing(uses: Iterable[MarkUse], mask: int) -> list[MarkUse]:
    """The uses that clash with ecmpd's bits, in a stable order."""
    return sorted((u for u in uses if clashes(u, mask)), key=lambda u: u.where)
