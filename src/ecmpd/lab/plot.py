"""The demo's timeline as a PNG or SVG: per-uplink throughput, the failure and recovery marked.

matplotlib is an optional extra (`pip install 'ecmpd[plot]'`); without it the demo runs
and only --plot is refused, before the lab is built.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

FORMATS = (".png", ".svg")
COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")
FAILURE_COLOR = "#d62728"
RECOVERY_COLOR = "#2ca02c"


class PlotUnavailable(Exception):
    """The plot cannot be made here (no matplotlib, or a format it does not write)."""


def check_plot(path: Path) -> None:
    """Raises PlotUnavailable unless a timeline can be written to path."""
    if path.suffix.lower() not in FORMATS:
        raise PlotUnavailable(f"{path}: the plot is written as .png or .svg")
    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(
            "--plot needs matplotlib, an optional extra: pip install 'ecmpd[plot]'"
        )
    if not path.resolve().parent.is_dir():
        raise PlotUnavailable(f"{path}: no such directory")


def plot_timeline(result: dict[str, Any], path: Path) -> Path:
    """Writes the demo's timeline (a result of run_demo) to path and returns it."""
    check_plot(path)
    # Imported by name: an optional dependency, typed as Any whether installed or not.
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")  # files only: never a display, whatever the environment says
    plt = importlib.import_module("matplotlib.pyplot")

    timeline = result["timeline"]
    t = timeline["t"]
    isps = result["lab"]["isps"]
    names = [isp["name"] for isp in isps]
    rates = {isp["name"]: isp["rate_mbit"] for isp in isps}
    events = {e["kind"]: e["t"] for e in result["events"]}
    fo, rec = result["failover"], result["recovery"]
    failed = fo["uplink"]

    fig, (lane, top, bottom) = plt.subplots(
        3,
        1,
        figsize=(11, 7.6),
        sharex=True,
        gridspec_kw={"height_ratios": [1.0, 3.0, 2.0], "hspace": 0.08},
    )
    colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    top.stackplot(
        t,
        *[timeline["tx_mbit"][n] for n in names],
        labels=[f"{i['name']}  ({i['rate_mbit']} Mbit/s, weight {i['weight']})" for i in isps],
        colors=[colors[n] for n in names],
        alpha=0.85,
        linewidth=0,
    )
    summed = sum(rates.values())
    top.axhline(summed, color="black", linestyle="--", linewidth=1)
    top.text(
        t[-1] if t else 1, summed, f"summed capacity {summed} Mbit/s ", va="bottom", ha="right",
        fontsize=8,
    )  # fmt: skip
    if "fault" in events and "heal" in events:
        left = summed - rates[failed]
        top.hlines(left, events["fault"], events["heal"], colors="black", linestyles=":", lw=1)
        top.text(events["heal"], left, f"{left} Mbit/s left ", va="bottom", ha="right", fontsize=8)
    top.set_ylabel("Mbit/s, stacked")
    top.set_ylim(0, summed * 1.25)
    top.legend(loc="upper left", fontsize=8, ncol=len(names), frameon=False)

    for n in names:
        bottom.plot(t, timeline["tx_mbit"][n], color=colors[n], linewidth=1.3, label=n)
        bottom.axhline(rates[n], color=colors[n], linestyle=":", linewidth=0.8)
    bottom.set_ylabel("Mbit/s per uplink")
    bottom.set_xlabel("seconds since the traffic started (the router's interface counters, 5 Hz)")
    bottom.set_ylim(0, max(rates.values()) * 1.15)

    marks = [
        ("fault", f"gray failure on {failed}", FAILURE_COLOR, "-"),
        ("removed", f"{failed} out of the group: +{fo['removal_ms']:.0f} ms", FAILURE_COLOR, "--"),
        (
            "restored",
            f"its flows deliver again: median +{_ms(fo.get('restore_median_ms'))}, "
            f"last +{_ms(fo['restore_ms'])}",
            FAILURE_COLOR,
            ":",
        ),
        ("heal", f"{failed} heals", RECOVERY_COLOR, "-"),
        ("back", f"back in the group: +{rec['back_in_group_ms']:.0f} ms", RECOVERY_COLOR, "--"),
    ]
    marks = [m for m in marks if m[0] in events]
    for ax in (lane, top, bottom):
        if "fault" in events and "heal" in events:
            ax.axvspan(events["fault"], events["heal"], color=FAILURE_COLOR, alpha=0.07, lw=0)
        for kind, _, color, style in marks:
            ax.axvline(events[kind], color=color, linestyle=style, linewidth=1)
        ax.margins(x=0)
    for ax in (top, bottom):
        ax.grid(axis="y", alpha=0.3)
    _event_lane(lane, [(events[k], text, color) for k, text, color, _ in marks], t)
    steady = result["phases"]["steady"]
    fig.suptitle(
        f"ecmpd lab demo: {result['traffic']['flows']} TCP flows over {len(names)} ISPs, "
        f"aggregate {steady['aggregate_mbit']:.0f} of {steady['capacity_mbit']} Mbit/s "
        f"({steady['aggregate_fraction']:.0%}); every figure measured in the run",
        fontsize=11,
        x=0.01,
        ha="left",
    )
    fig.subplots_adjust(left=0.07, right=0.99, top=0.94, bottom=0.07)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _ms(value: float | None) -> str:
    """Milliseconds as a short label (1450 -> '1.45 s', 730 -> '730 ms')."""
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def _event_lane(ax: Any, marks: list[tuple[float, str, str]], t: list[float]) -> None:
    """One row per event, top to bottom, each label beside its vertical line."""
    ax.set_ylim(0, len(marks) + 0.5)
    ax.set_yticks([])
    for spine in ("left", "right", "top", "bottom"):
        ax.spines[spine].set_visible(False)
    ax.tick_params(bottom=False)
    end = t[-1] if t else 1.0
    for row, (x, text, color) in enumerate(marks):
        y = len(marks) - row - 0.1
        # Labels past the middle go left of their line, so none runs off the figure.
        right = x > end * 0.62
        ax.text(
            x,
            y,
            f" {text} " if not right else f"{text} ",
            color=color,
            fontsize=8.5,
            va="center",
            ha="right" if right else "left",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.85},
        )
