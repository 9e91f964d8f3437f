"""Curve figures of a saved run folder (never drawn during training).

* test accuracy and test loss: every variant's test curve by epoch; with several seeds the mean
  and a shaded t-based 95% confidence band, with one seed the curve alone;
* train vs test: train (dashed) and test (solid) accuracy per variant, same colour.

The file names come from :class:`normlab.runfolder.RunFolder`; the look from :mod:`normlab.style`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import LogLocator, MaxNLocator

from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
from normlab.runfolder import RunData, load_run
from normlab.stats import mean_ci
from normlab.style import DPI, FIGSIZE, RC, plain_log_y, save_figure, variant_colors
from normlab.table import signed_points

# ----------------------------------------------------------------------------------------------
# Curves


class Curve:
    """One variant's per-epoch mean and 95% band of one metric over its finished seeds."""

    def __init__(self, run: RunData, variant: str, column: str):
        by_epoch = run.per_epoch(variant, column)
        self.epochs: list[int] = []
        self.mean: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []
        self.n = 0
        for epoch, values in by_epoch.items():
            values = [v for v in values if math.isfinite(v)]
            if not values:
                continue
            ci = mean_ci(values)
            self.epochs.append(epoch)
            self.mean.append(ci.mean)
            # A t-interval of few seeds can pass 0% or 100%, which an accuracy cannot: the band
            # is drawn within them.
            low, high = (0.0, 100.0) if column.endswith("_acc") else (-math.inf, math.inf)
            self.lo.append(max(low, ci.lo))
            self.hi.append(min(high, ci.hi))
            self.n = max(self.n, ci.n)

    def __bool__(self) -> bool:
        return bool(self.epochs)


def _seeds_phrase(curves: Sequence[Curve], band: bool = True) -> str:
    ns = sorted({c.n for c in curves if c})
    if not ns:
        return "no finished runs"
    if ns == [1]:
        return "1 seed"
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"mean of {n} seeds, 95% CI" if band else f"mean of {n} seeds"


def _legend_name(run: RunData, variant: str) -> str:
    s = run.summary["variants"][variant]
    label = variant if s.get("params") is None else f"{variant} ({s['params']:,} params)"
    if s["status"] == "diverged":
        return f"{label}: diverged, not shown"
    if s["diverged_seeds"]:
        k = len(s["diverged_seeds"])
        return f"{label}; {k} of {len(s['seeds'])} seeds diverged"
    return label


def _zoom_accuracy(series: Sequence[Sequence[tuple[int, float]]], epochs: int,
                   upper: Sequence[float] = ()) -> tuple[float, float]:
    """y-limits showing where the variants differ: from just below the lowest mean of the last
    ~75% of epochs to just above the highest mean (or band, ``upper``, within reason), <= 100."""
    first = epochs // 4 + 1 if epochs >= 4 else 1
    focus = [y for s in series for (e, y) in s if e >= first]
    every = [y for s in series for (_, y) in s]
    if not focus:
        return 0.0, 100.0
    lo, hi = min(focus), max(every)
    if upper:  # show the top of the bands, unless they are very wide (2 seeds)
        hi = max(hi, min(max(upper), hi + 0.5 * (hi - lo)))
    pad = max(0.06 * (hi - lo), 0.05)
    bottom = max(0.0, lo - pad)
    top = min(100.0, hi + pad)
    if top - bottom < 0.2:
        bottom = max(0.0, top - 0.2)
    return bottom, top


def _place_legend(fig: Figure, ax, handles, labels, max_cols: int, right: float,
                  title: str | None = None) -> None:
    """A legend under the axes, with as many columns (<= ``max_cols``) as fit the width; the
    axes then take the height above it (x-label included), up to the title."""
    canvas = FigureCanvasAgg(fig)
    renderer = canvas.get_renderer()
    fig_w = fig.bbox.width
    for cols in range(max(1, max_cols), 0, -1):
        legend = fig.legend(handles, labels, loc="lower center", ncol=cols, frameon=False,
                            bbox_to_anchor=(0.5, 0.005), handlelength=2.2, columnspacing=1.5,
                            title=title, title_fontsize=10.5)
        if legend.get_window_extent(renderer).width <= 0.98 * fig_w or cols == 1:
            break
        legend.remove()
    top_of_legend = legend.get_window_extent(renderer).y1 / fig.bbox.height
    bottom = top_of_legend + 0.6 * DPI / fig.bbox.height  # room for tick labels, x-label
    ax.set_position((0.1, bottom, right - 0.1, 0.89 - bottom))


def _spread(positions: list[float], gap: float, low: float, high: float) -> list[float]:
    """Move sorted 1-d positions apart to at least ``gap``, keeping them within [low, high]."""
    out = list(positions)
    for i in range(1, len(out)):
        out[i] = max(out[i], out[i - 1] + gap)
    if out and out[-1] > high:
        out[-1] = high
        for i in range(len(out) - 2, -1, -1):
            out[i] = min(out[i], out[i + 1] - gap)
    if out and out[0] < low:  # too many labels for the height: keep order, allow overlap
        out[0] = low
        for i in range(1, len(out)):
            out[i] = max(out[i], out[i - 1] + gap)
    return out


