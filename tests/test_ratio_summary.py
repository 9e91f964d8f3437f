"""benchmarks/ratio_summary.py: the study rows' round ratios pooled over runs of bench_train.py."""

from __future__ import annotations

import json
import math

import pytest
from scipy.stats import ttest_1samp


@pytest.fixture(scope="module")
def script(load_script):
    return load_script("benchmarks/ratio_summary.py")


def _run(path, ratios: dict[str, list[float]]) -> None:
    """A bench_train.py output holding ``{row: round ratios}`` (and a row without rounds)."""
    lines = [{"name": "reference", "images_per_s": 1000.0}]
    lines += [{"name": row, "round_ratios_vs_0.1.0": r} for row, r in ratios.items()]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_runs_are_the_observations(script, tmp_path, capsys) -> None:
    """Each run's geometric mean over its rounds is one observation: the pooled ratio is their
    geometric mean and its interval scipy's t interval of their logs, exponentiated; each run's
    median and the rounds below the goal are reported beside it, and --out holds the same JSON."""
    runs = [[1.2, 1.4, 1.3], [1.5, 1.45, 1.35], [1.25, 1.31, 1.28]]
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"run{i}.jsonl")
        _run(paths[-1], {"normlab-study": r, "other": [2.0, 2.0, 2.0]})
    out = tmp_path / "pooled.json"
    argv = [*map(str, paths), "--rows", "normlab-study", "--pairs", "", "--out", str(out)]
    assert script.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text()) == printed
    row = printed["rows"]["normlab-study"]
    logs = [sum(math.log(x) for x in r) / len(r) for r in runs]
    ci = ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert row["ratio_geomean"] == round(math.exp(sum(logs) / 3), 3)
    assert (row["ratio_ci95_lo"], row["ratio_ci95_hi"]) == (round(math.exp(ci.low), 3),
                                                round(math.exp(ci.high), 3))
    assert row["ratio_run_medians"] == [1.3, 1.45, 1.28]
    assert row["rounds_below_goal"] == 3 and (row["ratio_round_min"], row["ratio_round_max"]) == (1.2, 1.5)
    assert (row["runs"], row["rounds"]) == (3, 9) and printed["files"] == [p.name for p in paths]


def test_a_run_without_the_row_is_a_one_line_error(script, tmp_path, capsys) -> None:
    """A file without round ratios for a requested row (a run without --study-rounds) exits 2
    with one line naming the file and the fix; nothing is written."""
    _run(tmp_path / "a.jsonl", {"normlab-study": [1.3, 1.3]})
    _run(tmp_path / "b.jsonl", {"study-pool": [1.0, 1.0]})
    out = tmp_path / "pooled.json"
    argv = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--rows", "normlab-study",
            "--pairs", ""]
    assert script.main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "b.jsonl has no round_ratios_vs_0.1.0 for row 'normlab-study'" in err
    assert "\n" not in err and not out.exists()


def test_pairs_pool_one_row_against_another(script, tmp_path, capsys) -> None:
    """--pairs A/B pools A's speed over B's: in each round A's ratio over B's (both against that
    round's study-0.1.0), each run's geometric mean one observation, scipy's t interval of their
    logs; rounds where A was slower than B are counted. The rows themselves are pooled as before."""
    a_runs = [[1.40, 1.30, 1.35], [1.45, 1.38, 1.32]]
    b_runs = [[1.35, 1.32, 1.30], [1.40, 1.36, 1.33]]
    paths = []
    for i, (a, b) in enumerate(zip(a_runs, b_runs)):
        paths.append(tmp_path / f"run{i}.jsonl")
        _run(paths[-1], {"study-nodecay": a, "normlab-study-nodiag": b})
    argv = [*map(str, paths), "--rows", "normlab-study-nodiag",
            "--pairs", "study-nodecay/normlab-study-nodiag"]
    assert script.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    pair = printed["pairs"]["study-nodecay/normlab-study-nodiag"]
    rel = [[x / y for x, y in zip(a, b)] for a, b in zip(a_runs, b_runs)]
    logs = [sum(math.log(x) for x in r) / len(r) for r in rel]
    ci = ttest_1samp(logs, 0.0).confidence_interval(0.95)
    assert pair["ratio_geomean"] == round(math.exp(sum(logs) / 2), 3)
    assert (pair["ratio_ci95_lo"], pair["ratio_ci95_hi"]) == (round(math.exp(ci.low), 3),
                                                              round(math.exp(ci.high), 3))
    assert pair["rounds_below_goal"] == sum(x < 1 for r in rel for x in r) == 2
    assert pair["goal"] == 1.0 and list(printed["rows"]) == ["normlab-study-nodiag"]


