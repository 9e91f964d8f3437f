"""A CPU study's worker processes (normlab.epoch_process): the same numbers as one thread, errors
and deaths reported, nothing left running."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from normlab import epoch_process, study
from normlab.config import Config
from normlab.study_data import StudyData
from normlab.train import GroupTrainer

LINUX = sys.platform.startswith("linux")


@pytest.fixture()
def data(random_splits) -> StudyData:
    train, test, mean, std = random_splits(3, n_train=384, n_test=48)
    return StudyData(train, test, mean, std, classes=tuple("0123456789"))


def _cfg(**overrides) -> Config:
    base = dict(variants=("gn", "bn+l1"), seeds=2, epochs=3, batch_size=32, device="cpu",
                diagnostics=True)
    return Config(**(base | overrides))


def _train(cfg: Config, data: StudyData, workers: int, processes: bool = True) -> list:
    plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=workers, threads=1)
    if not processes:   # the worker threads train in this process
        plan = dataclasses.replace(plan, processes=False)
    return study.train(plan, data, progress=False)


def _assert_same(a: list, b: list) -> None:
    """Every run's metrics rows (all but the seconds), diagnostics, predictions and final weights
    are bitwise equal."""
    assert [(r.variant.name, r.seed, r.status) for r in a] == \
        [(r.variant.name, r.seed, r.status) for r in b]
    for ra, rb in zip(a, b):
        strip = [{k: v for k, v in e.items() if k != "seconds"} for e in ra.epochs]
        assert strip == [{k: v for k, v in e.items() if k != "seconds"} for e in rb.epochs]
        assert repr(ra.diagnostics) == repr(rb.diagnostics)   # repr: exact, and NaN equals NaN
        for field in ("label", "pred", "confidence"):
            torch.testing.assert_close(getattr(ra.predictions, field),
                                       getattr(rb.predictions, field), rtol=0, atol=0)
        assert ra.state_dict.keys() == rb.state_dict.keys()
        for key in ra.state_dict:
            torch.testing.assert_close(ra.state_dict[key], rb.state_dict[key], rtol=0, atol=0)


@pytest.fixture()
def made(monkeypatch) -> list:
    """The EpochProcess objects the study driver makes, recorded."""
    seen: list = []
    real = epoch_process.EpochProcess

    def record(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(study, "EpochProcess", record)
    return seen


@pytest.mark.skipif(not LINUX, reason="worker processes are Linux's")
def test_worker_processes_train_what_one_thread_trains(data, made) -> None:
    """Four runs on two workers train in two processes, and every run's rows, diagnostics,
    predictions and final weights are bitwise those of the same study on one worker in this
    process, and on two worker threads of this process; when train() returns, no process is
    left."""
    cfg = _cfg()
    alone = _train(cfg, data, workers=1)
    threads = _train(cfg, data, workers=2, processes=False)
    assert made == []                      # one worker, or threads: no process
    two = _train(cfg, data, workers=2)
    assert len(made) == 2
    assert multiprocessing.active_children() == []
    _assert_same(two, alone)
    _assert_same(two, threads)


@pytest.mark.skipif(not LINUX, reason="worker processes are Linux's")
def test_a_group_moved_between_processes_trains_what_it_trains_in_one(data) -> None:
    """A group trained epoch 1 in process p, epoch 2 in q (rebuilt there from the driver's
    state) and epoch 3 in p again (which held it at epoch 1, so it is rebuilt too), or all three
    in p (continued in memory), ends with the training state of three epochs in this process:
    the same weights, momentum, generator and rows, bitwise."""
    cfg = _cfg(variants=("bn+l1",), seeds=1)
    plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=2, threads=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)   # as the processes train: the same rounding
    try:
        here = epoch_process.build_trainer(plan, data, 0, None)
        for _ in range(cfg.epochs):
            here.train_epoch()
    finally:
        torch.set_num_threads(threads)
    expected = here.state()
    p, q = epoch_process.EpochProcess(plan, data), epoch_process.EpochProcess(plan, data)
    try:
        for order in ((p, q, p), (p, p, p)):
            t = epoch_process.build_trainer(plan, data, 0, None)
            for proc in order:
                state, finals = proc.train_epoch(0, t)
                t = epoch_process.build_trainer(plan, data, 0, state)
            assert set(finals) == {0}
            # plain bytes crossed the pipe: no tensor came back in shared memory
            assert not any(v.is_shared() for v in finals[0][1].values())
            got = t.state()
            def rows(state: dict) -> list:   # all but the seconds an epoch took
                return [{k: v for k, v in e.items() if k != "seconds"}
                        for e in state["members"][0]["epochs"]]

            assert rows(got) == rows(expected) and len(rows(got)) == cfg.epochs
            for key in ("diagnostics", "status"):
                assert repr(got["members"][0][key]) == repr(expected["members"][0][key]), key
            for key in ("model", "momentum"):
                mine, theirs = got["members"][0][key], expected["members"][0][key]
                assert mine.keys() == theirs.keys()
                for name in mine:
                    torch.testing.assert_close(mine[name], theirs[name], rtol=0, atol=0)
            torch.testing.assert_close(got["members"][0]["generator"],
                                       expected["members"][0]["generator"], rtol=0, atol=0)
    finally:
        p.close()
        q.close()
    assert multiprocessing.active_children() == []


def test_worker_processes_only_where_a_fork_is_safe() -> None:
    """Workers fork only on Linux, on a CPU, with one torch thread each (GNU OpenMP cannot
    start threads in a forked child of a process that used it: such a child hangs); elsewhere
    they are threads of this process."""
    cpu = torch.device("cpu")
    assert epoch_process.available(cpu, 1) == LINUX
    assert not epoch_process.available(cpu, 2)
    assert not epoch_process.available(torch.device("cuda"), 1)


@pytest.mark.skipif(not LINUX, reason="the patched method reaches the child by fork")
def test_an_error_in_a_worker_process_reaches_the_driver(data, monkeypatch) -> None:
    """An exception raised by an epoch in a worker process is raised by train() itself, with its
    type and message, and the other process is stopped."""
    real = GroupTrainer.train_epoch

    def failing(self, on_step=None):
        if self.epoch == 1:
            raise ValueError(f"boom in {os.getpid()}")
        return real(self, on_step)

    monkeypatch.setattr(GroupTrainer, "train_epoch", failing)
    with pytest.raises(ValueError, match="boom in") as raised:
        _train(_cfg(), data, workers=2)
    assert str(os.getpid()) not in str(raised.value)   # raised in a worker, not here
    cause = raised.value.__cause__   # where it was raised there
    assert isinstance(cause, epoch_process.WorkerTraceback) and "in failing" in str(cause)
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not LINUX, reason="worker processes are Linux's")
def test_a_stop_abandons_the_epoch_in_flight(data, monkeypatch) -> None:
    """The driver's stop ends its wait for an epoch within a poll, even when the process sends
    nothing (here: it is stuck), and close(stop=True) ends the process."""
    monkeypatch.setattr(GroupTrainer, "train_epoch", lambda self, on_step=None: time.sleep(60))
    plan = study.make_plan(_cfg(), torch.device("cpu"), group_size=1, workers=2, threads=1)
    proc = epoch_process.EpochProcess(plan, data)
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    t0 = time.monotonic()
    try:
        with pytest.raises(epoch_process.Stopped):
            proc.train_epoch(0, epoch_process.build_trainer(plan, data, 0, None), stop=stop)
        assert time.monotonic() - t0 < 5
    finally:
        proc.close(stop=True)
    assert multiprocessing.active_children() == []


@pytest.mark.skipif(not LINUX, reason="the patched method reaches the child by fork")
def test_a_killed_worker_process_is_named(data, monkeypatch) -> None:
    """A worker process killed mid-epoch (as the system does when memory runs out) ends train()
    with WorkerDied giving its exit code, instead of a driver waiting for ever."""
    real = GroupTrainer.train_epoch

    def killed(self, on_step=None):
        if self.epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, on_step)

    monkeypatch.setattr(GroupTrainer, "train_epoch", killed)
    with pytest.raises(epoch_process.WorkerDied, match="exit code -9"):
        _train(_cfg(), data, workers=2)
    assert multiprocessing.active_children() == []


def test_an_unpicklable_error_arrives_as_its_traceback() -> None:
    """An exception that cannot be pickled (it holds a lambda) reaches the driver as a
    RuntimeError naming its type and message; a picklable one arrives as itself."""
    class Odd(Exception):
        def __init__(self, msg):
            super().__init__(msg)
            self.hook = lambda: None

    try:
        raise Odd("no pickle for me")
    except Odd as e:
        sent = epoch_process.picklable_error(e)
    assert isinstance(sent, RuntimeError) and "Odd" in str(sent) and "no pickle for me" in str(sent)
    plain = ValueError("fine")
    assert epoch_process.picklable_error(plain) is plain


DRIVER = """
import sys, torch
from normlab import study
from normlab.config import Config
from normlab.batches import split_stats, to_device_split
from normlab.study_data import StudyData
g = torch.Generator().manual_seed(0)
train = to_device_split(torch.randint(0, 256, (20000, 28, 28), generator=g, dtype=torch.uint8),
                        torch.randint(0, 10, (20000,), generator=g), torch.device("cpu"))
