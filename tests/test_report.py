"""Reading a run folder back (every damaged file named), the Findings sentences, the results
table, the report, and ``normlab report`` / ``--help`` without torch.

Run folders are made up by conftest's ``make_run`` through normlab.runfolder's writers, with
small synthetic test sets; nothing is trained. Every file name comes from RunFolder.
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import pytest
from helpers import study_figures

from normlab.errors import RunFolderError
from normlab.findings import findings
from normlab.model import Net, count_params
from normlab.runfolder import (METRIC_COLUMNS, PREDICTION_COLUMNS, RunFolder, load_run,
                               load_summary, read_predictions)
from normlab.runfolder import FIGURES, figure_files
from normlab.report import variant_results, write_report
from normlab.table import results_table


def _params(norm: str) -> int:
    """The parameter count of normlab's model with ``norm`` (default groups)."""
    return count_params(Net(norm=norm))


# ----------------------------------------------------------------------------------------------
# load_run


def test_load_run_reads_every_file(run: RunFolder) -> None:
    """load_run gives the variants in study order, the dataset, epochs and device, and every
    metrics row (2 variants x 2 seeds x 3 epochs) with METRIC_COLUMNS, typed (seed and
    epoch ints, the rest floats)."""
    r = load_run(run.path)
    assert r.variants == ["gn", "bn+l1=2e-05"]
    assert r.dataset == "mnist" and r.epochs == 3 and r.env["device"] == "cpu"
    assert r.folder.path == run.path
    assert len(r.metrics) == 2 * 2 * 3
    row = r.metrics[0]
    assert set(row) == set(METRIC_COLUMNS)
    assert isinstance(row["seed"], int) and isinstance(row["epoch"], int)
    assert all(isinstance(row[k], float) for k in ("train_loss", "test_acc", "lr"))
    assert r.ok_seeds("gn") == [0, 1]
    assert [x["epoch"] for x in r.rows("gn", 1)] == [1, 2, 3]


