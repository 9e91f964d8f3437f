"""Grids of misclassified test images, one figure per variant (2 x 5 images of one seed).

The predictions come from the run folder (checked against the test labels found now, by
:func:`normlab.runfolder.read_predictions`); the images from the dataset the run used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.figure import Figure

from normlab.config import MISTAKE_MODES as MODES
from normlab.errors import ConfigError, RunFolderError
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
from normlab.runfolder import RunData, load_run, load_test_images, read_predictions
from normlab.style import DPI, RC, save_figure

GRID_ROWS, GRID_COLS = 2, 5


def check_mode(mode: str) -> str:
    """``mode`` if it is one of MODES, else a ConfigError naming the valid ones."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    return mode


def select_mistakes(rows: Sequence[dict], k: int = 10, mode: str = "confident") -> list[dict]:
    """The predictions rows to show: up to ``k`` with ``pred != label``.

    ``mode="confident"``: the most confident mistakes (highest ``confidence``; ties by lower
    ``index``). ``mode="first"``: the mistakes with the lowest ``index``.
    """
    check_mode(mode)
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


def _predictions(run: RunData, variant: str, seed: int, images, labels) -> list[dict]:
    return read_predictions(run.folder.predictions(variant, seed), labels, n_images=len(images))


def _misclassified_figure(run: RunData, variant: str, seed: int, mode: str, images,
                          rows: list[dict], path: Path, formats: Sequence[str]) -> Path:
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
    with matplotlib.rc_context(RC | {"axes.grid": False}):
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
        return save_figure(fig, path, formats)


def plot_misclassified(run: RunData | str | Path, variant: str, seed: int | None = 0,
                       mode: str = "confident", images=None,
                       data_dir: str | Path | None = None,
                       formats: Sequence[str] = DEFAULT_FIGURE_FORMATS) -> Path:
    """Draw the grid of 10 misclassified test images of one seed of ``variant`` (a PNG, and the
    other ``formats`` next to it); returns the PNG's path.

    ``mode="confident"`` shows the most confident mistakes, ``"first"`` the first by test index
    (see :func:`select_mistakes`). ``seed=None`` takes the first seed that finished. ``images``,
    a uint8 tensor (N, 28, 28) of the test split, saves loading it again (the labels are then not
    cross-checked against the predictions).
    """
    check_mode(mode)
    run = run if isinstance(run, RunData) else load_run(run)
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
        images, labels = load_test_images(run, data_dir)
    return _misclassified_figure(run, variant, seed, mode, images,
                                 _predictions(run, variant, seed, images, labels),
                                 run.folder.misclassified_figure(variant), formats)


def make_misclassified(run: RunData | str | Path, mode: str = "confident",
                       data_dir: str | Path | None = None,
                       formats: Sequence[str] = DEFAULT_FIGURE_FORMATS,
                       test: tuple | None = None) -> list[Path]:
    """One mistakes grid per variant that has a finished seed (a PNG, and the other ``formats``
    next to it); the test split is ``test`` (images, labels) when the caller has loaded it, else
    loaded once (from ``data_dir`` if given, else from where the run found its data). Every
    predictions file is read and checked before the first grid is drawn. Returns the PNGs'
    paths."""
    check_mode(mode)
    run = run if isinstance(run, RunData) else load_run(run)
    todo = [(v, s) for v in run.variants if (s := _first_ok_seed(run, v)) is not None]
    if not todo:
        return []
    images, labels = test if test is not None else load_test_images(run, data_dir)
    rows = [_predictions(run, v, s, images, labels) for v, s in todo]
    return [_misclassified_figure(run, v, s, mode, images, r, run.folder.misclassified_figure(v),
                                  formats) for (v, s), r in zip(todo, rows)]
