"""Does the code here still train what a committed run folder holds?

Re-trains the first group of runs of a finished study (the runs it trained as one network, with
its torch threads per worker, on its device) for its first N epochs, with the folder's saved
config and data, and compares every metric of those epochs with the folder's metrics.csv, bit
for bit:

    python scripts/check_reproduces.py results/mnist --epochs 1

Exit code 0 when every value is identical, 1 when one differs (the first differences are
printed), 2 for bad input. Bits hold only for the same engine on the same kind of machine:
another CPU type (``env.json`` names the one that wrote the folder) may pick kernels of another
instruction set, which round differently, and the run then takes another path from its first
steps. The pixel mean and standard deviation that normalize the data are compared first, with
config.json's record. A difference on the machine type that wrote the folder means the engine
changed what it computes.

With ``--rtol R`` each value need only be within R of the folder's, relative to it, and
``--columns`` picks the metrics compared: a check meant to hold on another CPU type. Only the
training columns are fit for it: they average over the epoch's steps. Three changes of rounding
alone, on the AMD EPYC that wrote ``results/mnist``, moved the first epoch of its first run
(relative, training loss and training accuracy): the weight decay's new implementation (the
same arithmetic) 4e-4 and 5e-4; 2 torch threads instead of 1, 2.0e-3 and 3.5e-4; convolutions
without oneDNN (PyTorch's own), 3.8e-3 and 8.1e-4. The test loss and accuracy moved by up to
24% and 1.4%: each is measured once per run, at the end of epoch 1 while the learning rate
still warms up, so they are not used. ``--columns train_loss,train_acc --rtol 0.02`` leaves 5 times the
largest of those (no other CPU type has run it yet). These changes of the recipe show beyond it
(in training loss): a shift of at most 1 pixel instead of 2, 9.3%; peak lr 0.09 instead of 0.1,
5.2%; rotation ±10° instead of ±15°, 4.4%. A smaller one may not (no weight decay instead of
5e-4: 0.48%, about as much as rounding moves it). The pixel mean and std are compared exactly
whatever ``--rtol``: they do not depend on the machine.
"""

from __future__ import annotations

import argparse
import sys

import torch

from normlab.config import Config
from normlab.device import select_device
from normlab.errors import NormlabError
from normlab.runfolder import METRIC_COLUMNS, load_run
from normlab.study import make_plan
from normlab.study_data import load_data
from normlab.train import GroupTrainer

SHOWN = 10   # differences printed at most
METRICS = METRIC_COLUMNS[3:]   # the columns after variant, seed and epoch


def same(a, b, rtol: float = 0.0) -> bool:
    """Equal to the last bit, or with ``rtol`` within ``rtol * |b|`` of ``b`` (both missing
    counts as equal)."""
    if a is None or b is None:
        return a is None and b is None
    return float(a) == float(b) or abs(float(a) - float(b)) <= rtol * abs(float(b))


def check(run_dir: str, epochs: int = 1, data_dir: str | None = None, rtol: float = 0.0,
          columns: tuple[str, ...] = METRICS, changes: dict | None = None) -> list[str]:
    """The differences, one line each, between ``epochs`` re-trained epochs of the first group of
    runs in ``run_dir`` and its metrics.csv in ``columns``; empty when every value is identical
    (within ``rtol``, relative to the folder's value). ``changes``: Config fields to train with
    instead of the saved ones (a deliberate change, which the check should see)."""
    unknown = [c for c in columns if c not in METRICS]
    if unknown or not columns:
        problem = f"{unknown[0]!r} is not a metric" if unknown else "no metric named"
        raise NormlabError(f"--columns: {problem}; valid: {','.join(METRICS)}")
    run = load_run(run_dir)
    cfg = Config.from_saved(run.config).replace(**(changes or {}))
    if data_dir is not None:
        cfg = cfg.replace(data_dir=data_dir)
    if not 1 <= epochs <= cfg.epochs:
        raise NormlabError(f"--epochs {epochs} is outside the folder's 1..{cfg.epochs} epochs; "
                           "give a number in that range")
    if not rtol >= 0:
        raise NormlabError(f"--rtol must be 0 or more (0: bit for bit), got {rtol}")
    resolved = run.config.get("resolved") or {}
    device = select_device(str(resolved.get("device") or cfg.device))
    plan = make_plan(cfg, device, group_size=resolved.get("group_size"), workers=1,
                     threads=resolved.get("threads_per_worker"))
    group = plan.groups[0]
    saved = {(r["variant"], r["seed"], r["epoch"]): r for r in run.metrics}
    data = load_data(cfg, device)
    differences = [f"pixel {name}: {mine!r} here, {theirs!r} in the folder's config.json"
                   for name, mine, theirs in (("mean", data.mean, resolved.get("pixel_mean")),
                                              ("std", data.std, resolved.get("pixel_std")))
                   if theirs is not None and not same(mine, theirs)]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    try:
        trainer = GroupTrainer(cfg, group, data.train, data.test, data.mean, data.std,
                               val=data.val)
        for _ in range(epochs):
            for i, row in trainer.train_epoch():
                variant, seed = group[i]
                want = saved.get((variant.name, seed, row["epoch"]))
                where = f"{variant.name} seed {seed} epoch {row['epoch']}"
                if want is None:
                    differences.append(f"{where}: not in the folder's metrics.csv")
                    continue
                differences += [f"{where} {col}: {row[col]!r} here, {want[col]!r} in the folder"
                                for col in columns if not same(row[col], want[col], rtol)]
    finally:
        torch.set_num_threads(old_threads)
    return differences


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Re-train the first epochs of a run folder's first "
                                "group of runs and compare its metrics bit for bit (or within "
                                "--rtol).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished study's run folder")
    p.add_argument("--epochs", type=int, default=1, help="epochs to re-train (default: 1)")
    p.add_argument("--data-dir", default=None,
                   help="where the dataset is (default: the folder's config, $NORMLAB_DATA, the "
                        "cache)")
    p.add_argument("--rtol", type=float, default=0.0,
                   help="relative tolerance of each value (default: 0, bit for bit; for "
                        "another CPU type the script's docstring explains 0.02 with --columns "
                        "train_loss,train_acc)")
    p.add_argument("--columns", default=",".join(METRICS), metavar="LIST",
                   help=f"comma-separated metrics to compare (default: all, {','.join(METRICS)})")
    args = p.parse_args(argv)
    columns = tuple(dict.fromkeys(c.strip() for c in args.columns.split(",") if c.strip()))
    try:
        differences = check(args.run_dir, args.epochs, args.data_dir, args.rtol, columns)
    except (NormlabError, ValueError) as e:
        print(f"check_reproduces: error: {e}", file=sys.stderr)
        return 2
    if differences:
        print(f"{len(differences)} values differ from {args.run_dir}:")
        print("\n".join(differences[:SHOWN]))
        return 1
    how = "bit for bit" if args.rtol == 0 else f"within {args.rtol:g} relative"
    print(f"the first {args.epochs} epoch(s) of {args.run_dir}'s first group of runs reproduce "
          f"{how} in {', '.join(columns)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