def _damage(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _metrics_lines(run: RunFolder) -> list[str]:
    return run.metrics.read_text().splitlines()


# case -> (RunFolder attribute of the file, new text or None to delete it, what the error says)
DAMAGE = {
    "config missing": ("config", None, "missing"),
    "config not JSON": ("config", "{not json", "not valid JSON"),
    "config a list": ("config", "[1, 2]", "JSON object"),
    "config no dataset": ("config", '{"epochs": 3}', "'dataset'"),
    "env missing": ("env", None, "missing"),
    "env not JSON": ("env", "", "not valid JSON"),
    "summary missing": ("summary", None, "missing"),
    "summary not JSON": ("summary", "{\"variants\": ", "damaged"),
    "summary no variants": ("summary", "{}", "'variants'"),
    "metrics missing": ("metrics", None, "missing"),
    "metrics empty": ("metrics", "", "empty"),
    "metrics wrong columns": ("metrics", "variant,seed,epoch,acc\ngn,0,1,98\n", "wrong columns"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_run_names_a_missing_or_damaged_file(run: RunFolder, case: str) -> None:
    """A missing or damaged config, env, summary or metrics file: RunFolderError naming the file,
    what is wrong with it, and the fix (re-run or restore)."""
    attr, text, what = DAMAGE[case]
    path = getattr(run, attr)
    if text is None:
        path.unlink()
    else:
        _damage(path, text)
    with pytest.raises(RunFolderError) as e:
        load_run(run.path)
    msg = str(e.value)
    assert path.name in msg and what in msg
    assert "re-run" in msg or "restore" in msg  # the fix


def _set_metrics_cell(run: RunFolder, line: int, column: str, text: str) -> None:
    lines = _metrics_lines(run)
    cells = lines[line - 1].split(",")
    cells[METRIC_COLUMNS.index(column)] = text
    lines[line - 1] = ",".join(cells)
    _damage(run.metrics, "\n".join(lines) + "\n")


def test_load_run_non_numeric_metrics_cell(run: RunFolder) -> None:
    """A word in a numeric metrics cell: the error names the file, line, column and cell."""
    _set_metrics_cell(run, 3, "test_acc", "ninety")
    with pytest.raises(RunFolderError, match=re.escape(run.metrics.name) +
                       r", line 3, column 'test_acc': 'ninety' is not a percentage from 0 to 100"):
        load_run(run.path)


def test_load_run_short_metrics_row(run: RunFolder) -> None:
    """A metrics row with too few cells: the error names the line and both cell counts."""
    lines = _metrics_lines(run)
    n = len(METRIC_COLUMNS)
    lines[-1] = lines[-1].rsplit(",", 3)[0]  # all columns -> 3 cells fewer
    _damage(run.metrics, "\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=re.escape(run.metrics.name) +
                       rf", line 13: {n - 3} cells, expected {n}"):
        load_run(run.path)


def test_load_run_truncated_metrics(run: RunFolder) -> None:
    """A finished run whose last epochs are missing from the metrics table: the error names the
    run, the epoch it ends at and the epochs the summary promises."""
    _damage(run.metrics, "\n".join(_metrics_lines(run)[:-1]) + "\n")
    with pytest.raises(RunFolderError, match=re.escape(
            f"{run.metrics.name}: variant 'bn+l1=2e-05' seed 1 ends at epoch 2, but "
            f"{run.summary.name} says 3 epochs")):
        load_run(run.path)


def test_load_run_metrics_from_another_run(run: RunFolder) -> None:
    """Metrics rows of a variant the summary does not list: the two files are from different
    runs, and the error says so."""
    lines = _metrics_lines(run)
    _damage(run.metrics, "\n".join(lines + [lines[1].replace("gn,", "ln,", 1)]) + "\n")
    with pytest.raises(RunFolderError,
                       match=re.escape(f"variant 'ln', which {run.summary.name} does not list")):
        load_run(run.path)


@pytest.mark.parametrize("column, text, what", [
    ("test_loss", "nan", "is not a finite number >= 0"),
    ("train_loss", "inf", "is not a finite number >= 0"),
    ("lr", "-0.1", "is not a finite number >= 0"),
    ("test_acc", "100.5", "is not a percentage from 0 to 100"),
    ("train_acc", "-1", "is not a percentage from 0 to 100"),
    ("val_acc", "nan", "is not a percentage from 0 to 100 or empty"),
])
def test_load_run_metrics_value_no_epoch_writes(run: RunFolder, column: str, text: str,
                                                what: str) -> None:
    """A metrics cell that no trained epoch writes (rows are written only for epochs that did not
    diverge: a non-finite loss, an accuracy outside [0, 100], a negative loss or learning rate):
    the error names the file, line, column and cell, before any figure could use it."""
    _set_metrics_cell(run, 3, column, text)
    with pytest.raises(RunFolderError, match=re.escape(
            f"{run.metrics.name}, line 3, column {column!r}: {text!r} {what}; re-run the study")):
        load_run(run.path)


def test_load_run_metrics_rows_repeated_missing_or_contradicting_the_summary(
        run: RunFolder) -> None:
    """metrics.csv must hold each (variant, seed, epoch) once, every epoch of a finished run, and
    the final test accuracies summary.json gives (the results table reads the one, the curves
    and comparisons the other): a repeated row, a missing middle epoch and an edited final
    accuracy are each an error naming the file and the run."""
    lines = _metrics_lines(run)
    header, rows = lines[0], lines[1:]
    key = {tuple(r.split(",")[:3]): i for i, r in enumerate(rows)}
    _damage(run.metrics, "\n".join(lines + [rows[0]]) + "\n")
    v, seed, epoch = rows[0].split(",")[:3]
    with pytest.raises(RunFolderError, match=re.escape(
            f"{run.metrics.name} has two rows for variant {v!r} seed {seed} epoch {epoch}")):
        load_run(run.path)
    middle = key[("gn", "1", "2")]
    _damage(run.metrics, "\n".join([header] + rows[:middle] + rows[middle + 1:]) + "\n")
    with pytest.raises(RunFolderError, match=re.escape(
            f"{run.metrics.name}: variant 'gn' seed 1 has no row for epoch 2")):
        load_run(run.path)
    _damage(run.metrics, "\n".join(lines) + "\n")
    load_run(run.path)   # as written, the two files agree
    _set_metrics_cell(run, 2 + key[("gn", "0", "3")], "test_acc", "97.25")
    with pytest.raises(RunFolderError, match=re.escape(
            f"{run.metrics.name} and {run.summary.name} disagree on the final test accuracies "
            "of variant 'gn'")):
        load_run(run.path)


def test_load_run_missing_diagnostics_of_a_study_that_recorded_them(run: RunFolder) -> None:
    """A folder whose config.json says the runs recorded diagnostics (the default) but whose
    diagnostics.csv is gone: an error naming the file (without it the report would silently
    drop its Diagnostics section). A --no-diagnostics folder needs none."""
    load_run(run.path)   # make_run's folders are --no-diagnostics ones
    cfg = json.loads(run.config.read_text(encoding="utf-8"))
    run.config.write_text(json.dumps(cfg | {"diagnostics": True}), encoding="utf-8")
    with pytest.raises(RunFolderError, match=re.escape(
            f"{run.diagnostics} is missing, but {run.config.name} says the runs recorded "
            "diagnostics")):
        load_run(run.path)


@pytest.mark.parametrize("change, what", [
    (lambda s: s["variants"]["gn"].pop("final_test_acc"), "'final_test_acc' is missing"),
    (lambda s: s["variants"]["gn"]["best_test_acc"].update(values=["x"]), "not a list of finite numbers"),
    (lambda s: s["variants"]["gn"]["final_test_acc"].update(values=[float("nan"), 98.0]),
     "not a list of finite numbers"),
    (lambda s: s["variants"]["gn"]["final_test_acc"].update(values=[101.0, 98.0]),
     "a value is outside [0, 100]"),
    (lambda s: s["variants"]["gn"]["final_test_acc"].update(mean=float("inf")),
     "'mean' is not a finite number"),
    (lambda s: s["variants"]["gn"].update(status="fine"), "status 'fine'"),
    (lambda s: s["variants"]["gn"].update(seeds="0,1"), "'seeds' is not a list"),
])
def test_load_run_damaged_summary_entries(run: RunFolder, change, what: str) -> None:
    """A summary entry missing or of the wrong type: RunFolderError naming the summary file, the
    problem, and 're-run the study'."""
    summary = json.loads(run.summary.read_text())
    change(summary)
    _damage(run.summary, json.dumps(summary))
    with pytest.raises(RunFolderError, match=re.escape(what)) as e:
        load_run(run.path)
    assert run.summary.name in str(e.value) and "re-run the study" in str(e.value)


def test_load_run_not_a_folder(tmp_path: Path) -> None:
    """A path that is not a folder: RunFolderError saying that it does not exist, that it is a
    broken link, or that it is a file."""
    with pytest.raises(RunFolderError, match="nothing does not exist; give the run folder"):
        load_run(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="file is a file, not a folder; give the run folder"):
        load_run(tmp_path / "file")
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(RunFolderError, match="link is a broken link; give the run folder"):
        load_run(tmp_path / "link")


def test_read_predictions_errors(run: RunFolder, n_test: int) -> None:
    """read_predictions returns one typed row per test image; wrong columns, a non-numeric cell
    and a missing file are RunFolderErrors naming the file (and line and column)."""
    path = run.predictions("gn", 0)
    rows = read_predictions(path)
    assert len(rows) == n_test and rows[0].keys() == set(PREDICTION_COLUMNS)
    path.write_text("index,label,guess\n0,1,1\n")
    with pytest.raises(RunFolderError, match=re.escape(path.name) + " has the wrong columns"):
        read_predictions(path)
    path.write_text(",".join(PREDICTION_COLUMNS) + "\n0,1,seven,0.5\n")
    with pytest.raises(RunFolderError, match="line 2, column 'pred': 'seven' is not a number"):
        read_predictions(path)
    path.unlink()
    with pytest.raises(RunFolderError, match=re.escape(path.name) + " is missing"):
        read_predictions(path)


def test_results_table_of_a_saved_summary(run: RunFolder) -> None:
    """load_summary and table.results_table (used by the README test) render a saved summary:
    one Markdown row per variant with its parameter count and number of finished seeds."""
    table = results_table(load_summary(run.path), markdown=True).markdown()
    assert f"| `gn` | {_params('gn'):,} | 2 |" in table and "| `bn+l1=2e-05` |" in table


def test_variant_results(tmp_path: Path, make_run) -> None:
    """Epoch of best is the argmax of the mean test-accuracy curve; the gap is train - test at the
    last epoch, averaged over seeds; params is the model's parameter count."""
    run = make_run(tmp_path / "r", variants=("gn",), seeds=3, epochs=4,
                   final={"gn": [98.0, 98.5, 99.0]}, gap={"gn": 0.25})
    (res,) = variant_results(load_run(run.path))
    assert res.best_epoch == 4 and res.best_epoch_acc == pytest.approx(98.5)
    assert res.final_gap == pytest.approx(0.25)
    assert res.params == _params("gn") and res.ok_seeds == [0, 1, 2]


def test_best_epoch_of_the_mean_curve(tmp_path: Path, make_run, monkeypatch) -> None:
    """RunData.best_epoch (the report's "epoch of best" and the graphs' star) is the epoch of the
    best mean over seeds, highest or lowest as asked, the earliest on ties, leaving out missing
    and non-finite values (and an epoch that has none); the report's column is that epoch."""
    data = load_run(make_run(tmp_path / "r", variants=("gn",), seeds=2, epochs=3).path)
    nan = float("nan")
    curves = {"a": {1: [1.0, 3.0], 2: [2.0, 2.0], 3: [nan, 1.5], 4: [nan, None]},
              "test_acc": {1: [98.0, 98.2], 2: [99.3, nan], 3: [99.0, 99.1]}}
    monkeypatch.setattr(data, "per_epoch", lambda variant, column: curves[column])
    assert data.mean_per_epoch("gn", "a") == {1: 2.0, 2: 2.0, 3: 1.5}
    assert data.best_epoch("gn", "a") == 1                           # tie of 1 and 2: earliest
    assert data.best_epoch("gn", "a", higher_is_better=False) == 3   # the nan left out
    (res,) = variant_results(data)                  # the best mean is epoch 2's one finite seed
    assert (res.best_epoch, res.best_epoch_acc) == (2, 99.3)
    curves["a"] = {1: [nan]}
    assert data.best_epoch("gn", "a") is None


# ----------------------------------------------------------------------------------------------
# Findings


def _stat(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else (0.0 if values else None),
            "n": len(values), "values": values}


def _summary(accs: dict[str, list[float]], diverged: dict | None = None) -> dict:
    diverged = diverged or {}
    out = {}
    for name, values in accs.items():
        bad = diverged.get(name, [])
        seeds = list(range(len(values) + len(bad)))
        status = "ok" if not bad else ("diverged" if not values else "partly-diverged")
        out[name] = {"name": name, "norm": name.split("+")[0], "l1": 0.0, "l2": 0.0,
                     "params": _params("gn"), "status": status, "seeds": seeds,
                     "diverged_seeds": bad, "final_test_acc": _stat(values),
                     "best_test_acc": _stat(values), "final_test_loss": _stat([0.03] * len(values))}
    return {"dataset": "mnist", "epochs": 20, "seeds": 5, "variants": out}


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _hand_paired(a: list[float], b: list[float]) -> tuple[float, float, float, float]:
    """(mean difference, CI low, CI high, sd) of a - b by hand: mean ± t_{0.975, n-1} sd/sqrt(n),
    with the t quantiles of the published table."""
    t975 = {2: 4.302653, 3: 3.182446, 4: 2.776445}
    d = [x - y for x, y in zip(a, b)]
    mean, sd = statistics.fmean(d), statistics.stdev(d)
    half = t975[len(d) - 1] * sd / len(d) ** 0.5
    return mean, mean - half, mean + half, sd


def test_findings_rank_a_difference_larger_than_the_noise() -> None:
    """A clear lead over 5 paired seeds is ranked: the winner is named as measurably ahead of every
    other variant, and the pair's sentence gives the mean paired difference with the 95% CI of the
    per-seed differences (by hand), the number of pairs, p < 0.001 and which variant is ahead."""
    gn = [98.80, 98.85, 98.82, 98.78, 98.84]
    bn = [99.20, 99.27, 99.20, 99.18, 99.25]
    s = _summary({"gn": gn, "bn": bn})
    text = " ".join(findings(s))
    mean, lo, hi, _ = _hand_paired(gn, bn)
    assert ("`bn` has the highest final test accuracy: 99.22% (mean of 5 seeds), measurably "
            "ahead of every other variant.") in text
    assert (f"`gn` vs `bn`: {_signed(mean)} points (95% CI {_signed(lo)} to {_signed(hi)}, "
            "5 paired seeds); `bn` is ahead of `gn` by more than the seed-to-seed noise "
            "(paired t-test, p < 0.001)") in text
    assert "no measurable difference" not in text and "Holm" not in text   # one pair


def test_findings_no_difference_states_the_detectable_difference() -> None:
    """A lead inside the noise is not ranked: the paired CI spans 0, the sentence says "no
    measurable difference" and the smallest difference a paired t-test on these 5 pairs would
    detect with 80% power at the 5% level (min_detectable of the sd of the differences); no
    variant is called the highest or ahead."""
    from normlab.stats import min_detectable

    gn, ln = [99.0, 99.3, 98.9, 99.2, 99.1], [99.1, 98.9, 99.2, 99.0, 99.0]
    text = " ".join(findings(_summary({"gn": gn, "ln": ln})))
    mean, lo, hi, sd = _hand_paired(gn, ln)
    assert lo < 0 < hi
    detectable = min_detectable(sd, 5)
    assert 0.3 < detectable < 0.5
    assert "Mean final test accuracy: `gn` 99.10%, `ln` 99.04% (5 seeds each)" in text
    assert (f"`gn` vs `ln`: {_signed(mean)} points (95% CI {_signed(lo)} to {_signed(hi)}, "
            "5 paired seeds); no measurable difference (paired t-test, p = ") in text
    assert f"the study could have detected {detectable:.2f} points with 80% power." in text
    assert "highest" not in text and "ahead" not in text
    assert "scale" not in text
    # two seeds that disagree widely: no accuracy difference could be detected, and it says so
    gn, ln = [20.0, 60.0], [30.0, 25.0]
    text = " ".join(findings(_summary({"gn": gn, "ln": ln})))
    detectable = min_detectable(statistics.stdev([x - y for x, y in zip(gn, ln)]), 2)
    assert detectable > 100
    assert (f"the study could have detected {detectable:.2f} points with 80% power (beyond the "
            "100-point scale: too few seeds to detect any difference)") in text


def test_findings_detectable_difference_after_holm() -> None:
    """With three variants the no-difference sentence gives the difference detectable after
    Holm's adjustment over the 3 comparisons (min_detectable at 5% / 3) and says so."""
    from normlab.stats import min_detectable

    gn, ln = [99.0, 99.3, 98.9, 99.2, 99.1], [99.1, 98.9, 99.2, 99.0, 99.0]
    bn = [99.05, 99.1, 99.0, 99.1, 99.05]
    text = " ".join(findings(_summary({"gn": gn, "ln": ln, "bn": bn})))
    sd = _hand_paired(gn, ln)[3]
    detectable = min_detectable(sd, 5, 0.05 / 3)
    assert (f"the study could have detected {detectable:.2f} points with 80% power after "
            "Holm's adjustment over the 3 comparisons.") in text
    assert f"{min_detectable(sd, 5):.2f} points" not in text
    # A third variant with one seed adds pairs without a test: Holm adjusts over the one tested
    # pair, so its detectable difference is at 5% and the sentence names no adjustment.
    text = " ".join(findings(_summary({"gn": gn, "ln": ln, "bn": [99.0]})))
    assert (f"the study could have detected {min_detectable(sd, 5):.2f} points with 80% "
            "power.") in text


def test_findings_one_seed_not_conclusive() -> None:
    """One seed each: the difference on that seed, no CI, no test, and the comparison is called
    not conclusive; nothing is ranked."""
    s = _summary({"gn": [99.0], "bn": [99.4]})
    text = " ".join(findings(s))
    assert "Mean final test accuracy: `gn` 99.00%, `bn` 99.40% (one seed each)" in text
    assert ("`gn` vs `bn`: −0.40 points on the one seed both finished (seed 0); one pair gives "
            "no confidence interval, so this comparison is not conclusive.") in text
    assert "significant" not in text and "CI" not in text and "ahead" not in text
    assert "highest" not in text


def test_findings_mixed_seed_counts() -> None:
    """Pairs are made of the seeds both variants finished: a variant with one seed gives one pair
    (not conclusive) while the others are tested over their 3 pairs; with one tested pair
    Holm's adjustment changes nothing, so the sentence gives the plain p (not "Holm-adjusted"),
    and no winner is named while one of its comparisons is open."""
    gn, bn = [99.0, 99.1, 99.05], [99.5, 99.62, 99.53]
    f = findings(_summary({"gn": gn, "bn": bn, "ln": [98.0]}))
    text = " ".join(f)
    mean, lo, hi, _ = _hand_paired(gn, bn)
    assert any(x.startswith(f"`gn` vs `bn`: {_signed(mean)} points (95% CI {_signed(lo)} to "
                            f"{_signed(hi)}, 3 paired seeds); `bn` is ahead of `gn` by more than "
                            "the seed-to-seed noise (paired t-test, p")
               for x in f)
    assert "Holm" not in text
    assert ("`gn` vs `ln`: +1.00 points on the one seed both finished (seed 0); one pair gives no "
            "confidence interval, so this comparison is not conclusive.") in f
    assert "`bn` vs `ln`: +1.50 points on the one seed both finished (seed 0)" in text
    assert "highest" not in text
    assert "Mean final test accuracy: `gn` 99.05%, `bn` 99.55%, `ln` 98.00% (over 3, 3 and 1 " \
           "seeds)" in text


def test_findings_name_each_tests_own_holm_family() -> None:
    """Holm adjusts the t-tests over the pairs that have one and the McNemar tests over theirs:
    with one t-tested pair and three McNemar tests (a variant with one seed), the t-test's p is
    plain and the McNemar p is called Holm-adjusted."""
    from normlab.compare import accuracy_from_summary, compare

    gn, bn = [99.0, 99.1, 99.05], [99.5, 99.62, 99.53]
    summary = _summary({"gn": gn, "bn": bn, "ln": [98.0]})
    counts = {("gn", "bn"): {s: (5, 20) for s in range(3)}, ("gn", "ln"): {0: (30, 10)},
              ("bn", "ln"): {0: (40, 5)}}
    comps = compare(accuracy_from_summary(summary), counts)
    f = findings(summary, comparisons=comps)
    line = next(x for x in f if x.startswith("`gn` vs `bn`"))
    assert "(paired t-test, p" in line and "t-test, Holm" not in line
    assert "(exact McNemar, Holm-adjusted p" in line


def test_findings_holm_turns_a_lone_significance_into_no_difference() -> None:
    """With three variants, a pair whose unadjusted paired test is significant (CI excludes 0,
    p = 0.035) but whose Holm-adjusted p (3 x 0.035 = 0.10) is not is not ranked: the sentence
    gives both p-values and the detectable difference."""
    accs = {"gn": [99.0, 99.1, 99.2, 99.0, 99.1], "ln": [98.9, 98.95, 99.15, 98.87, 99.1],
            "bn": [99.0, 99.05, 99.1, 99.05, 99.0]}
    text = " ".join(findings(_summary(accs)))
    mean, lo, hi, _ = _hand_paired(accs["gn"], accs["ln"])
    assert lo > 0
    assert (f"`gn` vs `ln`: {_signed(mean)} points (95% CI {_signed(lo)} to {_signed(hi)}, 5 "
            "paired seeds); no measurable difference once corrected for the 3 comparisons "
            "(paired t-test p = 0.035 alone, Holm-adjusted p = 0.10); the study could have "
            "detected") in text
    assert "ahead" not in text and "highest" not in text


def test_findings_diverged_and_single_result() -> None:
    """A variant that diverged everywhere is named with its seeds and nothing is compared; one
    that diverged in some seeds is summarized over the others."""
    s = _summary({"gn": [99.0, 99.1], "bn": []}, diverged={"bn": [0, 1]})
    text = " ".join(findings(s))
    assert "`bn` diverged in every run (seeds 0, 1)" in text
    assert "Only `gn` has results" in text and "significant" not in text
    s = _summary({"gn": [99.0, 99.1], "bn": [99.5, 99.6]}, diverged={"bn": [2]})
    text = " ".join(findings(s))
    assert "`bn` diverged in seed 2; its numbers are over the other 2 seeds" in text


def test_findings_gap_sentences() -> None:
    """Train-test gaps: negative gaps show no overfitting (with augmentation said), the largest
    positive gap overfits the most, and gaps within 0.1 points are not ranked."""
    s = _summary({"gn": [99.0, 99.1], "bn": [99.0, 99.2]})
    text = " ".join(findings(s, gaps={"gn": -0.4, "bn": -0.1}, augment=True))
    assert "`gn` −0.40, `bn` −0.10 percentage points" in text
    assert "show no overfitting" in text and "overfits" not in text and "augmented" in text
    text = " ".join(findings(s, gaps={"gn": 0.3, "bn": -0.1}, augment=False))
    assert "`gn` has the largest gap (+0.30), so by this measure it overfits the most" in text
    assert "augmented" not in text
    text = " ".join(findings(s, gaps={"gn": 0.3, "bn": -0.1}, augment=True, clean_fraction=0.2))
    assert "augmented ones, except in the last 0.2 of the steps, which trained on the plain" in text
    text = " ".join(findings(s, gaps={"gn": 0.11, "bn": 0.10}, augment=False))
    assert "The largest gap, `gn`'s +0.11, is within 0.1 points of `bn`'s +0.10" in text
    assert "overfits the most" not in text


def test_findings_leave_a_variant_that_learned_little_out_of_the_gap_ranking() -> None:
    """A variant whose mean final test accuracy is below 50% (e.g. near chance after a very
    short run) keeps its gap in the list but is left out of the overfitting judgment, which
    says so; with every variant left out, nothing is judged."""
    s = _summary({"gn": [97.0, 97.2], "bn": [10.3, 10.4]})
    text = " ".join(findings(s, gaps={"gn": 0.2, "bn": 8.3}, augment=False))
    assert "`gn` +0.20, `bn` +8.30 percentage points" in text
    assert ("`bn` is not judged for overfitting: its mean final test accuracy is below 50%, too "
            "little learned for a gap to mean it.") in text
    assert "`bn` has the largest gap" not in text
    assert "`gn`'s training accuracy is above its test accuracy by +0.20 points." in text
    s = _summary({"gn": [11.0, 12.0], "bn": [10.3, 10.4]})
    text = " ".join(findings(s, gaps={"gn": 1.0, "bn": 8.3}, augment=False))
    assert "`gn`, `bn` are not judged for overfitting: their mean" in text
    assert "overfits" not in text and "show no overfitting" not in text
    s = _summary({"gn": [97.0, 97.2], "bn": [10.3, 10.4]})   # the rest: "no other variant"
    text = " ".join(findings(s, gaps={"gn": -0.1, "bn": 8.3}, augment=False))
    assert "No other variant's training accuracy exceeds its test accuracy" in text


# ----------------------------------------------------------------------------------------------
# The report (RunFolder.report)


def _links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", report)


def test_write_report_multi_seed(synthetic_data, tmp_path: Path, make_run) -> None:
    """Three variants x 3 seeds with the test images found: the report names every variant, links
    exactly the PNGs of the figures made (3 curves + one grid per variant, all inside the run
    folder; each also an SVG, not linked), states device, wall time, epochs and seeds, the winner
    (measurably ahead of both others), the table row, and a Comparisons section that says Holm
    and has one row of 3 pairs per pair of variants; no temporary files stay."""
    variants = ("gn", "ln", "bn+l1=2e-05")
    run = make_run(tmp_path / "run", variants=variants, seeds=3, epochs=4,
                   labels=synthetic_data.labels, data_dir=synthetic_data.folder,
                   final={"gn": [98.1, 98.2, 98.15], "ln": [98.0, 98.3, 98.1],
                          "bn+l1=2e-05": [99.0, 99.05, 99.1]})
    path = write_report(run.path)
    assert path == run.report
    text = path.read_text(encoding="utf-8")
    for v in variants:
        assert f"`{v}`" in text
    links = _links(text)
    made = sorted(study_figures(run, variants))
    assert sorted(run.path / x for x in links) == made
    assert sorted(run.figures.iterdir()) == sorted(f for p in made
                                                   for f in figure_files(p).values())
    assert all((run.path / x).is_file() and (run.path / x).parent == run.figures for x in links)
    # The process's torch threads are not the workers': the timing line says how they trained.
    device = next(x for x in text.splitlines() if "**Device:** cpu" in x)
    assert "CPU cores" in device and "torch threads" not in device, device
    # make_run's 122.6 s plus the moment finish() takes: 2 min 03 s unless that moment is 0.9 s
    assert ("**Training time:** 2 min 03 s of wall time (all runs and their evaluations, "
            "2 worker(s) x 1 torch thread(s))") in text
    assert "**Epochs:** 4 per run; **seeds:** 0, 1, 2 (3 per variant)" in text
    assert ("`bn+l1=2e-05` has the highest final test accuracy: 99.05% (mean of 3 seeds), "
            "measurably ahead of every other variant.") in text
    assert f"| `gn` | {_params('gn'):,} | 3 | 98.15 ± 0.05 |" in text
    comparisons = text.split("## Comparisons", 1)[1].split("## Findings", 1)[0]
    assert "With 3 pairs, every p-value is adjusted" in comparisons and "Holm" in comparisons
    assert ("| pair | N pairs | mean diff (pts) | 95% CI | t-test p | Holm t-test p | "
            "McNemar b / c | McNemar p | Holm McNemar p | detectable (pts) |") in comparisons
    for pair in ("`gn` vs `ln`", "`gn` vs `bn+l1=2e-05`", "`ln` vs `bn+l1=2e-05`"):
        assert f"| {pair} | 3 | " in comparisons
    assert not list(run.path.glob("*.tmp")) and not list(run.figures.glob(".*"))


@pytest.mark.filterwarnings("ignore:.*leaves out the grids")   # its folder has no test images
def test_report_says_when_a_ci_reaches_past_the_scale(tmp_path: Path, make_run) -> None:
    """Two seeds far apart give a t-interval past 0 and 100%: the Results legend names the
    variant and says why, and the table writes the interval's negative end with a true minus
    sign (as the comparisons do); seeds close together get no such sentence."""
    run = make_run(tmp_path / "wide", variants=("gn", "ln"), seeds=2, epochs=2,
                   final={"gn": [40.0, 99.0], "ln": [98.0, 98.2]}, data_dir=tmp_path / "none")
    text = write_report(run.path).read_text(encoding="utf-8")
    assert ("The CI of `gn` reaches past 0 or 100%: its seeds lie too far apart for so few of "
            "them to pin the mean down") in text
    row = next(x for x in text.splitlines() if x.startswith("| `gn` |"))
    assert "[−" in row and "[-" not in row
    close = make_run(tmp_path / "close", variants=("gn", "ln"), seeds=2, epochs=2,
                     final={"gn": [98.0, 98.1], "ln": [98.0, 98.2]}, data_dir=tmp_path / "none")
    assert "reaches past" not in write_report(close.path).read_text(encoding="utf-8")


@pytest.mark.parametrize("damage", ["predictions", "diagnostics", "metrics"])
def test_write_report_checks_every_file_before_drawing(synthetic_data, tmp_path: Path, make_run,
                                                       damage: str) -> None:
    """A damaged file that the report reads (the last grid's predictions cut mid-row, a
    diagnostics.csv of the wrong columns, a non-finite metrics cell) is a RunFolderError naming
    it, raised before the first figure is drawn: every file of the folder keeps its bytes and
    its modification time."""
    from normlab.runfolder import DIAGNOSTIC_COLUMNS

    run = make_run(tmp_path / "run", variants=("gn", "ln"), seeds=1, epochs=2,
                   labels=synthetic_data.labels, data_dir=synthetic_data.folder)
    write_report(run.path)
    damaged = {"predictions": run.predictions("ln", 0), "diagnostics": run.diagnostics,
               "metrics": run.metrics}[damage]
    if damage == "predictions":
        _damage(damaged, damaged.read_text(encoding="utf-8")[:200])
    elif damage == "diagnostics":
        _damage(damaged, ",".join(DIAGNOSTIC_COLUMNS[:-1]) + "\n")
    else:
        _set_metrics_cell(run, 2, "test_loss", "nan")
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.path.rglob("*")
              if p.is_file()}
    with pytest.raises(RunFolderError, match=re.escape(damaged.name)):
        write_report(run.path)
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.path.rglob("*")
             if p.is_file()}
    assert after == before


def test_write_report_one_seed_and_missing_data(tmp_path: Path, no_network, make_run) -> None:
    """One seed: no CI; the test images cannot be found: curves and report still made, the
    report says why the grids are missing and a warning says how to draw them. Without a timing
    record there is no wall-time line."""
    run = make_run(tmp_path / "run", seeds=1, epochs=2, data_dir=tmp_path / "no-data",
                   wall=False)
    assert not run.timing_json.exists()
    with pytest.warns(UserWarning, match=re.escape(
            f"{run.report} leaves out the grids of misclassified images: the test images of "
            f"mnist were not found; to draw them, run 'normlab report {run.path} --data-dir DIR'")):
        text = write_report(run.path).read_text(encoding="utf-8")
    assert "not conclusive" in text and "significant" not in text
    assert "grids of misclassified images were not made" in text
    assert "Training time" not in text
    assert sorted(run.path / x for x in _links(text)) == sorted(run.figure(k) for k in FIGURES)


def test_report_describes_ghost_batchnorm_and_weight_standardization(tmp_path: Path, no_network,
                                                                     make_run) -> None:
    """summary.json records each variant's weight standardization, and the report's variant line
    gives gbn's virtual batch size and names +ws, beside the group count and the penalty."""
    run = make_run(tmp_path / "run", variants=("gbn", "gn+ws+l1=2e-05"), seeds=1, epochs=2,
                   data_dir=tmp_path / "no-data", wall=False)
    summary = json.loads(run.summary.read_text(encoding="utf-8"))["variants"]
    assert [(s["norm"], s["ws"]) for s in summary.values()] == [("gbn", False), ("gn", True)]
    with pytest.warns(UserWarning, match="leaves out the grids"):   # no test images
        text = write_report(run.path).read_text(encoding="utf-8")
    assert ("**Variants:** `gbn` (Ghost BatchNorm, virtual batches of 16), `gn+ws+l1=2e-05` "
            "(GroupNorm, 4 groups + weight standardization + L1 λ = 2e-05).") in text


# ----------------------------------------------------------------------------------------------
# Commands that need no torch


TORCH_FREE = """
import sys
from normlab.cli import main
argv = {argv!r}
try:
    code = main(argv)
except SystemExit as e:   # --help exits
    code = e.code
assert code == 0, f"exit code {{code}}"
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
assert not loaded, f"torch was imported: {{loaded[:5]}}"
print("ok")
"""


@pytest.mark.parametrize("argv", [["--help"], ["study", "--help"], ["report", "RUN_DIR"]],
                         ids=["help", "study-help", "report"])
def test_commands_without_torch(argv: list[str], tmp_path: Path, make_run, run_python,
                                offline_subprocess_env) -> None:
    """``normlab --help``, ``normlab study --help`` and ``normlab report RUN_DIR`` on a run folder
    whose test images cannot be found (so the grids are skipped) succeed without importing
    torch: reading results, drawing curves and writing the report need none."""
    if "RUN_DIR" in argv:
        run = make_run(tmp_path / "run", seeds=1, epochs=2, data_dir=tmp_path / "no-data")
        argv = [str(run.path) if a == "RUN_DIR" else a for a in argv]
    done = run_python(TORCH_FREE.format(argv=argv), env=offline_subprocess_env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.rstrip().endswith("ok"), \
        (done.stdout[-2000:], done.stderr[-2000:])
    if "report" in argv:
        assert run.report.is_file() and "grids of misclassified images were not made" in \
            run.report.read_text(encoding="utf-8")


@pytest.mark.filterwarnings("ignore:.*leaves out the grids")   # its folder has no test images
def test_report_states_the_weight_decay_and_reads_an_older_folder_as_without(
        tmp_path: Path, no_network, make_run) -> None:
    """The report's training line gives the run's weight decay (the default, 0.0005); a
    config.json written before --weight-decay existed (no such key) trained without decay,
    and the report says so rather than giving today's default. It names --ema and
    --clean-fraction when they were on, and a batch larger than the training images."""
    run = make_run(tmp_path / "run", seeds=1, epochs=2, data_dir=tmp_path / "no-data",
                   wall=False)
    cfg = json.loads(run.config.read_text(encoding="utf-8"))
    assert cfg["weight_decay"] == 5e-4
    text = write_report(run.path).read_text(encoding="utf-8")
    training = [x for x in text.splitlines() if x.startswith("- **Training:**")]
    assert len(training) == 1 and "peak learning rate 0.1, weight decay 0.0005," in training[0]
    del cfg["weight_decay"]
    run.config.write_text(json.dumps(cfg), encoding="utf-8")
    text = write_report(run.path).read_text(encoding="utf-8")
    assert "peak learning rate 0.1, no weight decay," in text
    assert "moving average" not in text
    cfg["ema"] = 0.999    # --ema: the report says which weights its numbers are from
    run.config.write_text(json.dumps(cfg), encoding="utf-8")
    text = write_report(run.path).read_text(encoding="utf-8")
    assert "evaluated with a moving average of the weights (decay at most 0.999 per step)" in text
    assert "plain images" not in text   # no --clean-fraction key: every step was augmented
    cfg["clean_fraction"] = 0.2
    run.config.write_text(json.dumps(cfg), encoding="utf-8")
    text = write_report(run.path).read_text(encoding="utf-8")
    assert ("shift ±2 px), the last 0.2 of the steps on the plain images (--clean-fraction)"
            in text)
    assert "fewer than a batch" not in text   # 300 training images, batch 128
    cfg["resolved"]["train_images"] = 100   # fewer than the batch: every step is all of them
    run.config.write_text(json.dumps(cfg), encoding="utf-8")
    text = write_report(run.path).read_text(encoding="utf-8")
    assert ("**Training:** batch size 128 (each step all 100 training images: fewer than a "
            "batch), peak learning rate 0.1," in text)


def test_markdown_table_escapes_a_pipe_in_a_cell() -> None:
    """A '|' inside a header or body cell (e.g. the mechanism table's 'conv ||w||') is written
    '\\|', so every row keeps its number of cells and the table renders as one."""
    from normlab.table import Table

    text = Table(["point", "conv ||w||"], [["a|b", "1.5"]], {1}).markdown()
    rows = text.splitlines()
    assert rows[0] == r"| point | conv \|\|w\|\| |" and rows[2] == r"| a\|b | 1.5 |"
    assert all(len(row.replace("\\|", "").split("|")) == 4 for row in rows)
