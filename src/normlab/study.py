"""A study: every variant x every seed, trained and evaluated, saved as a run folder.

Run folder layout::

    config.json                      the fully resolved Config (+ parsed variants, device, seeds)
    env.json                         versions, device, threads
    metrics.csv                      variant,seed,epoch,train_loss,train_acc,test_loss,test_acc,lr
    timing.csv                       variant,seed,epoch,seconds
    timing.json                      wall time of the study, workers and threads
    summary.json                     per variant: params, status, final/best test accuracy, final loss
    predictions/<variant>-s<seed>.csv   index,label,pred,confidence of the final model
    checkpoints/<variant>-s<seed>.pt    final weights (torch.load(..., weights_only=True))
    checkpoints/group-<k>.pt            training state after the last finished epoch (for --resume)

How the runs share the machine: runs are cut into *groups* of ``group_size`` runs, each trained
as one network (:class:`normlab.train.GroupTrainer`), and ``workers`` threads train groups side by
side, one epoch at a time, always picking the group that is furthest behind. On a CPU each worker
uses ``cores // workers`` torch threads: tiny convolutions scale poorly across threads, so two
one-thread workers do almost twice the work of one two-thread worker. On a GPU all runs form one
group. None of this changes a run's numbers beyond floating-point rounding, and the same config on
the same machine gives the same numbers whichever worker trains which epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from normlab import __version__
from normlab.batches import DeviceSplit, split_stats, to_device_split
from normlab.config import Config, Variant
from normlab.errors import ConfigError, RunFolderError
from normlab.layout import METRIC_COLUMNS, PREDICTION_COLUMNS, TIMING_COLUMNS, run_name
from normlab.report import format_pm
from normlab.store import (ensure_writable, folder_lock, load_checkpoint, read_json_object,
                           remove_stale_temporaries, save_checkpoint, write_csv, write_json)
from normlab.train import GroupTrainer, RunResult, select_device

STATE_VERSION = 1   # format of checkpoints/group-<k>.pt


@dataclass
class StudyData:
    train: DeviceSplit
    test: DeviceSplit
    mean: float
    std: float
    classes: tuple[str, ...]


def load_study_data(cfg: Config, device: torch.device) -> StudyData:
    """Load, verify and move the dataset to ``device``; normalization stats from the train split."""
    from normlab import data

    train_x, train_y = data.load_split(cfg.dataset, train=True, data_dir=cfg.data_dir)
    test_x, test_y = data.load_split(cfg.dataset, train=False, data_dir=cfg.data_dir)
    if cfg.train_subset is not None:
        if cfg.train_subset > len(train_y):
            raise ConfigError(
                f"--train-subset {cfg.train_subset} exceeds the {len(train_y)} training images; "
                "use a smaller number"
            )
        train_x, train_y = train_x[: cfg.train_subset], train_y[: cfg.train_subset]
    train = to_device_split(train_x, train_y, device)
    test = to_device_split(test_x, test_y, device)
    mean, std = split_stats(train)
    return StudyData(train, test, mean, std, data.get_spec(cfg.dataset).classes)


def default_out(cfg: Config) -> Path:
    return Path("runs") / f"{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def resolved_config(cfg: Config, device: torch.device, data: StudyData) -> dict:
    d = cfg.to_dict()
    d["resolved"] = {
        "normlab_version": __version__,
        "device": str(device),
        "seed_list": cfg.seed_list(),
        "variants": [v.as_dict() for v in cfg.parsed_variants()],
        "train_images": len(data.train),
        "test_images": len(data.test),
        "pixel_mean": data.mean,
        "pixel_std": data.std,
        "classes": list(data.classes),
    }
    return d


def environment(device: torch.device) -> dict:
    import numpy

    env = {
        "normlab": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


def _stats(values: list[float]) -> dict:
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    return {"mean": mean, "std": std, "n": len(values), "values": values}


def summarize(variants: tuple[Variant, ...], results: list[RunResult]) -> dict:
    """Per variant: parameters, status and the seed statistics of the final and best metrics."""
    out = {}
    for v in variants:
        runs = [r for r in results if r.variant.name == v.name]
        ok = [r for r in runs if r.status == "ok"]
        diverged = [r.seed for r in runs if r.status != "ok"]
        status = "ok" if not diverged else ("diverged" if not ok else "partly-diverged")
        out[v.name] = {
            "name": v.name, "norm": v.norm, "l1": v.l1, "l2": v.l2,
            "params": runs[0].params if runs else None,
            "status": status,
            "seeds": [r.seed for r in runs],
            "diverged_seeds": diverged,
            "final_test_acc": _stats([r.epochs[-1]["test_acc"] for r in ok]),
            "best_test_acc": _stats([max(e["test_acc"] for e in r.epochs) for r in ok]),
            "final_test_loss": _stats([r.epochs[-1]["test_loss"] for r in ok]),
        }
    return out


def format_table(summary: dict) -> str:
    """The final results table as aligned text."""
    rows = [("variant", "params", "status", "final test acc %", "best test acc %", "final test loss")]
    for s in summary.values():
        rows.append((s["name"], str(s["params"]), s["status"],
                     format_pm(s["final_test_acc"], 2, missing="-"),
                     format_pm(s["best_test_acc"], 2, missing="-"),
                     format_pm(s["final_test_loss"], 4, missing="-")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_predictions(path: Path, preds) -> None:
    rows = zip(range(len(preds.label)), preds.label.tolist(), preds.pred.tolist(),
               [round(c, 6) for c in preds.confidence.tolist()])
    write_csv(path, PREDICTION_COLUMNS, rows)


def prepare_out(out: str | Path | None, cfg: Config) -> Path:
    out = Path(out) if out is not None else default_out(cfg)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder path")
    try:
        occupied = out.is_dir() and any(out.iterdir())
    except OSError as e:
        raise ConfigError(f"--out {str(out)!r} cannot be read ({e.strerror or e}); "
                          "choose another folder") from None
    if occupied:
        raise ConfigError(
            f"output folder {str(out)!r} is not empty; choose a new --out so earlier results are kept"
        )
    return ensure_writable(out)


def _remove_if_empty(folder: Path) -> None:
    (folder / ".normlab.lock").unlink(missing_ok=True)   # ours; released by the caller
    try:
        folder.rmdir()  # only succeeds on an empty folder
    except OSError:
        pass


def plan_groups(cfg: Config, device: torch.device) -> list[list[tuple[Variant, int]]]:
    """The study's runs (variant-major, then seed) cut into groups trained as one network."""
    runs = [(v, seed) for v in cfg.parsed_variants() for seed in cfg.seed_list()]
    size = cfg.group_size or (len(runs) if device.type != "cpu" else 1)
    return [runs[i:i + size] for i in range(0, len(runs), size)]