def end_value(final: float, accuracy: bool) -> str:
    """A curve's final value as its end label writes it: an accuracy at 2 decimals, a loss at 4,
    or in at most 7 characters (what fits right of the axes) when it is 10 or more, as the loss
    of a run that nearly diverged can be."""
    if accuracy:
        return f"{final:.2f}%"
    if final < 1e5:
        return f"{final:.4f}" if final < 10 else f"{final:.5g}"
    mantissa, exponent = f"{final:.2e}".split("e")
    return f"{mantissa}e{int(exponent)}"   # 1.23e5: Python's 1.23e+05 is too wide


def _end_labels(fig: Figure, ax, points: list[tuple[float, float, str, str]]) -> None:
    """Write each curve's final value just right of the axes, moved apart so none overlap."""
    if not points:
        return
    fig.canvas.draw()  # fixes limits and transforms
    to_px = ax.transData.transform
    px = [(to_px((x, y)), text, color) for x, y, text, color in points]
    y0, y1 = ax.bbox.y0, ax.bbox.y1
    inside = [(p, t, c) for p, t, c in px if y0 - 1 <= p[1] <= y1 + 1]
    inside.sort(key=lambda item: item[0][1])
    gap = 1.35 * 11 * DPI / 72
    placed = _spread([p[1] for p, _, _ in inside], gap, y0 + gap / 2, y1 + gap / 2)
    x_text = ax.bbox.x1 + 10
    to_fig = fig.transFigure.inverted().transform
    for (p, text, color), y in zip(inside, placed):
        xa, ya = to_fig((x_text, y))
        moved = abs(y - p[1]) > 2
        fig.text(xa, ya, text, color=color, va="center", ha="left", fontsize=11,
                 fontweight="bold")
        if moved:
            start = to_fig((p[0] + 4, p[1]))
            end = to_fig((x_text - 2, y))
            fig.add_artist(Line2D([start[0], end[0]], [start[1], end[1]], color=color,
                                  linewidth=0.8, alpha=0.7))


def _curve_figure(run: RunData, column: str, path: Path, formats: Sequence[str]) -> Path:
    accuracy = column.endswith("acc")
    colors = variant_colors(run.variants)
    curves = {v: Curve(run, v, column) for v in run.variants}
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        ax = fig.add_axes((0.1, 0.3, 0.78, 0.59))
        markers = run.epochs <= 12
        handles, labels, ends = [], [], []
        for v in run.variants:
            c, color = curves[v], colors[v]
            if not c:
                handles.append(Line2D([], [], color=color, linewidth=2.2, linestyle=":"))
                labels.append(_legend_name(run, v))
                continue
            if c.n > 1:
                ax.fill_between(c.epochs, c.lo, c.hi, color=color, alpha=0.18, linewidth=0)
            (line,) = ax.plot(c.epochs, c.mean, color=color, linewidth=2.2,
                              marker="o" if markers else None, markersize=4)
            best = run.best_epoch(v, column, higher_is_better=accuracy)
            # Hollow: the variants' best epochs are often the same epoch at values a few
            # hundredths apart, and a filled star would hide the one drawn before it.
            ax.plot([best], [run.mean_per_epoch(v, column)[best]], marker="*", markersize=15,
                    color=color, markerfacecolor="none", markeredgewidth=1.8, linestyle="none",
                    zorder=5)
            handles.append(line)
            labels.append(_legend_name(run, v))
            final = c.mean[-1]
            ends.append((c.epochs[-1], final, end_value(final, accuracy), color))
        if ends:   # a star was drawn (every run diverged: none, and no legend entry for it)
            handles.append(Line2D([], [], marker="*", markersize=14, color="#555555",
                                  markerfacecolor="none", markeredgewidth=1.8, linestyle="none"))
            labels.append("best epoch (of the mean)" if any(c.n > 1 for c in curves.values())
                          else "best epoch")

        what = "test accuracy" if accuracy else "test loss"
        ax.set_title(f"{run.dataset_title}: {what} per epoch ({_seeds_phrase(curves.values())})",
                     loc="left", pad=12)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.6 if run.epochs > 1 else 0.5, run.epochs + (0.4 if run.epochs > 1 else 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        means = [[(e, y) for e, y in zip(c.epochs, c.mean)] for c in curves.values() if c]
        if accuracy:
            ax.set_ylabel("test accuracy (%)")
            if means:
                upper = [y for c in curves.values() if c.n > 1 for y in c.hi]
                ax.set_ylim(*_zoom_accuracy(means, run.epochs, upper))
                _below_note(ax, means)
        else:
            ax.set_ylabel("test loss (cross-entropy)")
            ys = [y for s in means for _, y in s if y > 0]
            if ys and max(ys) / min(ys) > 3:
                plain_log_y(ax, say=False)   # the y label says it
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
                ax.set_ylabel("test loss (cross-entropy, log scale)")
        if not means:
            _nothing_drawn(ax, accuracy)
        _place_legend(fig, ax, handles, labels, max_cols=3, right=0.88)
        _end_labels(fig, ax, ends)
        return save_figure(fig, path, formats)


def _nothing_drawn(ax, accuracy: bool) -> None:
    """Say so on an axis without a curve (every run diverged), on the measure's own scale
    (0 to 100% for an accuracy) rather than matplotlib's 0 to 1."""
    ax.text(0.5, 0.5, "no curve: every run diverged", ha="center", va="center",
            transform=ax.transAxes, color="#666666")
    if accuracy:
        ax.set_ylim(0, 100)


def _below_note(ax, series: Sequence[Sequence[tuple[int, float]]]) -> None:
    """Say which epochs lie below a zoomed accuracy axis."""
    bottom = ax.get_ylim()[0]
    hidden = sorted({e for s in series for e, y in s if y < bottom})
    if not hidden:
        return
    if len(hidden) == 1:
        text = f"epoch {hidden[0]} is below the axis"
    elif hidden == list(range(hidden[0], hidden[-1] + 1)):
        text = f"epochs {hidden[0]}–{hidden[-1]} partly below the axis"
    else:
        text = "some early points are below the axis"
    ax.text(0.99, 0.02, f"y-axis zoomed: {text}", transform=ax.transAxes, ha="right",
            va="bottom", fontsize=10, color="#444444", zorder=6,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.8, "pad": 2})


