"""Reading a finished run folder back, checked file by file.

Each reader names the file, what is wrong and the fix (:class:`RunFolderError`) for a missing,
damaged or inconsistent file, so that reports and plots never trip over a half-written or edited
folder. :func:`load_run` gives a :class:`RunData`; predictions are read per run when needed.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

from normlab.datasets import DATASETS
from normlab.errors import RunFolderError
from normlab.runfolder.folder import (DIAGNOSTIC_COLUMNS, METRIC_COLUMNS, PREDICTION_COLUMNS, REBUILD, STAT_KEYS,
                                      STATUSES, VAL_STAT_KEYS, RunFolder)
from normlab.store import not_a_folder, read_json_object


def load_summary(run_dir: str | Path) -> dict:
    """summary.json of ``run_dir``, with a clear error when it is missing or damaged."""
    path = RunFolder(run_dir).summary
    summary = read_json_object(
        path, f"is {run_dir} a finished normlab run folder? If so, re-run the study to rebuild it")
    if not isinstance(summary.get("variants"), dict):
        raise RunFolderError(f"{path} has no 'variants' table; re-run the study to rebuild it")
    return summary



_INT_COLUMNS = ("seed", "epoch")


@dataclass
class RunData:
    """Everything :func:`load_run` read from a run folder, checked.

    ``metrics`` rows are dicts with the columns of metrics.csv: ``variant`` a str, ``seed`` and
    ``epoch`` ints, the rest floats.
    """

    run_dir: Path
    config: dict
    summary: dict
    metrics: list[dict]
    env: dict
    timing: dict | None = None   # timing.json (wall time, workers), when present

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def variants(self) -> list[str]:
        """Variant names in the order of the study (summary.json's order)."""
        return list(self.summary["variants"])

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or self.config.get("dataset"))

    @property
    def dataset_title(self) -> str:
        spec = DATASETS.get(self.dataset)
        return spec.title if spec else self.dataset

    @property
    def epochs(self) -> int:
        return int(self.summary.get("epochs") or self.config.get("epochs"))

    @property
    def classes(self) -> list[str]:
        resolved = self.config.get("resolved")
        if isinstance(resolved, dict) and isinstance(resolved.get("classes"), list):
            return [str(c) for c in resolved["classes"]]
        return [str(d) for d in range(10)]

    def seeds(self, variant: str) -> list[int]:
        return list(self.summary["variants"][variant]["seeds"])

    def ok_seeds(self, variant: str) -> list[int]:
        """The seeds of ``variant`` that finished (did not diverge), in order."""
        s = self.summary["variants"][variant]
        return [seed for seed in s["seeds"] if seed not in set(s["diverged_seeds"])]

    def rows(self, variant: str, seed: int) -> list[dict]:
        """metrics rows of one run, by epoch."""
        return sorted((r for r in self.metrics if r["variant"] == variant and r["seed"] == seed),
                      key=lambda r: r["epoch"])

    def per_epoch(self, variant: str, column: str) -> dict[int, list[float]]:
        """``column`` by epoch over the finished seeds of ``variant`` (seed order)."""
        out: dict[int, list[float]] = {}
        for seed in self.ok_seeds(variant):
            for r in self.rows(variant, seed):
                out.setdefault(r["epoch"], []).append(r[column])
        return dict(sorted(out.items()))

    def mean_per_epoch(self, variant: str, column: str) -> dict[int, float]:
        """The mean of ``column`` by epoch over the finished seeds of ``variant`` (fsum / n, as
        ``stats.mean_ci``), leaving out missing (None: a ``val_*`` column without --val) and
        non-finite values; an epoch with none is left out."""
        out = {}
        for epoch, values in self.per_epoch(variant, column).items():
            finite = [float(v) for v in values if v is not None and math.isfinite(v)]
            if finite:
                out[epoch] = math.fsum(finite) / len(finite)
        return out

    def final_gap(self, variant: str) -> float | None:
        """Train minus test accuracy at the last epoch of each finished seed of ``variant``,
        averaged over those seeds (percentage points); None when none has a row. The report's
        gap column and the legend of train_vs_test.png both come from here."""
        gaps = [rows[-1]["train_acc"] - rows[-1]["test_acc"] for seed in self.ok_seeds(variant)
                if (rows := self.rows(variant, seed))]
        return math.fsum(gaps) / len(gaps) if gaps else None

    def best_epoch(self, variant: str, column: str, higher_is_better: bool = True) -> int | None:
        """The epoch of the best :meth:`mean_per_epoch` of ``column`` (highest, or lowest with
        ``higher_is_better=False``), the earliest on ties; None when no epoch has a value. The
        report's "epoch of best" and the star on Graphs 1 and 2 both come from here."""
        means = self.mean_per_epoch(variant, column)
        sign = 1.0 if higher_is_better else -1.0
        return max(means, key=lambda e: (sign * means[e], -e)) if means else None


