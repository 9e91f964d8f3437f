"""How L1 changes the weights: sum(|w|) and the share of near-zero weights per variant.

Reads the checkpoints of a run folder and writes <run>/weights.csv:

    python scripts/l1_weights.py results/mnist-l1
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from normlab.layout import run_name
from normlab.model import ModelConfig, Net, penalized_weights
from normlab.report import load_run
from normlab.store import write_csv

THRESHOLDS = (1e-3, 1e-2)


def weight_stats(run_dir: Path) -> list[tuple]:
    run = load_run(run_dir)
    groups = run.config["groups"]
    rows = []
    for name, s in run.summary["variants"].items():
        for seed in s["seeds"]:
            if seed in s["diverged_seeds"]:  # a diverged run leaves no checkpoint
                continue
            state = torch.load(run_dir / "checkpoints" / f"{run_name(name, seed)}.pt",
                               weights_only=True)
            model = Net(ModelConfig(norm=s["norm"], groups=groups))
            model.load_state_dict(state["model"])
            w = torch.cat([p.detach().flatten() for p in penalized_weights(model)]).abs()
            rows.append((name, s["l1"], seed, w.numel(), round(float(w.sum()), 4),
                         *(round(100.0 * float((w < t).float().mean()), 2) for t in THRESHOLDS)))
    return rows


def main(run_dir: str) -> None:
    header = ("variant", "l1", "seed", "weights", "sum_abs_w",
              *(f"pct_below_{t:g}" for t in THRESHOLDS))
    rows = weight_stats(Path(run_dir))
    write_csv(Path(run_dir) / "weights.csv", header, rows)
    for row in [header, *rows]:
        print(",".join(str(c) for c in row))


if __name__ == "__main__":
    main(sys.argv[1])
