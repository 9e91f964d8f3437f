"""benchmarks/engine_control.py: normlab 0.1.0's study by its own engine, beside bench_train.py's
stand-in for it and today's default study."""

from __future__ import annotations

import json
import subprocess

import pytest


@pytest.fixture(scope="module")
def control(load_script):
    return load_script("benchmarks/engine_control.py")


def _worktrees(control) -> list[str]:
    out = subprocess.run(["git", "-C", str(control.ROOT), "worktree", "list"],
                         capture_output=True, text=True).stdout
    return out.splitlines()


def test_ratios_are_per_round_and_accuracies_compared_in_every_round(control) -> None:
    """Each of today's rows gets the engine row's seconds over its own within every round (not a
    ratio of medians), and their median, and likewise for the CPU seconds; study-0.1.0's
    same_accuracies, and a row's imports_warm, hold only when they held in every round."""
    engine = "engine-abc"
    acc = {"gn/0": 99.1}

    def rnd(old: float, stand_in: float, today: float, stand_in_acc=acc) -> dict:
        # CPU seconds: twice the wall seconds, except today's row, which spends 3x its wall time
        def row(seconds, arch, accs, cpu=2.0):
            return {"seconds": seconds, "cpu_seconds": cpu * seconds, "imports_warm": True,
                    "import_seconds": seconds / 10,
                    "arch": arch, "final_test_acc": accs}
        return {engine: row(old, "8-16", acc), "study-0.1.0": row(stand_in, "8-16", stand_in_acc),
                "normlab-study": row(today, "8s4", {"gn/0": 99.2}, cpu=3.0)}

    rounds = [rnd(30.0, 30.0, 20.0), rnd(20.0, 21.0, 20.0), rnd(26.0, 25.0, 20.0)]
    lines = {line["name"]: line for line in control.summarize(rounds, engine)}
    assert list(lines) == [engine, "study-0.1.0", "normlab-study"]
    assert "ratio_vs_engine" not in lines[engine]
    assert lines[engine]["round_seconds"] == [30.0, 20.0, 26.0] and lines[engine]["seconds"] == 26.0
    today = lines["normlab-study"]
    assert today["round_ratios_vs_engine"] == [1.5, 1.0, 1.3] and today["ratio_vs_engine"] == 1.3
    assert today["arch"] == "8s4" and "same_accuracies" not in today
    assert today["round_cpu_seconds"] == [60.0, 60.0, 60.0] and today["cpu_seconds"] == 60.0
    assert today["round_cpu_ratios_vs_engine"] == [1.0, round(2 / 3, 3), round(2.6 / 3, 3)]
    assert today["cpu_ratio_vs_engine"] == round(2.6 / 3, 3)
    assert all(line["imports_warm"] for line in lines.values())
    assert today["import_seconds"] == 2.0 and lines[engine]["import_seconds"] == 2.6
    assert lines["study-0.1.0"]["round_ratios_vs_engine"] == [1.0, round(20 / 21, 3), 1.04]
    assert lines["study-0.1.0"]["same_accuracies"] is True
    rounds[2] = rnd(26.0, 25.0, 20.0, stand_in_acc={"gn/0": 99.11})
    rounds[1]["normlab-study"]["imports_warm"] = False
    lines = control.summarize(rounds, engine)
    assert lines[1]["same_accuracies"] is False
    assert lines[2]["imports_warm"] is False and lines[0]["imports_warm"] is True


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be at least 1, got 0"),
    (["--rounds", "0"], "--rounds must be at least 1, got 0"),
    (["--train-subset", "-5"], "--train-subset must be at least 0, got -5"),
    (["--commit", "no-such-commit"], "--commit 'no-such-commit' cannot be checked out"),
    (["--out", "/no/such/folder/control.jsonl"], "its folder is missing or not writable"),
])
def test_bad_input_is_a_one_line_error(control, tmp_path, capsys, args, message) -> None:
    """A bad flag or a commit git does not know exits 2 with one line naming the problem and
    the fix; nothing is written and no worktree is left behind."""
    before = _worktrees(control)
    out = tmp_path / "control.jsonl"
    assert control.main(["--out", str(out), *args]) == 2   # a later --out replaces this one
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert not out.exists() and _worktrees(control) == before


def test_the_stand_in_trains_what_the_old_engine_trains(control, real_mnist, tmp_path,
                                                        monkeypatch, capsys) -> None:
    """On real MNIST (one epoch of 600 images), the commit before this release's model work
    trains its default study with its own code (0.1.0's 8,522-parameter model), and
    bench_train.py's stand-in, today's engine with timed_studies.Release010, trains the same
    final test accuracy for every run; every process had imported what its first optimizer
    imports before its clock started; the temporary worktree is removed afterwards."""
    found = subprocess.run(["git", "-C", str(control.ROOT), "cat-file", "-e",
                            f"{control.RELEASE_COMMIT}^{{commit}}"], capture_output=True)
    if found.returncode != 0:
        pytest.skip(f"commit {control.RELEASE_COMMIT} is not in this checkout's history")
    monkeypatch.setenv("NORMLAB_DATA", str(real_mnist))
    before = _worktrees(control)
    out = tmp_path / "control.jsonl"
    argv = ["--epochs", "1", "--rounds", "1", "--train-subset", "600", "--out", str(out)]
    assert control.main(argv) == 0
    lines = {x["name"]: x for x in map(json.loads, out.read_text().splitlines())}
    old = lines[f"engine-{control.RELEASE_COMMIT}"]
    assert old["arch"] == "8-16-16-16-16" and len(old["final_test_acc"]) == 3
    assert lines["study-0.1.0"]["same_accuracies"] is True
    assert lines["study-0.1.0"]["final_test_acc"] == old["final_test_acc"]
    assert lines["normlab-study"]["arch"] == "8s4-16-16-16-12"
    # each process imported what its first optimizer imports before its clock started
    assert all(line["imports_warm"] and line["cpu_seconds"] > 0 and line["import_seconds"] > 0
               for line in lines.values())
    assert capsys.readouterr().out == out.read_text()
    assert _worktrees(control) == before
