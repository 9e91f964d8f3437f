"""A worker process that trains a study's epochs, one group at a time, for the study driver.

On a CPU, two worker *threads* of one Python process train a study about 5% slower than two
processes do (``benchmarks/bench_train.py``, the ``study-threads`` row): they share one
interpreter, one allocator and one oneDNN primitive cache. So :func:`normlab.study.train` gives
each of its worker threads an :class:`EpochProcess` on a CPU with more than one worker. The
thread still schedules (the group furthest behind), keeps the progress bar and writes every file;
its process only trains.

A process keeps the groups it trained. A group that comes back at the epoch it left continues in
memory; one that another process trained meanwhile is rebuilt from the training state the driver
holds (the ``--resume`` path, which continues bitwise like an uninterrupted run), and one that has
not started is built from its seeds. Each epoch returns the group's training state, from which the
driver rebuilds its own copy, and the final predictions and weights of members that finished.

How a process starts: ``fork`` on Linux where each worker uses one torch thread
(no imports, the data shared copy-on-write); ``spawn`` otherwise (the data are passed through
shared memory by ``torch.multiprocessing``). GNU OpenMP, which torch's CPU build uses, cannot
start threads in a forked child once the parent has used it, so a worker with more threads is
spawned. The process ignores Ctrl-C: the driver stops it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import traceback
import warnings
from typing import Callable

import torch
import torch.multiprocessing as mp

from normlab.train import GroupTrainer

POLL_SECONDS = 0.2   # how often a waiting driver thread checks that its process still runs
PR_SET_PDEATHSIG = 1   # prctl(2), Linux


def start_method(threads: int) -> str:
    """``fork`` for workers of one torch thread on Linux, else ``spawn`` (macOS has fork, but its
    system libraries are not safe to use in a forked child)."""
    return "fork" if threads == 1 and sys.platform.startswith("linux") else "spawn"


def build_trainer(plan, data, k: int, state: dict | None) -> GroupTrainer:
    """Group k of ``plan`` (a :class:`normlab.study.Plan`) from its training state (None: from
    its seeds)."""
    return GroupTrainer(plan.cfg, plan.groups[k], data.train, data.test, data.mean, data.std,
                        resume=state, val=data.val)


class WorkerDied(RuntimeError):
    """The worker process ended without answering (killed, out of memory, a crash in C++)."""


class EpochProcess:
    """One worker process, driven by one thread of the study driver."""

    def __init__(self, plan, data, name: str = "normlab-worker"):
        ctx = mp.get_context(start_method(plan.threads))
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, plan, data, os.getpid()), name=name,
                                 daemon=True)
        with _sigint_blocked(), warnings.catch_warnings():
            # Python 3.12+ warns of fork() in a process with threads (torch's idle OpenMP pool):
            # the child runs one torch thread, which starts no OpenMP thread.
            warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                    DeprecationWarning)
            self._proc.start()
        child.close()
        self._held: dict[int, int] = {}   # group -> the epoch the process holds it at

    def train_epoch(self, k: int, trainer: GroupTrainer,
                    on_step: Callable[[int, float], None] | None = None
                    ) -> tuple[dict, dict[int, tuple]]:
        """Train ``trainer``'s group (group k) one epoch in the process. Returns the group's
        training state after it and ``{member: (predictions, state_dict)}`` of the members that
        finished. ``on_step`` is called in this thread at each of the epoch's sync points; an
        exception it raises abandons the epoch (call :meth:`close` with ``stop=True``)."""
        epoch = trainer.epoch
        held = self._held.pop(k, None) == epoch
        self._conn.send((k, epoch, None if held or epoch == 0 else trainer.state()))
        while True:
            kind, *payload = self._receive()
            if kind == "step":
                if on_step is not None:
                    on_step(*payload)
            elif kind == "done":
                state, finals = payload
                self._held[k] = state["epoch"]
                return state, finals
            else:   # "error": the exception the epoch raised in the process
                raise payload[0]

    def _receive(self) -> tuple:
        try:
            while not self._conn.poll(POLL_SECONDS):
                if not self._proc.is_alive():
                    raise EOFError
            return self._conn.recv()
        except EOFError:   # the pipe closed: the process ended
            self._proc.join(timeout=10)
            raise WorkerDied(f"a worker process ended while training (exit code "
                             f"{self._proc.exitcode}; a negative code is the signal that ended "
                             "it, e.g. -9 when the system ran out of memory)") from None

    def close(self, stop: bool = False) -> None:
        """End the process: let it finish (``stop``: at once, abandoning an epoch in flight)."""
        if self._proc.is_alive() and not stop:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()
        self._conn.close()


@contextlib.contextmanager
def _sigint_blocked():
    """Block SIGINT in this thread while a child starts: the child inherits the mask, so Ctrl-C
    cannot interrupt it before it ignores SIGINT (a Ctrl-C meanwhile reaches the driver after)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _serve(conn, plan, data, driver: int) -> None:
    """The process: train the epochs the driver (process id ``driver``) sends until it sends
    None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_driver(driver)
    torch.set_num_threads(plan.threads)
    held: dict[int, GroupTrainer] = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:   # the driver is gone
            return
        if msg is None:
            return
        k, epoch, state = msg
        try:
            t = held.pop(k, None)
            if t is None or t.epoch != epoch:
                t = build_trainer(plan, data, k, state)
            t.train_epoch(lambda steps, loss: conn.send(("step", steps, loss)))
            finals = {i: (r.predictions, r.state_dict) for i, r in enumerate(t.results)
                      if r.predictions is not None and r.state_dict is not None}
            held[k] = t
            conn.send(("done", t.state(), finals))
        except BaseException as e:  # noqa: BLE001 - handed to the driver
            try:
                conn.send(("error", picklable_error(e)))
            except OSError:   # the driver is gone (its pipe broke)
                return


def _die_with_driver(driver: int) -> None:
    """Linux: have the kernel kill this process when the driver dies. A forked worker shares the
    driver's open files, the run folder's lock among them, so a killed study must not leave it
    training (elsewhere it ends at its next message: the pipe is closed)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != driver:   # the driver died before that took effect
        os._exit(1)


def picklable_error(e: BaseException) -> BaseException:
    """``e`` if it survives pickling (to cross to the driver), else a RuntimeError with its
    traceback."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001 - any failure to pickle
        text = "".join(traceback.format_exception(e)).strip()
        return RuntimeError(f"{type(e).__name__} in a worker process: {text}")
