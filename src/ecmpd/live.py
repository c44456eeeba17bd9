"""The live terminal view of the uplinks, shared by `ecmpd lab demo` and `ecmpd watch`.

`render(snapshot)` is a pure function of a Snapshot (what the feeder measured), so it
can be tested from hand-made data; liveview.py's `LiveView` redraws it several times a
second from a callable that takes a fresh snapshot; livecells.py reads an uplink's
cells from a daemon's status.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ecmpd.livecells import FAMILY_LABELS, FamilyView, OrderCell, mptcp_cell, tier_text, volume_text
from ecmpd.status import MptcpStatus

STATE_STYLE = {"up": "green", "down": "red", "unknown": "yellow", "drained": "blue"}
BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a cell, for bars
SPARKS = "▁▂▃▄▅▆▇█"
FIXED_WIDTH = 74
MIN_BAR, MAX_BAR = 3, 30
UNBOUNDED = 10_000  # cells: wider than any terminal
# Share within this many percentage points of the weight's is on target (green), within
# twice as many close (yellow); beyond, red.
SHARE_TOLERANCE_PP = 3.0


@dataclass(frozen=True)
class UplinkView:
    """One uplink as the view shows it: state from the daemon, traffic from the kernel."""

    name: str
    interface: str
    state: str  # up, down, unknown, drained
    weight: int
    in_balancer: bool
    mbit: float  # the throughput that bars and shares use (the busier direction)
    tx_mbit: float | None = None
    rx_mbit: float | None = None
    capacity_mbit: float | None = None  # None: unknown, bars scale to the busiest seen
    rtt_ms: float | None = None
    loss: float | None = None
    flows: int | None = None
    health: str | None = None
    history: tuple[float, ...] = ()  # throughput, oldest first, one point per history step
    # Each family it carries (when the source tells); the fields above are the primary's.
    families: tuple[FamilyView, ...] = ()
    order: OrderCell = field(default_factory=OrderCell)
    mptcp: MptcpStatus | None = None  # with `mptcp` in the config (ecmpd.livecells)

    @property
    def mixed(self) -> bool:
        """Its families differ (one up, one down; or one out of its group): worth a glance."""
        return len({(f.state, f.out) for f in self.families}) > 1

    @property
    def down(self) -> bool:
        """Down in every family it carries."""
        if self.families:
            return all(f.state == "down" for f in self.families)
        return self.state == "down"


@dataclass(frozen=True)
class Snapshot:
    """What one frame shows."""

    title: str
    uplinks: tuple[UplinkView, ...]
    elapsed_s: float | None = None
    phase: str | None = None
    phases: tuple[str, ...] = ()  # every phase in order, the current one highlighted
    events: tuple[tuple[float, str], ...] = ()  # (seconds since start, text), oldest first
    history_step_s: float = 1.0
    caption: str | None = None  # what to look at now, under the heading
    note: str | None = None


def target_shares(uplinks: Sequence[UplinkView]) -> dict[str, float]:
    """Each uplink's share by weight among those in the balancer (0 for the others)."""
    total = sum(u.weight for u in uplinks if u.in_balancer)
    return {u.name: (u.weight / total if u.in_balancer and total else 0.0) for u in uplinks}


def render(snapshot: Snapshot, max_events: int = 6) -> RenderableType:
    """The frame: heading, one row per uplink with bars, totals, timeline and events."""
    parts: list[RenderableType] = [_heading(snapshot)]
    if snapshot.caption:
        parts.append(Text(snapshot.caption, style="italic"))
    parts += [UplinkTable(snapshot), _totals(snapshot)]
    if any(u.history for u in snapshot.uplinks):
        parts.append(Sparklines(snapshot.uplinks, snapshot.history_step_s))
    if snapshot.events:
        parts.append(_events(snapshot.events[-max_events:]))
    if snapshot.note:
        parts.append(Text(snapshot.note, style="dim"))
    return Group(*parts)


def _heading(snap: Snapshot) -> Text:
    text = Text(snap.title, style="bold")
    if snap.elapsed_s is not None:
        text.append(f"   t {snap.elapsed_s:5.1f} s", style="cyan")
    if snap.phases:
        text.append("   ")
        for i, phase in enumerate(snap.phases):
            if i:
                text.append(" ▸ ", style="dim")
            text.append(phase, style="bold reverse" if phase == snap.phase else "dim")
    elif snap.phase:
        text.append(f"   {snap.phase}", style="bold")
    return text


