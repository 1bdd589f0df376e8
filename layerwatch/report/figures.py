"""Report figures as PNG bytes, drawn with matplotlib's object API (Agg, no pyplot state).

Conventions of a control chart: layer on x, the statistic in dark blue, the centre line solid
green, control limits dashed red, signalling points red, alarms as vertical markers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from layerwatch.report.data import ChartSeries, WorstLayer

BLUE, GREEN, RED, ORANGE, GREY = "#1f4e79", "#2e7d32", "#c62828", "#ef6c00", "#5f6368"
DPI = 110


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", facecolor="white")
    return buf.getvalue()


def control_chart(series: ChartSeries, alarms: Sequence[tuple[int, str]] = ()) -> bytes:
    """``alarms``: (layer, level) of this chart's alarms, drawn as vertical markers."""
    fig = Figure(figsize=(10, 3.1))
    ax = fig.add_subplot()
    x = series.layer
    ax.plot(x, series.centre, color=GREEN, lw=1.0, label="centre")
    label = "control limits"
    for limit in (series.ucl, series.lcl):
        if np.isfinite(limit).any():
            ax.plot(x, limit, color=RED, lw=1.1, ls=(0, (6, 4)), label=label)
            label = "_"  # one legend entry for both limits
    ax.plot(
        x, series.statistic, color=BLUE, lw=1.4, marker="o", ms=2.8, label=series.spec.statistic
    )
    if series.signal.any():
        ax.scatter(
            x[series.signal],
            series.statistic[series.signal],
            s=34,
            color=RED,
            edgecolor="white",
            linewidth=0.6,
            zorder=5,
            label="signal",
        )
    levels: dict[int, set[str]] = {}
    for layer, level in alarms:
        levels.setdefault(layer, set()).add(level)
    for layer, at in sorted(levels.items()):  # one line and one label per layer
        level = "stop" if "stop" in at else "warn"
        colour = RED if level == "stop" else ORANGE
        ax.axvline(layer, color=colour, lw=1.2, ls=":", zorder=1)
        ax.annotate(
            f"{level} @ {layer}",
            (layer, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-3, -11),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color=colour,
        )
    ax.set_title(series.spec.title, loc="left", fontsize=11, fontweight="bold")
    ax.set_xlabel("layer")
    ax.set_ylabel(series.spec.statistic)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(x.min() - 0.5, x.max() + 0.5)
    ax.grid(True, color="#e0e0e0", lw=0.6)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(loc="upper left", fontsize=8, frameon=False, ncols=4, bbox_to_anchor=(0, -0.17))
    return _png(fig)


def anomaly_map(worst: WorstLayer, image: np.ndarray | None = None) -> bytes:
    """The layer's anomaly map as a heat map, over the layer image when one is given."""
    fig = Figure(figsize=(3.4, 3.3))
    ax = fig.add_subplot()
    m = worst.map if worst.map is not None else np.zeros((8, 8), np.float32)
    if image is not None:
        ax.imshow(image, cmap="gray", interpolation="nearest")
        extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
        shown = np.ma.masked_less(m, 0.15 * float(m.max() or 1.0))
        im = ax.imshow(shown, cmap="inferno", alpha=0.6, extent=extent, interpolation="bilinear")
    else:
        im = ax.imshow(m, cmap="inferno", interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03).ax.tick_params(labelsize=7)
    flag = " · anomalous" if worst.anomalous else ""
    ax.set_title(
        f"layer {worst.layer} · score {worst.score:.3g}{flag}",
        fontsize=9,
        color=RED if worst.anomalous else GREY,
    )
    ax.set_axis_off()
    return _png(fig)
