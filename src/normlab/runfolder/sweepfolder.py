"""The sweep folder: sweep.json (the base config and swept settings), sweep.csv (one row per
run), points/<setting>=<value>/ (a run folder per point), an experiment's own tables, figures/
and report.md. Every file is written atomically (:mod:`normlab.store`).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from normlab.errors import ConfigError, RunFolderError
from normlab.runfolder.folder import SWEEP_COLUMNS, ResultsFolder, RunFolder, csv_cell
from normlab.store import read_json_object, write_csv, write_json


class SweepFolder(ResultsFolder):
    """Paths, writers and readers of a sweep folder."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.record = self.path / "sweep.json"
        self.table = self.path / "sweep.csv"
        # An experiment's (normlab.experiments) measurements per run: its final-epoch diagnostics,
        # and BatchNorm's test accuracy with running vs batch statistics.
        self.mechanism = self.path / "mechanism.csv"
        self.batch_stats = self.path / "batch_stats.csv"

    @staticmethod
    def holds_sweep(path: str | Path) -> bool:
        return (Path(path) / "sweep.json").exists()

    def point(self, name: str) -> RunFolder:
        return RunFolder(self.path / "points" / name)

    def points(self) -> list[RunFolder]:
        """Every point's run folder, by name."""
        return [RunFolder(p) for p in sorted((self.path / "points").iterdir()) if p.is_dir()]

    def figure(self, param: str) -> Path:
        return self.figures / f"sweep_{param}.png"

    def mechanism_figure(self) -> Path:
        return self.figures / "mechanism.png"

    def write_rows(self, path: Path, header: tuple[str, ...], rows: list[dict]) -> None:
        """One of the sweep's own tables (mechanism.csv, batch_stats.csv): ``header`` columns of
        ``rows``, None and NaN written empty."""
        write_csv(path, header, [tuple(csv_cell(r.get(c)) for c in header) for r in rows])

    def read_record(self, fix: str = "choose a new --out") -> dict:
        """sweep.json, of any version (see :func:`check_version`)."""
        return read_json_object(self.record, fix)

    def experiment(self, fix: str = "choose a new --out") -> str | None:
        """The experiment whose sweep this folder holds: the name sweep.json records (from the
        start of the sweep on), or for a folder of an earlier version, whose sweep.json does not
        record it, "NAME" when it holds an experiment's mechanism.csv; None for a plain sweep.
        ``fix`` ends the error of a damaged sweep.json."""
        name = self.read_record(fix).get("experiment")
        if isinstance(name, str) and name:
            return name
        return "NAME" if self.mechanism.exists() else None

    def check_new(self) -> None:
        """ConfigError unless the folder is new or empty: a file, or a folder that holds files
        but no sweep, is refused, so that earlier results are kept."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"output folder {str(out)!r} is a file; choose a new --out")
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"output folder {str(out)!r} is not empty and holds no sweep; "
                              "choose a new --out so earlier results are kept")

    def create(self, record: dict) -> None:
        """Start a new sweep folder holding ``record`` (sweep.json) (see :meth:`check_new`)."""
        self.check_new()
        self.ensure_writable()
        write_json(self.record, record)

    def write_table(self, params: tuple[str, ...], rows: list[dict]) -> None:
        header = tuple(params) + SWEEP_COLUMNS
        write_csv(self.table, header,
                  [tuple("" if r[c] is None else r[c] for c in header) for r in rows])

    def read_table(self) -> list[dict]:
        """Rows of sweep.csv with numbers parsed (empty cells are None)."""
        return self.read_rows(self.table)

    @staticmethod
    def read_rows(path: Path) -> list[dict]:
        """Rows of one of the sweep's tables, numbers parsed, empty cells None; RunFolderError
        with the fix when the table is missing."""
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
        except FileNotFoundError:
            raise RunFolderError(f"{path} is missing; run the sweep's (or experiment's) command "
                                 "again to write it") from None
        return [{k: _parse_cell(v) for k, v in r.items()} for r in rows]


def _parse_cell(v: str) -> Any:
    if v == "":
        return None
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v
