"""The study's plan (groups, workers, threads) and the provenance saved with every result."""

from __future__ import annotations

import subprocess

import pytest
import torch

from normlab import study
from normlab.config import Config
from normlab.envinfo import environment, git_provenance
from normlab.study_data import StudyData


@pytest.mark.parametrize("workers", [1, 2, 8])
@pytest.mark.parametrize("batch, size", [(4, 3), (32, 3), (33, 1), (128, 1)])
def test_auto_groups_on_a_cpu_follow_the_measured_rule(batch: int, size: int,
                                                       workers: int) -> None:
    """--group-size 0 on a CPU: groups of CPU_GROUP_SIZE (3, the size measured) at batch sizes up
    to CPU_GROUP_MAX_BATCH (32, where benchmarks/bench_train.py measured grouping to pay), one run
    per group above it; whatever the number of workers, so a study groups (and rounds) alike on
    every machine."""
    cfg = Config(variants=("bn", "gn", "ln"), seeds=2, batch_size=batch, workers=workers)
    plan = study.make_plan(cfg, torch.device("cpu"))
    assert [len(g) for g in plan.groups] == [size] * (6 // size)
    assert plan.workers == min(workers, 6 // size)
    assert (study.CPU_GROUP_MAX_BATCH, study.CPU_GROUP_SIZE) == (32, 3)


def test_auto_groups_everything_on_an_accelerator_and_explicit_sizes_win() -> None:
    """On a GPU auto trains all runs as one group; an explicit --group-size is kept as given,
    and a plan's override (a Ray task: one run, one worker, its own threads) beats both."""
    cfg = Config(variants=("bn", "gn"), seeds=3, workers=0)
    assert study.auto_group_size(cfg, torch.device("cuda"), runs=6) == 6
    plan = study.make_plan(cfg.replace(group_size=4), torch.device("cpu"))
    assert [len(g) for g in plan.groups] == [4, 2]
    plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=1, threads=3)
    assert (len(plan.groups), plan.workers, plan.threads) == (6, 1, 3)


def test_worker_processes_on_a_cpu_with_several_workers_only() -> None:
    """A CPU plan of two or more workers of one torch thread trains in worker processes (on
    Linux, where they fork); one worker trains in this process, and so do workers of several
    threads and an accelerator's (see normlab.epoch_process)."""
    import sys

    cfg = Config(variants=("bn", "gn"), seeds=2, workers=2, precision="fp32")
    cpu = torch.device("cpu")
    assert study.make_plan(cfg, cpu, group_size=1, threads=1).processes == \
        sys.platform.startswith("linux")
    assert not study.make_plan(cfg, cpu, group_size=1, threads=2).processes
    assert not study.make_plan(cfg, cpu, group_size=1, workers=1, threads=1).processes
    assert not study.make_plan(cfg, torch.device("cuda"), group_size=1, threads=1).processes


def test_plan_resolves_what_config_json_records() -> None:
    """Plan.resolved holds the Config's fields and the resolved group size, workers and threads
    that a resume checks against (local and Ray points alike)."""
    cfg = Config(variants=("gn",), seeds=2)
    plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=1, threads=1)
    data = StudyData(train=[0] * 10, test=[0] * 5, mean=0.1, std=0.3, classes=("a", "b"))
    resolved = plan.resolved(data)
    assert {k: v for k, v in resolved.items() if k != "resolved"} == cfg.to_dict()
    r = resolved["resolved"]
    assert (r["group_size"], r["workers"], r["threads_per_worker"]) == (1, 1, 1)
    assert (r["train_images"], r["test_images"], r["seed_list"]) == (10, 5, [0, 1])


def _git(repo, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
                        "HOME": str(repo), "PATH": "/usr/bin:/bin"})


def test_git_provenance_names_the_commit_and_uncommitted_changes(tmp_path) -> None:
    """In a git checkout the commit and whether tracked files changed are recorded; outside one,
    nothing is (no made-up values)."""
    assert git_provenance(tmp_path) == {}
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert git_provenance(repo) == {"git_commit": head, "git_dirty": False}
    (repo / "a.py").write_text("x = 2\n")
    assert git_provenance(repo) == {"git_commit": head, "git_dirty": True}


