"""Sweeps: parsing, the sweep folder, resuming, bad input, and the Ray backend on a real
loopback head node of the test's own (skipped when Ray is not installed).

Sweeps run as subprocesses (``python -m normlab sweep``, conftest's ``synthetic_subprocess``)
in an environment whose ``sitecustomize.py`` registers a synthetic MNIST-format dataset, so that
the driver and every Ray worker process see the same small data; bad input, which needs no data,
runs in-process through ``normlab.cli.main`` (with conftest's ``no_network``). Every path of a
sweep or run folder comes from :class:`normlab.runfolder.SweepFolder` /
:class:`~normlab.runfolder.RunFolder`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import csv_rows

from normlab import __version__
from normlab.config import Config
from normlab.errors import ConfigError
from normlab.runfolder import RunFolder, SweepFolder, figure_files
from normlab.sweep_spec import Param, SweepSpec, parse_param, point_name

N_TRAIN, N_TEST = 256, 64
# --group-size 1: every run trained alone, as a Ray task trains it, so that the Ray test can ask
# for byte-equal metrics (on a CPU, auto groups runs at batch sizes <= 32, and a group computes
# the same as its runs alone only up to floating-point rounding).
SWEEP = ["sweep", "--variants", "gn,bn", "--param", "batch_size=16,32", "--seeds", "2",
         "--epochs", "2", "--workers", "2", "--group-size", "1", "--quiet"]
POINTS = ("batch_size=16", "batch_size=32")   # point names of SWEEP
RUNS = [(v, s) for v in ("gn", "bn") for s in (0, 1)]   # (variant, seed) of each point

# Run inside every subprocess (see conftest's synthetic_subprocess): a run with --rotate 7.5 and
# seed 1 raises, and leaves one file per attempt in $NORMLAB_TEST_ATTEMPTS (so a test can count
# Ray's retries), until a file "healed" appears beside that folder.
INJECT_FAILURE = """
    from normlab import train
    _init = train.GroupTrainer.__init__

    def _failing_init(self, cfg, runs, *args, **kwargs):
        folder = os.environ.get("NORMLAB_TEST_ATTEMPTS")
        healed = folder and os.path.exists(os.path.join(os.path.dirname(folder), "healed"))
        if cfg.rotate == 7.5 and any(seed == 1 for _, seed in runs) and not healed:
            if folder:
                import tempfile
                tempfile.mkstemp(dir=folder)
            raise RuntimeError("injected failure for seed 1")
        _init(self, cfg, runs, *args, **kwargs)

    train.GroupTrainer.__init__ = _failing_init
"""


# ----------------------------------------------------------------------------------------------
# Parsing


def test_parse_param_types_and_aliases() -> None:
    """Values are parsed by the type of the config field they set; l1/l2 set the default lambdas;
    kebab-case names work; a ghost batch the config rejects names the point."""
    assert parse_param("batch_size=2,8,32") == Param("batch_size", (2, 8, 32))
    assert parse_param("batch-size=4") == Param("batch_size", (4,))
    assert parse_param("l1=0,1e-5").values == (0.0, 1e-5) and parse_param("l1=0").field == "l1_default"
    assert parse_param("augment=true,off").values == (True, False)
    assert parse_param("dataset=mnist,kmnist").values == ("mnist", "kmnist")
    ghost = parse_param("ghost-batch=4,16")
    assert ghost == Param("ghost_batch", (4, 16))
    assert [c.ghost_batch for _, c in SweepSpec((ghost,)).points(Config(variants=("gbn",)))] \
        == [4, 16]
    with pytest.raises(ConfigError, match="ghost_batch=1: --ghost-batch must be"):
        SweepSpec((parse_param("ghost_batch=1,4"),)).points(Config(variants=("gbn",)))
    clean = parse_param("clean-fraction=0,0.2")
    assert clean == Param("clean_fraction", (0.0, 0.2))
    assert [c.clean_fraction for _, c in SweepSpec((clean,)).points(Config())] == [0.0, 0.2]
    with pytest.raises(ConfigError, match="clean_fraction=1: --clean-fraction must be"):
        SweepSpec((parse_param("clean_fraction=0.2,1"),)).points(Config())


@pytest.mark.parametrize(("text", "fragment"), [
    ("dropout=0.1,0.2", "cannot be swept"),
    ("batch_size", "NAME=V1,V2"),
    ("batch_size=", "no values"),
    ("lr=0.1,,0.2", "an empty value in '0.1,,0.2'"),
    ("lr=0.1,", "an empty value"),
    ("batch_size=8,eight", "'eight' is not a whole number"),
    ("epochs=\u0663", "is not a whole number"),      # an Arabic-Indic 3, as the flags refuse it
    ("lr=\u0661e-3", "is not a number"),
    ("lr=fast", "'fast' is not a number"),
    ("lr=nan", "not a finite number"),
    ("dataset=cifar10", "unknown value 'cifar10'"),
    ("augment=maybe", "not true or false"),
    ("batch_size=8,8", "listed twice"),
    ("lr=0.1234561,0.1234564", "beyond 6 significant digits"),
])
def test_parse_param_rejects_bad_input(text: str, fragment: str) -> None:
    """Each malformed --param is a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=fragment):
        parse_param(text)


def test_points_grid_scale_lr_and_validation() -> None:
    """Two params make the full grid; --scale-lr sets lr = lr * batch_size / batch_size of the
    base config; a value the config rejects names the point."""
    base = Config(lr=0.1, batch_size=128)
    spec = SweepSpec((parse_param("batch_size=32,256"), parse_param("l1=0,1e-4")), scale_lr=True)
    points = spec.points(base)
    assert [v for v, _ in points] == [{"batch_size": 32, "l1": 0.0}, {"batch_size": 32, "l1": 1e-4},
                                      {"batch_size": 256, "l1": 0.0}, {"batch_size": 256, "l1": 1e-4}]
    assert [c.lr for _, c in points] == [0.025, 0.025, 0.2, 0.2]
    assert [c.l1_default for _, c in points] == [0.0, 1e-4, 0.0, 1e-4]
    assert point_name(points[1][0]) == "batch_size=32,l1=0.0001"
    with pytest.raises(ConfigError, match="batch_size=1: --batch-size 1 cannot train BatchNorm"):
        SweepSpec((parse_param("batch_size=1,2"),)).points(Config(variants=("bn",)))
    with pytest.raises(ConfigError, match="--scale-lr"):
        SweepSpec((parse_param("lr=0.1,0.2"),), scale_lr=True)
    with pytest.raises(ConfigError, match="twice"):
        SweepSpec((parse_param("lr=0.1"), parse_param("lr=0.2")))