class UplinkTable:
    """The uplinks table, its bars as wide as the console allows."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        # Everything but the two bars takes about FIXED_WIDTH cells; the bars share the rest.
        spare = max(0, options.max_width - FIXED_WIDTH)
        throughput = max(MIN_BAR, min(MAX_BAR, spare * 3 // 5))
        share = max(MIN_BAR, min(MAX_BAR, spare - throughput))
        table = _table(self.snapshot, throughput, share)
        # Wider columns than that estimate (out / in, a state per family) would have rich
        # squeeze every column's figures into "…": narrow the bars instead, while they can.
        while (over := _width(console, options, table) - options.max_width) > 0:
            narrower = _narrower(throughput, share, over)
            if narrower == (throughput, share):
                break
            throughput, share = narrower
            table = _table(self.snapshot, throughput, share)
        yield table


def _width(console: Console, options: ConsoleOptions, table: Table) -> int:
    """The table's natural width (a measure within the console's width is clamped to it)."""
    return Measurement.get(console, options.update_width(UNBOUNDED), table).maximum


def _narrower(throughput: int, share: int, over: int) -> tuple[int, int]:
    """The two bar widths, together `over` cells narrower (3:2, neither below MIN_BAR)."""
    cut = min(throughput - MIN_BAR, (over * 3 + 4) // 5)
    rest = min(share - MIN_BAR, over - cut)
    # The share bar at its minimum: the throughput bar gives what is left.
    cut = min(throughput - MIN_BAR, over - rest)
    return throughput - cut, share - rest


def _table(snap: Snapshot, throughput_bar: int, share_bar: int) -> Table:
    table = Table(box=box.ROUNDED, expand=False, pad_edge=True, padding=(0, 1))
    table.add_column("uplink", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("rtt", justify="right", no_wrap=True)
    table.add_column("loss", justify="right", no_wrap=True)
    if any(u.flows is not None for u in snap.uplinks):
        table.add_column("flows", justify="right", no_wrap=True)
    table.add_column("throughput, Mbit/s", no_wrap=True)
    directions = any(u.tx_mbit is not None and u.rx_mbit is not None for u in snap.uplinks)
    if directions:
        table.add_column("out / in", justify="right", no_wrap=True)
    table.add_column(Text.assemble("share  ", ("┃ weight", "magenta")), no_wrap=True)
    # The failover order, once there is one: tier and role, and the bytes moved so far.
    order = any(u.order.tier != 1 or u.order.role == "standby" for u in snap.uplinks)
    if order:
        table.add_column("tier", no_wrap=True)
    moved = any(u.order.bytes_in is not None for u in snap.uplinks)
    if moved:
        table.add_column("sent / received", justify="right", no_wrap=True)
    mptcp = any(u.mptcp is not None for u in snap.uplinks)
    if mptcp:
        table.add_column("mptcp", no_wrap=True)
    total = sum(u.mbit for u in snap.uplinks)
    targets = target_shares(snap.uplinks)
    for u in snap.uplinks:
        row: list[RenderableType] = [
            Text(u.name, style="bold yellow" if u.mixed else "bold"),
            _state(u),
            # A down uplink's figures are its window's past answers: no RTT to show now.
            Text("-" if u.rtt_ms is None or u.down else f"{u.rtt_ms:.1f} ms"),
            _loss(u.loss),
        ]
        if any(v.flows is not None for v in snap.uplinks):
            row.append(Text("-" if u.flows is None else str(u.flows)))
        row.append(_throughput(u, snap.uplinks, throughput_bar))
        if directions:
            row.append(_directions(u))
        row.append(_share(u.mbit / total if total > 0 else 0.0, targets[u.name], share_bar))
        if order:
            row.append(tier_text(u.order))
        if moved:
            row.append(Text(volume_text(u.order)))
        if mptcp:
            row.append(mptcp_cell(u.mptcp))
        table.add_row(*row)
    return table


def _state(u: UplinkView) -> Text:
    """One state ("● up"), or each family's when they differ ("v4 ● up · v6 ● down")."""
    if not u.mixed:
        return Text(f"● {u.state}", style=STATE_STYLE.get(u.state, "white"))
    text = Text()
    for i, f in enumerate(u.families):
        if i:
            text.append(" · ", style="dim")
        text.append(f"{FAMILY_LABELS.get(f.family, f.family)} ")
        text.append(f"● {f.state}", style=STATE_STYLE.get(f.state, "white"))
        if f.out:
            text.append(" out", style="bold yellow")
    return text


def _loss(loss: float | None) -> Text:
    if loss is None:
        return Text("-")
    style = "green" if loss == 0 else ("yellow" if loss < 0.2 else "red")
    return Text(f"{loss:.0%}", style=style)


