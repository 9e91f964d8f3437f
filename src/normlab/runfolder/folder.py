"""The run folder: every file name, column list, writer and reader.

This module alone knows how a study lays out its results (and, with
:mod:`normlab.runfolder.sweepfolder`, a sweep); everything else (the study driver, the Ray
backend, reports, plots, scripts, the notebook, the tests) asks the package. Run folder::

    config.json                         the fully resolved Config (+ 'resolved': device, seeds, ...)
    env.json                            versions, device, threads, normlab version and git commit
    metrics.csv                         METRIC_COLUMNS, one row per variant, seed and epoch
    timing.csv, timing.json             seconds per epoch; the study's wall time and memory
    diagnostics.csv                     DIAGNOSTIC_COLUMNS per run, epoch and layer (probe batch)
    summary.json                        per variant: params, status, {mean, std, n, values} stats
    predictions/<variant>-s<seed>.csv   PREDICTION_COLUMNS of the final model on every test image
    checkpoints/<variant>-s<seed>.pt    final weights, status and metrics of a finished run
    checkpoints/group-<k>.pt            training state of group k after its last finished epoch
    figures/, report.md                 drawn from the files above by ``normlab report``; each
                                        figure a PNG, with an SVG (PDF) of the same stem
    .normlab.lock                       held (flock) while a process writes into the folder

A sweep folder (:mod:`normlab.runfolder.sweepfolder`) holds a run folder per point. Every file
is written atomically (:mod:`normlab.store`). Reading needs no torch except for
checkpoints. The readers that check a finished folder are in :mod:`normlab.runfolder.checks`.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from normlab import __version__
from normlab.errors import ConfigError, RunFolderError
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, FIGURE_FORMATS
from normlab.runfolder.results import RunResult, summarize
from normlab.runfolder.timing import read_timing
from normlab.store import (atomic_write_text, ensure_writable, load_checkpoint, not_a_folder,
                           read_json_object, remove_stale_temporaries, save_checkpoint, write_csv,
                           write_json)
from normlab.variants import Variant

# metrics.csv: only what the seed and config decide, so a resumed study writes the same bytes.
# val_loss, val_acc: on the --val images held out of training; empty without --val.
METRIC_COLUMNS = ("variant", "seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                  "test_loss", "test_acc", "lr")
TIMING_COLUMNS = ("variant", "seed", "epoch", "seconds")   # vary from run to run
PREDICTION_COLUMNS = ("index", "label", "pred", "confidence")
# An experiment's tables in its sweep folder (normlab.experiment_report), after its swept
# settings: final-epoch diagnostics per run, and BatchNorm tested with running vs batch statistics.
MECHANISM_COLUMNS = ("variant", "seed", "dead_pct", "weight_norm", "grad_ratio", "bn_gap",
                     "loss_grad_ratio")
BATCH_STAT_COLUMNS = ("variant", "seed", "acc_running", "acc_batch")
PROBE_SIZE = 512   # diagnostics' probe batch: the first PROBE_SIZE training images
# diagnostics.csv (normlab.diagnostics says what each column measures); empty where a measure
# does not apply (no running statistics, the classifier's activations).
DIAGNOSTIC_COLUMNS = ("variant", "seed", "epoch", "layer", "in_mean", "in_std", "out_mean",
                      "out_std", "dead_frac", "weight_norm", "grad_norm", "bn_mean_gap",
                      "bn_std_ratio")
SWEEP_COLUMNS = ("variant", "seed", "status", "final_val_acc", "best_val_acc", "final_test_acc",
                 "best_test_acc", "final_test_loss", "message")
STAT_KEYS = ("final_test_acc", "best_test_acc", "final_test_loss")
# weights.csv (scripts/l1_weights.py): size of the L1-penalized weights of each finished run.
WEIGHT_THRESHOLDS = (1e-3, 1e-2)
WEIGHT_COLUMNS = ("variant", "l1", "seed", "weights", "sum_abs_w",
                  *(f"pct_below_{t:g}" for t in WEIGHT_THRESHOLDS))
VAL_STAT_KEYS = ("final_val_acc", "best_val_acc")   # n = 0 without --val
STATUSES = ("ok", "partly-diverged", "diverged")
FIGURES = {"test_acc": "test_accuracy.png", "test_loss": "test_loss.png",
           "train_vs_test": "train_vs_test.png"}
STATE_VERSION = 1   # format of checkpoints/group-<k>.pt
REBUILD = "re-run the study to rebuild the run folder"


def figure_files(png: str | Path,
                 formats: Sequence[str] = DEFAULT_FIGURE_FORMATS) -> dict[str, Path]:
    """The files of one figure by format: ``png`` always, then ``png`` with the suffix of each
    other of ``formats`` (FIGURE_FORMATS order): figures/test_loss.png, figures/test_loss.svg."""
    png = Path(png)
    return {"png": png} | {f: png.with_suffix(f".{f}") for f in FIGURE_FORMATS[1:] if f in formats}


def six_digits(x: float) -> float:
    """A measurement as the run folder stores it (diagnostics.csv, mechanism.csv): 6 significant
    digits, far finer than the noise of what is measured."""
    return float(f"{x:.6g}")


def csv_cell(v: Any) -> Any:
    """A diagnostics cell: NaN and absent measures are written empty."""
    return "" if v is None or (isinstance(v, float) and v != v) else v


def check_version(path: Path, saved: dict, fix: str) -> None:
    """RunFolderError unless ``saved`` (config.json or sweep.json) is this version's: only the
    version that started a folder trains it further, so its runs share one engine."""
    resolved = saved.get("resolved")
    version = (resolved if isinstance(resolved, dict) else saved).get("normlab_version")
    if version != __version__:
        raise RunFolderError(f"{path} was written by normlab {version}, this is {__version__}; "
                             f"{fix}")


def run_name(variant: str, seed: int) -> str:
    """The stem of a run's files: predictions/<stem>.csv, checkpoints/<stem>.pt."""
    return f"{variant}-s{seed}"