def plan_workers(cfg: Config, device: torch.device, groups: int) -> tuple[int, int]:
    """(worker threads, torch threads per worker)."""
    cores = max(1, torch.get_num_threads())
    if cfg.compile:
        return 1, cores   # torch.compile is not safe to run from several threads at once
    if device.type != "cpu":
        return max(1, min(cfg.workers or 1, groups)), cores
    workers = max(1, min(cfg.workers or cores, groups))
    return workers, max(1, cores // workers)


def config_diff(saved: dict, wanted: dict, keys=None) -> list[str]:
    """``"key: saved X, now Y"`` for each of ``keys`` (default: all of ``wanted``'s but
    'resolved') whose value differs between two config dicts."""
    keys = [k for k in wanted if k != "resolved"] if keys is None else keys
    return [f"{k}: saved {saved.get(k)!r}, now {wanted.get(k)!r}" for k in keys
            if saved.get(k) != wanted.get(k)]


def read_saved_config(run_dir: Path) -> dict:
    """config.json of an existing run folder, whole ('resolved' included), written by this
    normlab version."""
    path = run_dir / "config.json"
    if not path.exists():
        raise ConfigError(f"--resume {str(run_dir)!r}: no config.json there; give the folder a "
                          "study wrote, or start a new study with --out")
    saved = read_json_object(path, "start a new study with --out")
    resolved = saved.get("resolved") if isinstance(saved.get("resolved"), dict) else {}
    version = resolved.get("normlab_version")
    if version != __version__:
        raise RunFolderError(f"{run_dir} was written by normlab {version}, this is {__version__}; "
                             "resume it with that version or start a new study with --out")
    return saved


def load_saved_config(run_dir: Path) -> dict:
    """config.json of an existing run folder without its 'resolved' part: the Config's fields."""
    return {k: v for k, v in read_saved_config(run_dir).items() if k != "resolved"}


def _check_same_machine_kind(out: Path, resolved: dict, device: torch.device,
                             group_size: int) -> None:
    """A training state continues only on the kind of device, and in the groups, it was made in
    (``resolved``: the saved config.json's 'resolved' part)."""
    saved_device, saved_size = resolved.get("device"), resolved.get("group_size")
    if isinstance(saved_device, str) and torch.device(saved_device).type != device.type:
        raise ConfigError(f"{out} was trained on {saved_device}, but here it would continue on "
                          f"{device}; resume it on a machine with {saved_device.split(':')[0]} "
                          "(a training state does not move between kinds of device)")
    if isinstance(saved_size, int) and saved_size != group_size:
        raise ConfigError(f"{out} trained its runs in groups of {saved_size}, here they would "
                          f"be groups of {group_size}; resume with --group-size {saved_size} "
                          "in the saved config, or start a new study")


def _load_state(path: Path, cfg: Config, runs: list[tuple[Variant, int]]) -> dict | None:
    if not path.exists():
        return None
    ckpt = load_checkpoint(path)
    state = ckpt.get("state") if isinstance(ckpt, dict) else None
    names = [(v.name, s) for v, s in runs]
    if not isinstance(state, dict) or ckpt.get("version") != STATE_VERSION or \
            [(m["variant"]["name"], m["seed"]) for m in state.get("members", [])] != names:
        raise RunFolderError(f"{path} does not hold the training state of runs {names}; "
                             "delete it to retrain those runs from the start")
    return state


def run_study(cfg: Config, out: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print, report: bool = True,
              resume: bool = False) -> Path:
    """Train every variant x seed of ``cfg`` and write the run folder (and, with ``report``, its
    figures and report.md). Returns its path.

    With ``resume``, ``out`` is an existing run folder made with the same config: finished runs
    are kept, unfinished ones continue from their last finished epoch, and the final files are
    the same as those of an uninterrupted study.
    """
    t_start = time.perf_counter()
    device = select_device(cfg.device)
    lock = contextlib.ExitStack()
    if resume:
        if out is None:
            raise ConfigError("--resume needs the run folder to continue")
        out = Path(out)
        saved = read_saved_config(out)
        diff = config_diff(saved, cfg.to_dict())
        if diff:
            raise ConfigError(f"cannot resume {str(out)!r} with a different config ({'; '.join(diff)}); "
                              "drop the differing flags, or start a new study with --out")
        ensure_writable(out)
        lock.enter_context(folder_lock(out))  # one process at a time in a run folder
        remove_stale_temporaries(out)      # half-written files of a killed process
    else:
        out = prepare_out(out, cfg)        # fail on a bad folder before loading anything
        lock.enter_context(folder_lock(out))
    with lock:
        return _run_study_locked(cfg, out, device, t_start, progress, log, report,
                                 saved["resolved"] if resume else None)


def _run_study_locked(cfg: Config, out: Path, device: torch.device, t_start: float,
                      progress: bool, log: Callable[[str], None], report: bool,
                      saved_resolved: dict | None) -> Path:
    resume = saved_resolved is not None
    try:
        data = load_study_data(cfg, device)  # fail on missing or corrupt data before training
    except BaseException:
        if not resume:
            _remove_if_empty(out)          # leave no empty run folder behind
        raise
    groups = plan_groups(cfg, device)
    workers, threads = plan_workers(cfg, device, len(groups))
    if resume:
        _check_same_machine_kind(out, saved_resolved, device, len(groups[0]))
    log(f"normlab {__version__}: device {device}, {len(groups)} group(s) of runs, {workers} "
        f"worker(s) x {threads} thread(s), out {out}")
    resolved = resolved_config(cfg, device, data)
    from normlab.train import resolve_precision

    resolved["resolved"].update(precision=resolve_precision(cfg.precision, device),
                                group_size=len(groups[0]), workers=workers,
                                threads_per_worker=threads)
    if not resume:
        write_json(out / "config.json", resolved)
        write_json(out / "env.json", environment(device))
    states = [_load_state(out / "checkpoints" / f"group-{k}.pt", cfg, g) if resume else None
              for k, g in enumerate(groups)]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trainers = [GroupTrainer(cfg, g, data.train, data.test, data.mean, data.std, resume=st)
                    for g, st in zip(groups, states)]
        _train_all(trainers, out, workers, progress, log)
    except KeyboardInterrupt:
        log(f"interrupted: every run is saved up to its last finished epoch; continue with "
            f"'normlab study --resume {out}'")
        raise
    finally:
        torch.set_num_threads(old_threads)
    results = [r for t in trainers for r in t.results]
    summary = write_summary(out, cfg, results)
    log(format_table(summary["variants"]))
    # Seconds from the call on (data loading and checks included); a resumed study adds the time
    # of its earlier sessions. train_seconds ends here, wall_seconds when the report is written.
    before = _previous_timing(out) if resume else {}
    timing = {"train_seconds": time.perf_counter() - t_start + before.get("train_seconds", 0.0),
              "wall_seconds": None, "workers": workers, "threads_per_worker": threads,
              "resumed": resume, "peak_rss_mb": _peak_rss_mb()}
    write_json(out / "timing.json", timing)
    if report:
        from normlab.report import write_report  # the same code as `normlab report RUN_DIR`

        write_report(out)
    timing["wall_seconds"] = time.perf_counter() - t_start + before.get("wall_seconds", 0.0)
    timing["peak_rss_mb"] = _peak_rss_mb()
    write_json(out / "timing.json", timing)
    log(f"results in {out} ({timing['wall_seconds']:.0f} s)")
    return out


def _peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (None where unknown)."""
    try:
        import resource
    except ImportError:   # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def _previous_timing(out: Path) -> dict[str, float]:
    """train_seconds and wall_seconds of the earlier sessions of a resumed study."""
    import json

    try:
        saved = json.loads((out / "timing.json").read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {k: float(saved[k]) for k in ("train_seconds", "wall_seconds")
            if isinstance(saved.get(k), (int, float))}


class _Stop(Exception):
    """Raised inside a worker to abandon its epoch (Ctrl-C in the main thread)."""


def _train_all(trainers: list[GroupTrainer], out: Path, workers: int, progress: bool,
               log: Callable[[str], None]) -> None:
    """Train every group to the end with ``workers`` threads, one epoch at a time, writing the
    run folder's files after each epoch."""
    from tqdm.auto import tqdm  # imported here: the engine works without a terminal too

    lock = threading.Lock()
    stop = threading.Event()
    busy: set[int] = set()
    errors: list[BaseException] = []
    per_epoch = len(trainers[0].bounds)
    total = sum(t.total_steps for t in trainers)
    done_steps = {k: t.epoch * per_epoch for k, t in enumerate(trainers)}
    bar = tqdm(total=total, initial=sum(done_steps.values()), unit="batch", disable=not progress,
               desc=f"{sum(len(t.runs) for t in trainers)} runs", dynamic_ncols=True)

    with lock:
        for k, t in enumerate(trainers):
            if t.done:
                _finish(t, out)
        _write_tables(trainers, out)

    def next_group() -> int | None:
        waiting = [k for k, t in enumerate(trainers) if not t.done and k not in busy]
        if not waiting:
            return None
        k = min(waiting, key=lambda k: (trainers[k].epoch, k))   # the one furthest behind
        busy.add(k)
        return k

    def work() -> None:
        try:
            while not stop.is_set():
                with lock:
                    k = next_group()
                if k is None:
                    return
                t = trainers[k]
                base = t.epoch * per_epoch

                def on_step(steps: int, loss: float, k=k, base=base) -> None:
                    if stop.is_set():
                        raise _Stop
                    with lock:
                        bar.update(base + steps - done_steps[k])
                        done_steps[k] = base + steps
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

                try:
                    t.train_epoch(on_step)
                except _Stop:
                    return
                state = t.state()
                with lock:
                    save_checkpoint(out / "checkpoints" / f"group-{k}.pt",
                                    {"version": STATE_VERSION, "normlab_version": __version__,
                                     "state": state})
                    if t.done:
                        _finish(t, out)
                    _write_tables(trainers, out)
                    busy.discard(k)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            errors.append(e)
            stop.set()

    threads = [threading.Thread(target=work, name=f"normlab-worker-{i}", daemon=True)
               for i in range(workers)]
    try:
        for th in threads:
            th.start()
        # Poll with sleep: Ctrl-C raised inside Thread.join() can leave the interpreter unable
        # to shut down cleanly (it aborts at exit), while one raised in sleep() is harmless.
        while any(th.is_alive() for th in threads):
            time.sleep(0.1)
    except KeyboardInterrupt:
        stop.set()
        while any(th.is_alive() for th in threads):
            time.sleep(0.05)
        raise
    finally:
        bar.close()
    if errors:
        raise errors[0]


def _finish(t: GroupTrainer, out: Path) -> None:
    """The final files of a finished group's runs: predictions and weights."""
    t.final_outputs()
    for r in t.results:
        write_run_outputs(out, r)


def _write_tables(trainers: list[GroupTrainer], out: Path) -> None:
    # Only the epochs a trainer has finished: another worker may be appending its next rows.
    done = []
    for t in trainers:
        finished = t.epoch
        for r in t.results:
            rows = [row for row in list(r.epochs) if row["epoch"] <= finished]
            done.append(dataclasses.replace(r, epochs=rows))
    write_tables(out, done)


def write_tables(out: Path, results: list[RunResult]) -> None:
    """metrics.csv and timing.csv from every run's epochs so far, in a fixed order (variant, seed,
    epoch), so the bytes do not depend on which worker finished first."""
    metrics, timing = [], []
    for r in results:
        for row in r.epochs:
            metrics.append((r.variant.name, r.seed) + tuple(row[k] for k in METRIC_COLUMNS[2:]))
            timing.append((r.variant.name, r.seed, row["epoch"], row["seconds"]))
    write_csv(out / "metrics.csv", METRIC_COLUMNS, metrics)
    write_csv(out / "timing.csv", TIMING_COLUMNS, timing)


def write_run_outputs(out: Path, r: RunResult) -> None:
    """A finished run's predictions and final checkpoint (which also records its status and
    metrics, so that a sweep can tell a finished run from an unfinished one)."""
    name = run_name(r.variant.name, r.seed)
    if r.status == "ok":
        write_predictions(out / "predictions" / f"{name}.csv", r.predictions)
    save_checkpoint(out / "checkpoints" / f"{name}.pt", {
        "model": r.state_dict if r.status == "ok" else None, "variant": r.variant.as_dict(),
        "seed": r.seed, "normlab_version": __version__, "status": r.status,
        "message": r.message, "params": r.params, "epochs": [dict(e) for e in r.epochs],
    })


def read_run_outputs(out: Path, variant: Variant, seed: int) -> RunResult | None:
    """The RunResult that :func:`write_run_outputs` recorded for a finished run in ``out``
    (metrics, status, final weights), or None when the run has not finished there.
    RunFolderError when its final checkpoint is damaged."""
    path = out / "checkpoints" / f"{run_name(variant.name, seed)}.pt"
    if not path.exists():
        return None
    saved = load_checkpoint(path)
    if not isinstance(saved, dict) or "epochs" not in saved or "status" not in saved:
        return None
    return RunResult(variant=variant, seed=seed, params=saved["params"], status=saved["status"],
                     epochs=saved["epochs"], message=saved.get("message", ""),
                     state_dict=saved.get("model"))


def write_summary(out: Path, cfg: Config, results: list[RunResult]) -> dict:
    summary = {
        "normlab_version": __version__,
        "dataset": cfg.dataset,
        "epochs": cfg.epochs,
        "seeds": cfg.seeds,
        "variants": summarize(cfg.parsed_variants(), results),
    }
    write_json(out / "summary.json", summary)
    return summary
