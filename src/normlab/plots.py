"""Figures of a saved run folder, written to ``<run>/figures/`` (never during training).

* ``test_accuracy.png``, ``test_loss.png``: every variant's test curve by epoch; with several seeds
  the mean and a shaded t-based 95% confidence band, with one seed the curve alone.
* ``train_vs_test.png``: train (dashed) and test (solid) accuracy per variant, same colour.
* ``misclassified_<variant>.png``: ten misclassified test images of one seed, 2 x 5.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: ``Figure`` objects are
made directly, never through ``pyplot``, so nothing here needs a display, touches a global figure
list, or changes the backend a caller (e.g. a notebook) has chosen. Every colour comes from the
Okabe–Ito palette (safe for colour-blind readers), assigned by variant order, so a variant has the
same colour in every figure.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from normlab.errors import ConfigError, RunFolderError
from normlab.layout import run_name
from normlab.report import RunData, load_run, read_predictions
from normlab.stats import mean_ci
from normlab.store import atomic_write_bytes

# Okabe & Ito (2008), ordered so the first colours are the most distinct on white; yellow last.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
             "#F0E442")
FIGSIZE = (8.0, 5.0)       # inches; 960 x 600 px at DPI
DPI = 120
MODES = ("confident", "first")
GRID_ROWS, GRID_COLS = 2, 5

_RC = {
    "font.size": 11,
    "axes.titlesize": 13,
    "axes.labelsize": 12,
    "xtick.labelsize": 11,
    "ytick.labelsize": 11,
    "legend.fontsize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.8,
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """The colour of each variant, by its position in the study."""
    return {v: OKABE_ITO[i % len(OKABE_ITO)] for i, v in enumerate(variants)}


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` as PNG and write it atomically (temporary file, then rename)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ----------------------------------------------------------------------------------------------
# Curves


class _Curve:
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
            self.lo.append(ci.lo)
            self.hi.append(ci.hi)
            self.n = max(self.n, ci.n)

    def __bool__(self) -> bool:
        return bool(self.epochs)

    def best(self, higher_is_better: bool) -> int:
        """Index of the best mean point (earliest on ties)."""
        sign = 1.0 if higher_is_better else -1.0
        return max(range(len(self.mean)), key=lambda i: (sign * self.mean[i], -i))


def _seeds_phrase(curves: Sequence[_Curve], band: bool = True) -> str:
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


def _curve_figure(run: RunData, column: str, path: Path) -> Path:
    accuracy = column.endswith("acc")
    colors = variant_colors(run.variants)
    curves = {v: _Curve(run, v, column) for v in run.variants}
    with matplotlib.rc_context(_RC):
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
            b = c.best(higher_is_better=accuracy)
            ax.plot([c.epochs[b]], [c.mean[b]], marker="*", markersize=16, color=color,
                    markeredgecolor="white", markeredgewidth=1.2, linestyle="none", zorder=5)
            handles.append(line)
            labels.append(_legend_name(run, v))
            final = c.mean[-1]
            ends.append((c.epochs[-1], final, f"{final:.2f}%" if accuracy else f"{final:.4f}",
                         color))
        handles.append(Line2D([], [], marker="*", markersize=14, color="#555555",
                              markeredgecolor="white", linestyle="none"))
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
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
                ax.set_ylabel("test loss (cross-entropy, log scale)")
        _place_legend(fig, ax, handles, labels, max_cols=3, right=0.88)
        _end_labels(fig, ax, ends)
        return _save(fig, path)


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


def _train_vs_test_figure(run: RunData, path: Path) -> Path:
    colors = variant_colors(run.variants)
    test = {v: _Curve(run, v, "test_acc") for v in run.variants}
    train = {v: _Curve(run, v, "train_acc") for v in run.variants}
    with matplotlib.rc_context(_RC):
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
                gap = tr.mean[-1] - te.mean[-1]
                label = f"{v} (gap {gap:+.2f} pts)".replace("(gap -", "(gap −")
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
        _place_legend(fig, ax, handles, labels, max_cols=max_cols, right=0.96,
                      title="gap: train − test accuracy at the final epoch, percentage points")
        return _save(fig, path)


def plot_curves(run_dir: str | Path, run: RunData | None = None) -> list[Path]:
    """Draw ``figures/test_accuracy.png``, ``test_loss.png`` and ``train_vs_test.png``."""
    run = run if run is not None else load_run(run_dir)
    figures = Path(run_dir) / "figures"
    return [
        _curve_figure(run, "test_acc", figures / "test_accuracy.png"),
        _curve_figure(run, "test_loss", figures / "test_loss.png"),
        _train_vs_test_figure(run, figures / "train_vs_test.png"),
    ]


# ----------------------------------------------------------------------------------------------
# Misclassified images


def select_mistakes(rows: Sequence[dict], k: int = 10, mode: str = "confident") -> list[dict]:
    """The predictions rows to show: up to ``k`` with ``pred != label``.

    ``mode="confident"``: the most confident mistakes (highest ``confidence``; ties by lower
    ``index``). ``mode="first"``: the mistakes with the lowest ``index``.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if k < 0:
        raise ConfigError(f"k must be >= 0, got {k}")
    wrong = [r for r in rows if r["pred"] != r["label"]]
    if mode == "confident":
        wrong.sort(key=lambda r: (-r["confidence"], r["index"]))
    else:
        wrong.sort(key=lambda r: r["index"])
    return wrong[:k]


