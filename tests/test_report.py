"""report.py: reading a run folder (every damaged file named), the Findings sentences, report.md.

Run folders are made up here by :func:`make_run` in the exact format ``normlab study`` writes
(summary.json through ``normlab.study.summarize``), with small synthetic test sets; nothing is
trained. ``make_run`` is also used by test_plots.py.
"""

from __future__ import annotations

import json
import random
import re
import urllib.error
from pathlib import Path

import pytest

from helpers import install, synthetic_mnist
from normlab import data
from normlab.config import Config, parse_variant
from normlab.errors import RunFolderError
from normlab.report import (findings, load_run, load_summary, read_predictions,
                            results_table_markdown, variant_results, write_report)
from normlab.store import write_csv, write_json
from normlab.layout import METRIC_COLUMNS as METRICS_HEADER
from normlab.layout import PREDICTION_COLUMNS as PREDICTION_HEADER
from normlab.study import summarize
from normlab.train import RunResult

N_TEST = 60


# ----------------------------------------------------------------------------------------------
# Made-up run folders


def make_run(folder: Path, *, variants=("gn", "bn+l1=2e-05"), seeds: int = 2, epochs: int = 3,
             final: dict | None = None, gap: dict | None = None, labels=None,
             wrong: dict | None = None, diverged: dict | None = None, data_dir=None,
             dataset: str = "mnist", wall: bool = True, augment: bool = True,
             params: int = 7442) -> Path:
    """Write a run folder as ``normlab study`` would.

    ``final``: per variant, the final test accuracy of each seed (default: 98 + small offsets).
    Test accuracy rises linearly to it; train accuracy is test accuracy + ``gap[variant]``
    (default -0.5). ``labels``: the test labels (default ``i % 10``); ``wrong``: per variant, how
    many test images each finished seed gets wrong (default 15). ``diverged``: per variant, the
    seeds that diverge after epoch 1 (they get metrics rows for epoch 1 only, no predictions).
    """
    folder.mkdir(parents=True, exist_ok=True)
    final = final or {}
    gap = gap or {}
    wrong = wrong or {}
    diverged = diverged or {}
    labels = list(range(N_TEST)) if labels is None else [int(x) for x in labels]
    labels = [x % 10 for x in labels]
    seed_list = list(range(seeds))
    parsed = [parse_variant(v) for v in variants]
    results, metrics = [], []
    for i, v in enumerate(parsed):
        finals = final.get(v.name) or [98.0 + 0.1 * i + 0.01 * s for s in seed_list]
        for seed, fin in zip(seed_list, finals):
            bad = seed in diverged.get(v.name, ())
            rows = []
            for e in range(1, (1 if bad else epochs) + 1):
                test_acc = fin - 3.0 * (epochs - e) / epochs
                row = {"epoch": e, "train_loss": 0.05 + (100 - test_acc) / 90,
                       "train_acc": test_acc + gap.get(v.name, -0.5),
                       "test_loss": 0.03 + (100 - test_acc) / 100, "test_acc": test_acc,
                       "lr": 0.01, "seconds": 1.5}
                rows.append(row)
                metrics.append((v.name, seed) + tuple(row[k] for k in METRICS_HEADER[2:]))
            results.append(RunResult(variant=v, seed=seed, params=params,
                                     status="diverged" if bad else "ok", epochs=rows))
            if bad:
                continue
            rng = random.Random(f"{v.name}-{seed}")
            mistakes = set(rng.sample(range(len(labels)), wrong.get(v.name, 15)))
            preds = []
            for i, y in enumerate(labels):
                p = (y + 1) % 10 if i in mistakes else y
                preds.append((i, y, p, round(rng.uniform(0.2, 0.999), 6)))
            write_csv(folder / "predictions" / f"{v.name}-s{seed}.csv", PREDICTION_HEADER, preds)
    cfg = Config(variants=tuple(variants), seeds=seeds, epochs=epochs, dataset=dataset,
                 data_dir=None if data_dir is None else str(data_dir), augment=augment)
    config = cfg.to_dict()
    config["resolved"] = {
        "normlab_version": "0.1.0", "device": "cpu", "seed_list": seed_list,
        "variants": [v.as_dict() for v in parsed], "train_images": 300,
        "test_images": len(labels), "pixel_mean": 0.13, "pixel_std": 0.31,
        "classes": list(data.DATASETS[dataset].classes),
    }
    write_json(folder / "config.json", config)
    write_json(folder / "env.json", {"normlab": "0.1.0", "python": "3.11", "torch": "2.13.0",
                                     "device": "cpu", "cpu_count": 2, "torch_threads": 1})
    write_csv(folder / "metrics.csv", METRICS_HEADER, metrics)
    summary = {"normlab_version": "0.1.0", "dataset": dataset, "epochs": epochs, "seeds": seeds,
               "variants": summarize(tuple(parsed), results)}
    if wall:
        write_json(folder / "timing.json", {"train_seconds": 123.4, "wall_seconds": 125.0, "workers": 2,
                                            "threads_per_worker": 1, "resumed": False})
    write_json(folder / "summary.json", summary)
    return folder


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """(folder, labels): a synthetic MNIST test set registered as 'mnist', no $NORMLAB_DATA."""
    spec, raw, arrays = synthetic_mnist(n_train=10, n_test=N_TEST, seed=1)
    folder = install(tmp_path_factory.mktemp("data") / "mnist", raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(data.DATASETS, "mnist", spec)
        mp.delenv(data.CACHE_ENV, raising=False)
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
        mp.setattr(data, "_urlopen", _no_network)
        yield folder, arrays["test_y"].tolist()


def _no_network(url, timeout):
    raise urllib.error.URLError("network disabled in tests")


@pytest.fixture()
def run(tmp_path) -> Path:
    return make_run(tmp_path / "run")


# ----------------------------------------------------------------------------------------------
# load_run


def test_load_run_reads_every_file(run: Path) -> None:
    r = load_run(run)
    assert r.variants == ["gn", "bn+l1=2e-05"]
    assert r.dataset == "mnist" and r.epochs == 3 and r.env["device"] == "cpu"
    assert len(r.metrics) == 2 * 2 * 3
    row = r.metrics[0]
    assert set(row) == {"variant", "seed", "epoch", "train_loss", "train_acc", "test_loss",
                        "test_acc", "lr"}
    assert isinstance(row["seed"], int) and isinstance(row["epoch"], int)
    assert all(isinstance(row[k], float) for k in ("train_loss", "test_acc", "lr"))
    assert r.ok_seeds("gn") == [0, 1]
    assert [x["epoch"] for x in r.rows("gn", 1)] == [1, 2, 3]


def _damage(run: Path, name: str, text: str) -> None:
    (run / name).write_text(text, encoding="utf-8")


def _metrics_lines(run: Path) -> list[str]:
    return (run / "metrics.csv").read_text().splitlines()


DAMAGE = {
    "config.json missing": ("config.json", None, "missing"),
    "config.json not JSON": ("config.json", "{not json", "not valid JSON"),
    "config.json a list": ("config.json", "[1, 2]", "JSON object"),
    "config.json no dataset": ("config.json", '{"epochs": 3}', "'dataset'"),
    "env.json missing": ("env.json", None, "missing"),
    "env.json not JSON": ("env.json", "", "not valid JSON"),
    "summary.json missing": ("summary.json", None, "missing"),
    "summary.json not JSON": ("summary.json", "{\"variants\": ", "damaged"),
    "summary.json no variants": ("summary.json", "{}", "'variants'"),
    "metrics.csv missing": ("metrics.csv", None, "missing"),
    "metrics.csv empty": ("metrics.csv", "", "empty"),
    "metrics.csv wrong columns": ("metrics.csv", "variant,seed,epoch,acc\ngn,0,1,98\n",
                                  "wrong columns"),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_load_run_names_a_missing_or_damaged_file(run: Path, case: str) -> None:
    name, text, what = DAMAGE[case]
    if text is None:
        (run / name).unlink()
    else:
        _damage(run, name, text)
    with pytest.raises(RunFolderError) as e:
        load_run(run)
    msg = str(e.value)
    assert name in msg and what in msg
    assert "re-run" in msg or "restore" in msg  # the fix


def test_load_run_non_numeric_metrics_cell(run: Path) -> None:
    lines = _metrics_lines(run)
    cells = lines[2].split(",")
    cells[6] = "ninety"  # test_acc
    lines[2] = ",".join(cells)
    _damage(run, "metrics.csv", "\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=r"metrics\.csv, line 3, column 'test_acc': 'ninety' "
                                             r"is not a number"):
        load_run(run)


def test_load_run_short_metrics_row(run: Path) -> None:
    lines = _metrics_lines(run)
    lines[-1] = lines[-1].rsplit(",", 3)[0]  # 8 columns -> 5 cells
    _damage(run, "metrics.csv", "\n".join(lines) + "\n")
    with pytest.raises(RunFolderError, match=r"metrics\.csv, line 13: 5 cells, expected 8"):
        load_run(run)


def test_load_run_truncated_metrics(run: Path) -> None:
    """A finished run whose last epochs are missing from metrics.csv."""
    _damage(run, "metrics.csv", "\n".join(_metrics_lines(run)[:-1]) + "\n")
    with pytest.raises(RunFolderError, match=r"metrics\.csv: variant 'bn\+l1=2e-05' seed 1 ends "
                                             r"at epoch 2, but summary\.json says 3 epochs"):
        load_run(run)


def test_load_run_metrics_from_another_run(run: Path) -> None:
    lines = _metrics_lines(run)
    _damage(run, "metrics.csv", "\n".join(lines + [lines[1].replace("gn,", "ln,", 1)]) + "\n")
    with pytest.raises(RunFolderError, match="variant 'ln', which summary.json does not list"):
        load_run(run)


@pytest.mark.parametrize("change, what", [
    (lambda s: s["variants"]["gn"].pop("final_test_acc"), "'final_test_acc' is missing"),
    (lambda s: s["variants"]["gn"]["best_test_acc"].update(values=["x"]), "not a list of numbers"),
    (lambda s: s["variants"]["gn"].update(status="fine"), "status 'fine'"),
    (lambda s: s["variants"]["gn"].update(seeds="0,1"), "'seeds' is not a list"),
])
def test_load_run_damaged_summary_entries(run: Path, change, what: str) -> None:
    summary = json.loads((run / "summary.json").read_text())
    change(summary)
    _damage(run, "summary.json", json.dumps(summary))
    with pytest.raises(RunFolderError, match=re.escape(what)) as e:
        load_run(run)
    assert "summary.json" in str(e.value) and "re-run the study" in str(e.value)


def test_load_run_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(RunFolderError, match="is not a folder"):
        load_run(tmp_path / "nothing")


def test_read_predictions_errors(run: Path) -> None:
    path = run / "predictions" / "gn-s0.csv"
    rows = read_predictions(path)
    assert len(rows) == N_TEST and rows[0].keys() == {"index", "label", "pred", "confidence"}
    path.write_text("index,label,guess\n0,1,1\n")
    with pytest.raises(RunFolderError, match="gn-s0.csv has the wrong columns"):
        read_predictions(path)
    path.write_text("index,label,pred,confidence\n0,1,seven,0.5\n")
    with pytest.raises(RunFolderError, match="line 2, column 'pred': 'seven' is not a number"):
        read_predictions(path)
    path.unlink()
    with pytest.raises(RunFolderError, match="gn-s0.csv is missing"):
        read_predictions(path)


def test_existing_helpers_still_work(run: Path) -> None:
    """load_summary and results_table_markdown (used by README tests) keep working."""
    table = results_table_markdown(load_summary(run))
    assert "| `gn` | gn | 0 | 7,442 | 2 |" in table and "`bn+l1=2e-05`" in table


def test_variant_results(tmp_path: Path) -> None:
    """Epoch of best is the argmax of the mean test-accuracy curve; the gap is train - test at the
    last epoch, averaged over seeds."""
    run = make_run(tmp_path / "r", variants=("gn",), seeds=3, epochs=4,
                   final={"gn": [98.0, 98.5, 99.0]}, gap={"gn": 0.25})
    (res,) = variant_results(load_run(run))
    assert res.best_epoch == 4 and res.best_epoch_acc == pytest.approx(98.5)
    assert res.final_gap == pytest.approx(0.25)
    assert res.params == 7442 and res.ok_seeds == [0, 1, 2]


# ----------------------------------------------------------------------------------------------
# Findings


def _stat(values: list[float]) -> dict:
    import statistics

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
                     "params": 7442, "status": status, "seeds": seeds, "diverged_seeds": bad,
                     "final_test_acc": _stat(values), "best_test_acc": _stat(values),
                     "final_test_loss": _stat([0.03] * len(values))}
    return {"dataset": "mnist", "epochs": 20, "seeds": 5, "variants": out}


def test_findings_clearly_significant() -> None:
    s = _summary({"gn": [98.80, 98.85, 98.82, 98.78, 98.84],
                  "bn": [99.20, 99.25, 99.22, 99.18, 99.24]})
    text = " ".join(findings(s))
    assert "`bn` has the highest final test accuracy: 99.22% (mean of 5 seeds)" in text
    assert "Over `gn` (98.82%) its lead is +0.40 percentage points" in text
    assert "95% CI of the difference +0.36 to +0.44" in text
    assert "p < 0.001" in text
    assert "significant at the 5% level" in text and "not significant" not in text


def test_findings_not_significant() -> None:
    s = _summary({"gn": [99.0, 99.3, 98.9, 99.2, 99.1], "ln": [99.1, 98.9, 99.2, 99.0, 99.0]})
    text = " ".join(findings(s))
    assert "`gn` has the highest final test accuracy: 99.10%" in text
    assert "its lead is +0.06 percentage points" in text
    m = re.search(r"95% CI of the difference (\S+) to (\S+),", text)
    lo, hi = (float(x.replace("−", "-")) for x in m.groups())
    assert lo < 0 < hi
    assert "not significant at the 5% level" in text
    assert "may be seed-to-seed noise" in text


def test_findings_one_seed_not_conclusive() -> None:
    s = _summary({"gn": [99.0], "bn": [99.4]})
    text = " ".join(findings(s))
    assert "`bn` has the highest final test accuracy: 99.40% (one seed)" in text
    assert "Its lead is +0.40 percentage points over `gn` (99.00%); but each variant has only " \
           "one finished seed, so no confidence interval is possible and this comparison is not " \
           "conclusive." in text
    assert "significant" not in text and "CI" not in text


def test_findings_mixed_seed_counts() -> None:
    """Comparisons with a one-seed variant are not conclusive; the others are tested."""
    s = _summary({"gn": [99.0, 99.1, 99.05], "bn": [99.5, 99.6, 99.55], "ln": [98.0]})
    f = findings(s)
    assert any(x.startswith("Over `gn` (99.05%) its lead is +0.50") and "significant at" in x
               for x in f)
    assert ("Its lead is +1.55 percentage points over `ln` (98.00%); but `ln` has only one "
            "finished seed") in " ".join(f)


def test_findings_diverged_and_single_result() -> None:
    s = _summary({"gn": [99.0, 99.1], "bn": []}, diverged={"bn": [0, 1]})
    text = " ".join(findings(s))
    assert "`bn` diverged in every run (seeds 0, 1)" in text
    assert "Only `gn` has results" in text and "significant" not in text
    s = _summary({"gn": [99.0, 99.1], "bn": [99.5, 99.6]}, diverged={"bn": [2]})
    text = " ".join(findings(s))
    assert "`bn` diverged in seed 2; its numbers are over the other 2 seeds" in text


def test_findings_gap_sentences() -> None:
    s = _summary({"gn": [99.0, 99.1], "bn": [99.0, 99.2]})
    text = " ".join(findings(s, gaps={"gn": -0.4, "bn": -0.1}, augment=True))
    assert "`gn` −0.40, `bn` −0.10 percentage points" in text
    assert "show no overfitting" in text and "overfits" not in text and "augmented" in text
    text = " ".join(findings(s, gaps={"gn": 0.3, "bn": -0.1}, augment=False))
    assert "`gn` has the largest gap (+0.30), so by this measure it overfits the most" in text
    assert "augmented" not in text
    text = " ".join(findings(s, gaps={"gn": 0.11, "bn": 0.10}, augment=False))
    assert "The largest gap, `gn`'s +0.11, is within 0.1 points of `bn`'s +0.10" in text
    assert "overfits the most" not in text


# ----------------------------------------------------------------------------------------------
# report.md


def _links(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", report)


def test_write_report_multi_seed(synthetic_data, tmp_path: Path) -> None:
    folder, labels = synthetic_data
    run = make_run(tmp_path / "run", variants=("gn", "ln", "bn+l1=2e-05"), seeds=3, epochs=4,
                   labels=labels, data_dir=folder,
                   final={"gn": [98.1, 98.2, 98.15], "ln": [98.0, 98.3, 98.1],
                          "bn+l1=2e-05": [99.0, 99.05, 99.1]})
    path = write_report(run)
    assert path == run / "report.md"
    text = path.read_text(encoding="utf-8")
    for v in ("gn", "ln", "bn+l1=2e-05"):
        assert f"`{v}`" in text
    links = _links(text)
    made = sorted(p.name for p in (run / "figures").iterdir())
    assert sorted(Path(x).name for x in links) == made
    assert made == sorted(["test_accuracy.png", "test_loss.png", "train_vs_test.png",
                           "misclassified_gn.png", "misclassified_ln.png",
                           "misclassified_bn+l1=2e-05.png"])
    assert all(x.startswith("figures/") and (run / x).is_file() for x in links)
    assert "**Device:** cpu" in text
    assert "**Total wall time:** 2 min 03 s (all runs, 2 worker(s) x 1 torch thread(s))" in text
    assert "**Epochs:** 4 per run; **seeds:** 0, 1, 2 (3 per variant)" in text
    assert "`bn+l1=2e-05` has the highest final test accuracy: 99.05%" in text
    assert "| `gn` | 7,442 | 3 | 98.15 ± 0.05 |" in text
    assert not list(run.glob("*.tmp")) and not list((run / "figures").glob(".*"))


def test_write_report_one_seed_and_missing_data(tmp_path: Path, monkeypatch) -> None:
    """One seed: no CI; the test images cannot be found: curves and report still made, and the
    report says why the grids are missing. Without timing.json there is no wall-time line."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(data.CACHE_ENV, raising=False)
    monkeypatch.setattr(data, "_urlopen", _no_network)
    run = make_run(tmp_path / "run", seeds=1, epochs=2, data_dir=tmp_path / "no-data",
                   wall=False)
    text = write_report(run).read_text(encoding="utf-8")
    assert "not conclusive" in text and "significant" not in text
    assert "grids of misclassified images were not made" in text
    assert "Total wall time" not in text
    assert sorted(Path(x).name for x in _links(text)) == sorted(
        ["test_accuracy.png", "test_loss.png", "train_vs_test.png"])
