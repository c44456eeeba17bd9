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

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(11, 6.6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    colors = {n: COLORS[i % len(COLORS)] for i, n in enumerate(names)}
    series = [timeline["tx_mbit"][n] for n in names]
    top.stackplot(
        t,
        *series,
        labels=[f"{i['name']}  ({i['rate_mbit']} Mbit/s, weight {i['weight']})" for i in isps],
        colors=[colors[n] for n in names],
        alpha=0.85,
        linewidth=0,
    )
    summed = sum(rates.values())
    top.axhline(summed, color="black", linestyle="--", linewidth=1)
    top.text(t[0] if t else 0, summed, f" summed capacity {summed} Mbit/s", va="bottom", fontsize=8)
    if "fault" in events and "heal" in events:
        left = summed - rates[failed]
        top.hlines(left, events["fault"], events["heal"], colors="black", linestyles=":", lw=1)
        top.text(events["heal"], left, f" {left} left ", va="bottom", ha="right", fontsize=8)
    top.set_ylabel("Mbit/s, stacked")
    top.set_ylim(0, summed * 1.18)
    top.legend(loc="upper left", fontsize=8, ncol=len(names), frameon=False)
    steady = result["phases"]["steady"]
    top.set_title(
        f"ecmpd lab demo: {result['traffic']['flows']} TCP flows over {len(names)} ISPs; "
        f"aggregate {steady['aggregate_mbit']:.0f} of {steady['capacity_mbit']} Mbit/s "
        f"({steady['aggregate_fraction']:.0%})",
        fontsize=11,
        loc="left",
    )

    for n in names:
        bottom.plot(t, timeline["tx_mbit"][n], color=colors[n], linewidth=1.3, label=n)
        bottom.axhline(rates[n], color=colors[n], linestyle=":", linewidth=0.8)
    bottom.set_ylabel("Mbit/s per uplink")
    bottom.set_xlabel("seconds since the traffic started (router interface counters, 5 Hz)")
    bottom.set_ylim(0, max(rates.values()) * 1.15)

    for ax in (top, bottom):
        if "fault" in events and "heal" in events:
            ax.axvspan(events["fault"], events["heal"], color=FAILURE_COLOR, alpha=0.07, lw=0)
        for kind, color, style in (
            ("fault", FAILURE_COLOR, "-"),
            ("removed", FAILURE_COLOR, "--"),
            ("restored", FAILURE_COLOR, ":"),
            ("heal", RECOVERY_COLOR, "-"),
            ("back", RECOVERY_COLOR, "--"),
        ):
            if kind in events:
                ax.axvline(events[kind], color=color, linestyle=style, linewidth=1)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(x=0)
    labels = [
        ("fault", f"gray failure\non {failed}", FAILURE_COLOR),
        ("removed", f"out of group\n+{fo['removal_ms']:.0f} ms", FAILURE_COLOR),
        ("restored", f"flows restored\n+{fo['restore_ms']:.0f} ms", FAILURE_COLOR),
        ("heal", f"{failed}\nheals", RECOVERY_COLOR),
        ("back", f"back in group\n+{rec['back_in_group_ms']:.0f} ms", RECOVERY_COLOR),
    ]
    _label_marks(top, [(events[k], text, c) for k, text, c in labels if k in events], summed)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _label_marks(ax: Any, marks: list[tuple[float, str, str]], summed: float) -> None:
    """Labels the vertical marks at the top of the axes, staggered where they crowd."""
    span = max((m[0] for m in marks), default=1.0) or 1.0
    last_x, level = -1e9, 0
    for x, text, color in sorted(marks):
        level = level + 1 if x - last_x < span * 0.06 else 0
        ax.annotate(
            text,
            xy=(x, summed * 1.16),
            xytext=(3, -10 * level),
            textcoords="offset points",
            fontsize=7.5,
            color=color,
            va="top",
            ha="left",
        )
        last_x = x
