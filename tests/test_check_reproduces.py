"""scripts/check_reproduces.py: a run folder's first epochs re-trained and compared bit for bit."""

from __future__ import annotations

import csv

import pytest
from helpers import csv_rows

from normlab.config import Config
from normlab.runfolder import RunFolder
from normlab.study import run_study

SYNTHETIC_DATA = {"n_train": 48, "n_test": 40, "seed": 5}


@pytest.fixture(scope="module")
def studies(synthetic_data, tmp_path_factory) -> dict[str, RunFolder]:
    """Two finished studies, 2 epochs on 48 images: at batch 128 (one run per network) and at
    batch 16 (on a CPU the three runs train as one network; the CPU also on a GPU machine)."""
    out = {}
    for name, batch in (("single", 128), ("grouped", 16)):
        cfg = Config(variants=("gn", "ln", "bn+l1"), seeds=1, epochs=2, batch_size=batch,
                     device="cpu", train_subset=48, data_dir=str(synthetic_data.folder),
                     diagnostics=False)
        path = tmp_path_factory.mktemp("repro") / name
        run_study(cfg, out=path, progress=False, report=False, log=lambda *_: None)
        out[name] = RunFolder(path)
    return out


def _copy_with_first_row_scaled(studies, tmp_path, column: str, factor: float
                                ) -> tuple[RunFolder, dict]:
    """A copy of the single-run study whose metrics.csv has ``column`` of its first row
    multiplied by ``factor``; the copy and that (changed) row."""
    import shutil

    folder = RunFolder(tmp_path / "copy")
    shutil.copytree(studies["single"].path, folder.path)
    rows = csv_rows(folder.metrics)
    rows[0][column] = repr(float(rows[0][column]) * factor)
    with open(folder.metrics, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return folder, rows[0]


@pytest.mark.parametrize("name, runs", [("single", 1), ("grouped", 3)])
def test_an_untouched_folder_reproduces(studies, load_script, name: str, runs: int) -> None:
    """Re-training the first group (one run, or the three trained as one network) for both
    epochs gives every metric of metrics.csv to the last bit; main() exits 0."""
    script = load_script("scripts/check_reproduces.py")
    folder = studies[name]
    assert script.check(str(folder.path), epochs=2) == []
    assert script.main([str(folder.path), "--epochs", "2"]) == 0
    config = script.Config.from_saved(script.load_run(folder.path).config)
    assert len(script.make_plan(config, group_size=None).groups[0]) == runs


def test_a_changed_value_is_found(studies, load_script, tmp_path, capsys) -> None:
    """One metric of the first run changed in its last digits (as another engine's rounding
    would): check() names the run, epoch and column with both values, main() exits 1."""
    script = load_script("scripts/check_reproduces.py")
    folder, first = _copy_with_first_row_scaled(studies, tmp_path, "train_loss", 1 + 1e-12)
    differences = script.check(str(folder.path))
    assert len(differences) == 1
    assert differences[0].startswith(f"{first['variant']} seed 0 epoch 1 train_loss: ")
    assert script.main([str(folder.path)]) == 1
    assert "1 values differ" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--epochs", "0"], ["--epochs", "3"]])
def test_epochs_outside_the_folder_are_bad_input(studies, load_script, capsys, argv) -> None:
    """--epochs must lie within the folder's epochs: a one-line error, exit code 2."""
    script = load_script("scripts/check_reproduces.py")
    assert script.main([str(studies["single"].path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_reproduces: error: --epochs") and "\n" not in err


def test_a_folder_that_is_not_a_run_is_bad_input(load_script, tmp_path, capsys) -> None:
    """A folder without a study in it: a one-line error naming it, exit code 2."""
    script = load_script("scripts/check_reproduces.py")
    assert script.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_reproduces: error:") and "\n" not in err


def test_a_different_pixel_mean_is_found(studies, load_script, tmp_path) -> None:
    """The normalization recorded in config.json is compared first: a pixel mean one float32
    step away is named as a difference."""
    import json
    import shutil

    import numpy as np

    script = load_script("scripts/check_reproduces.py")
    folder = RunFolder(tmp_path / "copy")
    shutil.copytree(studies["single"].path, folder.path)
    config = json.loads(folder.config.read_text())
    mean = config["resolved"]["pixel_mean"]
    config["resolved"]["pixel_mean"] = float(np.nextafter(np.float32(mean), np.float32(1)))
    folder.config.write_text(json.dumps(config))
    differences = script.check(str(folder.path))
    assert len(differences) == 1 and differences[0].startswith("pixel mean: ")


def test_rtol_accepts_rounding_and_refuses_a_negative_one(studies, load_script, tmp_path,
                                                           capsys) -> None:
    """With --rtol a value 1e-12 away (relative) passes, bit-for-bit it does not; a negative
    --rtol is bad input (one line, exit code 2)."""
    script = load_script("scripts/check_reproduces.py")
    folder, _ = _copy_with_first_row_scaled(studies, tmp_path, "test_loss", 1 + 1e-12)
    assert len(script.check(str(folder.path))) == 1
    assert script.check(str(folder.path), rtol=1e-9) == []
    assert script.main([str(folder.path), "--rtol", "1e-9"]) == 0
    assert "within 1e-09 relative in train_loss," in capsys.readouterr().out
    assert script.main([str(folder.path), "--rtol", "-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_reproduces: error: --rtol") and "\n" not in err


@pytest.mark.parametrize("argv", [["--columns", "train_loss,speed"], ["--columns", ","]])
def test_unknown_columns_are_bad_input(studies, load_script, capsys, argv) -> None:
    """--columns names metrics of metrics.csv: another name, or none, is a one-line error
    listing the valid ones, exit code 2."""
    script = load_script("scripts/check_reproduces.py")
    assert script.main([str(studies["single"].path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("check_reproduces: error: --columns") and "valid: train_loss," in err
    assert "\n" not in err