def _throughput(u: UplinkView, uplinks: Sequence[UplinkView], width: int) -> Text:
    """A bar against the uplink's capacity (or the busiest figure seen), and the figures."""
    scale = u.capacity_mbit or max(
        [v.mbit for v in uplinks] + [h for v in uplinks for h in v.history] + [1.0]
    )
    text = bar(u.mbit / scale if scale > 0 else 0.0, width, "cyan")
    figures = f" {u.mbit:5.0f}"
    figures += f"/{u.capacity_mbit:<4.0f}" if u.capacity_mbit else "     "
    text.append(figures)
    return text


def _directions(u: UplinkView) -> Text:
    if u.tx_mbit is None or u.rx_mbit is None:
        return Text("-")
    return Text(f"↑{u.tx_mbit:.0f} ↓{u.rx_mbit:.0f}", style="dim")


def _share(share: float, target: float, width: int) -> Text:
    """The uplink's share of the traffic as a bar, its weight's share as a marker on it."""
    off = abs(share - target) * 100
    if off <= SHARE_TOLERANCE_PP:
        style = "green"
    elif off <= 2 * SHARE_TOLERANCE_PP:
        style = "yellow"
    else:
        style = "red"
    cells = bar(share, width, style).plain
    text = Text()
    if target > 0:
        mark = min(width - 1, int(target * width))
        text.append(cells[:mark], style=style)
        text.append("┃", style="bold magenta")
        text.append(cells[mark + 1 :], style=style)
    else:
        text.append(cells, style=style)
    text.append(f" {share:4.0%}", style=style)
    text.append(f" {target:4.0%}", style="magenta")
    return text


def bar(fraction: float, width: int, style: str) -> Text:
    """A horizontal bar of width cells, filled to fraction (eighths of a cell)."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    cells = "█" * full + (BLOCKS[part] if part and full < width else "")
    return Text(cells.ljust(width), style=style)


def _totals(snap: Snapshot) -> Text:
    total = sum(u.mbit for u in snap.uplinks)
    text = Text(" aggregate ", style="bold")
    text.append(f"{total:.0f} Mbit/s", style="bold cyan")
    capacities = [u.capacity_mbit for u in snap.uplinks]
    if all(c is not None for c in capacities) and capacities:
        summed = sum(c for c in capacities if c is not None)
        serving = sum(
            u.capacity_mbit or 0.0 for u in snap.uplinks if u.in_balancer and u.state != "down"
        )
        text.append(f" of {summed:.0f} summed capacity ({total / summed:.0%})")
        if serving < summed:
            text.append(f"; {serving:.0f} in service ({total / serving:.0%})" if serving else "")
    flows = [u.flows for u in snap.uplinks if u.flows is not None]
    if flows:
        text.append(f"   {sum(flows)} flows", style="dim")
    return text


class Sparklines:
    """Each uplink's recent throughput as a sparkline that fills the width it is given."""

    def __init__(self, uplinks: Sequence[UplinkView], step_s: float) -> None:
        self.uplinks, self.step_s = uplinks, step_s

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        label = max((len(u.name) for u in self.uplinks), default=0) + 2
        width = max(8, options.max_width - label - 1)
        longest = max(len(u.history) for u in self.uplinks)
        points = min(width, longest)
        yield Text(f" last {points * self.step_s:.0f} s", style="dim")
        top = max([h for u in self.uplinks for h in u.history] + [1.0])
        for u in self.uplinks:
            scale = u.capacity_mbit or top
            line = Text(f" {u.name.ljust(label - 1)}", style="bold")
            line.append(sparkline(u.history[-points:], scale, points), style="cyan")
            yield line


def sparkline(values: Sequence[float], scale: float, width: int) -> str:
    """Values as block characters scaled to scale, right-aligned in width cells."""
    chars = []
    for v in values:
        level = 0.0 if scale <= 0 else min(1.0, max(0.0, v / scale))
        # Below half the lowest block is shown as nothing: probes alone are not traffic.
        if level < 0.5 / len(SPARKS):
            chars.append(" ")
        else:
            chars.append(SPARKS[min(len(SPARKS) - 1, int(level * len(SPARKS)))])
    return "".join(chars).rjust(width)


def _events(events: Iterable[tuple[float, str]]) -> Table:
    table = Table(box=None, show_header=False, padding=(0, 1), pad_edge=False)
    table.add_column(justify="right", style="cyan", no_wrap=True)
    table.add_column()
    for t, text in events:
        table.add_row(f" {t:6.1f} s", Text.from_markup(text))
    return table