def is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_config(path: Path, config: dict) -> None:
    fix = f"restore config.json from a copy of this run folder, or {REBUILD}"
    if not isinstance(config.get("dataset"), str):
        raise RunFolderError(f"{path} has no 'dataset' name; {fix}")
    if not is_number(config.get("epochs")) or config["epochs"] < 1:
        raise RunFolderError(f"{path} has no valid 'epochs' (a whole number >= 1); {fix}")
    resolved = config.get("resolved")
    if resolved is not None:
        if not isinstance(resolved, dict):
            raise RunFolderError(f"{path}: 'resolved' is not an object; {fix}")
        classes = resolved.get("classes")
        if classes is not None and not (isinstance(classes, list) and classes):
            raise RunFolderError(
                f"{path}: 'resolved'.'classes' is not a list of class names; {fix}"
            )


def _check_stat(path: Path, name: str, key: str, stat: object) -> None:
    where = f"{path}: variant {name!r}, {key!r}"
    if not isinstance(stat, dict):
        raise RunFolderError(f"{where} is missing or not an object; {REBUILD}")
    values = stat.get("values")
    if not isinstance(values, list) or not all(is_number(v) and math.isfinite(v) for v in values):
        raise RunFolderError(f"{where}: 'values' is not a list of finite numbers; {REBUILD}")
    high = 100 if key.endswith("_acc") else math.inf
    if not all(0 <= v <= high for v in values):
        raise RunFolderError(f"{where}: a value is outside [0, {high:g}]; {REBUILD}")
    if stat.get("n") != len(values):
        raise RunFolderError(f"{where}: 'n' does not match the number of values; {REBUILD}")
    for k in ("mean", "std"):
        v = stat.get(k)
        if not (v is None or is_number(v) and math.isfinite(v)) or (v is None and values):
            raise RunFolderError(f"{where}: {k!r} is not a finite number; {REBUILD}")


def _check_summary(path: Path, summary: dict) -> None:
    if not summary["variants"]:
        raise RunFolderError(f"{path} lists no variants; {REBUILD}")
    for name, s in summary["variants"].items():
        if not isinstance(s, dict):
            raise RunFolderError(f"{path}: variant {name!r} is not an object; {REBUILD}")
        if s.get("name") != name:
            raise RunFolderError(f"{path}: variant {name!r} has name {s.get('name')!r}; {REBUILD}")
        if s.get("status") not in STATUSES:
            raise RunFolderError(
                f"{path}: variant {name!r} has status {s.get('status')!r}, expected one of "
                f"{', '.join(STATUSES)}; {REBUILD}"
            )
        if s.get("params") is not None and not is_number(s.get("params")):
            raise RunFolderError(f"{path}: variant {name!r}: 'params' is not a number; {REBUILD}")
        for key in ("seeds", "diverged_seeds"):
            seeds = s.get(key)
            if not isinstance(seeds, list) or not all(isinstance(x, int) for x in seeds):
                raise RunFolderError(
                    f"{path}: variant {name!r}: {key!r} is not a list of seed numbers; {REBUILD}"
                )
        for key in STAT_KEYS:
            _check_stat(path, name, key, s.get(key))
        for key in VAL_STAT_KEYS:
            _check_stat(path, name, key, s.get(key, {"mean": None, "std": None, "n": 0,
                                                     "values": []}))
    for key in ("epochs", "seeds"):
        if key in summary and not is_number(summary[key]):
            raise RunFolderError(f"{path}: {key!r} is not a number; {REBUILD}")


def _read_csv(path: Path, fix: str) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) of a CSV file, or RunFolderError naming the file."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            lines = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {fix}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunFolderError(f"{path} is damaged, not a CSV file ({e}); {fix}") from None
    except OSError as e:
        raise RunFolderError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    return header, lines


