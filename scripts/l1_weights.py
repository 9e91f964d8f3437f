"""How L1 changes the weights: sum(|w|) and the share of near-zero weights per variant.

Reads the checkpoints of a run folder (or of every point of a sweep folder) and writes
weights.csv there:

    python scripts/l1_weights.py results/experiments/l1
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from normlab.config import Config
from normlab.model import penalized_weights
from normlab.posthoc import final_nets
from normlab.runfolder import WEIGHT_THRESHOLDS, RunFolder, SweepFolder, load_run


def weight_stats(run_dir: Path) -> list[tuple]:
    run = load_run(run_dir)
    rows = []
    for v, seed, model in final_nets(run.folder, Config.from_saved(run.config)):
        w = torch.cat([p.detach().flatten() for p in penalized_weights(model)]).abs()
        rows.append((v.name, v.l1, seed, w.numel(), round(float(w.sum()), 4),
                     *(round(100.0 * float((w < t).float().mean()), 2) for t in WEIGHT_THRESHOLDS)))
    return rows


def main(run_dir: str) -> None:
    if SweepFolder.holds_sweep(run_dir):
        folder = SweepFolder(run_dir)
        rows = [r for point in folder.points() for r in weight_stats(point.path)]
    else:
        folder = RunFolder(run_dir)
        rows = weight_stats(folder.path)
    folder.write_weights(rows)
    for row in rows:
        print(",".join(str(c) for c in row))


if __name__ == "__main__":
    main(sys.argv[1])