# ----------------------------------------------------------------------------------------------
# What a run folder and a sweep folder share


class ResultsFolder:
    """A results folder: its report.md, figures/ and weights.csv (scripts/l1_weights.py)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.report = self.path / "report.md"
        self.figures = self.path / "figures"
        self.weights = self.path / "weights.csv"

    def write_report(self, text: str) -> Path:
        atomic_write_text(self.report, text)
        return self.report

    def write_weights(self, rows: list[tuple]) -> None:
        write_csv(self.weights, WEIGHT_COLUMNS, rows)

    def ensure_writable(self):
        """Create the folder if needed and prove it writable, before any long work starts."""
        ensure_writable(self.path)
        return self


# ----------------------------------------------------------------------------------------------
# The run folder


class RunFolder(ResultsFolder):
    """Paths, writers and readers of one run folder."""

    def __init__(self, path: str | Path):
        super().__init__(path)
        self.config = self.path / "config.json"
        self.env = self.path / "env.json"
        self.metrics = self.path / "metrics.csv"
        self.timing_csv = self.path / "timing.csv"
        self.diagnostics = self.path / "diagnostics.csv"
        self.timing_json = self.path / "timing.json"
        self.summary = self.path / "summary.json"
        self.lock_file = self.path / ".normlab.lock"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def predictions(self, variant: str, seed: int) -> Path:
        return self.path / "predictions" / f"{run_name(variant, seed)}.csv"

    def checkpoint(self, variant: str, seed: int) -> Path:
        return self.path / "checkpoints" / f"{run_name(variant, seed)}.pt"

    def group_state(self, k: int) -> Path:
        return self.path / "checkpoints" / f"group-{k}.pt"

    def figure(self, kind: str) -> Path:
        """A curve figure: ``kind`` one of FIGURES (test_acc, test_loss, train_vs_test)."""
        return self.figures / FIGURES[kind]

    def diagnostics_figure(self) -> Path:
        """The figure of diagnostics.csv (drawn only when the study recorded diagnostics)."""
        return self.figures / "diagnostics.png"

    def misclassified_figure(self, variant: str) -> Path:
        return self.figures / f"misclassified_{variant}.png"

    @property
    def finished(self) -> bool:
        """The study ended, report included (timing.json's wall time is written after it)."""
        return self.summary.exists() and "wall_seconds" in read_timing(self.timing_json)

    # -- creating and locking ----------------------------------------------------------------
    def create(self) -> "RunFolder":
        """Make a new, empty run folder (or take an empty one); refuse one that holds files. A
        folder holding only the lock file of a study that failed to start counts as empty,
        unless a process holds that lock."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ConfigError(f"--out {str(out)!r} is a file; give a folder path")
        try:
            names = {p.name for p in out.iterdir()} if out.is_dir() else set()
        except OSError as e:
            raise ConfigError(f"--out {str(out)!r} cannot be read ({e.strerror or e}); "
                              "choose another folder") from None
        if names - {self.lock_file.name}:
            raise ConfigError(f"output folder {str(out)!r} is not empty; choose a new --out so "
                              "earlier results are kept")
        if names:
            with self.lock():   # refuses a folder another process is starting in
                pass
        return self.ensure_writable()

    def remove_if_unused(self) -> None:
        """Remove the folder if nothing but the lock file is in it (a study that failed before
        writing anything) and no other process holds its lock. The lock file is unlinked only
        while this process holds the lock; a process that opened it before then finds, once it
        gets the lock, that the file it locked is no longer the folder's and tries again (see
        :meth:`lock`), so two processes never both hold "the" lock."""
        try:
            import fcntl
        except ImportError:  # Windows
            return
        try:
            if {p.name for p in self.path.iterdir()} - {self.lock_file.name}:
                return
            with open(self.lock_file, "a+") as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    return   # held by another process: its folder now
                self.lock_file.unlink()
                self.path.rmdir()
        except OSError:
            pass

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold an exclusive lock (flock) on the folder while writing into it, so that a second
        process cannot interleave its files with ours. The lock dies with the process, so a
        killed study leaves nothing to clean up; the lock file stays in place."""
        try:
            import fcntl
        except ImportError:  # Windows
            yield
            return
        for _ in range(100):
            try:
                f = open(self.lock_file, "a+")
            except FileNotFoundError:
                raise ConfigError(f"{self.path} was removed while normlab started in it; try "
                                  "again") from None
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise ConfigError(f"{self.path} is in use by another normlab process; wait for "
                                  "it to finish or stop it, then try again") from None
            try:   # still the folder's lock file? (remove_if_unused may have unlinked it)
                same = os.stat(self.lock_file).st_ino == os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            f.close()
        else:
            raise ConfigError(f"{self.path} keeps changing under normlab; check that no other "
                              "program removes files there, then try again")
        try:
            yield
        finally:
            f.close()   # closing the descriptor releases the flock

    def remove_stale_temporaries(self) -> list[Path]:
        return remove_stale_temporaries(self.path)

    # -- writers ------------------------------------------------------------------------------
    def write_start(self, resolved: dict, env: dict) -> None:
        """config.json and env.json of a new study."""
        write_json(self.config, resolved)
        write_json(self.env, env)

    def write_tables(self, results: list[RunResult]) -> None:
        """metrics.csv, timing.csv and diagnostics.csv from every run's epochs so far, in a fixed order (variant,
        seed, epoch), so the bytes do not depend on which worker finished first."""
        metrics, timing = [], []
        for r in results:
            for row in r.epochs:
                metrics.append((r.variant.name, r.seed) + tuple(row[k] for k in METRIC_COLUMNS[2:]))
                timing.append((r.variant.name, r.seed, row["epoch"], row["seconds"]))
        write_csv(self.metrics, METRIC_COLUMNS, metrics)
        write_csv(self.timing_csv, TIMING_COLUMNS, timing)
        diagnostics = [(r.variant.name, r.seed) + tuple(csv_cell(d.get(k))
                                                        for k in DIAGNOSTIC_COLUMNS[2:])
                       for r in results for d in r.diagnostics]
        if diagnostics:
            write_csv(self.diagnostics, DIAGNOSTIC_COLUMNS, diagnostics)

    def write_run_outputs(self, r: RunResult) -> None:
        """A finished run's predictions and final checkpoint (which also records its status and
        metrics, so that a sweep can tell a finished run from an unfinished one)."""
        if r.status == "ok":
            p = r.predictions
            rows = zip(range(len(p.label)), p.label.tolist(), p.pred.tolist(),
                       [round(c, 6) for c in p.confidence.tolist()])
            write_csv(self.predictions(r.variant.name, r.seed), PREDICTION_COLUMNS, rows)
        save_checkpoint(self.checkpoint(r.variant.name, r.seed), {
            "model": r.state_dict if r.status == "ok" else None, "variant": r.variant.as_dict(),
            "seed": r.seed, "normlab_version": __version__, "status": r.status,
            "message": r.message, "params": r.params, "epochs": [dict(e) for e in r.epochs],
            "diagnostics": [dict(d) for d in r.diagnostics],
        })

    def write_group_state(self, k: int, state: dict) -> None:
        save_checkpoint(self.group_state(k), {"version": STATE_VERSION,
                                              "normlab_version": __version__, "state": state})

    def write_summary(self, cfg, results: list[RunResult]) -> dict:
        summary = {"normlab_version": __version__, "dataset": cfg.dataset, "epochs": cfg.epochs,
                   "seeds": cfg.seeds, "variants": summarize(cfg.parsed_variants(), results)}
        write_json(self.summary, summary)
        return summary

    # -- readers ------------------------------------------------------------------------------
    def read_saved_config(self) -> dict:
        """config.json, whole ('resolved' included). Any version's: a folder is read and
        reported by any version, and trained further only by its own (:func:`check_version`)."""
        if not self.path.is_dir():
            raise ConfigError(f"--resume {str(self.path)!r} {not_a_folder(self.path)}; give the "
                              "run folder a study wrote, or start a new study with --out")
        if not self.config.exists():
            raise ConfigError(f"--resume {str(self.path)!r}: no config.json there; give the folder "
                              "a study wrote, or start a new study with --out")
        return read_json_object(self.config, "start a new study with --out")

    def read_run_outputs(self, variant: Variant, seed: int) -> RunResult | None:
        """What :meth:`write_run_outputs` recorded for a finished run, or None when the run has
        not finished here. RunFolderError when its final checkpoint is damaged."""
        path = self.checkpoint(variant.name, seed)
        if not path.exists():
            return None
        saved = load_checkpoint(path)
        if not isinstance(saved, dict) or "epochs" not in saved or "status" not in saved:
            return None
        return RunResult(variant=variant, seed=seed, params=saved["params"],
                         status=saved["status"], epochs=saved["epochs"],
                         message=saved.get("message", ""), state_dict=saved.get("model"),
                         diagnostics=saved.get("diagnostics", []))

    def read_group_state(self, k: int, names: list[tuple[str, int]]) -> dict | None:
        """The training state of group k (runs ``names``: (variant, seed)), or None if absent."""
        path = self.group_state(k)
        if not path.exists():
            return None
        ckpt = load_checkpoint(path)
        state = ckpt.get("state") if isinstance(ckpt, dict) else None
        if not isinstance(state, dict) or ckpt.get("version") != STATE_VERSION or \
                [(m["variant"]["name"], m["seed"]) for m in state.get("members", [])] != names:
            raise RunFolderError(f"{path} does not hold the training state of runs {names}; "
                                 "delete it to retrain those runs from the start")
        return state