def test_sweep_figure_axes_and_missing_runs(tmp_path) -> None:
    """sweep_figure draws a PNG and, next to it, an SVG (the default formats; formats=("pdf",):
    a PDF instead of the SVG); values spanning a decade or more get a log x axis (a 0 among
    them is still placed), narrower spans a linear one; failed runs are left out, not plotted as
    zeros, and a point that lost some of its runs says how many it holds ("1 of 2")."""
    from normlab.sweep_report import ValueAxis, sweep_figure

    assert ValueAxis.of([2, 8, 32, 128]).log and ValueAxis.of([0, 1e-5, 1e-4, 1e-3]).log
    assert not ValueAxis.of([0.02, 0.05, 0.1]).log and not ValueAxis.of([16, 32]).log
    assert not ValueAxis.of(["8-16-16-16-12", "8s4-16-16-16-12"]).log
    rows = [{"l1": l1, "variant": v, "seed": s, "status": "failed" if l1 == 1e-2 and s else "ok",
             "final_test_acc": None if l1 == 1e-2 and s else 99.0 - 1000 * l1 + 0.1 * s}
            for l1 in (0.0, 1e-4, 1e-3, 1e-2) for v in ("bn+l1",) for s in (0, 1)]
    target = SweepFolder(tmp_path).figure("l1")
    path = sweep_figure(rows, "l1", [], target)
    assert path == target
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
    assert sorted(target.parent.iterdir()) == sorted(figure_files(target).values())
    svg = figure_files(target)["svg"].read_text()
    assert "<text" in svg
    # The point at 1e-2 holds 1 of its 2 runs: hollow, and labelled so (the others are whole).
    assert svg.count("1 of 2") == 1 and " of 2" not in svg.replace("1 of 2", "")
    other = tmp_path / "pdf" / target.name
    sweep_figure(rows, "l1", [], other, formats=("pdf",))
    assert sorted(other.parent.iterdir()) == sorted(figure_files(other, ("pdf",)).values())


def test_sweep_table_groups_by_everything_but_the_seed() -> None:
    """The sweep table has one row per combination of every swept setting and the variant (the
    runs of a row differ only in their seed), in first-seen order, with N (finished seeds; "of M"
    when some runs did not finish), mean ± sample std, the t-based 95% CI of the mean (by hand:
    mean ± t_{0.975, n-1} sd / sqrt(n)) and the best accuracy; runs that failed or diverged are left
    out of the statistics."""
    from normlab.sweep_report import sweep_table

    def row(b, lr, v, seed, acc, status="ok"):
        ok = status == "ok"
        return {"batch_size": b, "lr": lr, "variant": v, "seed": seed, "status": status,
                "final_val_acc": None, "best_val_acc": None,
                "final_test_acc": acc if ok else None, "best_test_acc": acc + 0.1 if ok else None,
                "final_test_loss": 0.05 if ok else None, "message": ""}

    rows = [row(16, 0.1, "gn", s, a) for s, a in enumerate([98.0, 98.3, 98.6])]
    rows += [row(16, 0.2, "gn", s, a) for s, a in enumerate([97.0, 97.5])]
    rows += [row(16, 0.2, "gn", 2, 0.0, "diverged")]
    rows += [row(32, 0.1, "gn", s, 99.0) for s in range(3)]
    rows += [row(16, 0.1, "bn", s, a) for s, a in enumerate([90.0, 91.0, 92.0])]
    t = sweep_table(rows, ["batch_size", "lr"])
    assert t.columns == ["batch_size", "lr", "variant", "N", "final test acc (%)", "95% CI",
                         "best test acc (%)"]
    half = 4.302653 * 0.3 / 3 ** 0.5   # sd of 98.0, 98.3, 98.6 is 0.3
    assert t.rows == [
        ["16", "0.1", "`gn`", "3", "98.30 ± 0.30", f"[{98.3 - half:.2f}, {98.3 + half:.2f}]",
         "98.40 ± 0.30"],
        ["16", "0.2", "`gn`", "2 of 3", "97.25 ± 0.35", "[94.07, 100.43]", "97.35 ± 0.35"],
        ["32", "0.1", "`gn`", "3", "99.00 ± 0.00", "[99.00, 99.00]", "99.10 ± 0.00"],
        ["16", "0.1", "`bn`", "3", "91.00 ± 1.00", "[88.52, 93.48]", "91.10 ± 1.00"],
    ]


# ----------------------------------------------------------------------------------------------
# Sweep folders, through the command line


@pytest.fixture(scope="module")
def normlab(synthetic_subprocess):
    """`python -m normlab` processes on synthetic data, with INJECT_FAILURE (conftest's
    NormlabSubprocess; its ``data`` is the dataset's folder)."""
    return synthetic_subprocess(N_TRAIN, N_TEST, extra=INJECT_FAILURE, timeout=600)