def test_environment_records_versions_device_and_code_identity() -> None:
    """env.json names normlab's version, torch, the CPU, the device and the backend, and (this
    checkout being a git repository) the commit."""
    env = environment(torch.device("cpu"), backend="ray")
    from normlab import __version__
    assert env["normlab"] == __version__ and env["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["backend"] == "ray" and env["cpu"]
    assert len(env.get("git_commit", "")) == 40 and isinstance(env.get("git_dirty"), bool)


def test_an_interrupt_while_the_report_is_written_says_how_to_resume(synthetic_data, tmp_path,
                                                                     monkeypatch) -> None:
    """Ctrl-C after the last epoch, while the figures and report.md are written, propagates
    with the resume command in its message, as one during training does; --resume then writes the report."""
    from normlab import report
    from normlab.runfolder import RunFolder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "write_report", interrupted)
    cfg = Config(variants=("gn",), seeds=1, epochs=1, batch_size=16, device="cpu",
                 data_dir=str(synthetic_data.folder))
    with pytest.raises(KeyboardInterrupt) as interrupt:
        study.run_study(cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    said = str(interrupt.value)
    assert said.startswith("interrupted:") and f"--resume {tmp_path / 'run'}" in said
    assert not RunFolder(tmp_path / "run").report.exists()
    monkeypatch.undo()
    study.run_study(cfg, tmp_path / "run", progress=False, log=lambda *_: None, resume=True)
    assert RunFolder(tmp_path / "run").report.is_file()


def test_the_progress_bar_says_whose_loss_it_shows(random_splits, capsys) -> None:
    """A study's progress bar shows the running loss of the group that reported last; with
    several groups it names that group (they report in turn, so a bare number would jump between
    runs), with one it shows the loss alone."""
    from normlab.study_data import StudyData

    train, test, mean, std = random_splits(0, n_train=64, n_test=16)
    data = StudyData(train, test, mean, std, classes=tuple("0123456789"))
    for variants, named in ((("gn", "ln"), True), (("gn",), False)):
        cfg = Config(variants=variants, seeds=1, epochs=1, batch_size=32, device="cpu",
                     diagnostics=False)
        plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=1, threads=1)
        study.train(plan, data, progress=True)
        bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
        assert "loss=" in bar, bar
        assert ("run=ln s0" in bar or "run=gn s0" in bar) if named else "run=" not in bar, bar


def test_group_labels_tell_groups_apart() -> None:
    """A group's label (the progress bar's, and messages') names each variant with its seeds,
    three or more consecutive seeds as a range, so that the groups of a study read apart."""
    from normlab.train import group_label

    cfg = Config(variants=("bn", "gn", "ln"), seeds=3, batch_size=32)
    plan = study.make_plan(cfg, torch.device("cpu"))
    assert [group_label(g) for g in plan.groups] == ["bn s0-2", "gn s0-2", "ln s0-2"]
    gn, ln = Config(variants=("gn", "ln")).parsed_variants()
    assert group_label([(gn, 0)]) == "gn s0"
    assert group_label([(gn, 3), (gn, 4), (ln, 0)]) == "gn s3 + gn s4 + ln s0"
    assert group_label([(gn, 0), (gn, 2), (gn, 3)]) == "gn s0 + gn s2 + gn s3"
    assert group_label([(gn, s) for s in range(5)] + [(ln, s) for s in range(5)]) == \
        "gn s0-4 + ln s0-4"


def test_a_second_ctrl_c_still_waits_for_the_workers(random_splits, monkeypatch) -> None:
    """Ctrl-C pressed twice (or sent to the process and to its group, as `timeout -s INT` does)
    still stops the study cleanly: the second KeyboardInterrupt, arriving while the workers
    finish their step, does not cut the wait short, so none is left running when train()
    raises (one left in a C++ op aborts the interpreter at exit)."""
    import multiprocessing
    import threading
    import time as real_time

    from normlab.study_data import StudyData

    train, test, mean, std = random_splits(0, n_train=2048, n_test=16)
    data = StudyData(train, test, mean, std, classes=tuple("0123456789"))
    cfg = Config(variants=("gn", "ln"), seeds=1, epochs=5, batch_size=32, device="cpu",
                 diagnostics=False)
    plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=2, threads=1)
    sleep, calls = real_time.sleep, []

    def interrupted_sleep(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) <= 2:   # the first in the polling loop, the second in the wait
            raise KeyboardInterrupt
        sleep(seconds)

    monkeypatch.setattr(study.time, "sleep", interrupted_sleep)
    with pytest.raises(KeyboardInterrupt):
        study.train(plan, data, progress=False)
    left = [t.name for t in threading.enumerate() if t.name.startswith("normlab-worker")]
    left += [p.name for p in multiprocessing.active_children()]   # nor their processes
    monkeypatch.undo()
    assert len(calls) >= 2 and left == [], (calls, left)