def _confidence_text(c: float) -> str:
    pct = 100.0 * c
    if pct >= 99.95 and c < 1.0:
        return ">99.9%"
    return f"{pct:.1f}%"


def cell_label(row: dict, classes: Sequence[str]) -> str:
    """The text above one image: true and predicted class, confidence, test index."""
    def name(i: int) -> str:
        return str(classes[i]) if 0 <= i < len(classes) else str(i)

    conf = f"{_confidence_text(row['confidence'])} · #{row['index']}"
    if any(len(str(c)) > 1 for c in classes):  # class names: one per line
        return f"true {name(row['label'])}\npred {name(row['pred'])}\n{conf}"
    return f"true {name(row['label'])} → pred {name(row['pred'])}\n{conf}"


def mistakes_title(variant: str, seed: int, acc: float, n_wrong: int, mode: str, dataset: str,
                   k: int = GRID_ROWS * GRID_COLS) -> str:
    """The two-line title of a mistakes grid."""
    if n_wrong == 0:
        sub = f"no mistakes on the {dataset} test set"
    elif n_wrong < k:
        sub = (f"only {n_wrong} mistake{'s' if n_wrong != 1 else ''} on the {dataset} test set, "
               "all shown" + (", most confident first" if mode == "confident" else ""))
    elif mode == "confident":
        sub = f"its {k} most confident mistakes, of {n_wrong:,} on the {dataset} test set"
    else:
        sub = f"its first {k} mistakes by test index, of {n_wrong:,} on the {dataset} test set"
    return f"{variant} (seed {seed}, test accuracy {acc:.2f}%)\n{sub}"


def _first_ok_seed(run: RunData, variant: str) -> int | None:
    ok = run.ok_seeds(variant)
    return ok[0] if ok else None


def _load_test_split(run: RunData, data_dir: str | Path | None = None):
    """The test split of the run's dataset: from ``data_dir`` if given, else the run's own."""
    from normlab import data

    return data.load_split(run.dataset, train=False,
                           data_dir=data_dir if data_dir is not None else run.config.get("data_dir"))


