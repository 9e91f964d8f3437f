"""Tests of the named experiments (normlab.experiments, experiment_report, posthoc): each
experiment is the sweep its documented command runs, with at least 5 seeds; a small run end to
end writes its mechanism tables, figure and report; BatchNorm's batch-statistics test accuracy
against PyTorch's own batch-statistics mode."""

from __future__ import annotations

import copy
import json
import statistics
import shlex

import pytest
import torch
import torch.nn as nn

from normlab.posthoc import accuracy
from normlab.cli import build_parser, config_from_args, main
from normlab.config import Config
from normlab.errors import RunFolderError
from normlab.experiment_report import MEASURES, write_experiment_outputs
from normlab.experiments import EXPERIMENTS, plan, run_experiment
from normlab.runfolder import SweepFolder, figure_files
from normlab.sweep_spec import SweepSpec, parse_param
from normlab.train import build_model

SYNTHETIC_DATA = {"n_train": 48, "n_test": 40, "seed": 5}


@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_the_documented_command_is_the_experiment(name: str) -> None:
    """The `normlab sweep` command an experiment's report prints parses into exactly the base
    config and sweep spec the experiment runs; every experiment has at least 5 seeds."""
    exp = EXPERIMENTS[name]
    base, spec = plan(exp)
    argv = shlex.split(exp.command())[1:]
    args = build_parser().parse_args(argv)
    assert config_from_args(args) == base
    assert SweepSpec(tuple(parse_param(t) for t in args.param), args.scale_lr) == spec
    assert base.seeds >= 5


def test_the_mechanism_table_has_a_column_per_measure() -> None:
    """mechanism.csv's columns (owned by the run folder) are the measures the report computes."""
    from normlab.runfolder import MECHANISM_COLUMNS

    assert MECHANISM_COLUMNS[2:] == tuple(m[0] for m in MEASURES)


def test_overrides_replace_the_experiments_settings() -> None:
    """plan() with overrides changes only the overridden fields."""
    base, _ = plan(EXPERIMENTS["groups"], {"seeds": 2, "epochs": 1})
    default, _ = plan(EXPERIMENTS["groups"])
    assert (base.seeds, base.epochs) == (2, 1)
    assert base.replace(seeds=default.seeds, epochs=default.epochs) == default


