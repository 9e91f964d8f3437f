"""Model selection options: --val (held-out training images), --arch (the conv widths),
--label-smoothing and --weight-decay, from the split itself to the columns of metrics.csv, summary.json and sweep.csv
and the sweep report that chooses on the held-out images.

Everything runs in-process (``normlab.cli.main``, :func:`normlab.study_data.load_data`) on conftest's
``synthetic_data`` (sizes below), with the network off. Every path of a run or sweep folder comes
from :mod:`normlab.runfolder`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import csv_rows, exit_code
import torch
import torch.nn.functional as F

from normlab.batches import split_stats, to_device_split
from normlab.cli import main
from normlab.config import DEFAULT_ARCH, Config, ModelConfig, parse_arch
from normlab.errors import ConfigError
from normlab.model import Net, count_params
from normlab.norms import NORMS
from normlab.runfolder import RunFolder, SweepFolder
from normlab.study_data import load_data, split_val
from normlab.sweep_report import selection_metric
from normlab.train import build_model

N_TRAIN, N_TEST = 120, 40
SYNTHETIC_DATA = {"n_train": N_TRAIN, "n_test": N_TEST, "seed": 3}   # conftest's synthetic_data
VAL = 30                 # images held out by the studies below
CPU = torch.device("cpu")


def _study(folder: Path, out: Path, *args: str) -> RunFolder:
    """A study through main() on the synthetic data; it must exit 0."""
    code = main(["study", "--data-dir", str(folder), "--out", str(out), "--quiet", *args])
    assert code == 0
    return RunFolder(out)


def _train_images(synthetic_data) -> tuple[torch.Tensor, torch.Tensor]:
    arrays = synthetic_data.arrays
    return torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"]).long()


# ----------------------------------------------------------------------------------------------
# The split


@pytest.mark.parametrize(("n", "val"), [(10, 1), (120, 30), (1000, 999), (60_000, 10_000)])
def test_split_val_is_a_fixed_sorted_partition(n: int, val: int) -> None:
    """split_val(n, val) returns (train, val) index lists that are disjoint, together cover
    0..n-1, hold n - val and val indices, are each sorted, and are the same on every call,
    whatever the global torch RNG's state; it draws nothing from the global RNG."""
    torch.manual_seed(1)
    keep, held = split_val(n, val)
    assert len(keep) == n - val and len(held) == val
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert sorted(keep.tolist() + held.tolist()) == list(range(n))
    assert torch.equal(keep, keep.sort().values) and torch.equal(held, held.sort().values)
    torch.manual_seed(2)
    torch.rand(7)
    state = torch.get_rng_state()
    again = split_val(n, val)
    assert torch.equal(torch.get_rng_state(), state)   # the global RNG is untouched
    assert torch.equal(again[0], keep) and torch.equal(again[1], held)


def test_split_val_holds_out_a_spread_not_the_first_images() -> None:
    """The held-out images are a seeded random choice (not the first or the last ones), and a
    different n gives a different choice."""
    _, held = split_val(1000, 100)
    assert held.tolist() != list(range(100)) and held.tolist() != list(range(900, 1000))
    assert held.min() < 100 and held.max() >= 900
    assert split_val(999, 100)[1].tolist() != held.tolist()


@pytest.mark.parametrize("subset", [None, 80])
def test_load_data_holds_out_the_same_images_for_every_variant_and_seed(synthetic_data,
                                                                        subset) -> None:
    """load_data with --val N (and optionally --train-subset) holds out the images split_val
    picks among the images used (the first --train-subset ones): val is exactly those images and
    labels, train exactly the others in their order, and a config with other variants, seeds
    and training settings holds out the very same images. Normalization mean and std are those of
    the images trained on, not of all of them."""
    folder = str(synthetic_data.folder)
    cfg = Config(variants=("gn",), val=VAL, train_subset=subset, data_dir=folder)
    other = Config(variants=("bn+l1", "ln"), seeds=3, first_seed=5, batch_size=16, lr=0.01,
                   val=VAL, train_subset=subset, data_dir=folder, augment=False)
    d, e = load_data(cfg, CPU), load_data(other, CPU)
    for a, b in ((d.val, e.val), (d.train, e.train)):
        assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert (d.mean, d.std) == (e.mean, e.std)

    x, y = _train_images(synthetic_data)
    n = subset or N_TRAIN
    x, y = x[:n], y[:n]
    keep, held = split_val(n, VAL)
    want_val = to_device_split(x[held], y[held], CPU)
    want_train = to_device_split(x[keep], y[keep], CPU)
    assert torch.equal(d.val.images, want_val.images) and torch.equal(d.val.labels, want_val.labels)
    assert torch.equal(d.train.images, want_train.images)
    assert torch.equal(d.train.labels, want_train.labels)
    assert len(d.train) == n - VAL and len(d.val) == VAL
    assert (d.mean, d.std) == split_stats(want_train)
    assert (d.mean, d.std) != split_stats(to_device_split(x, y, CPU))
    assert len(d.test) == N_TEST


