"""The look of every normlab figure: one palette, one set of matplotlib settings, one saver.

Figures are drawn with matplotlib's object-oriented API on the Agg canvas: ``Figure`` objects are
made directly, never through ``pyplot``, so nothing needs a display, touches a global figure list,
or changes the backend a caller (e.g. a notebook) has chosen. Colours come from the Okabe–Ito
palette (safe for colour-blind readers), assigned by position, so a variant has the same colour in
every figure of a study.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from normlab.store import atomic_write_bytes

# Okabe & Ito (2008), ordered so the first colours are the most distinct on white; yellow last.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
             "#F0E442")
FIGSIZE = (8.0, 5.0)       # inches; 960 x 600 px at DPI
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


def color(i: int) -> str:
    """The i-th colour of the palette (cycling)."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def variant_colors(variants: Sequence[str]) -> dict[str, str]:
    """The colour of each variant, by its position in the study."""
    return {v: color(i) for i, v in enumerate(variants)}


def save_png(fig: Figure, path: str | Path, dpi: int = DPI) -> Path:
    """Render ``fig`` as PNG and write it atomically (temporary file, then rename)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
