"""End-to-end tests of the command line on tiny synthetic MNIST-format data.

Studies and bad input run in-process through ``normlab.cli.main`` on conftest's
``synthetic_data`` (``normlab.data.DATASETS['mnist']`` replaced by a spec whose MD5s match the
synthetic files; sizes set by SYNTHETIC_DATA below). Only what is about the process itself goes
through a real subprocess (conftest's ``synthetic_subprocess``): the exit code and stderr of the
installed console script and of ``python -m normlab``, and the missing-data message of a process
that finds no data and no network in its environment. The network is never used: in-process
``data.open_url`` fails (``synthetic_data``, ``no_network``), and subprocesses that reach the
download step get an unreachable local proxy. Every path of a run folder comes from
:class:`normlab.runfolder.RunFolder`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import exit_code
import torch

from normlab import data, study
from normlab.cli import build_parser, main
from normlab.config import Config
from normlab.errors import NormlabError
from normlab.model import ModelConfig, Net, count_params
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
from normlab.runfolder import RunFolder, figure_files
from normlab.variants import DEFAULT_L1

N_TRAIN, N_TEST = 300, 100
SYNTHETIC_DATA = {"n_train": N_TRAIN, "n_test": N_TEST, "seed": 0}   # conftest's synthetic_data
METRICS_COLUMNS = ["variant", "seed", "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                   "test_loss", "test_acc", "lr"]
CURVES = ("test_acc", "test_loss", "train_vs_test")   # RunFolder.figure kinds


@pytest.fixture(scope="module")
def study_run(synthetic_data, tmp_path_factory):
    """One study (gn and bn+l1, 2 seeds, 2 epochs) run through main(); returns (exit code, out)."""
    out = tmp_path_factory.mktemp("runs") / "study"
    code = main(["study", "--data-dir", str(synthetic_data.folder), "--epochs", "2", "--seeds", "2",
                 "--variants", "gn,bn+l1", "--out", str(out), "--quiet"])
    return code, out


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# ----------------------------------------------------------------------------------------------
# The study run folder


VARIANTS = {"gn": ("gn", 0.0), f"bn+l1={DEFAULT_L1:g}": ("bn", DEFAULT_L1)}  # name -> (norm, l1)
SEEDS = (0, 1)
EPOCHS = 2
RUNS = [(v, s) for v in VARIANTS for s in SEEDS]


def test_study_exits_zero_and_writes_every_file(study_run) -> None:
    """The study exits 0 and its run folder holds config, env, metrics, timing, summary, report,
    diagnostics.csv, one predictions CSV and one final checkpoint per variant and seed, one
    training state per group of runs, the three curve figures, the diagnostics figure and one
    misclassified grid per variant (each as PNG
    and SVG, the default formats), and the lock file (left in place), and nothing else (no
    temporary files)."""
    code, out = study_run
    assert code == 0
    f = RunFolder(out)
    expected = {f.config, f.env, f.metrics, f.summary, f.report, f.timing_csv, f.timing_json,
                f.lock_file, f.diagnostics}
    expected |= {f.predictions(v, s) for v, s in RUNS} | {f.checkpoint(v, s) for v, s in RUNS}
    # one training state per group of runs: on a CPU at batch 128 a group is one run, on a GPU
    # one group holds them all (the device config.json records)
    saved = json.loads(f.config.read_text())
    group_size = saved["resolved"]["group_size"]
    assert group_size == study.auto_group_size(Config.from_saved(saved),
                                               torch.device(saved["resolved"]["device"]), len(RUNS))
    groups = -(-len(RUNS) // group_size)
    expected |= {f.group_state(k) for k in range(groups)}
    figures = [f.figure(kind) for kind in CURVES] + [f.misclassified_figure(v) for v in VARIANTS]
    figures.append(f.diagnostics_figure())
    expected |= {p for fig in figures for p in figure_files(fig).values()}
    found = {p for p in out.rglob("*") if p.is_file()}
    assert found == expected
    assert len(expected) == 9 + 2 * len(RUNS) + groups + 2 * (len(CURVES) + len(VARIANTS) + 1)


def test_config_json(study_run, synthetic_data) -> None:
    """config.json has every Config field with the values given, rebuilds the same Config, and
    has a 'resolved' block with the parsed variants, seeds, data sizes and the data's folder."""
    code, out = study_run
    folder = synthetic_data.folder
    d = json.loads(RunFolder(out).config.read_text())
    fields = {f.name for f in dataclasses.fields(Config)}
    assert fields <= set(d) and set(d) - fields == {"resolved"}
    cfg = Config.from_saved(d)
    assert cfg == Config(variants=("gn", "bn+l1"), seeds=2, epochs=2, data_dir=str(folder))
    r = d["resolved"]
    assert r["seed_list"] == list(SEEDS)
    assert [v["name"] for v in r["variants"]] == list(VARIANTS)
    assert r["train_images"] == N_TRAIN and r["test_images"] == N_TEST
    assert isinstance(r["pixel_mean"], float) and r["pixel_std"] > 0
    assert r["data_folder"] == str(folder)