def test_load_data_without_val_trains_on_every_image(synthetic_data) -> None:
    """Without --val nothing is held out: val is None and train is every training image."""
    d = load_data(Config(variants=("gn",), data_dir=str(synthetic_data.folder)), CPU)
    x, y = _train_images(synthetic_data)
    assert d.val is None and len(d.train) == N_TRAIN
    assert torch.equal(d.train.labels, y)


# ----------------------------------------------------------------------------------------------
# A study with and without --val


@pytest.fixture(scope="module")
def val_study(synthetic_data, tmp_path_factory) -> RunFolder:
    """gn and bn, 2 seeds, 2 epochs, --val VAL."""
    out = tmp_path_factory.mktemp("val") / "study"
    return _study(synthetic_data.folder, out, "--variants", "gn,bn", "--seeds", "2",
                  "--epochs", "2", "--batch-size", "32", "--val", str(VAL))


@pytest.fixture(scope="module")
def plain_study(synthetic_data, tmp_path_factory) -> RunFolder:
    """gn, 1 seed, 1 epoch, no --val."""
    out = tmp_path_factory.mktemp("plain") / "study"
    return _study(synthetic_data.folder, out, "--variants", "gn", "--epochs", "1")


def test_val_study_records_val_metrics_for_every_row(val_study: RunFolder) -> None:
    """With --val N every metrics.csv row has a finite val_loss and a val_acc in [0, 100] that
    is a whole number of the N held-out images; config.json records val N and the resolved
    split sizes (N held out, the rest trained on)."""
    rows = csv_rows(val_study.metrics)
    assert len(rows) == 2 * 2 * 2
    for r in rows:
        loss, acc = float(r["val_loss"]), float(r["val_acc"])
        assert math.isfinite(loss) and loss >= 0
        assert 0 <= acc <= 100
        correct = acc * VAL / 100
        assert abs(correct - round(correct)) < 1e-9, acc
    cfg = json.loads(val_study.config.read_text())
    assert cfg["val"] == VAL
    assert cfg["resolved"]["val_images"] == VAL
    assert cfg["resolved"]["train_images"] == N_TRAIN - VAL


def test_a_run_whose_validation_loss_breaks_ends_as_diverged(synthetic_data, tmp_path,
                                                             monkeypatch) -> None:
    """The epoch's health check covers the validation loss too: when it is not finite (here made
    nan from epoch 2 on, the test loss left as it is), the run ends as diverged with a message
    naming it, and metrics.csv keeps only the healthy epoch, so every row a study writes has
    finite losses (which the run-folder reader relies on)."""
    from normlab import train

    real = train.evaluate_group

    def broken_val(net, split, *args):
        out = real(net, split, *args)
        if len(split) == VAL and calls.append(1) is None and len(calls) >= 2:
            return [(math.nan, acc, preds) for _, acc, preds in out]
        return out

    calls: list[int] = []
    monkeypatch.setattr(train, "evaluate_group", broken_val)
    run = _study(synthetic_data.folder, tmp_path / "s", "--variants", "gn", "--epochs", "3",
                 "--batch-size", "32", "--val", str(VAL), "--no-diagnostics")
    rows = csv_rows(run.metrics)
    assert [int(r["epoch"]) for r in rows] == [1] and math.isfinite(float(rows[0]["val_loss"]))
    summary = json.loads(run.summary.read_text())["variants"]["gn"]
    assert summary["status"] == "diverged"
    saved = run.read_run_outputs(Config(variants=("gn",)).parsed_variants()[0], 0)
    assert saved.message.endswith(" / nan (validation) at epoch 2"), saved.message


