"""The figure of ``normlab explain --figure``: which elements share one mean and variance.

One panel per norm the registry marks for explaining (bn, gn, ln), drawn from the registry's
axes alone (:func:`normlab.explain.hand_spec`), so a norm added there is drawn without code here.
"""

from __future__ import annotations

from math import prod
from pathlib import Path
from typing import Sequence

from normlab import norms
from normlab.explain import (AXIS_WORDS, EXAMPLE_GROUPS, EXAMPLE_SHAPE, axis_sizes, hand_spec,
                             kept_axes)
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
from normlab.style import color, save_figure

def figure_title(norm: str, channels: int = EXAMPLE_SHAPE[1], groups: int = EXAMPLE_GROUPS) -> str:
    """A panel's title, from the registry: "BatchNorm: one mean per channel (over N, H, W)",
    "GroupNorm (G=2): one mean per image and group"."""
    spec = norms.get(norm)
    head = spec.title
    if "G" in spec.view:
        head += f" (G={spec.stat_groups(channels, groups)})"
    over = f" (over {', '.join(spec.reduce)})" if spec.view == ("N", "C", "H", "W") else ""
    return f"{head}: one mean per {spec.per}{over}"


_LABELS = {"N": "n={}", "C": "c={}", "G": "group {}", "V": "virtual batch {}"}


def stat_groups(norm: str, n: int, c: int, groups: int, ghost_batch: int = 1
                ) -> tuple[list[list[int]], list[str]]:
    """For each (image, channel) the index of the statistic it uses, and the statistics' labels
    ("channel c=0", "n=0, group 1", "image n=1", "virtual batch 1, c=0"), from the registry's
    axes. ``ghost_batch``: images per virtual batch (gbn; it must divide ``n``)."""
    spec = hand_spec(norm)
    kept = kept_axes(spec)
    if not set(kept) <= set(_LABELS):
        raise ValueError(f"{spec.title}: the figure draws statistics per image and channel only")
    sizes = axis_sizes(spec, (n, c, 1, 1), groups, ghost_batch)

    def coord(axis: str, i: int, j: int) -> int:
        return {"N": i, "C": j, "G": j // sizes.get("C/G", 1),
                "V": i // sizes.get("N/V", 1)}[axis]

    def flat(coords: list[int]) -> int:   # row-major index over the kept axes
        index = 0
        for axis, k in zip(kept, coords):
            index = index * sizes[axis] + k
        return index

    which = [[flat([coord(a, i, j) for a in kept]) for j in range(c)] for i in range(n)]
    labels = []
    for index in range(prod(sizes[a] for a in kept)):
        coords = []
        for axis in reversed(kept):
            index, k = divmod(index, sizes[axis])
            coords.append(_LABELS[axis].format(k))
        parts = coords[::-1]
        if len(parts) == 1 and kept[0] != "G":   # "image n=0", "channel c=2"
            parts = [f"{AXIS_WORDS[kept[0]]} {parts[0]}"]
        labels.append(", ".join(parts))
    return which, labels


def draw_norm_axes(path, n: int = 2, c: int = 4, hw: int = 6, groups: int = 2,
                   formats: Sequence[str] = DEFAULT_FIGURE_FORMATS) -> Path:
    """Draw, for the norms explain works through (bn, gn, ln), which elements of an (N, C, H*W)
    block share one mean and variance.

    One panel per norm, side by side; in each, the N images are drawn as stacked slabs of C rows by H*W
    columns, and cells that share a statistic have one colour (Okabe-Ito palette). ``path`` is
    the PNG; the other ``formats`` go next to it (same stem), each written atomically (temporary
    file in the same folder, then ``os.replace``). Returns the PNG's path.
    """
    # A Figure on the Agg canvas, not pyplot: drawing must not switch the backend of a
    # notebook that imports normlab.
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Polygon, Rectangle

    path = Path(path)
    names = norms.explained()
    depth_dx, depth_dy = 0.35, 0.35  # offset that gives each slab a little thickness

    # 8.5 inches wide: at ~800 px a 9 pt font is still ~12 px tall, and at a paper's full width
    # (7 in) it prints at 7.4 pt.
    fig = Figure(figsize=(8.5, 4.6))
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    fig.subplots_adjust(left=0.01, right=0.995, top=0.885, bottom=0.27, wspace=0.06)
    for ax, norm in zip(axes, names):
        which, labels = stat_groups(norm, n, c, groups)
        gap = 1.0  # vertical space between the image slabs
        for i in range(n):
            y0 = (n - 1 - i) * (c + gap)  # image 0 on top
            # The slab's top and right faces (a simple oblique projection) to suggest a 3-D block.
            top = Polygon([(0, y0 + c), (hw, y0 + c), (hw + depth_dx, y0 + c + depth_dy),
                           (depth_dx, y0 + c + depth_dy)], closed=True,
                          facecolor="#d9d9d9", edgecolor="#555555", lw=0.8)
            side = Polygon([(hw, y0), (hw + depth_dx, y0 + depth_dy),
                            (hw + depth_dx, y0 + c + depth_dy), (hw, y0 + c)], closed=True,
                           facecolor="#bdbdbd", edgecolor="#555555", lw=0.8)
            ax.add_patch(top)
            ax.add_patch(side)
            for j in range(c):
                colour = color(which[i][j])
                yc = y0 + (c - 1 - j)  # channel 0 at the top of the slab
                for k in range(hw):
                    ax.add_patch(Rectangle((k, yc), 1, 1, facecolor=colour, edgecolor="white",
                                           lw=1.2))
                ax.text(-0.2, yc + 0.5, f"c{j}", ha="right", va="center", fontsize=9)
            ax.add_patch(Rectangle((0, y0), hw, c, fill=False, edgecolor="#333333", lw=1.2))
            # Image label with a bracket on the left.
            ax.plot([-1.15, -1.3, -1.3, -1.15], [y0 + 0.05, y0 + 0.05, y0 + c - 0.05, y0 + c - 0.05],
                    color="#333333", lw=1.0, clip_on=False)
            ax.text(-1.5, y0 + c / 2, f"image n={i}", ha="right", va="center", rotation=90,
                    fontsize=9.5)
        height = n * c + (n - 1) * gap
        ax.set_xlim(-2.4, hw + depth_dx + 0.1)
        ax.set_ylim(-0.2, height + depth_dy + 0.2)
        ax.set_aspect("equal")
        ax.set_xticks([k + 0.5 for k in range(hw)], [str(k) for k in range(hw)], fontsize=9)
        ax.set_yticks([])
        ax.tick_params(axis="x", length=0, pad=2)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_xlabel("H*W (positions, flattened)", fontsize=9.5, labelpad=2)
        head, _, rest = figure_title(norm, c, groups).partition(": ")
        ax.set_title(f"{head}:\n{rest}", fontsize=10, pad=4)
        handles = [Patch(facecolor=color(s), edgecolor="none", label=lab)
                   for s, lab in enumerate(labels)]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2,
                  fontsize=9, frameon=False, handlelength=1.0, handletextpad=0.4,
                  columnspacing=0.8, borderaxespad=0.0)
    fig.text(0.5, 0.015, f"Each cell is one element x[n, c, h*w] of an (N={n}, C={c}, H*W={hw}) block: "
                  "N images (slabs), C channels (rows), H*W positions (columns).\n"
                  "Cells of one colour share one mean and one variance.", ha="center", va="bottom",
             fontsize=9, linespacing=1.4)

    return save_figure(fig, path, formats, dpi=200)