def _misclassified_figure(run: RunData, variant: str, seed: int, mode: str, images, labels,
                          path: Path) -> Path:
    pred_path = run.run_dir / "predictions" / f"{run_name(variant, seed)}.csv"
    rows = read_predictions(pred_path)
    n_images = len(images)
    for r in rows:
        if not 0 <= r["index"] < n_images:
            raise RunFolderError(
                f"{pred_path}: index {r['index']} is outside the {n_images} test images found; "
                "the data is not the test split this run used; point the run's data_dir or "
                "$NORMLAB_DATA at the right copy"
            )
    if labels is not None:
        if len(labels) != len(rows):
            raise RunFolderError(
                f"{pred_path} has {len(rows)} rows but the {run.dataset} test split found has "
                f"{len(labels)} images; the data is not the one this run used; point the run's "
                "data_dir or $NORMLAB_DATA at the right copy"
            )
        true = [int(x) for x in labels.tolist()] if hasattr(labels, "tolist") else list(labels)
        for r in rows:
            if true[r["index"]] != r["label"]:
                raise RunFolderError(
                    f"{pred_path}: test image {r['index']} has label {true[r['index']]} "
                    f"in the data found but {r['label']} in the predictions; the data is not the "
                    "one this run used; point the run's data_dir or $NORMLAB_DATA at the right copy"
                )
    chosen = select_mistakes(rows, GRID_ROWS * GRID_COLS, mode)
    n_wrong = sum(r["pred"] != r["label"] for r in rows)
    last = run.rows(variant, seed)
    acc = last[-1]["test_acc"] if last else (100.0 * (len(rows) - n_wrong) / max(1, len(rows)))

    classes = run.classes
    names = any(len(c) > 1 for c in classes)
    k = GRID_ROWS * GRID_COLS
    title_lines = 3 if names else 2
    # Inches: the figure title, each cell's title, each image, the gap between rows, the footer.
    head, cell_title, img, gap, foot = 0.75, 0.2 * title_lines + 0.08, 1.42, 0.12, 0.4
    height = head + GRID_ROWS * (cell_title + img) + (GRID_ROWS - 1) * gap + foot
    with matplotlib.rc_context(_RC | {"axes.grid": False}):
        fig = Figure(figsize=(8.0, height), dpi=DPI)
        grid = fig.add_gridspec(GRID_ROWS, GRID_COLS, left=0.02, right=0.98, bottom=foot / height,
                                top=1 - (head + cell_title) / height, wspace=0.12,
                                hspace=(cell_title + gap) / img)
        for i in range(k):
            ax = fig.add_subplot(grid[i // GRID_COLS, i % GRID_COLS])
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(chosen):
                ax.axis("off")
                continue
            r = chosen[i]
            img = images[r["index"]]
            ax.imshow(img.numpy() if hasattr(img, "numpy") else img, cmap="gray_r", vmin=0,
                      vmax=255, interpolation="nearest")
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("#999999")
            ax.set_title(cell_label(r, classes), fontsize=11, linespacing=1.25, pad=4)
        title = mistakes_title(variant, seed, acc, n_wrong, mode, run.dataset_title, k)
        fig.suptitle(title,
                     x=0.02, ha="left", y=0.99, va="top", fontsize=13, linespacing=1.4)
        fig.text(0.02, 0.12 / height, "Above each image: true → predicted class, the model's "
                 "confidence, the image's test-set index.",
                 ha="left", va="bottom", fontsize=10, color="#555555")
        return _save(fig, path)


def plot_misclassified(run_dir: str | Path, variant: str, seed: int | None = 0,
                       mode: str = "confident", images=None, run: RunData | None = None,
                       data_dir: str | Path | None = None) -> Path:
    """Draw ``figures/misclassified_<variant>.png``: 10 misclassified test images of one seed.

    ``mode="confident"`` shows the most confident mistakes, ``"first"`` the first by test index
    (see :func:`select_mistakes`). ``seed=None`` takes the first seed that finished. ``images``,
    a uint8 tensor (N, 28, 28) of the test split, saves loading it again (the labels are then not
    cross-checked against the predictions).
    """
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    run = run if run is not None else load_run(run_dir)
    if variant not in run.summary["variants"]:
        raise ConfigError(
            f"variant {variant!r} is not in this run; it has: {', '.join(run.variants)}"
        )
    if seed is None:
        seed = _first_ok_seed(run, variant)
        if seed is None:
            raise RunFolderError(
                f"variant {variant!r} diverged in every seed; it has no predictions to show"
            )
    if seed not in run.seeds(variant):
        raise ConfigError(f"variant {variant!r} has no seed {seed} in this run; it has seeds "
                          f"{', '.join(map(str, run.seeds(variant)))}")
    if seed not in run.ok_seeds(variant):
        ok = ", ".join(map(str, run.ok_seeds(variant))) or "none"
        raise RunFolderError(f"variant {variant!r} seed {seed} diverged, so it has no predictions; "
                             f"choose a seed that finished ({ok})")
    labels = None
    if images is None:
        images, labels = _load_test_split(run, data_dir)
    path = Path(run_dir) / "figures" / f"misclassified_{variant}.png"
    return _misclassified_figure(run, variant, seed, mode, images, labels, path)


def make_figures(run_dir: str | Path, mode: str = "confident",
                 run: RunData | None = None) -> list[Path]:
    """All figures of a run folder: the three curve figures, then one mistakes grid per variant
    (its first finished seed; variants that diverged in every seed have none)."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    run = run if run is not None else load_run(run_dir)
    paths = plot_curves(run_dir, run=run)
    paths += make_misclassified(run_dir, mode, run=run)
    return paths


def make_misclassified(run_dir: str | Path, mode: str = "confident",
                       run: RunData | None = None, data_dir: str | Path | None = None) -> list[Path]:
    """One mistakes grid per variant that has a finished seed; the test split is loaded once
    (from ``data_dir`` if given, else from where the run found its data)."""
    run = run if run is not None else load_run(run_dir)
    todo = [(v, s) for v in run.variants if (s := _first_ok_seed(run, v)) is not None]
    if not todo:
        return []
    images, labels = _load_test_split(run, data_dir)
    path = Path(run_dir) / "figures"
    return [_misclassified_figure(run, v, s, mode, images, labels, path / f"misclassified_{v}.png")
            for v, s in todo]


# ----------------------------------------------------------------------------------------------
# Sweeps


def _is_log_scale(values: Sequence[float]) -> bool:
    """Log x when the positive values span a decade or more (batch sizes, lambdas)."""
    pos = [v for v in values if v > 0]
    return len(pos) >= 3 and max(pos) / min(pos) >= 10


def sweep_figure(rows: Sequence[dict], param: str, others: Sequence[str], path: str | Path) -> Path:
    """Final test accuracy against the swept ``param``: one line per variant (and per value of the
    ``others`` swept settings), mean over seeds with 95% t-confidence bars. Failed and diverged
    runs are left out (and counted in the title's note). Log x where the values span decades; a
    value 0 on a log axis is drawn at the left edge and labelled 0."""
    path = Path(path)
    series: dict[str, dict[object, list[float]]] = {}
    order: list[str] = []
    missing = 0
    for r in rows:
        label = r.get("spec", r["variant"]) + "".join(f", {o}={r[o]:g}" if isinstance(r[o], float)
                                       else f", {o}={r[o]}" for o in others)
        if label not in series:
            series[label] = {}
            order.append(label)
        values = series[label].setdefault(r[param], [])
        if r["status"] == "ok" and r["final_test_acc"] is not None:
            values.append(float(r["final_test_acc"]))
        else:
            missing += 1
    xs_all = sorted({r[param] for r in rows}, key=lambda v: (isinstance(v, str), v))
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs_all)
    log = numeric and _is_log_scale([float(v) for v in xs_all])
    zero_at = None
    if log and any(v == 0 for v in xs_all):
        zero_at = min(v for v in xs_all if v > 0) / 4  # where a lambda of 0 is drawn
    position = {v: (float(v) if v != 0 or zero_at is None else zero_at) if numeric else i
                for i, v in enumerate(xs_all)}
    colors = {label: OKABE_ITO[i % len(OKABE_ITO)] for i, label in enumerate(order)}
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=FIGSIZE, dpi=DPI)
        ax = fig.add_subplot()
        seeds = 0
        lows, highs = [], []
        for label in order:
            pts = [(position[x], mean_ci(v)) for x, v in series[label].items() if v]
            pts.sort(key=lambda p: p[0])
            if not pts:
                continue
            seeds = max(seeds, max(ci.n for _, ci in pts))
            xs = [x for x, _ in pts]
            means = [ci.mean for _, ci in pts]
            err = [[ci.mean - ci.lo for _, ci in pts], [ci.hi - ci.mean for _, ci in pts]]
            lows += [min(ci.mean, max(ci.lo, ci.mean - 5)) for _, ci in pts]
            highs += [ci.hi for _, ci in pts]
            ax.errorbar(xs, means, yerr=err, marker="o", ms=5, lw=1.8, capsize=4,
                        color=colors[label], label=label)
        if lows:
            # Accuracy cannot exceed 100%; a t-interval of two seeds can be wider than that.
            top = min(100.0, max(highs)) + 0.1
            ax.set_ylim(max(0.0, min(lows) - 0.3), top)
        if log:
            ax.set_xscale("log")
        if numeric:
            ax.set_xticks([position[v] for v in xs_all])
            ax.set_xticklabels(["0" if v == 0 else f"{v:g}" for v in xs_all])
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(list(range(len(xs_all))))
            ax.set_xticklabels([str(v) for v in xs_all])
        ax.set_xlabel(param + (" (log scale)" if log else ""))
        ax.set_ylabel("final test accuracy (%)")
        bars = ("mean and 95% CI over seeds; bars clipped to the axes" if seeds > 1
                else "one seed each")
        note = f"; {missing} run(s) failed or diverged, not shown" if missing else ""
        ax.set_title(f"Final test accuracy against {param}\n({bars}{note})")
        ax.legend(loc="best", frameon=False)
        fig.tight_layout()
        return _save(fig, path)


__all__ = ["OKABE_ITO", "sweep_figure", "make_figures", "make_misclassified", "plot_curves", "plot_misclassified",
           "select_mistakes", "variant_colors"]
