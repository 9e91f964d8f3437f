"""The file formats a figure is saved in, and the parser of ``--format`` (no matplotlib here).

Every figure is a PNG, the file report.md shows; each other format is a file of the same stem next
to it (:func:`normlab.runfolder.figure_files` names them, :func:`normlab.style.save_figure` writes
them).
"""

from __future__ import annotations

from typing import Sequence

from normlab.errors import ConfigError

FIGURE_FORMATS = ("png", "svg", "pdf")
DEFAULT_FIGURE_FORMATS = ("png", "svg")


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """The figure formats named in ``formats`` ("png,svg,pdf", or a sequence of names), in
    FIGURE_FORMATS order; a ConfigError naming the valid ones for an unknown name or none."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    wanted = {str(f).strip().lower() for f in items} - {""}
    unknown = sorted(wanted - set(FIGURE_FORMATS))
    if unknown or not wanted:
        problem = f"unknown figure format {unknown[0]!r}" if unknown else "no figure format given"
        raise ConfigError(f"{problem}; valid: {', '.join(FIGURE_FORMATS)}, comma-separated")
    return tuple(f for f in FIGURE_FORMATS if f in wanted)