def test_config_json_names_the_folder_the_data_came_from(synthetic_data, tmp_path, monkeypatch,
                                                         capsys) -> None:
    """Given a --data-dir that holds no data, the study takes the copy in $NORMLAB_DATA (and
    warns, naming the folder passed over); config.json keeps the --data-dir given, and its
    resolved block names the folder the data came from."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(data.CACHE_ENV, str(synthetic_data.folder))
    out = tmp_path / "study"
    code = main(["study", "--data-dir", str(empty), "--epochs", "1", "--variants", "gn",
                 "--no-diagnostics", "--format", "png", "--out", str(out), "--quiet"])
    assert code == 0
    warning = capsys.readouterr().err
    assert f"{empty} (--data-dir)" in warning and "($NORMLAB_DATA)" in warning
    d = json.loads(RunFolder(out).config.read_text())
    assert d["data_dir"] == str(empty)
    assert d["resolved"]["data_folder"] == str(synthetic_data.folder)


def test_config_json_names_the_dataset_subfolder_of_data_dir(synthetic_data, tmp_path) -> None:
    """A --data-dir whose <dir>/mnist subfolder holds the files: config.json keeps the folder
    given, and its resolved block names the subfolder the data came from."""
    parent = synthetic_data.folder.parent
    assert synthetic_data.folder == parent / "mnist"
    out = tmp_path / "study"
    code = main(["study", "--data-dir", str(parent), "--epochs", "1", "--variants", "gn",
                 "--no-diagnostics", "--format", "png", "--out", str(out), "--quiet"])
    assert code == 0
    d = json.loads(RunFolder(out).config.read_text())
    assert d["data_dir"] == str(parent)
    assert d["resolved"]["data_folder"] == str(synthetic_data.folder)


def test_env_json(study_run) -> None:
    """env.json parses and records the torch version, the device and the local backend."""
    _, out = study_run
    env = json.loads(RunFolder(out).env.read_text())
    assert env["torch"] == torch.__version__ and env["device"]
    assert env["backend"] == "local"


def test_metrics_csv(study_run) -> None:
    """metrics.csv has exactly the documented columns and one row per variant x seed x epoch,
    with finite numbers and accuracies in [0, 100]; timing.csv has one positive duration for each
    of those rows, in the same order."""
    _, out = study_run
    f = RunFolder(out)
    header, rows = _read_csv(f.metrics)
    assert header == METRICS_COLUMNS
    assert len(rows) == len(VARIANTS) * len(SEEDS) * EPOCHS
    keys = sorted((r["variant"], int(r["seed"]), int(r["epoch"])) for r in rows)
    assert keys == sorted((v, s, e) for v in VARIANTS for s in SEEDS for e in range(1, EPOCHS + 1))
    for r in rows:
        assert r["val_loss"] == r["val_acc"] == ""   # no --val: nothing held out
        for col in [c for c in METRICS_COLUMNS[3:] if not c.startswith("val_")]:
            assert math.isfinite(float(r[col])), (col, r[col])   # parses, not NaN or inf
        assert 0 <= float(r["train_acc"]) <= 100 and 0 <= float(r["test_acc"]) <= 100
    header, timing = _read_csv(f.timing_csv)
    assert header == ["variant", "seed", "epoch", "seconds"]
    assert [(r["variant"], r["seed"], r["epoch"]) for r in timing] == \
        [(r["variant"], r["seed"], r["epoch"]) for r in rows]
    assert all(float(r["seconds"]) > 0 for r in timing)


def test_summary_json_matches_metrics(study_run) -> None:
    """summary.json holds, per variant, its name, norm, l1, parameter count and status, and
    final/best test accuracy and final test loss as {mean, std, values}: values are the last-epoch
    (or best-epoch) rows of metrics.csv in seed order, mean their mean and std their sample std."""
    _, out = study_run
    summary = json.loads(RunFolder(out).summary.read_text())
    _, rows = _read_csv(RunFolder(out).metrics)
    assert set(summary["variants"]) == set(VARIANTS)
    for name, (norm, l1) in VARIANTS.items():
        s = summary["variants"][name]
        assert s["name"] == name and s["norm"] == norm and s["l1"] == l1
        assert s["params"] == count_params(Net(ModelConfig(norm=norm)))
        assert s["status"] == "ok"
        mine = [r for r in rows if r["variant"] == name]
        last = [next(r for r in mine if int(r["seed"]) == seed and int(r["epoch"]) == EPOCHS)
                for seed in SEEDS]
        expected = {
            "final_test_acc": [float(r["test_acc"]) for r in last],
            "final_test_loss": [float(r["test_loss"]) for r in last],
            "best_test_acc": [max(float(r["test_acc"]) for r in mine if int(r["seed"]) == seed)
                              for seed in SEEDS],
        }
        for key, values in expected.items():
            stat = s[key]
            assert stat["values"] == values, key
            assert stat["mean"] == statistics.fmean(values), key
            assert stat["std"] == statistics.stdev(values), key


@pytest.mark.parametrize(("variant", "seed"), RUNS)
def test_predictions_csv(study_run, synthetic_data, variant: str, seed: int) -> None:
    """A run's predictions CSV has index,label,pred,confidence, one row per test image with the
    true labels, and its accuracy equals the final test_acc in metrics.csv."""
    _, out = study_run
    arrays = synthetic_data.arrays
    header, rows = _read_csv(RunFolder(out).predictions(variant, seed))
    assert header == ["index", "label", "pred", "confidence"]
    assert [int(r["index"]) for r in rows] == list(range(N_TEST))
    assert [int(r["label"]) for r in rows] == arrays["test_y"].tolist()
    assert all(0 <= int(r["pred"]) <= 9 for r in rows)
    assert all(0.1 - 1e-6 <= float(r["confidence"]) <= 1.0 for r in rows)
    correct = sum(int(r["label"]) == int(r["pred"]) for r in rows)
    _, metrics = _read_csv(RunFolder(out).metrics)
    final = next(r for r in metrics
                 if r["variant"] == variant and int(r["seed"]) == seed
                 and int(r["epoch"]) == EPOCHS)
    assert 100.0 * correct / N_TEST == float(final["test_acc"])


@pytest.mark.parametrize(("variant", "seed"), RUNS)
def test_checkpoint_loads_and_reproduces_predictions(study_run, synthetic_data, variant: str,
                                                     seed: int) -> None:
    """A run's final checkpoint loads with weights_only=True into a fresh Net of that norm
    (strictly), and that model reproduces the saved predictions and confidences."""
    _, out = study_run
    arrays = synthetic_data.arrays
    f = RunFolder(out)
    ckpt = torch.load(f.checkpoint(variant, seed), map_location="cpu", weights_only=True)
    assert ckpt["variant"]["name"] == variant and ckpt["seed"] == seed
    model = Net(ModelConfig(norm=VARIANTS[variant][0]))
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()

    resolved = json.loads(f.config.read_text())["resolved"]
    x = torch.from_numpy(arrays["test_x"]).unsqueeze(1).float().div_(255.0)
    x = (x - resolved["pixel_mean"]) / resolved["pixel_std"]
    with torch.no_grad():
        conf, pred = model(x).softmax(dim=1).max(dim=1)
    _, rows = _read_csv(f.predictions(variant, seed))
    assert pred.tolist() == [int(r["pred"]) for r in rows]
    saved = torch.tensor([float(r["confidence"]) for r in rows])
    torch.testing.assert_close(conf, saved, rtol=0, atol=2e-6)


def test_train_command_uses_its_seed(synthetic_data, tmp_path: Path) -> None:
    """`normlab train --variant ln --seed 3` writes a run folder for seed 3: metrics rows, the
    predictions file and the checkpoint are all for seed 3, and config.json records it."""
    folder = synthetic_data.folder
    out = tmp_path / "train"
    code = main(["train", "--variant", "ln", "--seed", "3", "--epochs", "1", "--data-dir",
                 str(folder), "--out", str(out), "--quiet"])
    assert code == 0
    f = RunFolder(out)
    _, rows = _read_csv(f.metrics)
    assert [(r["variant"], int(r["seed"])) for r in rows] == [("ln", 3)]
    assert f.predictions("ln", 3).is_file()
    assert f.checkpoint("ln", 3).is_file()
    assert not f.predictions("ln", 0).exists() and not f.checkpoint("ln", 0).exists()
    cfg = json.loads(f.config.read_text())
    assert cfg["resolved"]["seed_list"] == [3]
    summary = json.loads(f.summary.read_text())
    assert summary["variants"]["ln"]["seeds"] == [3]


def test_quick_study_with_four_steps(synthetic_data, tmp_path: Path) -> None:
    """A quick study of 4 optimizer steps (--train-subset 256 --batch-size 64 --epochs 1, default
    warmup 0.25) runs, exits 0 and records its one epoch."""
    folder = synthetic_data.folder
    out = tmp_path / "quick"
    code = main(["study", "--variants", "gn", "--train-subset", "256", "--batch-size", "64",
                 "--epochs", "1", "--data-dir", str(folder), "--out", str(out), "--quiet"])
    assert code == 0
    _, rows = _read_csv(RunFolder(out).metrics)
    assert len(rows) == 1


def test_diverged_study_still_completes(synthetic_data, tmp_path: Path, capsys) -> None:
    """A study whose only run diverges (lr 1e6, no augmentation) exits 0, warns in one line on
    stderr that every run diverged, and records status 'diverged' with empty statistics, writing
    no predictions and no weights for it (its final checkpoint records the status and the
    message only). A study with a run that finished gives no such warning."""
    folder = synthetic_data.folder
    out = tmp_path / "div"
    code = main(["study", "--variants", "bn", "--lr", "1e6", "--no-augment", "--epochs", "2",
                 "--data-dir", str(folder), "--out", str(out), "--quiet"])
    assert code == 0
    assert _stderr_lines(capsys) == [f"normlab: warning: every run of {out} diverged; a smaller "
                                     "--lr may train"]
    assert main(["study", "--variants", "bn", "--epochs", "1", "--data-dir", str(folder),
                 "--out", str(tmp_path / "fine"), "--quiet"]) == 0
    assert not [line for line in _stderr_lines(capsys) if "diverged" in line]
    f = RunFolder(out)
    s = json.loads(f.summary.read_text())["variants"]["bn"]
    assert s["status"] == "diverged" and s["diverged_seeds"] == [0]
    assert s["final_test_acc"]["values"] == [] and s["final_test_acc"]["mean"] is None
    assert not f.predictions("bn", 0).parent.exists()   # no predictions at all
    final = torch.load(f.checkpoint("bn", 0), map_location="cpu", weights_only=True)
    assert final["status"] == "diverged" and final["model"] is None and final["message"]
    header, _ = _read_csv(f.metrics)
    assert header == METRICS_COLUMNS


# ----------------------------------------------------------------------------------------------
# Missing data


def test_missing_data_in_process(no_network, tmp_path: Path, capsys) -> None:
    """With --data-dir at an empty folder and every download failing, main exits 2 and prints one
    line on stderr (no separate warning) that mentions --data-dir, and leaves no run folder."""
    empty = tmp_path / "empty"
    empty.mkdir()

    def refuse(url: str, timeout: float):
        raise OSError("no network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "open_url", refuse)
        code = main(["study", "--data-dir", str(empty), "--epochs", "1", "--out",
                     str(tmp_path / "out"), "--quiet"])
    assert code == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1, err
    assert err[0].startswith("normlab: error:") and "--data-dir" in err[0]
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# Bad input, in-process


BAD_INPUT = {
    # id: (arguments, fragment the one error line must contain)
    "unknown-term": (["study", "--variants", "gn,bn+dropout"], "unknown term 'dropout'"),
    "unknown-norm": (["study", "--variants", "gn,xn"], "unknown norm 'xn'"),
    "unknown-norm-train": (["train", "--variant", "batchnorm"], "unknown norm 'batchnorm'"),
    "two-variants-train": (["train", "--variant", "gn,ln"], "--variant takes one variant"),
    "epochs-0": (["study", "--epochs", "0"], "--epochs"),
    "batch-size-1-bn": (["study", "--variants", "bn", "--batch-size", "1"], "--batch-size 1"),
    "lr-negative": (["study", "--lr", "-1"], "--lr"),
    "seeds-0": (["study", "--seeds", "0"], "--seeds"),
    "first-seed-negative": (["sweep", "--param", "lr=0.1", "--first-seed", "-1"],
                            "argument --first-seed: must be"),
    "first-seed-above-32-bit": (["study", "--first-seed", "99999999999999999999"],
                                "argument --first-seed: must be a whole number from 0 to "
                                "4,294,967,295"),
    "seed-above-32-bit-train": (["train", "--seed", "4294967296"], "argument --seed"),
    "seed-above-32-bit-explain": (["explain", "--seed", "4294967296"], "argument --seed"),
    "explain-format-without-figure": (["explain", "--format", "pdf"],
                                      "--format sets the files of --figure; give --figure"),
    "last-seed-above-32-bit": (["study", "--seeds", "2", "--first-seed", "4294967295"],
                               "runs seeds up to 4294967296"),
    "seeds-above-limit": (["study", "--seeds", "10001"], "from 1 to 10,000, got 10001"),
    "momentum-1": (["study", "--momentum", "1"], "--momentum must be below 1"),
    "l1-negative": (["study", "--l1", "-1"], "--l1"),
    "groups-3-gn": (["study", "--variants", "gn", "--groups", "3"], "conv1"),
    "ghost-batch-1": (["study", "--variants", "gbn", "--ghost-batch", "1"], "--ghost-batch"),
    "ws-with-value": (["study", "--variants", "gn+ws=1"], "ws takes no value"),
    "unknown-dataset": (["study", "--dataset", "cifar10"], "cifar10"),
    "unknown-flag": (["study", "--bogus"], "--bogus"),
    "flag-of-another-command": (["train", "--variants", "bn"],
                                "unrecognized arguments: --variants bn (did you mean --variant?; "
                                "--variants is a flag of 'normlab study' and 'normlab sweep'); "
                                "see 'normlab train --help'"),
    "flag-of-other-commands-only": (["train", "--group-size", "2"],
                                    "--group-size 2 (--group-size is a flag of 'normlab study' "
                                    "and 'normlab sweep'); see 'normlab train --help'"),
    "three-commands-flag": (["train", "--seeds", "3"],
                            "(did you mean --seed?; --seeds is a flag of 'normlab study', "
                            "'normlab sweep' and 'normlab experiment')"),
    "unknown-flag-no-far-hint": (["study", "--frobnicate"],
                                 "unrecognized arguments: --frobnicate; see 'normlab study --help'"),
    "misspelt-out": (["study", "--output", "x"], "--output x (did you mean --out?)"),
    "seed-of-train-to-study": (["study", "--seed", "3"],
                               "--seed 3 (did you mean --first-seed?; --seed is a flag of "
                               "'normlab train' and 'normlab explain'); see 'normlab study --help'"),
    "misspelt-flag": (["sweep", "--batchsize", "8"], "(did you mean --batch-size?)"),
    "seed-with-equals": (["study", "--seed=3"], "--seed=3 (did you mean --first-seed?;"),
    "seed-to-experiment": (["experiment", "l1", "--seed", "3"],
                           "unrecognized arguments: --seed 3 (--seed is a flag of 'normlab train' "
                           "and 'normlab explain'); see 'normlab experiment --help'"),
    "flag-before-command": (["--quiet", "study"],
                            "--quiet (give the flags of 'normlab study' after 'study')"),
    "other-tools-lr-name": (["study", "--lrate", "0.1"],
                            "--lrate 0.1 (did you mean --lr?); see 'normlab study --help'"),
    "other-tools-data-name": (["sweep", "--data", "x"], "--data x (did you mean --data-dir?)"),
    "other-tools-norm-name-train": (["train", "--norm", "gn"], "--norm gn (did you mean --variant?)"),
    "other-tools-norm-name-study": (["study", "--norm", "gn"], "--norm gn (did you mean --variants?)"),
    "other-tools-no-cuda": (["train", "--no-cuda"], "--no-cuda (did you mean --device cpu?)"),
    "other-tools-name-unknown-here": (["explain", "--data", "x"],
                                      "unrecognized arguments: --data x; see 'normlab explain --help'"),
    "abbreviated-flag": (["study", "--epoch", "1"],
                         "--epoch 1 (did you mean --epochs?); see 'normlab study --help'"),
    "param-twice": (["sweep", "--param", "lr=0.1", "--param", "lr=0.2"],
                    "--param lr is given twice; give each setting once"),
    "sweep-out-is-a-file": (["sweep", "--param", "lr=0.1", "--out", "{nonempty}/keep.txt"],
                            "is a file; choose a new --out"),
    "no-command": ([], "COMMAND"),
    "non-empty-out": (["study", "--out", "{nonempty}"], "not empty"),
    "workers-negative": (["study", "--workers", "-1"], "--workers"),
    "group-size-word": (["study", "--group-size", "all"], "--group-size"),
    "precision-unknown": (["study", "--precision", "fp16"], "--precision"),
    "resume-missing": (["study", "--resume", "{nonempty}/nothing-here"], "does not exist"),
    "resume-not-a-run": (["study", "--resume", "{nonempty}"],
                         f"no {RunFolder('.').config.name} there"),
    "sweep-resume-missing": (["sweep", "--resume", "{nonempty}/nothing-here"], "does not exist"),
    "resume-a-file": (["study", "--resume", "{nonempty}/keep.txt"], "is a file, not a folder"),
    "report-not-a-run": (["report", "{nonempty}"], "is not a normlab run folder"),
    "resume-and-out": (["study", "--resume", "{nonempty}", "--out", "x"], "not both"),
    "format-unknown-report": (["report", "{nonempty}", "--format", "png,jpg"],
                              "--format: unknown figure format 'jpg'; valid: png, svg, pdf"),
    "format-empty-study": (["study", "--format", ""], "--format: no figure format given"),
    "format-unknown-sweep": (["sweep", "--param", "lr=0.1", "--format", "eps"],
                             "unknown figure format 'eps'; valid: png, svg, pdf"),
    "ray-flags-without-ray": (["sweep", "--param", "lr=0.1", "--ray-address", "1.2.3.4:1",
                               "--retries", "3"],
                              "--ray-address, --retries only apply to --backend ray"),
    "ray-flag-on-resume-without-ray": (["sweep", "--resume", "{nonempty}", "--ray-cpus", "2"],
                                       "--ray-cpus only applies to --backend ray"),
    "augmentation-turned-off": (["study", "--no-augment", "--rotate", "30"],
                                "--rotate sets the augmentation that --no-augment turns off"),
    "augmentation-turned-off-sweep": (["sweep", "--param", "lr=0.1", "--no-augment",
                                       "--rotate", "5", "--translate", "1"],
                                      "--rotate, --translate set the augmentation"),
    "swept-augmentation-turned-off": (["sweep", "--param", "rotate=5,10", "--no-augment"],
                                      "--rotate sets the augmentation that --no-augment"),
    "clean-fraction-turned-off": (["study", "--no-augment", "--clean-fraction", "0.2"],
                                  "--clean-fraction sets the augmentation that --no-augment turns"),
    "swept-clean-fraction-turned-off": (["sweep", "--param", "clean_fraction=0.2,0.4",
                                         "--no-augment"],
                                        "--clean-fraction sets the augmentation that --no-augment"),
    "lr-infinite": (["study", "--lr", "inf"], "--lr: must be a finite number > 0, got inf"),
    "out-empty": (["study", "--out", ""], "--out: an empty path; give a folder or file name"),
    "report-empty": (["report", ""], "RUN_DIR: an empty path"),
    "resume-empty": (["sweep", "--resume", ""], "--resume: an empty path"),
    "unknown-flag-no-false-hint": (["experiment", "lr", "--lr", "0.1"],
                                   "unrecognized arguments: --lr 0.1 (--lr is a flag of 'normlab "
                                   "study', 'normlab train' and 'normlab sweep'); see"),
    "clean-fraction-all": (["study", "--clean-fraction", "1"],
                           "--clean-fraction must be a number in [0, 1)"),
    "rotate-above-180": (["study", "--rotate", "180.001"], "--rotate 180.001 is more than 180 degrees"),
    "epochs-typo": (["study", "--epochs", "100000000000000000000"],
                    "--epochs: must be a whole number from 1 to 10,000, got 1000000000"),
    "experiment-epochs-typo": (["experiment", "lr", "--epochs", "20000"],
                               "--epochs 20000 is more than 10,000; give at most that"),
    "translate-above-half": (["train", "--translate", "15"],
                             "--translate 15.0 is more than 14 pixels: half the side"),
    "groups-fit-no-layer": (["train", "--variant", "gn", "--groups", "8"],
                            "use --groups with one of [1, 2, 4] (they divide every layer's"),
    "l1-read-by-no-variant": (["study", "--variants", "bn,gn", "--l1", "1e-3"],
                              "--l1 is read by no variant of --variants bn,gn (--l1 and --l2 by "
                              "a bare +l1 or +l2, as in bn+l1;"),
    "l1-of-an-explicit-lambda": (["study", "--variants", "bn+l1=1e-3", "--l1", "1e-4"],
                                 "--l1 is read by no variant"),
    "ghost-batch-and-groups-unused": (["train", "--variant", "bn", "--ghost-batch", "8",
                                       "--groups", "2"],
                                      "--ghost-batch, --groups are read by no variant of "
                                      "--variant bn"),
    "swept-l2-unused": (["sweep", "--variants", "gn,bn+l1", "--param", "l2=1e-4,1e-3"],
                        "--param l2 is read by no variant of --variants gn,bn+l1"),
}


@pytest.mark.parametrize("variants, params, warned", [
    ("gn,bn", ["groups=1,2"], ["--param groups: bn does not read it, so its runs repeat alike "
                               "at each of its 2 values; leave it out of this sweep"]),
    ("bn+l1,bn,ln", ["l1=1e-5,1e-4,1e-3"], ["--param l1: bn, ln do not read it, so their runs "
                                            "repeat alike at each of its 3 values"]),
    # with another swept setting: still named by the one setting they do not read
    ("gn,bn", ["groups=1,2", "lr=0.05,0.1"], ["--param groups: bn does not read it"]),
    ("gn,gbn", ["groups=1,2", "ghost_batch=4,8"], ["--param groups: gbn does not read it",
                                                   "--param ghost_batch: gn does not read it"]),
    ("gn,gn+ws", ["groups=1,2"], []),   # both read it: nothing repeats
    ("gn,bn", ["groups=2"], []),        # one value: nothing to repeat
])
def test_a_sweep_warns_of_variants_that_repeat_at_every_point(monkeypatch, capsys, tmp_path,
                                                              variants, params, warned) -> None:
    """A swept setting with several values that only some variants read (--groups by gn,
    --ghost-batch by gbn, --l1 by a bare +l1) is a one-line warning on stderr naming the others,
    whose runs would repeat alike at each of its values; the sweep still runs. Where every
    variant reads it, or it has one value, there is no warning. Given again in the same
    process, the warning is given again."""
    import normlab.sweep

    ran = []
    monkeypatch.setattr(normlab.sweep, "run_sweep", lambda *a, **k: ran.append(a))
    argv = ["sweep", "--variants", variants, "--quiet", "--out", str(tmp_path / "sweep")]
    argv += [x for p in params for x in ("--param", p)]
    for _ in range(2):
        assert main(argv) == 0
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == len(warned)
        for line, start in zip(lines, warned):
            assert line.startswith(f"normlab: warning: {start}"), line
    assert len(ran) == 2


GHOST = ("normlab: warning: gbn at {pairs} normalizes each batch as one virtual batch, which is "
         "plain BatchNorm (bn); give a --ghost-batch below the batch size to train with ghost "
         "batches")


@pytest.mark.parametrize("argv, pairs", [
    (["train", "--variant", "gbn", "--batch-size", "8"], "--ghost-batch 16 with --batch-size 8"),
    (["train", "--variant", "gbn", "--batch-size", "16"], "--ghost-batch 16 with --batch-size 16"),
    (["train", "--variant", "gbn", "--batch-size", "8", "--ghost-batch", "4"], None),
    (["study", "--variants", "bn,gn", "--batch-size", "8"], None),   # no variant reads it
    (["sweep", "--variants", "gbn,bn", "--param", "batch_size=8,32", "--ghost-batch", "16"],
     "--ghost-batch 16 with --batch-size 8"),
    (["sweep", "--variants", "gbn", "--param", "ghost_batch=4,128", "--param", "batch_size=8,256"],
     "--ghost-batch 128 with --batch-size 8"),
])
def test_gbn_whose_ghost_batch_is_the_whole_batch_is_a_warning(monkeypatch, capsys, tmp_path,
                                                              argv, pairs) -> None:
    """gbn with a --ghost-batch at least its batch size (given, or at a point of a sweep) is
    plain BatchNorm: a one-line warning on stderr names each such pair, and the command goes
    on; with ghost batches below every batch size, or no variant that reads --ghost-batch,
    there is none."""
    import normlab.study
    import normlab.sweep

    def stop(*args, **kwargs):
        raise NormlabError("stopped")

    monkeypatch.setattr(normlab.study, "run_study", stop)
    monkeypatch.setattr(normlab.sweep, "run_sweep", stop)
    assert main([*argv, "--quiet", "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "normlab: error: stopped"
    assert lines[:-1] == ([GHOST.format(pairs=pairs)] if pairs else [])


@pytest.mark.parametrize("flags, params, warned", [
    (["--lr", "0.3"], ["lr=0.05,0.2"], "--lr is also swept by --param lr: every point sets its "
                                       "own, and --lr only sets the base that sweep.json records"),
    (["--lr", "0.3", "--rotate", "5"], ["rotate=0,10", "lr=0.1"],
     "--lr, --rotate are also swept by --param lr, --param rotate:"),
    (["--batch-size", "64"], ["batch_size=32,128"], "--batch-size is also swept"),
    (["--batch-size", "64", "--scale-lr"], ["batch_size=32,128"], None),   # lr scales from it
    (["--lr", "0.3"], ["batch_size=32,128"], None),
])
def test_a_sweep_warns_of_a_flag_its_param_overrides(monkeypatch, capsys, tmp_path, flags,
                                                     params, warned) -> None:
    """A flag given beside a --param that sweeps the same setting is a one-line warning on
    stderr (every point sets its own value; the flag only sets the base that sweep.json
    records), and the sweep still runs with the flag in its base config. With --scale-lr,
    --batch-size is the batch the learning rate scales from, so it is no warning; nor is a flag
    for a setting that is not swept."""
    import normlab.sweep

    ran = []
    monkeypatch.setattr(normlab.sweep, "run_sweep", lambda base, *a, **k: ran.append(base))
    argv = ["sweep", "--variants", "gn", "--quiet", "--out", str(tmp_path / "sweep"), *flags]
    argv += [x for p in params for x in ("--param", p)]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == (0 if warned is None else 1), lines
    if warned:
        assert lines[0].startswith(f"normlab: warning: {warned}"), lines[0]
    assert len(ran) == 1 and ran[0].lr == (0.3 if "--lr" in flags else Config().lr)


@pytest.fixture
def nonempty(tmp_path: Path, monkeypatch) -> Path:
    """A folder holding earlier results, in an otherwise empty working directory (where a study
    without --out would create its default run folder)."""
    cwd = tmp_path / "cwd"
    folder = cwd / "nonempty"
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("earlier results\n")
    monkeypatch.chdir(cwd)
    return folder


def test_ghost_batch_flag_reaches_the_config_and_the_resume_check(tmp_path: Path, capsys) -> None:
    """--ghost-batch sets Config.ghost_batch (default 16), and --resume with a --ghost-batch other
    than the saved one exits 2 with one line naming the saved and the asked-for value."""
    from normlab import __version__
    from normlab.cli import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["study", "--variants", "gbn"])).ghost_batch == 16
    args = parser.parse_args(["train", "--variant", "gbn+ws", "--ghost-batch", "8"])
    assert config_from_args(args).ghost_batch == 8
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    saved = {**Config(variants=("gbn",), ghost_batch=4).to_dict(),
             "resolved": {"normlab_version": __version__}}
    folder.config.write_text(json.dumps(saved))
    assert main(["study", "--resume", str(folder.path), "--ghost-batch", "8"]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and "cannot resume" in err[0] and "ghost_batch: saved 4, now 8" in err[0]


def test_first_seed_flag_reaches_the_config_and_the_resume_check(tmp_path: Path, capsys) -> None:
    """--first-seed SEED (study and sweep, default 0) sets Config.first_seed, so --seeds N runs
    seeds SEED..SEED+N-1; --resume with a --first-seed other than the saved one exits 2 with one
    line naming both values (for `train`, under its own flags' names, seed and variant)."""
    from normlab import __version__
    from normlab.cli import config_from_args

    parser = build_parser()
    assert config_from_args(parser.parse_args(["study"])).first_seed == 0
    for command in (["study"], ["sweep", "--param", "lr=0.1"]):
        cfg = config_from_args(parser.parse_args([*command, "--seeds", "4", "--first-seed", "4"]))
        assert cfg.seed_list() == [4, 5, 6, 7]
    folder = RunFolder(tmp_path / "run")
    folder.path.mkdir()
    saved = {**Config(seeds=2, first_seed=3).to_dict(), "resolved": {"normlab_version": __version__}}
    folder.config.write_text(json.dumps(saved))
    assert main(["study", "--resume", str(folder.path), "--first-seed", "0"]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and "cannot resume" in err[0] and "first_seed: saved 3, now 0" in err[0]
    one = {**Config(variants=("bn",), seeds=1, first_seed=3).to_dict(),
           "resolved": {"normlab_version": __version__}}
    folder.config.write_text(json.dumps(one))
    assert main(["train", "--variant", "bn", "--resume", str(folder.path), "--seed", "0"]) == 2
    err = _stderr_lines(capsys)   # train's flag is --seed: the clash is named by it
    assert len(err) == 1 and "(seed: saved 3, now 0)" in err[0]
    assert main(["train", "--variant", "gn", "--resume", str(folder.path), "--seed", "3"]) == 2
    err = _stderr_lines(capsys)   # and --variant, not variants
    assert len(err) == 1 and "(variant: saved bn, now gn)" in err[0]


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_exits_2_with_one_line(no_network, nonempty: Path, capsys, case: str) -> None:
    """Bad input makes main() exit with code 2 (returned, or argparse's SystemExit(2)) and print
    exactly one non-empty line on stderr, starting with 'normlab', saying 'error' and naming the
    problem; no traceback; the earlier results in the folder are untouched and no run folder is
    created."""
    args, fragment = BAD_INPUT[case]
    code = exit_code([a.format(nonempty=nonempty) for a in args])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("normlab") and "error" in lines[0]
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert (nonempty / "keep.txt").read_text() == "earlier results\n"
    assert sorted(p.name for p in nonempty.iterdir()) == ["keep.txt"]
    assert [p.name for p in Path.cwd().iterdir()] == [nonempty.name]


def test_help_and_version_exit_zero(capsys) -> None:
    """`normlab --help` and `normlab --version` exit 0 in-process (SystemExit(0)), printing the
    commands and the version on stdout and nothing on stderr."""
    from normlab import __version__

    assert exit_code(["--help"]) == 0
    out = capsys.readouterr()
    assert all(c in out.out for c in ("study", "train", "sweep", "report", "explain"))
    assert out.err == ""
    assert exit_code(["--version"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() == f"normlab {__version__}" and out.err == ""


# ----------------------------------------------------------------------------------------------
# The process: console script, python -m normlab, no data and no network


@pytest.fixture()
def normlab(synthetic_subprocess, tmp_path: Path):
    """Real `normlab` processes (conftest's NormlabSubprocess: a private cache, no reachable
    network), here also with $NORMLAB_DATA at an empty folder: no data anywhere they look unless
    given --data-dir."""
    (tmp_path / "nodata").mkdir()
    return synthetic_subprocess(10, 10).with_env(**{data.CACHE_ENV: str(tmp_path / "nodata"),
                                                   "OMP_NUM_THREADS": "1"})


LAUNCHERS = {
    "console-script": [str(Path(sys.executable).with_name("normlab"))],
    "python-m": None,   # NormlabSubprocess's own: python -m normlab
}


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("case", ["unknown-flag", "non-empty-out"])
def test_process_exits_2_with_one_line(normlab, tmp_path: Path, launcher: str,
                                       case: str) -> None:
    """The real process (the installed `normlab` console script, and `python -m normlab`) exits
    with status 2 and writes exactly the one error line on stderr, both for input argparse rejects
    and for input normlab rejects; earlier results are untouched."""
    command = LAUNCHERS[launcher]
    if command is not None and not Path(command[0]).exists():
        pytest.skip("the normlab console script is not installed next to this Python")
    nonempty = tmp_path / "nonempty"
    nonempty.mkdir()
    (nonempty / "keep.txt").write_text("earlier results\n")
    args, fragment = BAD_INPUT[case]
    p = normlab.run([a.format(nonempty=nonempty) for a in args], cwd=tmp_path, timeout=120,
                    command=command)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("normlab: error:") and fragment in lines[0]
    assert (nonempty / "keep.txt").read_text() == "earlier results\n"
    assert sorted(p.name for p in nonempty.iterdir()) == ["keep.txt"]


def test_missing_data_subprocess_one_line(normlab, tmp_path: Path) -> None:
    """From a real shell: no data anywhere and no reachable network exits 2 with exactly one
    non-empty stderr line, which mentions --data-dir (the contract of the CLI's docstring), and
    leaves no run folder."""
    empty = tmp_path / "empty"
    empty.mkdir()
    p = normlab.run(["study", "--data-dir", str(empty), "--epochs", "1",
                     "--out", str(tmp_path / "out"), "--quiet"], cwd=tmp_path, timeout=120)
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("normlab: error:") and "--data-dir" in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("closed", ["stdout", "both", "no-stdout"])
def test_a_reader_that_goes_away_does_not_stop_the_study(normlab, tmp_path: Path,
                                                        closed: str) -> None:
    """`normlab study | head -1` (and `2>&1 | head -1`): once the reader of normlab's output
    has gone, the study still finishes its run folder, report included, and exits 0 without
    a traceback. Here the pipe's reading end is closed before the process starts, so its
    every write meets the closed pipe. A process started with its stdout closed altogether
    (``>&-``: Python's sys.stdout is None) finishes alike."""
    out = tmp_path / "out"
    args = [*normlab.command, "study", "--data-dir", str(normlab.data), "--variants", "gn",
            "--seeds", "1", "--epochs", "1", "--batch-size", "4", "--out", str(out)]
    read, write = os.pipe()
    os.close(read)
    streams = {"stdout": {"stdout": write, "stderr": subprocess.PIPE},
               "both": {"stdout": write, "stderr": write},
               "no-stdout": {"stderr": subprocess.PIPE,
                             "preexec_fn": lambda: os.close(1)}}[closed]
    try:
        p = subprocess.Popen(args, env=normlab.env, cwd=tmp_path, text=True, **streams)
    finally:
        os.close(write)
    err = p.stderr.read() if p.stderr is not None else ""
    assert p.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    folder = RunFolder(out)
    assert folder.report.is_file()
    assert json.loads(folder.timing_json.read_text())["wall_seconds"] is not None


# ----------------------------------------------------------------------------------------------
# --help


def _help_entries(text: str) -> dict[str, str]:
    """Map each option line of an argparse help text (first flag) to its whole entry text."""
    entries: dict[str, str] = {}
    current = None
    in_options = False
    for line in text.splitlines():
        if re.match(r"^(options|optional arguments):", line):
            in_options = True
            continue
        if not in_options:
            continue
        m = re.match(r"^  (-[-\w]+)", line)
        if m:
            current = m.group(1)
            entries[current] = line
        elif line.startswith("    ") and current is not None:
            entries[current] += " " + line.strip()
        elif line.strip() == "":
            current = None
    return {k: " ".join(v.split()) for k, v in entries.items()}


@pytest.mark.parametrize("command", ["study", "train"])
def test_help_mentions_default_for_every_flag(command: str, capsys) -> None:
    """`normlab <command> --help` exits 0 and lists every flag of the command, each mentioning
    'default' (and, where the default is a value, that value)."""
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    entries = _help_entries(capsys.readouterr().out)
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices)
    actions = [a for a in sub.choices[command]._actions if a.option_strings != ["-h", "--help"]]
    assert set(entries) - {"-h"} == {a.option_strings[0] for a in actions}
    for a in actions:
        entry = entries[a.option_strings[0]]
        assert "default" in entry.lower(), entry
        if a.default is not None and not isinstance(a.default, bool):
            assert str(a.default) in entry, entry


def test_sweep_help_names_every_sweepable_setting(capsys) -> None:
    """`normlab sweep --help` lists, under --param, every setting the sweep accepts
    (normlab.sweep_spec.SWEEPABLE), so a new sweepable setting cannot be left out of the help."""
    from normlab.sweep_spec import SWEEPABLE
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--help"])
    assert e.value.code == 0
    entry = _help_entries(capsys.readouterr().out)["--param"]
    listed = entry.split("Sweepable:", 1)[1].split("(required", 1)[0]
    assert [x.strip() for x in listed.split(",")] == list(SWEEPABLE)


def test_help_states_the_auto_group_size_and_each_folder_default(capsys) -> None:
    """--group-size's help states the CPU rule of ``study.auto_group_size`` (its constants), and
    each command's --out help names the folder that command creates when --out is not given."""
    from normlab.study import CPU_GROUP_MAX_BATCH, CPU_GROUP_SIZE
    helps = {}
    for command in ("study", "sweep"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        helps[command] = _help_entries(capsys.readouterr().out)
    assert (f"on a CPU {CPU_GROUP_SIZE} runs per group at batch sizes up to "
            f"{CPU_GROUP_MAX_BATCH}") in helps["study"]["--group-size"]
    assert "runs/<dataset>-<timestamp>" in helps["study"]["--out"]
    assert "runs/sweep-<timestamp>" in helps["sweep"]["--out"]
    assert "interrupted sweep" in helps["sweep"]["--resume"]


def test_train_offers_no_flags_that_spread_several_runs(capsys) -> None:
    """`train` trains one run, which --workers and --group-size (flags of study and sweep) could
    not change: its help leaves them out and giving one is a usage error, exit 2."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    entries = _help_entries(capsys.readouterr().out)
    assert "--seed" in entries and "--workers" not in entries and "--group-size" not in entries
    for flag in ("--workers", "--group-size"):
        with pytest.raises(SystemExit) as exit_:
            main(["train", flag, "2"])
        assert exit_.value.code == 2
        assert f"unrecognized arguments: {flag} 2" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# report and explain


def test_study_writes_figures_and_report(study_run) -> None:
    """`normlab study` ends by drawing every figure as PNG and SVG (the default formats) and
    writing report.md, which names each variant and links each figure's PNG by its path relative
    to the run folder."""
    _, out = study_run
    f = RunFolder(out)
    figures = [f.figure(kind) for kind in CURVES] + [f.misclassified_figure(v) for v in VARIANTS]
    figures.append(f.diagnostics_figure())
    for path in figures:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        assert b"<text" in path.with_suffix(".svg").read_bytes(), path
    report = f.report.read_text()
    for v in VARIANTS:
        assert f"`{v}`" in report
    for path in figures:
        assert f"({path.relative_to(out).as_posix()})" in report, path


def test_report_command_regenerates(study_run, capsys) -> None:
    """`normlab report RUN_DIR` rebuilds report.md and the figures from the saved files alone."""
    _, out = study_run
    f = RunFolder(out)
    f.report.unlink()
    f.figure("test_loss").unlink()
    assert main(["report", str(out), "--mistakes", "first"]) == 0
    assert f.report.is_file() and f.figure("test_loss").is_file()
    assert "first 10 mistakes" in f.report.read_text()


def test_report_format_flag(study_run, tmp_path: Path, capsys) -> None:
    """`normlab report RUN_DIR --format pdf` writes a PNG and a PDF of every figure (no SVG);
    `--format png,svg,pdf` all three; `normlab report --help` states the default, png,svg."""
    run = _copy_run(study_run, tmp_path)
    figures = [run.figure(kind) for kind in CURVES] + [run.misclassified_figure(v)
                                                       for v in VARIANTS]
    figures.append(run.diagnostics_figure())
    for path in run.figures.iterdir():
        path.unlink()
    assert main(["report", str(run.path), "--format", "pdf"]) == 0
    assert sorted(run.figures.iterdir()) == sorted(
        p for fig in figures for p in figure_files(fig, ("pdf",)).values())
    assert all(fig.with_suffix(".pdf").read_bytes()[:4] == b"%PDF" for fig in figures)
    assert main(["report", str(run.path), "--format", "png,svg,pdf"]) == 0
    assert len(list(run.figures.iterdir())) == 3 * len(figures)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    entry = _help_entries(capsys.readouterr().out)["--format"]
    assert f"(default: {','.join(DEFAULT_FIGURE_FORMATS)})" in entry and "pdf" in entry, entry


def test_report_command_bad_folder(tmp_path: Path, capsys) -> None:
    """`normlab report` on a folder holding none of a run's files exits 2 with one line saying it
    is not a run folder; on a run folder that lost its config.json, with one line naming it."""
    assert main(["report", str(tmp_path)]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("normlab: error:")
    assert f"{tmp_path} is not a normlab run folder" in err[0], err[0]
    RunFolder(tmp_path).summary.write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and str(RunFolder(tmp_path).config) in err[0], err[0]


def test_a_path_without_permission_exits_2_with_one_line(tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    """A folder this user may not read (report) or write into (study --out) is bad input: one line
    naming the path, exit 2, no traceback. (The suite may run as root, whom file modes do not
    stop, so the refusal the operating system would give is raised where the path is looked at.)"""
    locked = tmp_path / "locked"

    def refuse(original):
        def check(self, *args, **kwargs):
            if self == locked or locked in self.parents:
                raise PermissionError(13, "Permission denied", str(self))
            return original(self, *args, **kwargs)
        return check

    for name in ("exists", "is_dir", "mkdir"):
        monkeypatch.setattr(Path, name, refuse(getattr(Path, name)))
    for argv in (["report", str(locked / "run")],
                 ["study", "--variants", "gn", "--epochs", "1", "--out", str(locked / "run")]):
        assert main(argv) == 2
        err = _stderr_lines(capsys)
        assert len(err) == 1 and err[0].startswith("normlab: error: permission denied on "), err
        assert str(locked) in err[0] and "you may read and write" in err[0], err[0]


def test_explain_command_exit_codes(tmp_path: Path, capsys, monkeypatch) -> None:
    """`normlab explain` exits 0 when the hand computation matches PyTorch, writes --figure (a
    PNG and its SVG; a --figure ending in .pdf gives the PNG and that PDF), and exits 1 when it
    does not (a hand computation with the unbiased variance)."""
    from normlab import explain

    fig = tmp_path / "axes.png"
    assert main(["explain", "--figure", str(fig)]) == 0
    assert fig.read_bytes()[:4] == b"\x89PNG" and fig.with_suffix(".svg").is_file()
    assert "all match" in capsys.readouterr().out
    assert main(["explain", "--figure", str(tmp_path / "paper" / "axes.pdf"),
                 "--format", "png"]) == 0
    assert sorted(p.name for p in (tmp_path / "paper").iterdir()) == ["axes.pdf", "axes.png"]

    right = explain.norm_stats

    def unbiased(x, norm, groups=2, eps=explain.EPS, ghost_batch=16):
        if norm not in ("bn", "gn", "ln"):   # gbn stays right: one wrong norm must be enough
            return right(x, norm, groups, eps, ghost_batch=ghost_batch)
        mean, var, _ = right(x, norm, groups, eps)
        dims = {"bn": (0, 2, 3), "gn": None, "ln": (1, 2, 3)}[norm]
        if dims is None:
            n, c, h, w = x.shape
            g = x.reshape(n, groups, c // groups, h, w)
            m, v = g.mean((2, 3, 4), keepdim=True), g.var((2, 3, 4), keepdim=True, unbiased=True)
            y = ((g - m) / (v + eps).sqrt()).reshape(x.shape)
        else:
            m, v = x.mean(dims, keepdim=True), x.var(dims, keepdim=True, unbiased=True)
            y = (x - m) / (v + eps).sqrt()
        return mean, var, y

    monkeypatch.setattr(explain, "norm_stats", unbiased)
    assert main(["explain"]) == 1


def test_explain_figure_never_overwrites_and_needs_a_figure_name(tmp_path: Path, capsys) -> None:
    """`normlab explain --figure` refuses, in one line with exit 2 and before printing anything,
    a path that is not a .png/.svg/.pdf name (an existing text file, a .jpg), an empty one, one
    under a file, and a figure whose file or companion file exists already; the existing files
    keep their bytes."""
    notes = tmp_path / "notes"
    notes.write_text("earlier notes\n")
    companion = tmp_path / "keep.svg"
    companion.write_text("<svg/>")
    for path, fragment in ((notes, "is not a figure file name"),
                           (tmp_path / "a.jpg", "is not a figure file name"),
                           ("", "--figure: an empty path"),
                           (notes / "sub" / "axes.png", f"{notes} is a file, not a folder"),
                           (tmp_path / "keep.png", f"would overwrite {companion}; delete it")):
        assert exit_code(["explain", "--figure", str(path)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert notes.read_text() == "earlier notes\n" and companion.read_text() == "<svg/>"
    assert not (tmp_path / "keep.png").exists() and not (tmp_path / "a.jpg").exists()


def _copy_run(study_run, tmp_path: Path) -> RunFolder:
    import shutil

    _, out = study_run
    return RunFolder(shutil.copytree(out, tmp_path / "copy"))


def test_report_unwritable_folder_is_one_line(study_run, tmp_path: Path, capsys) -> None:
    """`normlab report` into a run folder where report.md cannot be written (here: a folder is in
    its place) exits 2 with one line, instead of a traceback."""
    run = _copy_run(study_run, tmp_path)
    run.report.unlink()
    run.report.mkdir()
    assert main(["report", str(run.path)]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and err[0].startswith("normlab: error:") and "writable" in err[0]


@pytest.mark.parametrize("key,value", [("lr", "fast"), ("rotate", None), ("epochs", 0)])
def test_report_damaged_config_is_one_line(study_run, tmp_path: Path, capsys, key, value) -> None:
    """A config.json whose values normlab would not accept is a one-line error naming
    config.json (exit 2), not a traceback from deep in the report."""
    run = _copy_run(study_run, tmp_path)
    cfg = json.loads(run.config.read_text())
    cfg[key] = value
    run.config.write_text(json.dumps(cfg))
    assert main(["report", str(run.path)]) == 2
    err = _stderr_lines(capsys)
    assert len(err) == 1 and str(run.config) in err[0], err


def test_report_data_dir_flag(study_run, synthetic_data, tmp_path: Path) -> None:
    """`normlab report --data-dir DIR` takes the test images from DIR: with the run's own data
    folder recorded as a missing path, every variant's grid is still drawn."""
    folder = synthetic_data.folder
    run = _copy_run(study_run, tmp_path)
    cfg = json.loads(run.config.read_text())
    cfg["data_dir"] = str(tmp_path / "moved-away")
    run.config.write_text(json.dumps(cfg))
    grids = [run.misclassified_figure(v) for v in VARIANTS]
    for grid in grids:
        grid.unlink()
    assert main(["report", str(run.path), "--data-dir", str(folder)]) == 0
    assert all(grid.is_file() for grid in grids)


def test_report_of_a_sweep_folder_says_to_give_a_point(tmp_path: Path, capsys) -> None:
    """`normlab report` of a sweep folder exits 2 with one line saying it is a sweep and what to
    give instead (one of its points), not that a run folder's config is missing, and the command
    that rewrites its own report: `sweep --resume`, or for an experiment's folder
    `normlab experiment NAME --out` (a plain sweep into it is refused)."""
    from normlab.runfolder import SweepFolder

    sweep = SweepFolder(tmp_path / "sweep")
    sweep.create({"params": [{"name": "lr", "values": [0.1]}]})
    assert main(["report", str(sweep.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a sweep folder; give one of its points" in err
    assert f"rewrite its own report with normlab sweep --resume {sweep.path} " in err
    exp = SweepFolder(tmp_path / "exp")
    exp.create({"params": [{"name": "l1", "values": [0.0]}], "experiment": "l1"})
    assert main(["report", str(exp.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"rewrite its own report with normlab experiment l1 --out {exp.path}")
    exp.record.write_text("{not json")   # damaged: still named a sweep folder, with its point
    assert main(["report", str(exp.path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is a sweep folder; give one of its points" in err
    assert f"can be rewritten once {exp.record} is restored" in err


def test_report_with_a_data_dir_without_the_data_is_one_line(study_run, tmp_path: Path,
                                                             capsys) -> None:
    """`normlab report --data-dir DIR` where DIR does not hold the test images exits 2 with one
    line naming DIR, and writes nothing: report.md keeps its bytes (without --data-dir, data
    that cannot be found only leave the grids out, with a note in report.md)."""
    run = _copy_run(study_run, tmp_path)
    before = run.report.read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(run.path), "--data-dir", str(empty)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(empty) in err, err
    assert run.report.read_bytes() == before


def test_console_command_ignores_ctrl_c_once_main_has_returned(monkeypatch, capsys) -> None:
    """The console command (cli.run) exits with main's code, and only after main has returned
    does it ignore SIGINT (a Ctrl-C during the interpreter's shutdown would print a traceback of
    its clean-up under a complete result); a KeyboardInterrupt that main lets through (or that
    arrives just as it returns) exits 130 without a traceback."""
    import signal

    import normlab.cli as cli

    calls = []
    monkeypatch.setattr(sys, "stdout", sys.stdout)   # run() guards them for the rest of the
    monkeypatch.setattr(sys, "stderr", sys.stderr)   # process: restored after this test
    monkeypatch.setattr(cli, "main", lambda: calls.append("main") or 2)
    monkeypatch.setattr(signal, "signal", lambda sig, handler: calls.append((sig, handler)))
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    assert exit_.value.code == 2
    assert calls == ["main", (signal.SIGINT, signal.SIG_IGN)]

    def interrupted():   # a Ctrl-C that main does not catch, or one just as it returns
        calls.append("main")
        raise KeyboardInterrupt

    calls.clear()
    monkeypatch.setattr(cli, "main", interrupted)
    with pytest.raises(SystemExit) as exit_:   # no traceback: the shell's 130, SIGINT ignored
        cli.run()
    assert exit_.value.code == 130
    assert calls == ["main", (signal.SIGINT, signal.SIG_IGN)]


def test_a_swept_augment_takes_rotate_with_no_augment(tmp_path: Path, capsys) -> None:
    """When --param sweeps augment itself, --rotate with --no-augment is not refused (the swept
    points with augmentation use it): the command gets past that check to the next one, here an
    --out that is a file. (--no-augment beside that --param only sets the sweep's base, which a
    warning says.)"""
    taken = tmp_path / "file.txt"
    taken.write_text("x")
    argv = ["sweep", "--param", "augment=true,false", "--no-augment", "--rotate", "30",
            "--out", str(taken)]
    assert main(argv) == 2
    err = [line for line in _stderr_lines(capsys) if line.startswith("normlab: error")]
    assert len(err) == 1 and "is a file" in err[0] and "--no-augment" not in err[0], err


def test_default_out_folders_started_in_one_second_differ(tmp_path: Path, monkeypatch) -> None:
    """The default --out of a study or sweep is claimed with an atomic mkdir: three claimed in
    the same second are three new, empty folders (the time, then -2 and -3), never one shared."""
    import normlab.store as store

    monkeypatch.setattr(store.time, "strftime", lambda fmt: "20260101-120000")
    made = [store.new_timestamped_folder(tmp_path / "runs", "mnist") for _ in range(3)]
    assert [p.name for p in made] == ["mnist-20260101-120000", "mnist-20260101-120000-2",
                                      "mnist-20260101-120000-3"]
    assert all(p.is_dir() and not any(p.iterdir()) for p in made)


def test_a_failed_sweep_leaves_no_default_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    """A sweep without --out that fails before training (here: a --data-dir that does not
    exist) exits 2 and leaves no empty sweep folder under runs/."""
    monkeypatch.chdir(tmp_path)
    argv = ["sweep", "--param", "lr=0.1", "--data-dir", str(tmp_path / "missing"), "--quiet"]
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not list((tmp_path / "runs").glob("sweep-*"))


def test_study_resume_of_a_sweep_folder_names_sweep_resume(tmp_path: Path, capsys) -> None:
    """`normlab study --resume` (or train's) of a sweep folder exits 2 with one line saying it is a
    sweep folder and the command that continues it, not that config.json is missing."""
    from normlab.runfolder import SweepFolder

    sweep = SweepFolder(tmp_path / "sweep")
    sweep.create({"params": [{"name": "lr", "values": [0.1]}]})
    for command in ("study", "train"):
        assert main([command, "--resume", str(sweep.path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == (f"normlab: error: {sweep.path} is a sweep folder, not a run folder; "
                       f"continue it with 'normlab sweep --resume {sweep.path}'")


def test_default_out_under_a_file_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    """Where the default output folder cannot be made (runs/ is a file), a study or sweep
    without --out exits 2 with one line naming the place and the fix, no traceback."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").write_text("not a folder")
    for argv in (["study", "--quiet"], ["sweep", "--param", "lr=0.1", "--quiet"]):
        assert main(argv) == 2
        err = _stderr_lines(capsys)
        assert len(err) == 1 and "cannot create the default output folder under 'runs'" in err[0]
        assert err[0].endswith("give --out a writable folder"), err