def _files(folder: RunFolder) -> set[Path]:
    """Every file under a run folder, as a path relative to it."""
    return {p.relative_to(folder.path) for p in folder.path.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def local_sweep(normlab, tmp_path_factory):
    """The folder of SWEEP run with --backend local (the default)."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    r = normlab.run(SWEEP + ["--data-dir", str(normlab.data), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    (out.parent / "stdout.txt").write_text(r.stdout)   # what it printed, for test_sweep_folder
    return out


def test_sweep_folder(local_sweep) -> None:
    """A sweep writes sweep.json, sweep.csv with one row per variant x value x seed (the swept
    value, status, final/best accuracy and loss), one finished study folder per point (and no
    other), the figure of the swept setting and report.md with the table, the findings and the
    figure. It ends by printing the table of its points (variant names plain, not as code) and
    where its results and report are."""
    sweep = SweepFolder(local_sweep)
    rows = csv_rows(sweep.table)
    printed = (local_sweep.parent / "stdout.txt").read_text().splitlines()
    assert printed[-1] == f"sweep results in {local_sweep}; report: {sweep.report}"
    table = printed[printed.index(next(p for p in printed if p.startswith("batch_size"))):-1]
    assert table[0].split()[:3] == ["batch_size", "variant", "N"] and len(table) == 2 + 4
    assert [line.split()[:3] for line in table[2:]] == [
        [b, v, "2"] for b in ("16", "32") for v in ("gn", "bn")]
    assert list(rows[0]) == ["batch_size", "variant", "seed", "status", "final_val_acc",
                             "best_val_acc", "final_test_acc", "best_test_acc",
                             "final_test_loss", "message"]
    assert all(r["final_val_acc"] == r["best_val_acc"] == "" for r in rows)   # no --val
    assert sorted((r["batch_size"], r["variant"], r["seed"]) for r in rows) == sorted(
        (b, v, s) for b in ("16", "32") for v in ("gn", "bn") for s in ("0", "1"))
    assert all(r["status"] == "ok" and 0 <= float(r["final_test_acc"]) <= 100 for r in rows)
    assert [p.path for p in sweep.points()] == [sweep.point(name).path for name in POINTS]
    for b in (16, 32):
        point = sweep.point(point_name({"batch_size": b}))
        assert point.report.is_file()   # the point's study ran to its end (report included)
        summary = json.loads(point.summary.read_text())
        assert json.loads(point.config.read_text())["batch_size"] == b
        for r in rows:
            if r["batch_size"] == str(b):
                vals = summary["variants"][r["variant"]]["final_test_acc"]["values"]
                assert float(r["final_test_acc"]) == vals[int(r["seed"])]
    figure = sweep.figure("batch_size")
    assert figure.stat().st_size > 10_000 and figure_files(figure)["svg"].is_file()
    report = sweep.report.read_text()
    assert "## Findings" in report and figure.relative_to(sweep.path).as_posix() in report
    assert "Welch's p = " in report and "p = p" not in report
    assert "| 16 | `gn` | 2 |" in report   # N: both seeds finished
    saved = json.loads(sweep.record.read_text())
    assert saved["params"] == [{"name": "batch_size", "values": [16, 32]}]


def test_same_command_again_skips_finished_and_redoes_unfinished(normlab, local_sweep,
                                                                 tmp_path) -> None:
    """Running the same command on a finished sweep trains nothing and rewrites the same
    sweep.csv; after a point is made unfinished (its summary deleted, one run's training state
    gone), the same command redoes just that and ends with the same results."""
    folder = normlab.data
    out = tmp_path / "sweep"
    shutil.copytree(local_sweep, out)
    sweep, local = SweepFolder(out), SweepFolder(local_sweep)
    point = sweep.point(POINTS[0])
    stamp = point.timing_csv.read_bytes()
    r = normlab.run(SWEEP + ["--data-dir", str(folder), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert "done before, skipped" in r.stdout
    assert point.timing_csv.read_bytes() == stamp          # not retrained
    assert sweep.table.read_bytes() == local.table.read_bytes()
    point.summary.unlink()
    point.group_state(0).unlink()                          # gn seed 0: start over
    r = normlab.run(SWEEP + ["--data-dir", str(folder), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert sweep.table.read_bytes() == local.table.read_bytes()
    assert point.metrics.read_bytes() == local.point(POINTS[0]).metrics.read_bytes()
    assert point.timing_csv.read_bytes() != stamp          # this time it did train


def test_grid_of_two_params_draws_one_figure_per_param(normlab, tmp_path) -> None:
    """Two --param flags sweep every combination and draw a figure for each param."""
    out = tmp_path / "grid"
    r = normlab.run(["sweep", "--variants", "bn+l1", "--param", "l1=0,1e-3", "--param",
                     "lr=0.02,0.05", "--epochs", "1", "--data-dir", str(normlab.data), "--out",
                     str(out), "--quiet"])
    assert r.returncode == 0, r.stderr
    sweep = SweepFolder(out)
    rows = csv_rows(sweep.table)
    assert sorted((x["l1"], x["lr"]) for x in rows) == [("0.0", "0.02"), ("0.0", "0.05"),
                                                       ("0.001", "0.02"), ("0.001", "0.05")]
    for p in ("l1", "lr"):
        assert sweep.figure(p).is_file()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--param", "dropout=0.1"], "cannot be swept"),
    (["--param", "batch_size=1,16", "--variants", "bn"], "batch_size=1: --batch-size 1"),
    ([], "give at least one --param"),
    (["--param", "lr=0.1", "--backend", "spark"], "--backend"),
])
def test_bad_sweep_input_exits_2_with_one_line(no_network, tmp_path, monkeypatch, capsys,
                                               args, fragment) -> None:
    """Bad sweep input makes main() exit 2 (returned, or argparse's SystemExit(2)) with one
    'normlab: error:' line naming the problem, and leaves no sweep folder behind (nor anything in
    the working directory). No network (bad input must fail before any data)."""
    from normlab.cli import main

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "bad"
    argv = ["sweep", "--epochs", "1", "--data-dir", str(tmp_path / "nodata"), "--out", str(out),
            "--quiet"] + args
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("normlab: error:") and fragment in lines[0]
    assert not out.exists() and not any(cwd.iterdir())


def test_a_point_too_big_for_the_data_is_bad_input(normlab, tmp_path) -> None:
    """A swept --train-subset larger than the training set (a check that needs the data's size)
    exits 2 with one line before any point trains, and leaves no sweep folder, instead of
    recording failed runs that running the command again cannot fix."""
    out = tmp_path / "too-big"
    r = normlab.run(["sweep", "--variants", "gn", "--param", f"train_subset=64,{N_TRAIN + 1}",
                     "--epochs", "1", "--data-dir", str(normlab.data), "--out", str(out),
                     "--quiet"])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"--train-subset {N_TRAIN + 1} exceeds the {N_TRAIN} training images" in lines[0]
    assert not out.exists()


def test_sweep_resume_uses_the_saved_sweep(normlab, local_sweep, tmp_path) -> None:
    """`normlab sweep --resume DIR` continues the sweep saved in DIR (here: finished, so nothing
    is retrained and sweep.csv stays the same); with --format png,pdf (not a setting of the
    sweep) it also draws the sweep's figure as PDF, and the points' figures stay as they were;
    adding a --param to it is refused."""
    out = tmp_path / "copy"
    shutil.copytree(local_sweep, out)
    sweep = SweepFolder(out)
    r = normlab.run(["sweep", "--resume", str(out), "--quiet", "--format", "png,pdf"])
    assert r.returncode == 0, r.stderr
    assert sweep.table.read_bytes() == SweepFolder(local_sweep).table.read_bytes()
    figure = sweep.figure("batch_size")
    assert figure_files(figure, ("pdf",))["pdf"].read_bytes()[:4] == b"%PDF"
    before = SweepFolder(local_sweep).point(POINTS[0]).figures
    assert sorted(p.name for p in sweep.point(POINTS[0]).figures.iterdir()) == sorted(
        p.name for p in before.iterdir())
    r = normlab.run(["sweep", "--resume", str(out), "--param", "lr=0.1"])
    assert r.returncode == 2 and "--resume uses the saved sweep" in r.stderr


def test_a_damaged_or_edited_point_is_refused_before_the_sweep_writes(normlab, local_sweep,
                                                                       tmp_path) -> None:
    """Resuming a sweep whose finished point no longer loads (a truncated config.json), or whose
    point's config.json was edited to another setting, exits 2 with one line naming the point
    and the fix, and leaves sweep.csv and report.md as they were (before, the point's runs
    became failed rows, and retrying skipped the point again as done). The same command with a
    changed flag is refused as a different sweep, without blaming a point."""
    for damage in ("truncated", "edited"):
        out = tmp_path / damage
        shutil.copytree(local_sweep, out)
        sweep = SweepFolder(out)
        before = (sweep.table.read_bytes(), sweep.report.read_bytes())
        config = sweep.point(POINTS[1]).config
        if damage == "truncated":
            config.write_text(config.read_text()[:40])
        else:
            config.write_text(json.dumps({**json.loads(config.read_text()), "lr": 0.3}))
        r = normlab.run(["sweep", "--resume", str(out), "--quiet"])
        err = r.stderr.strip()
        assert r.returncode == 2 and "\n" not in err, err
        assert f"to train sweep point {POINTS[1]} again" in err, err
        assert ("lr" in err) if damage == "edited" else (config.name in err), err
        assert (sweep.table.read_bytes(), sweep.report.read_bytes()) == before
    # A changed flag is the sweep's difference, not its points': no advice to delete one.
    r = normlab.run(SWEEP + ["--epochs", "3", "--data-dir", str(normlab.data), "--out",
                             str(local_sweep)])
    assert r.returncode == 2 and "holds a different sweep" in r.stderr, r.stderr
    assert "sweep point" not in r.stderr


def test_a_sweep_whose_data_moved_continues_with_data_dir(normlab, local_sweep, tmp_path) -> None:
    """A sweep whose data folder has moved (its record and points name a folder that is gone)
    continues with --data-dir pointing at the new place, through --resume and through the same
    command with --out (only where the data lie may change): an unfinished point is finished
    from the data there, and the table comes out the same."""
    out = tmp_path / "moved"
    shutil.copytree(local_sweep, out)
    sweep = SweepFolder(out)
    gone = str(tmp_path / "gone")
    record = json.loads(sweep.record.read_text())
    sweep.record.write_text(json.dumps({**record, "base_config": {**record["base_config"],
                                                                  "data_dir": gone}}))
    for point in sweep.points():
        point.config.write_text(json.dumps({**json.loads(point.config.read_text()),
                                            "data_dir": gone}))
    sweep.point(POINTS[0]).summary.unlink()   # unfinished: its study must load the data again
    r = normlab.run(["sweep", "--resume", str(out), "--quiet"])
    assert r.returncode == 2 and "gone" in r.stderr
    r = normlab.run(["sweep", "--resume", str(out), "--data-dir", str(normlab.data), "--quiet"])
    assert r.returncode == 0, r.stderr
    assert sweep.table.read_bytes() == SweepFolder(local_sweep).table.read_bytes()
    r = normlab.run(SWEEP + ["--data-dir", str(normlab.data), "--out", str(out)])
    assert r.returncode == 0, r.stderr


def test_a_different_sweep_in_the_same_folder_is_refused(normlab, local_sweep) -> None:
    """Another sweep into an existing sweep folder exits 2, naming what differs; nothing there
    changes."""
    before = {p: p.read_bytes() for p in local_sweep.rglob("*") if p.is_file()}
    args = [a if a != "batch_size=16,32" else "batch_size=16,64" for a in SWEEP]
    r = normlab.run(args + ["--data-dir", str(normlab.data), "--out", str(local_sweep)])
    assert r.returncode == 2 and "holds a different sweep" in r.stderr
    assert "params" in r.stderr
    assert {p: p.read_bytes() for p in local_sweep.rglob("*") if p.is_file()} == before


def test_a_sweep_of_another_version_is_reported_but_not_trained_further(normlab, local_sweep,
                                                                          tmp_path) -> None:
    """A finished sweep whose sweep.json another normlab version wrote is continued (nothing to
    train) and its outputs rewritten by this one. With a point left to train it is refused in
    one line naming both versions, before the data are looked for (the --data-dir given does not
    exist), and nothing changes; so is a sweep of this version whose unfinished point another
    version started."""
    out = tmp_path / "old"
    shutil.copytree(local_sweep, out)
    sweep = SweepFolder(out)
    record = json.loads(sweep.record.read_text())
    sweep.record.write_text(json.dumps({**record, "normlab_version": "0.0.1"}))
    sweep.report.unlink()
    r = normlab.run(SWEEP + ["--data-dir", str(normlab.data), "--out", str(out)])
    assert r.returncode == 0 and sweep.report.exists(), r.stderr
    point = RunFolder(out / "points" / POINTS[0])
    timing = json.loads(point.timing_json.read_text())
    point.timing_json.write_text(json.dumps({**timing, "wall_seconds": None}))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    r = normlab.run(SWEEP + ["--data-dir", str(tmp_path / "no-data"), "--out", str(out)])
    assert r.returncode == 2 and f"normlab 0.0.1, this is {__version__}" in r.stderr
    assert str(out) in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    sweep.record.write_text(json.dumps(record))           # the sweep this version's again ...
    config = json.loads(point.config.read_text())         # ... its unfinished point not
    point.config.write_text(json.dumps({**config, "resolved": {**config["resolved"],
                                                               "normlab_version": "0.0.1"}}))
    r = normlab.run(SWEEP + ["--data-dir", str(tmp_path / "no-data"), "--out", str(out)])
    assert r.returncode == 2 and f"normlab 0.0.1, this is {__version__}" in r.stderr
    assert str(point.path) in r.stderr and len(r.stderr.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------------------
# Ray


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on loopback now: each socket stays bound until all are chosen,
    so no two can get the same port (another process may still take one before Ray binds it)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


# Every port a Ray head node listens on, each given a free one, so that this node shares none with
# another Ray on the machine (the defaults are fixed numbers: 6379, 8265, 52365, ...).
RAY_PORT_FLAGS = ("--port", "--node-manager-port", "--object-manager-port", "--dashboard-port",
                  "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                  "--runtime-env-agent-port", "--metrics-export-port")
# The Ray client server listens on a fixed port too (10001), but only where Ray's client
# dependencies are installed (`pip install "ray[client]"`): `ray start` then defaults
# RAY_CLIENT_PORT_FLAG to 10001, and without them it starts no client server and rejects the flag
# ("Ray Client requires pip package `ray[client]`"), even though its --help lists it. So the flag
# is given (a free port, as the others) only where `ray start --help` lists it and grpc, the
# module Ray tests for, imports; checked once, see _ray_port_flags.
RAY_CLIENT_PORT_FLAG = "--ray-client-server-port"


@functools.cache
def _ray_port_flags(ray: str) -> tuple[str, ...]:
    """RAY_PORT_FLAGS, and RAY_CLIENT_PORT_FLAG where the ``ray`` command would start a client
    server (and so accepts the flag)."""
    usage = subprocess.run([ray, "start", "--help"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 0, usage.stdout + usage.stderr
    client = subprocess.run([sys.executable, "-c", "import grpc"], capture_output=True,
                            timeout=120).returncode == 0
    accepted = RAY_CLIENT_PORT_FLAG in usage.stdout and client
    return RAY_PORT_FLAGS + ((RAY_CLIENT_PORT_FLAG,) if accepted else ())


def _session_members(sid: int) -> list[int]:
    """The live processes of session ``sid`` (from /proc; zombies left out)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:   # state, ppid, pgrp, session
            pids.append(int(entry))
    return pids


class RayHead:
    """A Ray head node of this test alone, on loopback, with its own temporary folder and ports.

    ``ray start --head --block`` runs as our child in a new session: every process of the node
    (GCS, raylet, agents, workers) is in that session. Stopping sends SIGTERM to ``ray start``,
    which stops the processes it started; whatever is still alive in the session after that is
    killed. No other Ray process of the machine is touched (never ``ray stop``)."""

    def __init__(self, environ: dict, temp: Path, log: Path, num_cpus: int = 2):
        ray = str(Path(sys.executable).with_name("ray"))
        flags = _ray_port_flags(ray)
        self.ports = dict(zip(flags, _free_ports(len(flags))))
        self.address = f"127.0.0.1:{self.ports['--port']}"
        self.temp = temp
        command = [ray, "start", "--head", "--block",
                   "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus),
                   "--include-dashboard", "false", "--disable-usage-stats",
                   "--temp-dir", str(temp)]
        command += [x for flag, port in self.ports.items() for x in (flag, str(port))]
        self.log = log
        with open(log, "w") as f:
            self.proc = subprocess.Popen(
                command, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(environ, RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0"))
        self.sid = self.proc.pid

    def wait_ready(self, timeout: float = 180) -> None:
        """Until the node is up: ``ray start`` writes the cluster address into its temporary
        folder once every process of the node has started."""
        end = time.monotonic() + timeout
        while not (self.temp / "ray_current_cluster").exists():
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            assert time.monotonic() < end, "Ray head node not up in time\n" + self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        end = time.monotonic() + 20
        while self._left() and time.monotonic() < end:
            time.sleep(0.2)
        for pid in self._left():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _left(self) -> list[int]:
        return _session_members(self.sid)


def test_ray_backend_on_a_loopback_head_node_matches_local(normlab, local_sweep, tmp_path) -> None:
    """The test's own Ray head node (loopback, 2 CPUs, own temporary folder, ports and home), the
    same sweep through --backend ray --ray-address: every run is a Ray task, and the sweep folder
    holds the same sweep.csv as --backend local, and each point byte-equal metrics.csv and
    summary.json, the same Config and the same keys in config.json (top level and 'resolved'),
    env.json and timing.json, and exactly the files of a local point (see below). A task that
    keeps failing is retried --retries times, then recorded as failed. When the test ends, no
    process of its node is left, and no other Ray process was touched."""
    pytest.importorskip("ray")
    folder = normlab.data
    if not Path(sys.executable).with_name("ray").exists():
        pytest.skip("the ray command is not installed next to this Python")
    import tempfile

    attempts = tmp_path / "attempts"
    attempts.mkdir()
    # NORMLAB_TEST_ATTEMPTS is seen by the node's workers. A home of the test's own: Ray keeps
    # state there (~/.ray/auth_token, written by any local ray.init), and a token left by an
    # earlier local cluster makes this node's driver fail to authenticate.
    home = tmp_path / "home"
    home.mkdir()
    normlab = normlab.with_env(NORMLAB_TEST_ATTEMPTS=str(attempts), HOME=str(home))
    temp = Path(tempfile.mkdtemp(prefix="nlray-", dir="/tmp"))  # Ray's socket paths must be short
    head = RayHead(normlab.env, temp, tmp_path / "ray-start.log")
    out, failing = tmp_path / "ray-sweep", tmp_path / "ray-failing"
    try:
        head.wait_ready()
        r = normlab.run(SWEEP + ["--data-dir", str(folder), "--out", str(out), "--backend",
                                 "ray", "--ray-address", head.address])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ray: 8 run(s) submitted" in r.stdout
        # A task that keeps failing is retried --retries times, then recorded as failed with its
        # error; the sweep finishes the other runs and exits 0.
        r = normlab.run(["sweep", "--variants", "gn", "--param", "batch_size=16", "--seeds",
                         "2", "--epochs", "1", "--rotate", "7.5", "--retries", "1",
                         "--data-dir", str(folder), "--out", str(failing), "--backend", "ray",
                         "--ray-address", head.address, "--quiet"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(list(attempts.iterdir())) == 2          # the first try and one retry
        rows = {x["seed"]: x for x in csv_rows(SweepFolder(failing).table)}
        assert rows["0"]["status"] == "ok" and float(rows["0"]["final_test_acc"]) >= 0
        assert rows["1"]["status"] == "failed" and "injected failure" in rows["1"]["message"]
        assert "run the same command again" in SweepFolder(failing).report.read_text()
        # The same command again, once the failure is gone, resumes the point through Ray: it
        # trains the failed run only, and as the first session of a Ray point records no time
        # until the point finishes, the point's timing says it is the last session's alone.
        point = SweepFolder(failing).point("batch_size=16")
        first = point.metrics.read_bytes() if point.metrics.exists() else None
        (attempts.parent / "healed").touch()
        r = normlab.run(["sweep", "--variants", "gn", "--param", "batch_size=16", "--seeds",
                         "2", "--epochs", "1", "--rotate", "7.5", "--retries", "1",
                         "--data-dir", str(folder), "--out", str(failing), "--backend", "ray",
                         "--ray-address", head.address, "--quiet"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ray: 1 run(s) submitted" in r.stdout, r.stdout
    finally:
        head.stop()
        shutil.rmtree(temp, ignore_errors=True)
    assert head.proc.returncode is not None and not head._left()

    rows = {x["seed"]: x for x in csv_rows(SweepFolder(failing).table)}
    assert [rows[s]["status"] for s in ("0", "1")] == ["ok", "ok"]
    assert first is None or point.metrics.read_bytes().startswith(first)
    timing = json.loads(point.timing_json.read_text())
    assert timing["resumed"] is True and timing["last_session_only"] is True
    assert timing["wall_seconds"] >= timing["train_seconds"] > 0
    assert "last session" in point.report.read_text()

    ray_sweep, local = SweepFolder(out), SweepFolder(local_sweep)
    assert csv_rows(ray_sweep.table) == csv_rows(local.table)
    assert [p.path.name for p in ray_sweep.points()] == list(POINTS)
    for name in POINTS:
        rp, lp = ray_sweep.point(name), local.point(name)
        for got, want in ((rp.metrics, lp.metrics), (rp.summary, lp.summary)):
            assert got.read_bytes() == want.read_bytes(), got
        # Exactly the same files: the Ray driver records each run through the study's own
        # writers, writes the training state its task returns (as a local study trained with
        # --group-size 1 saves one per run, for --resume) and locks the point's folder while it
        # writes there (so the lock file is left in place, as the study driver leaves it).
        states = {lp.group_state(k).relative_to(lp.path) for k in range(len(RUNS))}
        assert states | {lp.lock_file.relative_to(lp.path)} <= _files(lp)
        assert _files(rp) == _files(lp)
        rc, lc = (json.loads(p.config.read_text()) for p in (rp, lp))
        assert set(rc) == set(lc) and set(rc["resolved"]) == set(lc["resolved"])
        assert {k: v for k, v in rc.items() if k != "resolved"} == \
            {k: v for k, v in lc.items() if k != "resolved"}       # the same Config
        # what was resolved from it is the same, but how the runs were spread over threads
        how = {"workers", "threads_per_worker"}
        assert {k: v for k, v in rc["resolved"].items() if k not in how} == \
            {k: v for k, v in lc["resolved"].items() if k not in how}
        re_, le = (json.loads(p.env.read_text()) for p in (rp, lp))
        assert set(re_) == set(le) and (re_["backend"], le["backend"]) == ("ray", "local")
        rt, lt = (json.loads(p.timing_json.read_text()) for p in (rp, lp))
        assert set(rt) == set(lt)
    assert ray_sweep.figure("batch_size").is_file() and ray_sweep.report.is_file()


def test_ray_backend_unreachable_cluster_is_one_line(normlab, tmp_path) -> None:
    """--ray-address pointing at nothing exits 2 with one line that says how to fix it."""
    pytest.importorskip("ray")
    r = normlab.run(["sweep", "--param", "lr=0.05", "--epochs", "1", "--data-dir",
                     str(normlab.data), "--out", str(tmp_path / "x"), "--backend", "ray",
                     "--ray-address", f"127.0.0.1:{_free_ports(1)[0]}", "--quiet"], timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip() and "normlab" in x]
    assert r.returncode == 2, r.stderr
    assert lines and "ray start --head" in lines[-1]


def test_findings_say_a_tie_once_and_still_name_a_collapse() -> None:
    """Where every value of a setting gives the same mean (e.g. every run collapsed alike), the
    finding says so once (means equal as printed, to 0.01 points) instead of naming one value as
    both highest and lowest, keeps the interval of the difference (what the runs could see),
    says "every finished" when a value has no finished run, and still names the values whose
    mean is below 50% (a fact about the means, not a test);
    distinct means keep the highest/lowest line with its test. A negative bound has a true minus
    sign, as in a study's report."""
    from normlab.findings import sweep_findings

    def row(b: int, seed: int, acc: float) -> dict:
        return {"variant": "bn", "batch_size": b, "seed": seed, "status": "ok",
                "final_test_acc": acc}

    tie = sweep_findings([row(2, 0, 10.1), row(2, 1, 10.2), row(8, 0, 10.15), row(8, 1, 10.15)],
                         ["batch_size"])   # 10.15 and 10.15 as printed
    (line,) = tie
    assert line.startswith("`bn`: final test accuracy is the same at every batch_size (10.15%); "
                           "+0.00 points (95% CI −")   # its interval: the difference it could see
    assert "-" not in line.split("95% CI")[1].split("Welch")[0]   # true minus signs, as studies
    assert line.endswith("not significant at the 5% level. Its mean is below 50% at "
                         "batch_size=2, batch_size=8.")
    (line,) = sweep_findings([row(b, s, 10.15 + 0.001 * s) for b in (2, 8, 32) for s in (0, 1)],
                             ["batch_size"])   # a tie of three values names no two: no Holm
    assert "the same at every batch_size" in line and "Holm" not in line, line
    failed = {"variant": "bn", "batch_size": 32, "seed": 0, "status": "diverged",
              "final_test_acc": None}
    some = sweep_findings([row(2, 0, 10.0), row(8, 0, 10.0), failed], ["batch_size"])[0]
    assert some.startswith("`bn`: final test accuracy is the same at every finished batch_size")
    (apart,) = sweep_findings([row(2, 0, 10.0), row(2, 1, 11.0), row(8, 0, 98.0),
                               row(8, 1, 98.5)], ["batch_size"])
    assert apart.startswith("`bn`: final test accuracy is highest at batch_size=8 (98.25%) and "
                            "lowest at batch_size=2 (10.50%); +87.75 points (95% CI")


def test_findings_adjust_the_test_of_the_extremes_for_having_picked_them() -> None:
    """The highest and the lowest of k settings are picked after looking, so their Welch test is
    Holm-adjusted over every pair of the k values: a difference whose Welch p is below 5% but
    whose adjusted p is not is "not significant", and the line gives both p-values; with two
    values there is one pair and nothing to adjust. Where one side has a single seed, the line
    says how many each side has instead of "one seed each"."""
    from scipy import stats as sps

    from normlab.findings import sweep_findings
    from normlab.stats import holm
    from normlab.table import format_p

    values = {0.0: [99.44, 99.46], 5e-4: [99.53, 99.56], 2e-3: [99.49, 99.52]}
    rows = [{"variant": "gn", "weight_decay": v, "seed": i, "status": "ok", "final_val_acc": x}
            for v, xs in values.items() for i, x in enumerate(xs)]
    pairs = [(0.0, 5e-4), (0.0, 2e-3), (5e-4, 2e-3)]
    raw = [sps.ttest_ind(values[a], values[b], equal_var=False).pvalue for a, b in pairs]
    assert raw[0] < 0.05 < holm(raw)[0]   # the case the adjustment is for
    (line,) = sweep_findings(rows, ["weight_decay"], "final_val_acc", "val")
    assert line.startswith("`gn`: final val accuracy is highest at weight_decay=0.0005 (99.55%) "
                           "and lowest at weight_decay=0 (99.45%); +0.10 points (unadjusted 95% "
                           "CI ")
    assert f"Welch's p = {format_p(raw[0])}; Holm's p = {format_p(holm(raw)[0])} over the 3 pairs of " \
           "weight_decay values" in line, line
    assert line.endswith("not significant at the 5% level."), line
    two = [r for r in rows if r["weight_decay"] != 2e-3]   # one pair: Welch's p alone decides
    (line,) = sweep_findings(two, ["weight_decay"], "final_val_acc", "val")
    assert "Holm" not in line and line.endswith("larger than seed-to-seed noise."), line
    assert "(95% CI +" in line and "unadjusted" not in line   # one pair: nothing to adjust
    (line,) = sweep_findings(two[:3], ["weight_decay"], "final_val_acc", "val")
    assert line.endswith("points, 1 seed at weight_decay=0.0005, 2 at weight_decay=0: no test "
                         "possible (it needs two or more seeds on each side)."), line


def test_findings_of_a_grid_are_one_family() -> None:
    """A grid of settings gives a finding per variant, setting and combination of the others,
    each testing its extremes: their p-values are Holm-adjusted together, over every pair any
    finding compares, so a p of 0.04 among 8 tests is not called a difference; the other
    settings of a line are written in one parenthesis."""
    from scipy import stats as sps

    from normlab.findings import sweep_findings
    from normlab.stats import holm
    from normlab.table import format_p

    accs = {(0.05, 0): ([97.0, 97.3], [98.6, 98.8]), (0.05, 15): ([97.1, 97.6], [97.2, 97.4]),
            (0.1, 0): ([97.3, 97.2], [97.5, 97.0]), (0.1, 15): ([97.4, 97.6], [97.3, 97.7])}
    rows = [{"variant": "ln", "lr": lr, "rotate": rot, "batch_size": b, "seed": i,
             "status": "ok", "final_test_acc": x}
            for (lr, rot), by_batch in accs.items() for b, xs in zip((32, 64), by_batch)
            for i, x in enumerate(xs)]
    lines = sweep_findings(rows, ["batch_size", "lr", "rotate"])
    assert len(lines) == 3 * 4   # per setting, one line per combination of the other two
    raw = sps.ttest_ind([98.6, 98.8], [97.0, 97.3], equal_var=False).pvalue
    assert raw < 0.05
    line = next(x for x in lines if x.startswith("`ln` (lr=0.05, rotate=0): final test accuracy "
                                                  "is highest at batch_size=64"))
    family = [sps.ttest_ind(a, b, equal_var=False).pvalue for a, b in
              [(xs[0], xs[1]) for xs in accs.values()] +
              [(accs[0.05, r][i], accs[0.1, r][i]) for r in (0, 15) for i in (0, 1)] +
              [(accs[lr, 0][i], accs[lr, 15][i]) for lr in (0.05, 0.1) for i in (0, 1)]]
    holm_p = holm(family)[0]
    assert f"Welch's p = {format_p(raw)}; Holm's p = {format_p(holm_p)} over the 12 pairs of " \
           "setting values these findings compare" in line, line
    assert line.endswith("not significant at the 5% level."), line


def test_findings_name_the_family_by_whose_pairs_it_holds() -> None:
    """A line names its Holm family "the N pairs of <setting> values" only when the family is
    its own pairs; here its three pairs include two without a test (one value has one seed) and
    the family's three tested pairs span three lines, which it then says."""
    from normlab.findings import sweep_findings

    accs = {("gn", 8): [98.0, 98.2], ("gn", 16): [97.0, 97.3], ("gn", 32): [97.5],
            ("ln", 8): [98.0, 98.1], ("ln", 16): [97.9, 98.3],
            ("bn", 8): [96.0, 96.4], ("bn", 16): [97.0, 97.2]}
    rows = [{"variant": v, "batch_size": b, "seed": i, "status": "ok", "final_test_acc": x}
            for (v, b), xs in accs.items() for i, x in enumerate(xs)]
    line = next(x for x in sweep_findings(rows, ["batch_size"]) if x.startswith("`gn`"))
    assert "over the 3 pairs of setting values these findings compare" in line, line


def test_findings_of_settings_whose_runs_all_agree_use_the_exact_test() -> None:
    """Where every run at each of the two settings scored the same (no spread on either side),
    Welch's test has no answer: the finding gives no interval and the exact permutation test's
    p (2 x 2 runs: 2/6 = 0.33), and does not call the difference significant."""
    from normlab.findings import sweep_findings

    rows = [{"variant": "ln", "lr": lr, "seed": s, "status": "ok", "final_val_acc": acc}
            for lr, acc in ((0.1, 99.4), (0.2, 99.5)) for s in (0, 1)]
    (line,) = sweep_findings(rows, ["lr"], "final_val_acc", "val")
    assert ("+0.10 points (no spread on either side, so no t interval; exact permutation "
            "test's p = 0.33): not significant at the 5% level.") in line, line
    assert "CI" not in line


def test_a_sweep_report_lists_the_variants_as_given(tmp_path: Path) -> None:
    """A sweep of the L1 lambda names its runs by their lambda (bn+l1=0.0001, bn+l1=0.001), but
    its report's "Variants" line lists such a variant as --variants gave it, once; a variant
    whose runs have one name at every point keeps that name (its lambda, when not swept). The
    epochs and training images are the base config's unless swept, when the line says so."""
    from normlab.sweep import prepare_sweep_out
    from normlab.sweep_report import write_sweep_report

    spec = SweepSpec((parse_param("l1=1e-4,1e-3"),))
    prepare_sweep_out(tmp_path / "sw", Config(variants=("bn+l1", "gn")), spec)
    rows = [{"l1": lam, "variant": v if v == "gn" else f"{v}={lam:g}", "spec": v, "seed": 0,
             "status": "ok", "final_test_acc": 98.0, "best_test_acc": 98.0,
             "final_val_acc": None, "best_val_acc": None, "final_test_loss": 0.1}
            for lam in (1e-4, 1e-3) for v in ("bn+l1", "gn")]
    text = write_sweep_report(tmp_path / "sw", spec, rows).read_text(encoding="utf-8")
    assert "- **Variants:** `bn+l1`, `gn`; **seeds:** 0;" in text
    rows = [{**r, "variant": "bn+l1=2e-05"} if r["spec"] == "bn+l1" else r for r in rows]
    text = write_sweep_report(tmp_path / "sw", spec, rows).read_text(encoding="utf-8")
    assert "- **Variants:** `bn+l1=2e-05`, `gn`; **seeds:** 0; **epochs:** 20; **dataset:** mnist." \
        in text
    # a swept setting is not the base config's: its value is the points'
    spec = SweepSpec((parse_param("epochs=1,2"), parse_param("train_subset=100,200")))
    prepare_sweep_out(tmp_path / "sw2", Config(variants=("gn",), epochs=5, train_subset=300), spec)
    rows = [{"epochs": e, "train_subset": n, "variant": "gn", "seed": 0, "status": "ok",
             "final_test_acc": 98.0, "best_test_acc": 98.0, "final_val_acc": None,
             "best_val_acc": None, "final_test_loss": 0.1} for e in (1, 2) for n in (100, 200)]
    text = write_sweep_report(tmp_path / "sw2", spec, rows).read_text(encoding="utf-8")
    assert ("- **Variants:** `gn`; **seeds:** 0; **epochs:** swept; **dataset:** mnist "
            "(training images swept).") in text


def test_an_experiments_folder_is_known_from_its_start(tmp_path: Path) -> None:
    """A sweep folder names the experiment that runs it from the moment it is created (so one
    stopped before its first report is still refused to a plain sweep): its experiment() reads
    the name from sweep.json; a folder of an earlier version, which does not record it, counts
    by its mechanism.csv; a plain sweep is none."""
    from normlab.sweep import prepare_sweep_out

    spec = SweepSpec((parse_param("lr=0.1,0.2"),))
    prepare_sweep_out(tmp_path / "exp", Config(), spec, experiment="lr")
    assert SweepFolder(tmp_path / "exp").experiment() == "lr"
    prepare_sweep_out(tmp_path / "plain", Config(), spec)
    assert SweepFolder(tmp_path / "plain").experiment() is None
    SweepFolder(tmp_path / "plain").mechanism.write_text("lr,variant\n")
    assert SweepFolder(tmp_path / "plain").experiment() == "NAME"


def test_an_experiment_into_another_experiments_folder_names_that_experiment(
        tmp_path: Path, synthetic_data) -> None:
    """An experiment run into the folder of another experiment (the name its sweep.json
    records) is a ConfigError naming the experiment the folder holds and the command that
    continues it, before anything is read or trained; the folder is unchanged. A folder of an
    earlier version, which records no name, is left to the comparison of the two sweeps."""
    from normlab.sweep import prepare_sweep_out, run_sweep

    base = Config(variants=("gn",), epochs=1, batch_size=4, device="cpu",
                  data_dir=str(synthetic_data.folder))
    out = tmp_path / "exp"
    prepare_sweep_out(out, base, SweepSpec((parse_param("batch_size=2,4"),)),
                      experiment="batch-size")
    before = sorted(out.rglob("*"))
    with pytest.raises(ConfigError) as e:
        run_sweep(base, SweepSpec((parse_param("lr=0.1"),)), out, progress=False,
                  log=lambda *_: None, experiment="lr")
    assert str(e.value) == (f"{str(out)!r} holds the experiment batch-size, not lr; continue it "
                            f"with 'normlab experiment batch-size --out {out}' and the flags on "
                            "the Command line of its report.md, or choose a new --out")
    assert sorted(out.rglob("*")) == before
    old = tmp_path / "old"   # no name recorded: the sweeps differ, and that is what is said
    prepare_sweep_out(old, base, SweepSpec((parse_param("batch_size=2,4"),)))
    with pytest.raises(ConfigError, match="holds a different sweep"):
        run_sweep(base, SweepSpec((parse_param("lr=0.1"),)), old, progress=False,
                  log=lambda *_: None, experiment="lr")


def test_a_refused_point_says_its_setting_comes_from_param() -> None:
    """A point whose config is refused names the point; where the error's fix names the flag
    of a swept setting ('use --groups ...'), it adds that the point's value comes from
    --param, where it must change. A fix naming a flag that is not swept gets no such note."""
    with pytest.raises(ConfigError) as e:
        SweepSpec((parse_param("groups=3"),)).points(Config(variants=("gn",)))
    assert str(e.value).startswith("sweep point groups=3: conv1: ")
    assert str(e.value).endswith("use --groups with one of [1, 2, 4] (they divide every "
                                 "layer's channels); this point's groups comes from --param "
                                 "groups, so change its values there")
    with pytest.raises(ConfigError) as e:   # groups is the base's: the flag is the fix
        SweepSpec((parse_param("arch=8s4-16-16-16-12"),)).points(
            Config(variants=("gn",), arch="8s4-16-16-16-16", groups=8))
    assert str(e.value).startswith("sweep point arch=8s4-16-16-16-12: ")
    assert str(e.value).endswith("(they divide every layer's channels)"), str(e.value)


@pytest.mark.parametrize("experiment", [None, "l1"])
def test_ctrl_c_in_a_sweep_names_the_command_that_continues_it(tmp_path, monkeypatch,
                                                                 synthetic_data,
                                                                 experiment) -> None:
    """Ctrl-C during a point of a sweep propagates carrying the command that continues that
    sweep (which the CLI prints on stderr), in place of the point's own study resume command:
    'normlab sweep --resume OUT' for a plain sweep, the experiment's own command with --out
    OUT for an experiment's folder (a sweep --resume of it is refused)."""
    import normlab.study
    from normlab.config import Config
    from normlab.sweep import run_sweep

    def interrupted(cfg, out, **kwargs):   # as run_study stops: naming the point's resume
        raise KeyboardInterrupt(f"interrupted: ...; continue with 'normlab study --resume {out}'")

    monkeypatch.setattr(normlab.study, "run_study", interrupted)
    base = Config(variants=("gn",), epochs=1, batch_size=4, device="cpu",
                  data_dir=str(synthetic_data.folder))
    sweep = SweepFolder(tmp_path / "sweep")
    with pytest.raises(KeyboardInterrupt) as interrupt:
        run_sweep(base, SweepSpec((parse_param("l1=0"),)), sweep.path, progress=False,
                  log=lambda *_: None, experiment=experiment)
    again = (f"the same 'normlab experiment l1' command with --out {sweep.path}" if experiment
             else f"'normlab sweep --resume {sweep.path}'")
    assert str(interrupt.value) == f"interrupted: finished runs are kept; continue with {again}"


def test_ctrl_c_outside_a_local_point_also_names_the_command(tmp_path, synthetic_data,
                                                             monkeypatch) -> None:
    """Ctrl-C in a runner other than the local one (Ray's), while a sweep's outputs are written
    or while an experiment measures its final weights also propagates with the command that
    continues: 'normlab sweep --resume OUT', or the experiment's own with --out OUT."""
    import normlab.experiment_report
    import normlab.sweep
    from normlab.config import Config
    from normlab.experiments import run_experiment
    from normlab.sweep import run_sweep

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    base = Config(variants=("gn",), epochs=1, batch_size=4, device="cpu",
                  data_dir=str(synthetic_data.folder))
    out = tmp_path / "sweep"
    with pytest.raises(KeyboardInterrupt) as interrupt:
        run_sweep(base, SweepSpec((parse_param("lr=0.1"),)), out, runner=interrupted,
                  backend="ray", progress=False, log=lambda *_: None)
    assert str(interrupt.value) == ("interrupted: finished runs are kept; continue with "
                                    f"'normlab sweep --resume {out}'")
    monkeypatch.setattr(normlab.sweep, "run_sweep", lambda *a, **k: None)
    monkeypatch.setattr(normlab.experiment_report, "write_experiment_outputs", interrupted)
    exp = tmp_path / "exp"
    SweepFolder(exp).create({"params": [{"name": "l1", "values": [0.0]}], "experiment": "l1"})
    with pytest.raises(KeyboardInterrupt) as interrupt:
        run_experiment("l1", exp, progress=False, log=lambda *_: None)
    assert str(interrupt.value).endswith(f"the same 'normlab experiment l1' command with --out "
                                         f"{exp}")



def test_resuming_a_study_folder_as_a_sweep_points_to_study_resume(tmp_path, make_run) -> None:
    """`sweep --resume` of a study's folder (config.json, no sweep.json) is a one-line
    ConfigError that names 'normlab study --resume' for it; an empty folder's does not."""
    from normlab.sweep import read_sweep_spec

    run = make_run(tmp_path / "study", variants=("gn",), seeds=1, epochs=1)
    with pytest.raises(ConfigError, match="no sweep.json there") as e:
        read_sweep_spec(run.path)
    assert f"continue it with 'normlab study --resume {run.path}'" in str(e.value)
    assert "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no sweep.json there") as e:
        read_sweep_spec(tmp_path / "empty")
    assert "study --resume" not in str(e.value)


def test_a_diverged_run_says_why_in_sweep_csv(synthetic_data, tmp_path: Path, capsys) -> None:
    """A run that diverged keeps its reason in sweep.csv's message (from the run's final
    checkpoint), where the row of a finished point had an empty one; a run that trained has
    none."""
    from normlab.cli import main

    out = tmp_path / "s"
    assert main(["sweep", "--variants", "gn,ln", "--param", "lr=1e6", "--seeds", "1",
                 "--epochs", "2", "--batch-size", "4", "--no-augment", "--no-diagnostics",
                 "--data-dir", str(synthetic_data.folder), "--out", str(out), "--quiet"]) == 0
    rows = csv_rows(SweepFolder(out).table)
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert diverged, rows   # lr 1e6 diverges (as tests/test_train.py's absurd lr)
    assert all(r["message"].startswith("loss reached ") for r in diverged), diverged
    assert all(not r["message"] for r in rows if r["status"] == "ok")