def test_val_study_summary_has_val_statistics(val_study: RunFolder) -> None:
    """summary.json has, per variant, final_val_acc (the last epoch's val_acc of each seed) and
    best_val_acc (each seed's highest val_acc), with n = the number of seeds."""
    rows = csv_rows(val_study.metrics)
    summary = json.loads(val_study.summary.read_text())
    for name in ("gn", "bn"):
        s = summary["variants"][name]
        mine = [r for r in rows if r["variant"] == name]
        final = [float(r["val_acc"]) for r in mine if int(r["epoch"]) == 2]
        best = [max(float(r["val_acc"]) for r in mine if int(r["seed"]) == seed)
                for seed in (0, 1)]
        assert s["final_val_acc"]["values"] == final and s["final_val_acc"]["n"] == 2
        assert s["best_val_acc"]["values"] == best and s["best_val_acc"]["n"] == 2


def test_study_without_val_leaves_the_val_cells_empty(plain_study: RunFolder) -> None:
    """Without --val the val_loss and val_acc cells of metrics.csv are empty, summary.json's
    final_val_acc and best_val_acc have n = 0 and no values, and config.json records 0 held-out
    images."""
    rows = csv_rows(plain_study.metrics)
    assert rows and all(r["val_loss"] == r["val_acc"] == "" for r in rows)
    s = json.loads(plain_study.summary.read_text())["variants"]["gn"]
    for key in ("final_val_acc", "best_val_acc"):
        assert s[key]["n"] == 0 and s[key]["values"] == [] and s[key]["mean"] is None
    resolved = json.loads(plain_study.config.read_text())["resolved"]
    assert resolved["val_images"] == 0 and resolved["train_images"] == N_TRAIN


# ----------------------------------------------------------------------------------------------
# Bad input


BAD_INPUT = {
    # id: (arguments after 'study', fragment the one error line must contain)
    "val-negative": (["--val", "-1"], "argument --val"),
    "val-word": (["--val", "ten"], "argument --val"),
    "val-all-images": (["--val", str(N_TRAIN)],
                       f"--val {N_TRAIN} leaves none of the {N_TRAIN} training images"),
    "val-more-than-images": (["--val", "500"], f"--val 500 leaves none of the {N_TRAIN}"),
    "val-subset": (["--val", "50", "--train-subset", "50"],
                   "--val 50 leaves none of the 50 images of --train-subset"),
    "val-over-subset": (["--val", "60", "--train-subset", "50"], "--val 60 leaves none"),
    "arch-word": (["--arch", "8-x"], "--arch '8-x' is not a list of conv widths"),
    "arch-one-width": (["--arch", "8"], "--arch '8'"),
    "arch-empty": (["--arch", ""], "--arch ''"),
    "arch-zero": (["--arch", "0-16"], "--arch '0-16'"),
    "arch-double-dash": (["--arch", "8--16"], "--arch '8--16'"),
    "arch-trailing-dash": (["--arch", "8-16-"], "--arch '8-16-'"),
    "arch-too-wide": (["--arch", "8-513"], "--arch '8-513'"),
    "arch-negative": (["--arch", "-8-16"], "--arch"),
    "arch-groups-conv3": (["--variants", "gn", "--arch", "8-16-10"],
                          "conv3: GroupNorm with 4 groups does not divide its 10 channels"),
    "arch-groups-conv1": (["--variants", "bn,gn", "--arch", "6-16"],
                          "conv1: GroupNorm with 4 groups does not divide its 6 channels"),
    "arch-groups-flag": (["--variants", "gn", "--groups", "8", "--arch", "8-16-12"],
                         "conv3: GroupNorm with 8 groups does not divide its 12 channels"),
    "smoothing-one": (["--label-smoothing", "1"], "--label-smoothing must be a number in [0, 1)"),
    "smoothing-negative": (["--label-smoothing", "-0.1"], "--label-smoothing must be"),
    "smoothing-big": (["--label-smoothing", "2.5"], "--label-smoothing must be"),
    "smoothing-nan": (["--label-smoothing", "nan"], "--label-smoothing must be"),
    "smoothing-word": (["--label-smoothing", "some"], "argument --label-smoothing"),
    "decay-negative": (["--weight-decay", "-0.001"], "--weight-decay: must be a finite number >= 0"),
    "decay-nan": (["--weight-decay", "nan"], "--weight-decay"),
    "decay-word": (["--weight-decay", "much"], "argument --weight-decay"),
    "ema-one": (["--ema", "1"], "--ema must be a number in [0, 1)"),
    "ema-negative": (["--ema", "-0.9"], "--ema must be a number in [0, 1)"),
    "ema-nan": (["--ema", "nan"], "--ema must be a number in [0, 1)"),
    "ema-word": (["--ema", "slow"], "argument --ema"),
}