test = to_device_split(torch.randint(0, 256, (16, 28, 28), generator=g, dtype=torch.uint8),
                       torch.randint(0, 10, (16,), generator=g), torch.device("cpu"))
mean, std = split_stats(train)
cfg = Config(variants=("gn", "ln"), seeds=1, epochs=50, batch_size=32, device="cpu",
             diagnostics=False)
plan = study.make_plan(cfg, torch.device("cpu"), group_size=1, workers=2, threads=1)
study.train(plan, StudyData(train, test, mean, std, classes=tuple("0123456789")), progress=False)
"""


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    try:
        with open(path) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.mark.skipif(not LINUX, reason="worker processes, prctl and /proc are Linux's")
def test_killing_the_driver_kills_its_worker_processes() -> None:
    """A study killed with SIGKILL leaves no worker process training on (a forked worker holds
    the run folder's lock, which a resume needs): the kernel ends them with it."""
    driver = subprocess.Popen([sys.executable, "-c", DRIVER])
    try:
        end = time.monotonic() + 120
        while len(_children(driver.pid)) < 2 and time.monotonic() < end:
            assert driver.poll() is None, "the driver ended early"
            time.sleep(0.05)
        workers = _children(driver.pid)
        assert len(workers) == 2
        driver.kill()
        driver.wait(timeout=30)
        end = time.monotonic() + 10
        while any(os.path.exists(f"/proc/{w}") and _state(w) != "Z" for w in workers) \
                and time.monotonic() < end:
            time.sleep(0.05)
        assert not [w for w in workers if os.path.exists(f"/proc/{w}") and _state(w) != "Z"]
    finally:
        if driver.poll() is None:
            driver.kill()


def _state(pid: int) -> str:
    """The process state letter of /proc/PID/stat (Z: a zombie, already ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.mark.skipif(not LINUX, reason="worker processes are Linux's")
def test_the_study_header_says_the_workers_are_processes(synthetic_data, tmp_path) -> None:
    """`normlab study`'s first line says when its workers train in processes, and not when
    they are threads (one worker)."""
    said: list[str] = []
    for workers in (2, 1):
        cfg = Config(variants=("gn", "ln"), seeds=1, epochs=1, batch_size=32, device="cpu",
                     workers=workers, group_size=1, data_dir=str(synthetic_data.folder))
        study.run_study(cfg, tmp_path / f"w{workers}", progress=False, log=said.append,
                        report=False)
    headers = [line for line in said if line.startswith("normlab ")]
    assert "2 worker(s) (processes) x 1 thread(s)" in headers[0], headers
    assert "1 worker(s) x" in headers[1] and "processes" not in headers[1], headers
