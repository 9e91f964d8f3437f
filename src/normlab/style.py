"""The look of every normlab figure: one palette, one set of matplotlib settings, one saver.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: ``Figure`` objects are
made directly, never through ``pyplot``, so nothing needs a display, touches a global figure list,
or changes the backend a caller (e.g. a notebook) has chosen. Colours come from the Okabe–Ito
palette (safe for colour-blind readers), assigned by position, so a variant has the same colour in
every figure of a study.

Figures are sized for the full width of a two-column paper (~7 in): drawn 8 in wide (8.5 in for
``explain``'s), their smallest text (10 pt; 9 pt in ``explain``'s) still prints at >= 7.4 pt when
scaled to 7 in. :func:`save_figure` writes each figure as PNG and, next to it, SVG (text kept as
text) and PDF (TrueType fonts embedded), the same bytes every time.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

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


def plain_log_y(ax) -> None:
    """A log y axis labelled with plain numbers (0.01, not 10^-2: mathtext prints the exponent
    too small to read in print) and no minor labels."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def color(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """The colour of each variant, by its position in the study."""
    return {v: color(i) for i, v in enumerate(variants)}


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
