"""The diagnostics figure of a run folder: what each norm does inside the network, per epoch.

Reads ``diagnostics.csv`` (:func:`normlab.runfolder.load_diagnostics`; the measures are defined
in :mod:`normlab.diagnostics`), never the training loop. Four panels against the epoch, one line
per variant (mean over its finished seeds, shaded from the lowest to the highest seed):

1. dead ReLU units: percent of (channel, position) units zero for every probe image, the mean
   of the conv layers' fractions (each layer counts once, whatever its size);
2. the conv kernels' total L2 norm (all conv layers);
3. gradient / weight norm ratio, mean over the conv layers: times the learning rate, the
   relative size of one plain SGD step (momentum not counted). Where a norm makes the layer's
   function invariant to the scale of its weights (here: kernel and bias scaled together), the
   gradient shrinks as 1/||w||, so this ratio grows as 1/||w||^2: smaller weights mean larger
   effective steps;
4. BatchNorm's mismatch: the distance between the statistics of a training-size batch and the
   running statistics used at test time, in running standard deviations (mean over layers).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from normlab.runfolder import RunData, load_diagnostics
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
from normlab.style import DPI, RC, plain_log_y, save_figure, variant_colors


def per_epoch(rows: list[dict], value) -> dict[str, dict[int, list[float]]]:
    """{variant: {epoch: [one value per seed]}}, ``value(rows of one run and epoch)`` -> float."""
    grouped: dict[tuple[str, int, int], list[dict]] = defaultdict(list)
    for r in rows:
        grouped[(r["variant"], r["seed"], r["epoch"])].append(r)
    out: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for (variant, _, epoch), layer_rows in sorted(grouped.items()):
        v = value(layer_rows)
        if v is not None and math.isfinite(v):
            out[variant][epoch].append(v)
    return out


def _convs(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["layer"] != "head"]


# Each measure: the rows of one run and epoch (one per layer) -> one number, or None.

def dead_pct(rows: list[dict]) -> float | None:
    convs = [r["dead_frac"] for r in _convs(rows) if r["dead_frac"] is not None]
    return 100.0 * sum(convs) / len(convs) if convs else None


def conv_weight_norm(rows: list[dict]) -> float | None:
    norms = [r["weight_norm"] for r in _convs(rows) if r["weight_norm"] is not None]
    return math.sqrt(sum(n * n for n in norms)) if norms else None


def grad_ratio(rows: list[dict]) -> float | None:
    ratios = [r["grad_norm"] / r["weight_norm"] for r in _convs(rows)
              if r["grad_norm"] is not None and r["weight_norm"]]
    return sum(ratios) / len(ratios) if ratios else None


def bn_gap(rows: list[dict]) -> float | None:
    gaps = [r["bn_mean_gap"] for r in _convs(rows) if r["bn_mean_gap"] is not None]
    return sum(gaps) / len(gaps) if gaps else None


PANELS = (
    (dead_pct, "Dead ReLU units", "units zero for every probe image (%)", False),
    (conv_weight_norm, "Conv weight norm", "||w||, all conv kernels", False),
    (grad_ratio, "Gradient / weight norm", "||grad|| / ||w||, mean over conv layers", True),
    (bn_gap, "BatchNorm: batch vs running mean",
     "|batch mean − running mean| / running std", False),
)


def plot_diagnostics(run: RunData, formats=DEFAULT_FIGURE_FORMATS,
                     rows: list[dict] | None = None) -> Path | None:
    """Draw the four diagnostics panels of ``run`` (its folder's diagnostics figure); None,
    nothing drawn, when the run folder has no diagnostics. ``formats``: as
    :func:`normlab.style.save_figure`; ``rows``: the folder's diagnostics when the caller has
    read them (:func:`~normlab.runfolder.load_diagnostics`)."""
    path = run.folder.diagnostics_figure()
    finished = {(v, s) for v in run.variants for s in run.ok_seeds(v)}
    rows = load_diagnostics(run.folder.path) if rows is None else rows
    rows = [r for r in rows if (r["variant"], r["seed"]) in finished]
    if not rows:
        return None
    colors = variant_colors(run.variants)
    counts = {v: len(run.ok_seeds(v)) for v in run.variants}
    n_seeds = max(counts.values())
    alike = len({counts[v] for v in run.variants if counts[v]}) == 1
    spread = ("one seed" if n_seeds == 1 else
              f"mean over {n_seeds} seeds; band: lowest to highest seed" if alike else
              "mean over each variant's finished seeds; band: lowest to highest seed")

    def label(v: str) -> str:   # where some seeds diverged, how many the line holds
        total = len(run.seeds(v))
        return v if counts[v] == total else f"{v} ({counts[v]} of {total} seeds)"
    last = max(r["epoch"] for r in rows)
    step = 1 if last <= 10 else 5 if last <= 50 else 10
    ticks = sorted({1, last} | set(range(step, last + 1, step)))   # the last epoch labelled
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(10.0, 7.0), dpi=DPI)
        axes = fig.subplots(2, 2)
        for ax, (value, title, ylabel, log) in zip(axes.flat, PANELS):
            series = per_epoch(rows, value)
            for variant in run.variants:
                points = sorted(series.get(variant, {}).items())
                if not points:
                    continue
                epochs = [e for e, _ in points]
                means = [sum(v) / len(v) for _, v in points]
                ax.plot(epochs, means, marker="o", ms=3.5, lw=1.8, color=colors[variant],
                        label=label(variant))
                if counts[variant] > 1:
                    ax.fill_between(epochs, [min(v) for _, v in points],
                                    [max(v) for _, v in points], color=colors[variant],
                                    alpha=0.15, lw=0)
            ax.set_title(title)
            ax.set_ylabel(ylabel, fontsize=10)
            if not ax.lines:
                ax.text(0.5, 0.5, "no variant with running statistics" if value is bn_gap
                        else "nothing measured", ha="center",
                        va="center", transform=ax.transAxes, color="#666666")
            elif log and 0 < ax.dataLim.y0 and ax.dataLim.y1 >= 10 * ax.dataLim.y0:
                plain_log_y(ax)   # values over a decade or more (a long run's fall); within
                # one, a log axis adds little and may hold no labelled tick (a short run's values)
            ax.set_xlabel("epoch")
            ax.set_xticks(ticks)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), frameon=False)
        # The longer note of uneven seed counts goes on a line of its own, within the width.
        sep = " " if alike else "\n"
        fig.suptitle(f"Diagnostics on a fixed probe batch of training images{sep}({spread})")
        fig.tight_layout(rect=(0, 0.05, 1, 0.97 if alike else 0.94))
        return save_figure(fig, path, formats)


__all__ = ["PANELS", "bn_gap", "conv_weight_norm", "dead_pct", "grad_ratio", "per_epoch",
           "plot_diagnostics"]
