"""A worker process that trains a study's epochs, one group at a time, for the study driver.

On a CPU, two worker *threads* of one Python process train a study about 5% slower than two
processes do (``benchmarks/bench_train.py``, the ``study-threads`` row): they share one
interpreter, one allocator and one oneDNN primitive cache. So :func:`normlab.study.train` gives
each of its worker threads an :class:`EpochProcess` where it can (:func:`available`). The thread
still schedules (the group furthest behind), keeps the progress bar and writes every file; its
process only trains.

A process keeps the groups it trained. A group that comes back at the epoch it left continues in
memory; one that another process trained meanwhile is rebuilt from the training state the driver
holds (the ``--resume`` path, which continues bitwise like an uninterrupted run), and one that has
not started is built from its seeds. Each epoch returns the group's training state, from which the
driver rebuilds its own copy, and the final predictions and weights of members that finished.

The process is forked: it starts at once, shares the data copy-on-write, and needs no
``__main__`` guard in the user's script. Only where that is safe: on Linux (macOS's system
libraries are not safe in a forked child), on a CPU (a forked child cannot use the parent's CUDA
context) and for workers of one torch thread (GNU OpenMP, which torch's CPU build uses, cannot
start threads in a forked child once the parent has used it: such a child hangs). Elsewhere the
worker threads train in the driver's process. Messages cross as plain pickled bytes, so no tensor
goes through shared memory. The process ignores Ctrl-C (the driver stops it) and dies with the
driver.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import traceback
import warnings
from typing import Callable

import torch

from normlab.train import GroupTrainer

POLL_SECONDS = 0.1   # how often a waiting driver thread checks for a stop and a dead process
PR_SET_PDEATHSIG = 1   # prctl(2), Linux


def available(device: torch.device, threads: int) -> bool:
    """Whether worker processes can train on ``device`` with ``threads`` torch threads each
    (see the module docstring)."""
    return sys.platform.startswith("linux") and device.type == "cpu" and threads == 1


def build_trainer(plan, data, k: int, state: dict | None) -> GroupTrainer:
    """Group k of ``plan`` (a :class:`normlab.study.Plan`) from its training state (None: from
    its seeds)."""
    return GroupTrainer(plan.cfg, plan.groups[k], data.train, data.test, data.mean, data.std,
                        resume=state, val=data.val)


class WorkerDied(RuntimeError):
    """The worker process ended without answering (killed, out of memory, a crash in C++)."""


class Stopped(Exception):
    """The driver stopped (Ctrl-C, an error in another worker) while a worker trained an epoch,
    in its process or in the worker thread itself: the epoch is abandoned."""


class WorkerTraceback(Exception):
    """The traceback of an exception raised in a worker process (its ``__cause__``)."""


class EpochProcess:
    """One forked worker process, driven by one thread of the study driver."""

    def __init__(self, plan, data, name: str = "normlab-worker"):
        if not available(plan.device, plan.threads):
            raise ValueError(f"no worker process for {plan.threads} torch thread(s) on "
                             f"{plan.device} on {sys.platform}")
        ctx = mp.get_context("fork")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, plan, data, os.getpid()), name=name,
                                 daemon=True)
        try:
            with _sigint_blocked(), warnings.catch_warnings():
                # Python 3.12+ warns of fork() in a process with threads (torch's idle OpenMP
                # pool, tqdm's monitor): the child runs one torch thread and starts none.
                warnings.filterwarnings("ignore", "This process .* is multi-threaded",
                                        DeprecationWarning)
                self._proc.start()
        except BaseException:   # e.g. Ctrl-C caught by this thread just after the fork
            if self._proc.pid is not None:
                self._proc.kill()
                self._proc.join()
            raise
        finally:
            child.close()
        self._held: dict[int, int] = {}   # group -> the epoch the process holds it at

    def train_epoch(self, k: int, trainer: GroupTrainer,
                    on_step: Callable[[int, float], None] | None = None,
                    stop: threading.Event | None = None) -> tuple[dict, dict[int, tuple]]:
        """Train ``trainer``'s group (group k) one epoch in the process. Returns the group's
        training state after it and ``{member: (predictions, state_dict)}`` of the members that
        finished. ``on_step`` is called in this thread at each of the epoch's sync points.
        :class:`Stopped` when ``stop`` is set meanwhile; then, as after any exception here, the
        epoch is abandoned and the process must be closed with ``stop=True``."""
        epoch = trainer.epoch
        held = self._held.pop(k, None) == epoch
        self._send((k, epoch, None if held or epoch == 0 else trainer.state()))
        while True:
            kind, *payload = self._receive(stop)
            if kind == "step":
                if on_step is not None:
                    on_step(*payload)
            elif kind == "done":
                state, finals = payload
                if state["epoch"] != epoch + 1:
                    raise RuntimeError(f"a worker process returned epoch {state['epoch']} of "
                                       f"group {k} for epoch {epoch + 1}")
                self._held[k] = state["epoch"]
                return state, finals
            else:   # "error": the exception the epoch raised in the process, and its traceback
                error, text = payload
                raise error from WorkerTraceback(text)

    def _send(self, msg) -> None:
        try:
            _send_message(self._conn, msg)
        except OSError:   # the pipe broke: the process ended
            self._died()

    def _receive(self, stop: threading.Event | None) -> tuple:
        try:
            while not self._conn.poll(POLL_SECONDS):
                if stop is not None and stop.is_set():
                    raise Stopped
                if not self._proc.is_alive():
                    raise EOFError
            return _receive_message(self._conn)
        except (EOFError, OSError):   # the pipe closed: the process ended
            self._died()

    def _died(self):
        self._proc.join(timeout=10)
        raise WorkerDied(f"a worker process ended while training (exit code "
                         f"{self._proc.exitcode}; a negative code is the signal that ended it, "
                         "e.g. -9 when the system ran out of memory)") from None

    def close(self, stop: bool = False) -> None:
        """End the process: let it finish (``stop``: at once, abandoning an epoch in flight)."""
        if self._proc.is_alive() and not stop:
            with contextlib.suppress(OSError):
                _send_message(self._conn, None)
            self._proc.join(timeout=10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()
        self._conn.close()


def _send_message(conn, msg) -> None:
    """One message, either way: plain pickled bytes (no tensor through shared memory)."""
    conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))


def _receive_message(conn):
    """The next message :func:`_send_message` sent."""
    return pickle.loads(conn.recv_bytes())


@contextlib.contextmanager
def _sigint_blocked():
    """Block SIGINT in this thread while a child forks: the child inherits the mask, so Ctrl-C
    cannot interrupt it before it ignores SIGINT."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _serve(conn, plan, data, driver: int) -> None:
    """The process: train the epochs the driver (process id ``driver``) sends until it sends
    None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _die_with_driver(driver)
    torch.set_num_threads(plan.threads)
    held: dict[int, GroupTrainer] = {}

    while True:
        try:
            msg = _receive_message(conn)
        except (EOFError, OSError):   # the driver is gone
            return
        if msg is None:
            return
        k, epoch, state = msg
        try:
            t = held.pop(k, None)
            if t is None or t.epoch != epoch:
                if state is None and epoch > 0:
                    raise RuntimeError(f"group {k} was to continue from epoch {epoch} in a worker "
                                       "process that does not hold it")
                t = build_trainer(plan, data, k, state)
            t.train_epoch(lambda steps, loss: _send_message(conn, ("step", steps, loss)))
            finals = {i: (r.predictions, r.state_dict) for i, r in enumerate(t.results)
                      if r.predictions is not None and r.state_dict is not None}
            if not t.done:   # a finished group never comes back
                held[k] = t
            _send_message(conn, ("done", t.state(), finals))
        except BaseException as e:  # noqa: BLE001 - handed to the driver
            try:
                text = "".join(traceback.format_exception(e))
                _send_message(conn, ("error", picklable_error(e), text))
            except OSError:   # the driver is gone (its pipe broke)
                return


def _die_with_driver(driver: int) -> None:
    """Have the kernel kill this process when the driver dies. A forked worker shares the
    driver's open files, the run folder's lock among them, so a killed study must not leave it
    training on."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
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