def _read_typed_csv(path: Path, columns: dict[str, tuple[type, str]], fix: str) -> list[dict]:
    """Rows of a run-folder CSV as dicts, each cell of ``columns`` converted by its type
    (``{column: (type, "what it must be")}``); RunFolderError naming the file, line and column
    on an empty file, wrong or repeated columns, a short row or a cell that does not convert."""
    header, lines = _read_csv(path, fix)
    if not header:
        raise RunFolderError(f"{path} is empty (no header line); {fix}")
    missing = [c for c in columns if c not in header]
    if missing or len(set(header)) != len(header):
        raise RunFolderError(
            f"{path} has the wrong columns: found {','.join(header)}; expected "
            f"{','.join(columns)}; {fix}"
        )
    pos = {c: header.index(c) for c in columns}
    rows = []
    for line, cells in lines:
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            raise RunFolderError(
                f"{path}, line {line}: {len(cells)} cells, expected {len(header)}; the file is "
                f"truncated or damaged; {fix}"
            )
        row: dict = {}
        for col, (kind, what) in columns.items():
            text = cells[pos[col]] if kind is str else cells[pos[col]].strip()
            try:
                row[col] = kind(text)
            except ValueError:
                raise RunFolderError(
                    f"{path}, line {line}, column {col!r}: {text!r} is not {what}; {fix}"
                ) from None
        rows.append(row)
    return rows


def _optional_float(text: str) -> float | None:
    """A number, or None for an empty cell (val_loss and val_acc without --val)."""
    return None if text == "" else float(text)


def _bounded(low: float, high: float = math.inf, optional: bool = False):
    """A cell reader for a finite number in [low, high] (an empty cell is None if ``optional``):
    a metrics row is written only for an epoch whose losses passed the health check (finite and
    below DIVERGED_LOSS, normlab.train), an accuracy is a share of images, a learning rate a
    schedule's value; a cell outside its range was edited or damaged."""
    def read(text: str) -> float | None:
        if optional and text == "":
            return None
        v = float(text)
        if not (math.isfinite(v) and low <= v <= high):
            raise ValueError(text)
        return v
    return read


def _metric_type(column: str) -> tuple:
    optional = column.startswith("val_")
    empty = " or empty" if optional else ""
    if column == "variant":
        return str, "text"
    if column in _INT_COLUMNS:
        return int, "a whole number"
    if column.endswith("_acc"):
        return _bounded(0.0, 100.0, optional), f"a percentage from 0 to 100{empty}"
    return _bounded(0.0, optional=optional), f"a finite number >= 0{empty}"   # losses, lr


_METRIC_TYPES = {c: _metric_type(c) for c in METRIC_COLUMNS}
_DIAGNOSTIC_TYPES = {c: (str, "text") if c in ("variant", "layer") else
                     (int, "a whole number") if c in ("seed", "epoch") else
                     (_optional_float, "a number or empty")
                     for c in DIAGNOSTIC_COLUMNS}
_PREDICTION_TYPES = {c: (float, "a number") if c == "confidence" else (int, "a number")
                     for c in PREDICTION_COLUMNS}


def _check_consistency(path: Path, summary: dict, metrics: list[dict]) -> None:
    variants = summary["variants"]
    unknown = sorted({r["variant"] for r in metrics} - set(variants))
    if unknown:
        raise RunFolderError(
            f"{path} has rows for variant {unknown[0]!r}, which summary.json does not list; the "
            f"two files come from different runs; {REBUILD}"
        )
    epochs = summary.get("epochs")
    seen: set[tuple[str, int, int]] = set()
    for r in metrics:
        key = (r["variant"], r["seed"], r["epoch"])
        if key in seen:
            raise RunFolderError(f"{path} has two rows for variant {key[0]!r} seed {key[1]} "
                                 f"epoch {key[2]}; the file was edited or damaged; {REBUILD}")
        seen.add(key)
    for name, s in variants.items():
        finals = []
        for seed in s["seeds"]:
            if seed in s["diverged_seeds"]:
                continue
            rows = sorted((r["epoch"], r["test_acc"]) for r in metrics
                          if r["variant"] == name and r["seed"] == seed)
            done = [e for e, _ in rows]
            if not done:
                raise RunFolderError(
                    f"{path} has no rows for variant {name!r} seed {seed}, which summary.json "
                    f"lists as finished; metrics.csv is truncated or from another run; {REBUILD}"
                )
            if epochs is not None and done[-1] != epochs:
                raise RunFolderError(
                    f"{path}: variant {name!r} seed {seed} ends at epoch {done[-1]}, but "
                    f"summary.json says {epochs} epochs; metrics.csv is truncated or from another "
                    f"run; {REBUILD}"
                )
            if done != list(range(1, done[-1] + 1)):
                missing = sorted(set(range(1, done[-1] + 1)) - set(done))
                raise RunFolderError(f"{path}: variant {name!r} seed {seed} has no row for epoch "
                                     f"{missing[0]}; the file was edited or damaged; {REBUILD}")
            finals.append(rows[-1][1])
        # The results table reads summary.json, the curves and comparisons metrics.csv: they must
        # tell the same final accuracies (both are written from the same numbers, in full).
        told = s["final_test_acc"]["values"]
        if len(told) != len(finals) or not all(math.isclose(a, b, abs_tol=1e-9) for a, b in
                                               zip(sorted(told), sorted(finals))):
            raise RunFolderError(f"{path} and summary.json disagree on the final test accuracies "
                                 f"of variant {name!r}; one of them was edited; {REBUILD}")


