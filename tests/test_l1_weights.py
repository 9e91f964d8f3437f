"""scripts/l1_weights.py: sum(|w|) and the share of near-zero weights of a run's final weights."""

from __future__ import annotations

import csv

import pytest
import torch

from normlab.config import Config
from normlab.runfolder import WEIGHT_COLUMNS, WEIGHT_THRESHOLDS, RunFolder
from normlab.store import load_checkpoint
from normlab.study import run_study

SYNTHETIC_DATA = {"n_train": 48, "n_test": 40, "seed": 5}


@pytest.fixture(scope="module")
def trained(synthetic_data, tmp_path_factory) -> RunFolder:
    """A study of bn+l1 at two lambdas and gn, one seed each, one epoch on 48 images."""
    cfg = Config(variants=("bn+l1=1e-4", "bn+l1=1e-2", "gn"), seeds=1, epochs=1, train_subset=48,
                 data_dir=str(synthetic_data.folder), diagnostics=False)
    out = tmp_path_factory.mktemp("l1w") / "run"
    run_study(cfg, out=out, progress=False, report=False, log=lambda *_: None)
    return RunFolder(out)


def test_weight_stats_are_those_of_the_saved_kernels(trained, load_script) -> None:
    """One row per finished run, in the study's order, with its variant, lambda and seed; the
    count and sum of |w| are those of the checkpoint's conv kernels and classifier matrix (the
    4-D and 2-D tensors: no bias, no norm parameter), and each near-zero share is the percentage
    of those weights below its threshold."""
    script = load_script("scripts/l1_weights.py")
    rows = script.weight_stats(trained.path)
    assert [(r[0], r[1], r[2]) for r in rows] == [
        ("bn+l1=0.0001", 1e-4, 0), ("bn+l1=0.01", 1e-2, 0), ("gn", 0.0, 0)]
    for name, _, seed, count, total, *shares in rows:
        state = load_checkpoint(trained.checkpoint(name, seed))["model"]
        w = torch.cat([t.flatten() for t in state.values() if t.dim() in (2, 4)]).abs()
        assert count == w.numel()
        assert total == pytest.approx(float(w.sum()), abs=1e-4)
        assert shares == [round(100.0 * float((w < t).float().mean()), 2)
                          for t in WEIGHT_THRESHOLDS]


def test_main_writes_the_weights_table_into_the_folder(trained, load_script) -> None:
    """main() writes weight_stats' rows as the run folder's weights table: the table's header,
    then one line per run with its values."""
    script = load_script("scripts/l1_weights.py")
    script.main(str(trained.path))
    with open(trained.weights, newline="") as f:
        written = list(csv.reader(f))
    assert written[0] == list(WEIGHT_COLUMNS)
    rows = script.weight_stats(trained.path)
    assert len(written) == 1 + len(rows) == 1 + 3
    for line, row in zip(written[1:], rows):
        assert line[0] == row[0]
        assert [float(c) for c in line[1:]] == pytest.approx([float(c) for c in row[1:]])