def _train_vs_test_figure(run: RunData, path: Path, formats: Sequence[str]) -> Path:
    colors = variant_colors(run.variants)
    test = {v: Curve(run, v, "test_acc") for v in run.variants}
    train = {v: Curve(run, v, "train_acc") for v in run.variants}
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        ax = fig.add_axes((0.1, 0.3, 0.86, 0.59))
        markers = run.epochs <= 12
        handles, labels = [], []
        for v in run.variants:
            color = colors[v]
            te, tr = test[v], train[v]
            if te:
                ax.plot(tr.epochs, tr.mean, color=color, linewidth=2.0, linestyle="--",
                        marker="o" if markers else None, markersize=3.5, markerfacecolor="white")
                ax.plot(te.epochs, te.mean, color=color, linewidth=2.2,
                        marker="o" if markers else None, markersize=4)
                label = f"{v} (gap {signed_points(run.final_gap(v))} pts)"
            else:
                label = f"{v}: diverged, not shown"
            handles.append(Line2D([], [], color=color, linewidth=6, solid_capstyle="butt"))
            labels.append(label)
        styles = [Line2D([], [], color="#444444", linewidth=2.2),
                  Line2D([], [], color="#444444", linewidth=2.0, linestyle="--")]
        style_labels = ["test (after each epoch)",
                        "train (during the epoch" + (", augmented)" if run.config.get("augment")
                                                     else ")")]
        max_cols = 3
        if len(handles) <= 6:  # variants in the left column, the line styles in the right one
            rows = max(len(handles), 2)
            blank = Line2D([], [], alpha=0.0)
            handles += [blank] * (rows - len(handles))
            labels += [""] * (rows - len(labels))
            styles += [blank] * (rows - 2)
            style_labels += [""] * (rows - 2)
            max_cols = 2
        handles += styles
        labels += style_labels
        phrase = _seeds_phrase(test.values(), band=False)
        ax.set_title(f"{run.dataset_title}: train vs test accuracy per epoch ({phrase})",
                     loc="left", pad=12)
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy (%)")
        ax.set_xlim(0.6 if run.epochs > 1 else 0.5, run.epochs + (0.4 if run.epochs > 1 else 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        series = [[(e, y) for e, y in zip(c.epochs, c.mean)]
                  for d in (test, train) for c in d.values() if c]
        if series:
            ax.set_ylim(*_zoom_accuracy(series, run.epochs))
            _below_note(ax, series)
        else:
            _nothing_drawn(ax, accuracy=True)
        _place_legend(fig, ax, handles, labels, max_cols=max_cols, right=0.96,
                      title="gap: train − test accuracy at the final epoch, percentage points")
        return save_figure(fig, path, formats)


def plot_curves(run: RunData | str | Path,
                formats: Sequence[str] = DEFAULT_FIGURE_FORMATS) -> list[Path]:
    """Draw the three curve figures of a run folder (a path, or a :class:`RunData` read from
    one), each as a PNG and in the other ``formats`` next to it; returns the PNGs' paths."""
    run = run if isinstance(run, RunData) else load_run(run)
    f = run.folder
    return [
        _curve_figure(run, "test_acc", f.figure("test_acc"), formats),
        _curve_figure(run, "test_loss", f.figure("test_loss"), formats),
        _train_vs_test_figure(run, f.figure("train_vs_test"), formats),
    ]
