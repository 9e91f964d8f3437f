"""Whole studies trained by normlab's own scheduler and timed: the study and grouping rows of
``bench_train.py``, and the forward-FLOP count every row of it reports.

The study rows (:data:`STUDY_ROWS`) compare normlab 0.1.0's default study with today's. The speed
of a shared machine swings by a tenth from one minute to the next, so :func:`study_rows` runs them
in *rounds*: every round trains each row once, in an order that rotates from round to round, and a
row's ratio to 0.1.0 is the median over rounds of the ratio within a round: a slow spell lowers
one round's ratios, and the median sets it aside.
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import torch
import torch.nn as nn

from normlab import study as nl_study
from normlab.study_data import load_data
from normlab.config import POOL_ARCH, Config, ModelConfig
from normlab.model import count_params
from normlab.train import build_model


def forward_flops(model: nn.Module) -> int:
    """FLOPs of one forward pass of a 1x1x28x28 input: 2 x the MACs of every conv and linear."""
    macs = 0

    def hook(m, inp, out):
        nonlocal macs
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs += out.numel() * (m.in_channels // m.groups) * kh * kw
        elif isinstance(m, nn.Linear):
            macs += out.numel() * m.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 1, 28, 28))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return 2 * macs


def timed_study(cfg: Config, device: torch.device, processes: bool | None = None,
                **plan_overrides):
    """Train every run of ``cfg`` the way ``normlab study`` does (its plan and scheduler, no
    run folder; ``processes=False``: its worker threads train in this process, as before
    ``normlab.epoch_process``); returns (plan, results, wall seconds, training images, test
    images)."""
    data = load_data(cfg, device)
    plan = nl_study.make_plan(cfg, device, **plan_overrides)
    if processes is not None:
        plan = dataclasses.replace(plan, processes=processes and plan.processes)
    t0 = time.perf_counter()
    results = nl_study.train(plan, data, progress=False)
    return plan, results, time.perf_counter() - t0, len(data.train), len(data.test)


@dataclasses.dataclass(frozen=True)
class Release010(Config):
    """normlab 0.1.0's default study, reproduced through ModelConfig: its model (8,522
    parameters, ReLU before the max pool) and its recipe (batch 128, lr 0.05, rotation 10
    degrees, no label smoothing, no weight decay)."""

    def model_config(self, variant) -> ModelConfig:
        return dataclasses.replace(super().model_config(variant), relu_before_pool=True)


RELEASE_010 = {"arch": "8-16-16-16-16", "batch_size": 128, "lr": 0.05, "rotate": 10.0,
               "label_smoothing": 0.0, "weight_decay": 0.0}

# name -> (0.1.0's study?, diagnostics?, --arch, --weight-decay, worker processes?); None: the
# default's
STUDY_ROWS = {
    "study-0.1.0": (True, False, None, None, False),       # 0.1.0's worker threads too
    "study-pool": (False, False, POOL_ARCH, None, None),     # what the stride-2 stem pays
    "study-nodecay": (False, False, None, 0.0, None),        # what the decay costs (vs -nodiag)
    "study-threads": (False, True, None, None, False),       # what the processes pay
    "normlab-study": (False, True, None, None, None),
    "normlab-study-nodiag": (False, False, None, None, None),
}


def bench_study(base: Config, device: torch.device, epochs: int,
                release_010: bool = False, diagnostics: bool = True,
                arch: str | None = None, weight_decay: float | None = None,
                processes: bool | None = None) -> tuple[dict, list[float]]:
    """The default study's runs trained by normlab's study scheduler, timed as a whole (with
    ``release_010``: normlab 0.1.0's default model and recipe instead of today's; without
    ``diagnostics``: as --no-diagnostics trains it; ``arch``: another --arch;
    ``weight_decay``: another --weight-decay; ``processes=False``: worker threads alone)."""
    cfg = Config(epochs=epochs, data_dir=base.data_dir, diagnostics=diagnostics,
                 **({"arch": arch} if arch else {}),
                 **({"weight_decay": weight_decay} if weight_decay is not None else {}))
    if release_010:
        cfg = Release010(epochs=epochs, data_dir=base.data_dir, diagnostics=False, **RELEASE_010)
    plan, results, wall, n, n_test = timed_study(cfg, device, processes)
    epoch_seconds = [row["seconds"] for r in results for row in r.epochs]
    model = build_model(cfg, cfg.parsed_variants()[0], 0)
    info = {"params": count_params(model), "flops_per_image_fwd": forward_flops(model),
            "images_per_s": plan.runs * epochs * n / wall, "train_images": n,
            "test_images": n_test, "epochs": epochs, "runs": plan.runs,
            "variants": list(cfg.variants), "arch": cfg.arch, "batch_size": cfg.batch_size,
            "weight_decay": cfg.weight_decay,
            "group_size": len(plan.groups[0]),
            "workers": plan.workers, "threads_per_worker": plan.threads,
            "worker_processes": plan.processes,
            "wall_seconds": round(wall, 2),
            "final_test_acc": {r.variant.name: r.epochs[-1]["test_acc"]
                               for r in results if r.epochs},
            "note": ("images/s = runs x epochs x train images / wall time (first epoch included); "
                     "each epoch includes evaluating the full test split")}
    return info, [round(s, 3) for s in epoch_seconds]


def study_rows(base: Config, device: torch.device, epochs: int, rounds: int,
               log=print) -> list[tuple[str, dict, list[float]]]:
    """Every row of :data:`STUDY_ROWS`, timed once per round, ``rounds`` rounds, round r in the
    table's order rotated by r. Per row: (name, info, every epoch's seconds); ``info`` holds
    ``images_per_s`` (median over rounds), ``round_images_per_s``, ``round_ratios_vs_0.1.0``
    and ``ratio_vs_0.1.0`` (their median), for ``normlab-study`` ``round_ratios_vs_threads``
    and ``ratio_vs_threads`` (against ``study-threads``: what the worker processes pay), and
    for ``normlab-study-nodiag`` ``diagnostics_cost_pct`` (median over rounds of what the
    diagnostics cost)."""
    names = list(STUDY_ROWS)
    runs: dict[str, list[tuple[dict, list[float]]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            log(f"# round {r + 1}/{rounds}, {name}: default variants, {epochs} epoch(s) on all "
                "training images")
            info, seconds = bench_study(base, device, epochs, *STUDY_ROWS[name])
            diag = STUDY_ROWS[name][1]
            info["diagnostics"] = diag
            runs[name].append((info, seconds))
    old = [info["images_per_s"] for info, _ in runs["study-0.1.0"]]
    with_diag = [info["images_per_s"] for info, _ in runs["normlab-study"]]
    rows = []
    for name in names:
        rates = [info["images_per_s"] for info, _ in runs[name]]
        info = dict(runs[name][0][0])
        info.update(images_per_s=statistics.median(rates), rounds=rounds,
                    round_images_per_s=[round(x, 1) for x in rates],
                    wall_seconds=[i["wall_seconds"] for i, _ in runs[name]],
                    final_test_acc=[i["final_test_acc"] for i, _ in runs[name]])
        if name != "study-0.1.0":   # per model-epoch, against 0.1.0's study in the same round
            ratios = [x / o for x, o in zip(rates, old)]
            info["round_ratios_vs_0.1.0"] = [round(x, 3) for x in ratios]
            info["ratio_vs_0.1.0"] = round(statistics.median(ratios), 3)
        if name == "normlab-study":   # what the worker processes pay, round by round
            threads = [info["images_per_s"] for info, _ in runs["study-threads"]]
            ratios = [x / t for x, t in zip(rates, threads)]
            info["round_ratios_vs_threads"] = [round(x, 3) for x in ratios]
            info["ratio_vs_threads"] = round(statistics.median(ratios), 3)
        if name == "normlab-study-nodiag":   # what the diagnostics cost, round by round
            info["diagnostics_cost_pct"] = round(statistics.median(
                100.0 * (x / d - 1.0) for x, d in zip(rates, with_diag)), 2)
        rows.append((name, info, [s for _, seconds in runs[name] for s in seconds]))
    return rows


def bench_grouping(base: Config, device: torch.device, batch: int, group_size: int,
                   images: int, repeats: int) -> tuple[dict, list[float]]:
    """3 variants x 2 seeds, 1 epoch of ``images`` images at ``batch``, trained by the study
    scheduler with ``group_size`` runs per network (1: each run alone), ``repeats`` times (the
    median counts): what --group-size auto rests on."""
    cfg = Config(variants=("bn", "gn", "ln"), seeds=2, epochs=1, batch_size=batch,
                 train_subset=images, data_dir=base.data_dir)
    walls = []
    for _ in range(repeats):
        plan, results, wall, n, _ = timed_study(cfg, device, group_size=group_size)
        walls.append(wall)
    wall = statistics.median(walls)
    model = build_model(cfg, cfg.parsed_variants()[0], 0)
    info = {"params": count_params(model), "flops_per_image_fwd": forward_flops(model),
            "images_per_s": plan.runs * n / wall, "train_images": n, "epochs": 1,
            "runs": plan.runs, "batch_size": batch, "group_size": len(plan.groups[0]),
            "workers": plan.workers, "threads_per_worker": plan.threads,
            "worker_processes": plan.processes,
            "wall_seconds": round(wall, 2),
            "note": "images/s = runs x train images / median wall time; test split evaluated once"}
    return info, [round(w, 3) for w in walls]