@pytest.mark.parametrize("bad", ["study-nodecay", "a/b/c", "/b", "a/"])
def test_a_malformed_pair_is_a_one_line_error(script, tmp_path, capsys, bad) -> None:
    """A --pairs entry that is not ROW_A/ROW_B exits 2 with one line naming it and the form."""
    _run(tmp_path / "a.jsonl", {"normlab-study": [1.3, 1.3]})
    assert script.main([str(tmp_path / "a.jsonl"), "--rows", "normlab-study", "--pairs", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert f"--pairs entry {bad!r} is not ROW_A/ROW_B" in err and "\n" not in err


def test_pairs_of_rows_with_other_rounds_are_a_one_line_error(script, tmp_path, capsys) -> None:
    """A pair whose two rows were timed in different numbers of rounds in a run exits 2 with one
    line naming the run, the rows and the fix."""
    _run(tmp_path / "a.jsonl", {"study-nodecay": [1.3, 1.3, 1.2], "normlab-study-nodiag": [1.3]})
    argv = [str(tmp_path / "a.jsonl"), "--rows", "study-nodecay"]
    assert script.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert ("run 1 timed study-nodecay in 3 rounds and normlab-study-nodiag in 1; pair rows "
            "that every run timed in the same rounds") in err and "\n" not in err


def test_against_engine_pools_engine_control_runs(script, tmp_path, capsys) -> None:
    """With --against engine the rounds are engine_control.py's ratios to the old commit
    (round_ratios_vs_engine), pooled the same way and recorded as such; a bench_train.py output
    given with --against engine is a one-line error naming engine_control.py."""
    runs = [[1.3, 1.2, 1.4], [1.35, 1.5]]
    paths = []
    for i, r in enumerate(runs):
        paths.append(tmp_path / f"control{i}.jsonl")
        paths[-1].write_text(json.dumps({"name": "engine-2e90c5c", "seconds": 20.0}) + "\n"
                             + json.dumps({"name": "normlab-study",
                                           "round_ratios_vs_engine": r}) + "\n")
    for path, r in zip(paths, runs):   # and the stand-in's rounds, pooled by default too
        with path.open("a") as f:
            f.write(json.dumps({"name": "study-0.1.0", "round_ratios_vs_engine": r}) + "\n")
    assert script.main([*map(str, paths), "--against", "engine"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert sorted(printed["rows"]) == ["normlab-study", "study-0.1.0"] and "pairs" not in printed
    logs = [sum(math.log(x) for x in r) / len(r) for r in runs]
    assert printed["against"] == "engine"
    assert printed["rows"]["normlab-study"]["ratio_geomean"] == round(math.exp(sum(logs) / 2), 3)
    assert printed["rows"]["normlab-study"]["rounds"] == 5
    _run(tmp_path / "bench.jsonl", {"normlab-study": [1.3, 1.3]})
    assert script.main([str(tmp_path / "bench.jsonl"), "--against", "engine", "--rows",
                        "normlab-study", "--pairs", ""]) == 2
    err = capsys.readouterr().err.strip()
    assert "has no round_ratios_vs_engine" in err and "engine_control.py" in err
    assert "\n" not in err
