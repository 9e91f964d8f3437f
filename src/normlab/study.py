"""A study: every variant x every seed, trained and evaluated, saved as a run folder.

Run folder layout::

    config.json                      the fully resolved Config (+ parsed variants, device, seeds)
    env.json                         versions, device, threads
    metrics.csv                      variant,seed,epoch,train_loss,train_acc,test_loss,test_acc,lr,seconds
    summary.json                     per variant: params, status, final/best test accuracy, final loss
    predictions/<variant>-s<seed>.csv   index,label,pred,confidence of the final model
    checkpoints/<variant>-s<seed>.pt    state dicts (torch.load(..., weights_only=True))
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from normlab import __version__
from normlab.batches import DeviceSplit, split_stats, to_device_split
from normlab.config import Config, Variant
from normlab.errors import ConfigError
from normlab.layout import METRIC_COLUMNS, PREDICTION_COLUMNS, run_name
from normlab.report import format_pm
from normlab.store import ensure_writable, save_checkpoint, write_csv, write_json
from normlab.train import METRIC_FIELDS, RunResult, select_device, train_run



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
    try:
        folder.rmdir()  # only succeeds on an empty folder
    except OSError:
        pass


def run_study(cfg: Config, out: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print, report: bool = True) -> Path:
    """Train every variant x seed of ``cfg`` and write the run folder (and, with ``report``, its
    figures and report.md). Returns its path."""
    device = select_device(cfg.device)
    out = prepare_out(out, cfg)            # fail on a bad folder before loading anything
    log(f"normlab {__version__}: device {device}, {torch.get_num_threads()} threads, out {out}")
    try:
        data = load_study_data(cfg, device)  # fail on missing or corrupt data before training
    except BaseException:
        _remove_if_empty(out)              # leave no empty run folder behind
        raise
    variants = cfg.parsed_variants()
    write_json(out / "config.json", resolved_config(cfg, device, data))
    write_json(out / "env.json", environment(device))

    metrics_rows: list[tuple] = []
    results: list[RunResult] = []
    t_start = time.perf_counter()
    for variant in variants:
        for seed in cfg.seed_list():
            def on_epoch(row: dict, _v=variant.name, _s=seed) -> None:
                metrics_rows.append((_v, _s) + tuple(row[k] for k in METRIC_FIELDS))
                write_csv(out / "metrics.csv", METRIC_COLUMNS, metrics_rows)

            result = train_run(cfg, variant, seed, data.train, data.test, data.mean, data.std,
                               progress=progress, on_epoch=on_epoch)
            results.append(result)
            name = run_name(variant.name, seed)
            if result.status != "ok":
                log(f"{variant.name} seed {seed}: {result.status} ({result.message}); continuing")
                continue
            write_predictions(out / "predictions" / f"{name}.csv", result.predictions)
            save_checkpoint(out / "checkpoints" / f"{name}.pt", {
                "model": result.state_dict, "variant": variant.as_dict(), "seed": seed,
                "normlab_version": __version__,
            })
    if not metrics_rows:
        write_csv(out / "metrics.csv", METRIC_COLUMNS, [])
    summary = {
        "normlab_version": __version__,
        "dataset": cfg.dataset,
        "epochs": cfg.epochs,
        "seeds": cfg.seeds,
        "wall_seconds": time.perf_counter() - t_start,
        "variants": summarize(variants, results),
    }
    write_json(out / "summary.json", summary)
    log(format_table(summary["variants"]))
    if report:
        from normlab.report import write_report  # the same code as `normlab report RUN_DIR`

        write_report(out)
    log(f"results in {out}")
    return out