def load_run(run_dir: str | Path) -> RunData:
    """Read and check every file of a finished run folder (predictions are read when needed).

    A missing or damaged file raises RunFolderError naming the file, what is wrong, and the fix.
    """
    f = RunFolder(run_dir)
    if not f.path.is_dir():
        raise RunFolderError(f"{f.path} {not_a_folder(f.path)}; give the run folder a study "
                             "wrote")
    if not any(p.exists() for p in (f.config, f.env, f.summary, f.metrics)):
        raise RunFolderError(f"{f.path} is not a normlab run folder (none of its files are "
                             "there); give the folder a study wrote")
    fix_config = f"restore it from a copy of this run folder, or {REBUILD}"
    config = read_json_object(f.config, fix_config)
    _check_config(f.config, config)
    env = read_json_object(f.env, fix_config)
    if not f.summary.exists():
        raise RunFolderError(
            f"{f.summary} is missing; a study writes it when it finishes, so the study is still "
            f"running or was interrupted: wait for it, continue it with 'normlab study --resume "
            f"{f.path}', or {REBUILD}"
        )
    summary = load_summary(f.path)
    _check_summary(f.summary, summary)
    metrics = _read_typed_csv(f.metrics, _METRIC_TYPES, REBUILD)
    _check_consistency(f.metrics, summary, metrics)
    if config.get("diagnostics") and metrics and not f.diagnostics.exists():
        raise RunFolderError(f"{f.diagnostics} is missing, but {f.config.name} says the runs "
                             f"recorded diagnostics; restore it from a copy of this run folder, "
                             f"or {REBUILD}")
    timing = read_json_object(f.timing_json, REBUILD) if f.timing_json.exists() else None
    return RunData(f.path, config, summary, metrics, env, timing)


def load_diagnostics(run_dir: str | Path) -> list[dict]:
    """The rows of a run folder's diagnostics.csv (columns DIAGNOSTIC_COLUMNS; an empty cell is
    None), or [] when the study recorded none (--no-diagnostics, or made before they existed).
    RunFolderError naming the line and column of a damaged file."""
    path = RunFolder(run_dir).diagnostics
    if not path.exists():
        return []
    return _read_typed_csv(path, _DIAGNOSTIC_TYPES, REBUILD)


def read_predictions(path: str | Path, labels=None, n_images: int | None = None) -> list[dict]:
    """Rows of a predictions CSV (``index``, ``label``, ``pred`` ints; ``confidence`` float).

    With ``labels`` (the test split's labels as found now), every row is checked against them,
    so that a grid never shows images of another dataset copy than the one the run used; with
    ``n_images`` (images given without labels), every index must fall among them.
    """
    path = Path(path)
    rows = _read_typed_csv(path, _PREDICTION_TYPES, REBUILD)
    fix = ("the data is not the one this run used; point the run's data_dir or $NORMLAB_DATA at "
           "the right copy")
    true = None
    if labels is not None:
        true = [int(x) for x in labels.tolist()] if hasattr(labels, "tolist") else list(labels)
        if len(true) != len(rows):
            raise RunFolderError(f"{path} has {len(rows)} rows but the test split found has "
                                 f"{len(true)} images; {fix}")
        n_images = len(true)
    for r in rows:
        if n_images is not None and not 0 <= r["index"] < n_images:
            raise RunFolderError(f"{path}: index {r['index']} is outside the {n_images} test "
                                 f"images found; {fix}")
        if true is not None and true[r["index"]] != r["label"]:
            raise RunFolderError(f"{path}: test image {r['index']} has label {true[r['index']]} "
                                 f"in the data found but {r['label']} in the predictions; {fix}")
    return rows


def load_test_images(run: RunData, data_dir: str | Path | None = None):
    """(images, labels) of the run's test split: from ``data_dir`` if given, else from where
    the run found its data (DataError when they cannot be found)."""
    from normlab import data

    return data.load_split(run.dataset, train=False,
                           data_dir=data_dir if data_dir is not None else run.config.get("data_dir"))