@pytest.fixture()
def empty_cwd(tmp_path: Path, monkeypatch) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _check_refused(argv: list[str], fragment: str, out: Path, cwd: Path, capsys) -> None:
    code = exit_code(argv)
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.strip()]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("normlab: error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not out.exists() and not any(cwd.iterdir())


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_option_exits_2_with_one_line_and_writes_nothing(synthetic_data, empty_cwd: Path,
                                                            tmp_path: Path, capsys,
                                                            case: str) -> None:
    """A bad --val (negative, not a number, leaving no training image, or no image of
    --train-subset), --arch (not two or more whole numbers 1..512 joined by '-', or a width the
    GroupNorm groups do not divide, naming that layer), --label-smoothing (outside [0, 1), not a
    number), --weight-decay (negative, not a number) or --ema (1 or more, negative, not a
    number) makes `normlab study` exit 2 with one 'normlab: error:' line naming it, and leaves no
    run folder and nothing in the working directory, even where the data was found and loaded
    (--val larger than the training set)."""
    args, fragment = BAD_INPUT[case]
    out = tmp_path / "out"
    _check_refused(["study", "--epochs", "1", "--data-dir", str(synthetic_data.folder),
                    "--out", str(out), "--quiet", *args], fragment, out, empty_cwd, capsys)


# The --val cases refused alike by the three commands that train: (arguments, error fragment).
VAL_REFUSED = {
    "negative": (["--val", "-1"], "argument --val"),
    "non-ascii-digit": (["--val", "\u0663"], "argument --val"),
    "all-images": (["--val", str(N_TRAIN)], f"--val {N_TRAIN} leaves none of the {N_TRAIN}"),
    "whole-subset": (["--val", "50", "--train-subset", "50"],
                     "--val 50 leaves none of the 50 images of --train-subset"),
}
VAL_COMMANDS = {"train": ["train", "--variant", "gn"],
                "sweep": ["sweep", "--variants", "gn", "--param", "lr=0.02,0.05"]}


@pytest.mark.parametrize("command", list(VAL_COMMANDS))
@pytest.mark.parametrize("case", list(VAL_REFUSED))
def test_train_and_sweep_refuse_a_bad_val_in_one_line(synthetic_data, empty_cwd: Path,
                                                     tmp_path: Path, capsys, command: str,
                                                     case: str) -> None:
    """`normlab train` and `normlab sweep` refuse a bad --val as `study` does (negative, not
    ASCII digits, leaving no training image, or none of --train-subset): exit 2, one line
    naming it, nothing written."""
    args, fragment = VAL_REFUSED[case]
    out = tmp_path / "out"
    _check_refused([*VAL_COMMANDS[command], "--epochs", "1", "--data-dir",
                    str(synthetic_data.folder), "--out", str(out), "--quiet", *args],
                   fragment, out, empty_cwd, capsys)


def test_train_with_val_records_the_held_out_accuracy(synthetic_data, tmp_path: Path) -> None:
    """`normlab train --val N` trains one run on the other images and fills its val_loss and
    val_acc cells (accuracy in [0, 100]) in every metrics row, and summary.json's final_val_acc
    is the last row's; config.json records the N held-out images."""
    out = tmp_path / "run"
    assert main(["train", "--variant", "gn", "--epochs", "2", "--val", str(VAL), "--data-dir",
                 str(synthetic_data.folder), "--out", str(out), "--quiet"]) == 0
    run = RunFolder(out)
    rows = csv_rows(run.metrics)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for r in rows:
        assert float(r["val_loss"]) >= 0 and 0 <= float(r["val_acc"]) <= 100, r
    s = json.loads(run.summary.read_text())["variants"]["gn"]
    assert s["final_val_acc"]["values"] == [float(rows[-1]["val_acc"])]
    resolved = json.loads(run.config.read_text())["resolved"]
    assert resolved["val_images"] == VAL and resolved["train_images"] == N_TRAIN - VAL


@pytest.mark.parametrize("arch", ["²-16", "٨-16", "8-8-8-8-8-8-8-8"])
def test_arch_the_model_cannot_build_is_one_line(synthetic_data, empty_cwd: Path, tmp_path: Path,
                                                 capsys, arch: str) -> None:
    """An --arch whose widths are not ASCII whole numbers, or which has more convs than the
    28x28 images leave room for (the first at full resolution, then 2 pixels less per conv after
    the pool: at most 7 widths), exits 2 with one line naming --arch, writing nothing."""
    out = tmp_path / "out"
    _check_refused(["study", "--variants", "gn", "--epochs", "1", "--data-dir",
                    str(synthetic_data.folder), "--out", str(out), "--quiet", "--arch", arch],
                   "--arch", out, empty_cwd, capsys)


def test_parse_arch() -> None:
    """parse_arch reads W1-W2-... as a tuple of widths (the default arch is the default model's
    widths) and raises ConfigError naming --arch otherwise."""
    assert parse_arch("4-8-12") == (4, 8, 12)
    assert parse_arch(DEFAULT_ARCH) == ModelConfig().widths
    assert parse_arch("512-1") == (512, 1)
    assert parse_arch("8s-16-16") == (8, 16, 16)   # 's': a stride-2 first conv, no pool
    from normlab.config import arch_stem
    assert (arch_stem("8s-16"), arch_stem("8-16")) == ("stride", "pool")
    assert Config(arch="8s-16-16").model_config("gn").stem == "stride"
    # A kernel size after the 's': "8s4" is a stride-2 4x4 first conv.
    from normlab.config import arch_stem_kernel
    assert parse_arch("8s4-16-16") == (8, 16, 16)
    assert (arch_stem_kernel("8s4-16"), arch_stem_kernel("8s-16"), arch_stem_kernel("8-16")) \
        == (4, 3, 3)
    assert Config(arch="8s4-16-16").model_config("gn").stem_kernel == 4
    for bad in ("8-x", "8", "", "0-16", "8-16-", " 8-16", "8-1e2", "8-16s", "s-16", None,
                "8s5-16", "8s1-16", "84-16s4", "8s44-16", "8k4-16"):
        with pytest.raises(ConfigError, match="--arch"):
            parse_arch(bad)


# ----------------------------------------------------------------------------------------------
# --arch


NORMALIZED = [n for n in NORMS if n != "none"]


def _params_by_hand(widths: tuple[int, ...], norm: bool, first_kernel: int = 3) -> int:
    """3x3 convs with bias (1 input channel; the first one first_kernel x first_kernel), 2 affine
    parameters per channel of a norm, a linear classifier on the last width."""
    total, cin = 0, 1
    for i, w in enumerate(widths):
        k = first_kernel if i == 0 else 3
        total += cin * w * k * k + w + (2 * w if norm else 0)
        cin = w
    return total + cin * 10 + 10


@pytest.mark.parametrize("arch", [DEFAULT_ARCH, "4-8-12", "16-32", "8-8-8-8-8-8-8", "8s4-16-12",
                                  "8s2-8-8-8-8-8-8"])
def test_arch_sets_the_parameter_count_of_every_norm(arch: str) -> None:
    """For a given --arch, every normalized variant (bn, gn, ln, in) builds a model with the same
    parameter count, that of Net(ModelConfig(widths=...)) and of the count by hand; without a
    norm it has only the norms' affine parameters fewer."""
    from normlab.config import arch_stem_kernel
    widths, k = parse_arch(arch), arch_stem_kernel(arch)
    cfg = Config(variants=tuple(NORMS), arch=arch, groups=4 if arch != "16-32" else 8)
    counts = {v.norm: count_params(build_model(cfg, v, 0)) for v in cfg.parsed_variants()}
    assert {counts[n] for n in NORMALIZED} == {_params_by_hand(widths, norm=True, first_kernel=k)}
    assert counts["gn"] == count_params(Net(cfg.model_config("gn")))
    assert counts["none"] == _params_by_hand(widths, norm=False, first_kernel=k)
    if arch == DEFAULT_ARCH:
        assert counts["bn"] <= 8000   # the brief's budget holds for the default model


def test_arch_study_trains_the_model_of_those_widths(synthetic_data, tmp_path: Path) -> None:
    """`normlab study --arch 4-8-12` records the arch in config.json, every variant's parameter
    count in summary.json is that of the max-pool Net with widths (4, 8, 12), the same for
    every normalized variant and different from the default arch's, and a final checkpoint
    loads strictly into that Net."""
    variants = ("gn", "ln", "bn", "in", "none")
    f = _study(synthetic_data.folder, tmp_path / "arch", "--variants", ",".join(variants),
               "--arch", "4-8-12", "--epochs", "1", "--train-subset", "32")
    assert json.loads(f.config.read_text())["arch"] == "4-8-12"
    summary = json.loads(f.summary.read_text())["variants"]
    for norm in variants:
        assert summary[norm]["params"] == count_params(
            Net(ModelConfig(norm=norm, widths=(4, 8, 12), stem="pool", stem_kernel=3)))
    assert len({summary[n]["params"] for n in variants if n != "none"}) == 1
    assert summary["gn"]["params"] != count_params(Net(ModelConfig(norm="gn")))
    ckpt = torch.load(f.checkpoint("gn", 0), map_location="cpu", weights_only=True)
    Net(ModelConfig(norm="gn", widths=(4, 8, 12), stem="pool", stem_kernel=3)).load_state_dict(
        ckpt["model"], strict=True)


# ----------------------------------------------------------------------------------------------
# --label-smoothing


def test_label_smoothing_trains_on_the_smoothed_loss_and_records_the_plain_one(
        synthetic_data, tmp_path: Path) -> None:
    """With --label-smoothing 0.1 the run trains on the smoothed cross-entropy, but metrics.csv
    keeps the plain one. In a one-step epoch (the 64 training images are one batch, no
    augmentation) train_loss is the loss of the initial model on the training images: the same,
    bit for bit, as that of the run without smoothing, equal (up to rounding) to the plain
    cross-entropy of the initial model recomputed here, and not its smoothed cross-entropy. The
    step itself differs: the final weights and test loss are not those of the run without
    smoothing. Every loss is finite; config.json records the value."""
    common = ["--variants", "gn", "--epochs", "1", "--train-subset", "64", "--batch-size", "64",
              "--no-augment"]
    smooth = _study(synthetic_data.folder, tmp_path / "smooth", *common,
                    "--label-smoothing", "0.1")
    plain = _study(synthetic_data.folder, tmp_path / "plain", *common)
    (s,), (p,) = csv_rows(smooth.metrics), csv_rows(plain.metrics)
    for r in (s, p):
        assert all(math.isfinite(float(r[c])) for c in ("train_loss", "test_loss"))
    assert s["train_loss"] == p["train_loss"]
    assert s["test_loss"] != p["test_loss"]
    ws, wp = (torch.load(f.checkpoint("gn", 0), map_location="cpu", weights_only=True)["model"]
              for f in (smooth, plain))
    assert any(not torch.equal(ws[k], wp[k]) for k in ws)

    cfg = Config(variants=("gn",), train_subset=64, batch_size=64, augment=False,
                 label_smoothing=0.1, data_dir=str(synthetic_data.folder))
    assert json.loads(smooth.config.read_text())["label_smoothing"] == 0.1
    d = load_data(cfg, CPU)
    model = build_model(cfg, cfg.parsed_variants()[0], 0).train()
    with torch.no_grad():
        logits = model((d.train.images - d.mean) / d.std)
    ce = F.cross_entropy(logits, d.train.labels).item()
    smoothed = F.cross_entropy(logits, d.train.labels, label_smoothing=0.1).item()
    recorded = float(s["train_loss"])
    assert recorded == pytest.approx(ce, rel=1e-5, abs=1e-6)
    assert abs(recorded - smoothed) > 100 * abs(recorded - ce) + 1e-6, (recorded, ce, smoothed)


# ----------------------------------------------------------------------------------------------
# --weight-decay


def _final_weights(folder: Path, out: Path, variant: str, *args: str) -> dict:
    f = _study(folder, out, "--variants", variant, "--epochs", "1", "--batch-size", "32",
               "--no-augment", *args)
    return torch.load(f.checkpoint(variant, 0), map_location="cpu", weights_only=True)["model"]


def test_weight_decay_is_the_decay_of_every_variant_added_to_its_own_l2(
        synthetic_data, tmp_path: Path) -> None:
    """--weight-decay D decays the same weights as a variant's +l2=D: `gn` with D trains bit for
    bit like `gn+l2=D` with --weight-decay 0, and `gn+l2=D` with D like `gn+l2=2D` (the two
    add). The decay does change the training: the final weights are not those of `gn` without
    decay, and the conv and linear weights are smaller (4 steps of decay 0.05 at the
    one-cycle's learning rates). config.json records the value."""
    folder, d, none = synthetic_data.folder, "0.05", ("--weight-decay", "0")
    recipe = _final_weights(folder, tmp_path / "recipe", "gn", "--weight-decay", d)
    variant = _final_weights(folder, tmp_path / "variant", "gn+l2=0.05", *none)
    plain = _final_weights(folder, tmp_path / "plain", "gn", *none)
    both = _final_weights(folder, tmp_path / "both", "gn+l2=0.05", "--weight-decay", d)
    double = _final_weights(folder, tmp_path / "double", "gn+l2=0.1", *none)
    assert recipe.keys() == variant.keys() == plain.keys()
    for k in recipe:
        torch.testing.assert_close(recipe[k], variant[k], rtol=0, atol=0, msg=k)
        torch.testing.assert_close(both[k], double[k], rtol=0, atol=0, msg=k)
    decayed = [k for k in recipe if k.endswith("weight") and recipe[k].dim() >= 2]
    assert decayed
    for k in decayed:
        assert recipe[k].norm() < plain[k].norm(), k
    assert json.loads(RunFolder(tmp_path / "recipe").config.read_text())["weight_decay"] == 0.05


# ----------------------------------------------------------------------------------------------
# A sweep with --val


def test_sweep_with_val_is_judged_on_the_held_out_images(synthetic_data, tmp_path: Path) -> None:
    """`normlab sweep --val N` over two values of a setting writes a finished study per point
    and sweep.csv with final_val_acc and best_val_acc filled for every run (in [0, 100], as in
    each point's summary.json; each point's report names the N held-out images); its
    rows are judged on val accuracy (selection_metric), and report.md says so: the table shows
    val accuracy and the findings say the choice rests on the N held-out images, not the test
    set. Rows without val accuracy are judged on test accuracy."""
    out = tmp_path / "sweep"
    code = main(["sweep", "--variants", "gn", "--param", "lr=0.02,0.05", "--seeds", "2",
                 "--val", str(VAL), "--epochs", "1", "--data-dir", str(synthetic_data.folder),
                 "--out", str(out), "--quiet"])
    assert code == 0
    sweep = SweepFolder(out)
    rows = sweep.read_table()
    assert sorted((r["lr"], r["seed"]) for r in rows) == [(0.02, 0), (0.02, 1), (0.05, 0),
                                                         (0.05, 1)]
    for r in rows:
        assert r["status"] == "ok"
        for key in ("final_val_acc", "best_val_acc"):
            assert isinstance(r[key], (int, float)) and 0 <= r[key] <= 100, (key, r)
    for point in sweep.points():
        assert point.finished and point.report.is_file()   # each point a whole study
        assert (f"training images, {VAL} held-out validation images, "
                in point.report.read_text())
        lr = json.loads(point.config.read_text())["lr"]
        s = json.loads(point.summary.read_text())["variants"]["gn"]
        mine = sorted((r for r in rows if r["lr"] == lr), key=lambda r: r["seed"])
        assert [r["final_val_acc"] for r in mine] == s["final_val_acc"]["values"]
        assert [r["best_val_acc"] for r in mine] == s["best_val_acc"]["values"]
    assert selection_metric(rows) == ("final_val_acc", "val")
    report = sweep.report.read_text()
    assert f"the accuracy of the {VAL} training images held out by `--val`" in report
    assert "final val acc (%)" in report and "final test acc (%)" not in report
    no_val = [{**r, "final_val_acc": None, "best_val_acc": None} for r in rows]
    assert selection_metric(no_val) == ("final_test_acc", "test")
