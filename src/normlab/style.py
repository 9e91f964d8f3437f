"""The look of every normlab figure: one palette, one set of matplotlib settings, one saver.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: ``Figure`` objects are
made directly, never through ``pyplot``, so nothing needs a display, touches a global figure list,
or changes the backend a caller (e.g. a notebook) has chosen. Colours come from the Okabe–Ito
palette (safe for colour-blind readers), assigned by norm (:func:`variant_colors`), so a norm
has the same colour in every figure, of a study, a sweep or an experiment.

Figures are sized for the full width of a two-column paper (~7 in): drawn 8 in wide (8.5 in for
``explain``'s), their smallest text (10 pt; 9 pt in ``explain``'s) still prints at >= 7.4 pt when
scaled to 7 in. :func:`save_figure` writes each figure as PNG and, next to it, SVG (text kept as
text) and, when asked for (``--format``), PDF (TrueType fonts embedded), the same bytes every
time.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from normlab import norms
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, parse_formats
from normlab.runfolder import figure_files
from normlab.store import atomic_write_bytes

# Okabe & Ito (2008), ordered so the first colours are the most distinct on white; yellow last.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
             "#F0E442")
FIGSIZE = (8.0, 5.0)       # inches; 960 x 600 px at DPI; text x 0.875 at a paper's full width
DPI = 120

RC = {
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
# In force while a figure is saved: SVG keeps its text as text (editable, searchable; the reader's
# DejaVu Sans or a fallback draws it), PDF embeds TrueType fonts, and the ids SVG gives clip paths
# and images come from a fixed salt instead of a random one.
SAVE_RC = {"svg.fonttype": "none", "svg.hashsalt": "normlab", "pdf.fonttype": 42}
# No creation date in the SVG and PDF, no Software entry in the PNG: drawing a figure again gives
# the same bytes.
METADATA = {"png": {"Software": None}, "svg": {"Date": None}, "pdf": {"CreationDate": None}}


def plain_log_y(ax, say: bool = True) -> None:
    """A log y axis labelled with plain numbers (0.01, not 10^-2: mathtext prints the exponent
    too small to read in print) and no minor labels. With ``say``, the axes' title (set before)
    ends in "log scale" (a panel's y label has no room for it; a caller whose label says it
    passes False)."""
    ax.set_yscale("log")
    title = ax.title.get_text()
    if say and title and "log scale" not in title:
        # A long title (a mechanism panel's) takes it on a line of its own, within the panel.
        ax.title.set_text(f"{title}\n(log scale)" if len(title) > 36 else f"{title}, log scale")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def color(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def norm_order() -> list[str]:
    """The norms in colour order: the default study's (Config().variants: gn, ln, bn) first, so
    its three lines keep the first three colours; then the registry's others, last registered
    first: the registry ends with the no-norm baseline, the one most often drawn beside the
    default three, which so gets the next distinct colour (pink, not a second blue)."""
    from normlab.config import Config
    from normlab.variants import parse_variant

    first = [parse_variant(v).norm for v in Config().variants]
    return first + [n for n in reversed(list(norms.NORMS)) if n not in first]


def _norm(label: str) -> str:
    """The norm a line's label starts with: 'bn' of 'bn+l1=2e-05, batch_size=8'."""
    return label.split(",")[0].split("+")[0].strip()


def variant_colors(labels: Sequence[str]) -> dict[str, str]:
    """The colour of each line of a figure whose label starts with a variant (``bn+l1=2e-05``,
    ``gn, batch_size=8``): its norm's colour (:func:`norm_order`), the same in every figure; a
    second line of a norm already drawn takes the first colour no norm of the figure has."""
    order = norm_order()
    norm_of = {label: _norm(label) for label in labels}
    taken = {order.index(n) % len(OKABE_ITO) for n in norm_of.values() if n in order}
    unique = list(dict.fromkeys(labels))   # a repeated label keeps one colour
    index: dict[str, int] = {}   # palette index (mod its size) of each line
    for label in unique:   # first, the first line of each norm: its norm's colour
        norm = norm_of[label]
        i = order.index(norm) % len(OKABE_ITO) if norm in order else None
        if i is not None and i not in index.values():
            index[label] = i
    for label in unique:   # then the others: a colour no norm of the figure has, if any is left
        if label not in index:
            used = set(index.values())
            free = [k for k in range(len(OKABE_ITO)) if k not in used and k not in taken]
            spare = [k for k in range(len(OKABE_ITO)) if k not in used]
            index[label] = (free or spare or [len(index) % len(OKABE_ITO)])[0]
    return {label: color(index[label]) for label in unique}


LINE_STYLES = ("-", "--", ":", "-.")   # the first, second, ... line of one norm in a figure
MARKERS = ("o", "s", "^", "D")


def line_styles(labels: Sequence[str]) -> dict[str, dict]:
    """matplotlib keywords (color, linestyle, marker) of each line of a figure whose label starts
    with a variant (see :func:`variant_colors`): every line of a norm in its norm's colour, the
    first solid with round markers, the next of the same norm dashed with squares, and so on
    (no two of a norm's first 16 lines alike), so that ``gn`` is blue in every figure whatever
    else a sweep varies."""
    first: dict[str, str] = {}   # norm -> its first line's label
    for label in labels:
        first.setdefault(_norm(label), label)
    colors = variant_colors(list(first.values()))
    seen: dict[str, int] = {}    # norm -> lines of it so far
    out: dict[str, dict] = {}
    for label in dict.fromkeys(labels):
        norm = _norm(label)
        k = seen[norm] = seen.get(norm, -1) + 1
        # The marker moves on by one more every len(LINE_STYLES) lines, so that the fifth line
        # of a norm (solid again) has squares, not the first's circles: 16 distinct pairs.
        out[label] = {"color": colors[first[norm]], "linestyle": LINE_STYLES[k % len(LINE_STYLES)],
                      "marker": MARKERS[(k + k // len(LINE_STYLES)) % len(MARKERS)]}
    return out


def save_figure(fig: Figure, png: str | Path, formats: str | Sequence[str] = DEFAULT_FIGURE_FORMATS,
                dpi: int = DPI) -> Path:
    """Write ``fig`` as the PNG ``png`` and as each other of ``formats`` next to it (same stem,
    see :func:`normlab.runfolder.figure_files`), each rendered in memory and written atomically
    (temporary file, then rename). Returns the PNG's path, the one report.md links."""
    files = figure_files(png, parse_formats(formats))
    FigureCanvasAgg(fig)
    with matplotlib.rc_context(SAVE_RC):
        for fmt, path in files.items():
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=METADATA[fmt])
            atomic_write_bytes(path, buf.getvalue())
    return files["png"]