def _reference_batch_stats(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose BatchNorm layers keep no running statistics: PyTorch then
    normalizes by the batch's own statistics even in eval mode."""
    ref = copy.deepcopy(net)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.track_running_stats = False
            m.running_mean = m.running_var = None
    return ref.eval()


@pytest.mark.parametrize("batch", [2, 5, 40])
def test_batch_statistics_accuracy_matches_pytorch(batch: int, gen: torch.Generator) -> None:
    """accuracy(..., batch_statistics=True) equals the accuracy of the same weights with
    PyTorch's batch-statistics BatchNorm on the same batches (a trailing single image joins
    the batch before it); with running statistics it equals plain eval mode on one batch."""
    cfg = Config(variants=("bn",))
    net = build_model(cfg, cfg.parsed_variants()[0], 3)
    with torch.no_grad():   # running statistics unlike any batch's
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
    images = torch.rand(41, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (41,), generator=gen)
    mean, std = 0.2, 0.3
    ref = _reference_batch_stats(net)
    with torch.no_grad():
        x = (images - mean) / std
        bounds = [(s, min(s + batch, 41)) for s in range(0, 41, batch)]
        if bounds[-1][1] - bounds[-1][0] == 1 and len(bounds) > 1:
            bounds = bounds[:-2] + [(bounds[-2][0], 41)]
        want_batch = sum(int((ref(x[a:b]).argmax(1) == labels[a:b]).sum()) for a, b in bounds)
        want_running = int((net.eval()(x).argmax(1) == labels).sum())
    got_batch = accuracy(copy.deepcopy(net), images, labels, mean, std, batch, True)
    got_running = accuracy(net, images, labels, mean, std, batch, False)
    assert got_batch == pytest.approx(100.0 * want_batch / 41)
    assert got_running == pytest.approx(100.0 * want_running / 41)


def test_loss_gradient_ratio_is_the_cross_entropys_alone(gen: torch.Generator) -> None:
    """loss_gradient_ratio is the mean over the conv layers of ||dL/dw|| / ||w|| for the plain
    cross-entropy in training mode (torch.autograd.grad on a copy), whatever gradients the
    network held before."""
    from normlab.posthoc import loss_gradient_ratio

    cfg = Config(variants=("bn",))
    net = build_model(cfg, cfg.parsed_variants()[0], 2)
    images = torch.rand(24, 1, 28, 28, generator=gen)
    labels = torch.randint(0, 10, (24,), generator=gen)
    ref = copy.deepcopy(net).train()
    convs = [m.weight for m in ref.modules() if isinstance(m, nn.Conv2d)]
    loss = nn.functional.cross_entropy(ref((images - 0.1) / 0.3), labels)
    grads = torch.autograd.grad(loss, convs)
    want = sum(float(g.norm() / w.detach().norm()) for g, w in zip(grads, convs)) / len(convs)
    for p in net.parameters():   # stale gradients must not count
        p.grad = torch.full_like(p, 7.0)
    got = loss_gradient_ratio(net, images, labels, 0.1, 0.3)
    assert got == pytest.approx(want, rel=1e-5)


def test_a_small_experiment_end_to_end(synthetic_data, tmp_path, capsys, monkeypatch) -> None:
    """`normlab experiment batch-size` with 2 seeds, 1 epoch and 48 images: the sweep's files,
    mechanism.csv with one row per run and every measure, batch_stats.csv with one row per
    BatchNorm run, the mechanism figure as PNG and SVG, and a report that states the question,
    the protocol, the command that ran (its overrides included) and the time and links the
    figure; the same command again changes none of the tables and not the report, which holds
    the experiment's sections once, also in a copy without the points' final weights
    (checkpoints/); a plain sweep into the folder is refused. One printed line names the
    report, the last: the experiment's, which replaces the sweep's."""
    out = tmp_path / "exp"
    argv = ["experiment", "batch-size", "--out", str(out), "--seeds", "2", "--epochs", "1",
            "--train-subset", "48", "--data-dir", str(synthetic_data.folder), "--quiet"]
    capsys.readouterr()
    assert main(argv) == 0
    sweep = SweepFolder(out)
    printed = capsys.readouterr().out.splitlines()
    assert [line for line in printed if "report" in line] == [
        f"experiment batch-size: report in {sweep.report}"] == printed[-1:], printed
    runs = sweep.read_table()
    assert len(runs) == 6 * 3 * 2
    mech = sweep.read_rows(sweep.mechanism)
    ok = [r for r in runs if r["status"] == "ok"]
    assert {(r["batch_size"], r["variant"], r["seed"]) for r in mech} == {
        (r["batch_size"], r["variant"], r["seed"]) for r in ok}
    for col in ("dead_pct", "weight_norm", "grad_ratio", "loss_grad_ratio"):
        assert all(r[col] is not None for r in mech), col
    assert all((r["bn_gap"] is None) == (r["variant"] != "bn") for r in mech)
    batch = sweep.read_rows(sweep.batch_stats)
    assert {(r["batch_size"], r["seed"]) for r in batch} == {
        (r["batch_size"], r["seed"]) for r in ok if r["variant"] == "bn"}
    assert all(0 <= r["acc_batch"] <= 100 and 0 <= r["acc_running"] <= 100 for r in batch)
    for path in figure_files(sweep.mechanism_figure(), ("png", "svg")).values():
        assert path.is_file(), path
    text = sweep.report.read_text()
    exp = EXPERIMENTS["batch-size"]
    given = {"seeds": 2, "epochs": 1, "train_subset": 48, "data_dir": str(synthetic_data.folder)}
    assert "--seeds 2" in exp.command(given) and "--seeds 5" in exp.command()
    assert text.count("## Mechanism") == 1 and text.count("## Against ") == 1
    ran = (f"normlab experiment batch-size --seeds 2 --epochs 1 --train-subset 48 "
           f"--data-dir {synthetic_data.folder} --out {out}")
    assert exp.experiment_command({**given, "device": "auto"}, out) == ran
    assert json.loads(sweep.record.read_text())["experiment"] == "batch-size"
    # the Protocol states the design; the report says where this run left it
    assert ("**This run departs from that design:** --seeds 2 (designed: 5), --epochs 1 "
            "(designed: 3), --train-subset 48 (designed: 10000); the numbers in the Protocol "
            "are the design's.") in text
    assert exp.departures() == [] and exp.departures({"epochs": 3}) == []
    for part in (f"`{ran}`", exp.command(given), "**Time:**", "## Mechanism",
                 "### BatchNorm with batch statistics at test time",
                 sweep.mechanism_figure().relative_to(out).as_posix()):
        assert part in text, part
    before = {p: p.read_bytes() for p in (sweep.table, sweep.mechanism, sweep.batch_stats,
                                          sweep.report)}
    run_experiment("batch-size", out, {"seeds": 2, "epochs": 1, "train_subset": 48,
                                       "data_dir": str(synthetic_data.folder)},
                   progress=False, log=lambda *_: None)
    assert {p: p.read_bytes() for p in before} == before
    capsys.readouterr()
    write_experiment_outputs(exp, out, ("png",), given)   # the report holds its sections once
    assert sweep.report.read_bytes() == before[sweep.report]
    assert "measuring final weights" not in capsys.readouterr().err   # progress off by default
    write_experiment_outputs(exp, out, ("png",), given, progress=True)
    assert "measuring final weights" in capsys.readouterr().err   # a re-run says what it does
    assert sweep.report.read_bytes() == before[sweep.report]
    # A plain sweep into the experiment's folder, resumed or as its documented sweep command,
    # would replace the experiment's report: one line names the experiment's command instead.
    sweep_argv = shlex.split(exp.command(given))[1:] + ["--out", str(out), "--quiet"]
    for argv in (["sweep", "--resume", str(out)], sweep_argv):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "holds the experiment batch-size" in err, err
        assert f"continue it with 'normlab experiment batch-size --out {out}'" in err, err
        assert "the flags on the Command line of its report.md" in err
        assert {p: p.read_bytes() for p in before} == before
    # A copy without the final weights (the repository keeps no checkpoints/): the same command
    # keeps the measurements made on them, instead of blanking them.
    import shutil

    for point in sweep.points():
        shutil.rmtree(point.checkpoint("bn", 0).parent)
    run_experiment("batch-size", out, {"seeds": 2, "epochs": 1, "train_subset": 48,
                                       "data_dir": str(synthetic_data.folder)},
                   progress=False, log=lambda *_: None)
    assert {p: p.read_bytes() for p in before} == before
    # Where no comparison has the pairs a t-test needs (one seed), the text says so instead of
    # counting Holm's adjustment over 0 comparisons.
    import normlab.experiment_report

    monkeypatch.setattr(normlab.experiment_report, "setting_comparisons", lambda *a, **k: [])
    write_experiment_outputs(exp, out, ("png",), given)
    text = sweep.report.read_text()
    assert "over the 0 comparisons" not in text
    assert "that have pairs (none here: a t-test needs two or more pairs)" in text


def test_an_unknown_experiment_is_one_line_and_exit_2(capsys) -> None:
    """`normlab experiment nope` exits 2 with one line that lists the experiments."""
    with pytest.raises(SystemExit) as e:
        main(["experiment", "nope"])
    assert e.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and all(name in err[0] for name in EXPERIMENTS), err


def test_setting_comparisons_pair_runs_by_seed() -> None:
    """Each value against the reference, per variant as written ("bn+l1" at every lambda, as
    add_specs reads it from the sweep's record): the mean of the per-seed differences over the
    seeds finished at both, scipy's paired t-interval, Holm over all comparisons and the
    difference detectable after Holm (min_detectable at 5% / the 3 tested comparisons); a value
    where no run finished has 0 pairs and no difference."""
    from scipy.stats import ttest_rel

    from normlab.experiment_report import add_specs, setting_comparisons
    from normlab.stats import holm, min_detectable

    acc = {0.0: [98.0, 98.2, 97.9, 98.1], 1e-4: [98.3, 98.4, 98.0, None],
           1e-2: [None, None, None, None]}
    rows = [{"l1": lam, "variant": f"bn+l1={lam:g}", "seed": s,
             "status": "ok" if a is not None else "diverged", "final_test_acc": a}
            for lam, accs in acc.items() for s, a in enumerate(accs)]
    rows += [{"l1": lam, "variant": f"none+l1={lam:g}", "seed": s, "status": "ok",
              "final_test_acc": 50.0 + s + 10 * lam} for lam in acc for s in range(4)]
    add_specs({"base_config": {"variants": ["bn+l1", "none+l1"], "l1_default": 2e-5}},
              ["l1"], rows)
    assert {r["spec"] for r in rows} == {"bn+l1", "none+l1"}
    with pytest.raises(RunFolderError, match=r"no variant that it names 'none\+l1=0'"):
        add_specs({"base_config": {"variants": ["bn+l1"]}}, ["l1"], [dict(r) for r in rows])
    out = setting_comparisons(rows, ["l1"], 0.0)
    by = {(c["spec"], c["l1"]): c for c in out}
    assert set(by) == {("bn+l1", 1e-4), ("bn+l1", 1e-2), ("none+l1", 1e-4), ("none+l1", 1e-2)}
    c = by[("bn+l1", 1e-4)]
    a, b = [98.3, 98.4, 98.0], [98.0, 98.2, 97.9]
    assert c["n"] == 3
    assert c["diff"] == pytest.approx(sum(x - y for x, y in zip(a, b)) / 3)
    res = ttest_rel(a, b)
    ci = res.confidence_interval(0.95)
    assert (c["lo"], c["hi"]) == pytest.approx((ci.low, ci.high))
    tested = [x for x in out if x.get("p") is not None]
    assert len(tested) == 3
    assert [x["holm_p"] for x in tested] == pytest.approx(holm([x["p"] for x in tested]))
    assert c["holm_p"] >= c["p"]
    sd = statistics.stdev([x - y for x, y in zip(a, b)])
    assert c["detectable"] == pytest.approx(min_detectable(sd, 3, 0.05 / 3), rel=1e-9)
    assert c["detectable"] > min_detectable(sd, 3)
    assert by[("bn+l1", 1e-2)]["n"] == 0 and "diff" not in by[("bn+l1", 1e-2)]
    assert "detectable" not in by[("bn+l1", 1e-2)] and "sd" not in by[("bn+l1", 1e-2)]
