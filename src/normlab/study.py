"""Driving a study: every variant x every seed, trained and recorded in a run folder.

The one way to run a study, used by ``normlab study``, both sweep backends, the notebook and the
benchmark. Its steps are public so a driver that trains elsewhere (a Ray task) records the same
files::

    data = load_data(cfg, device)                # normlab.study_data: the splits on the device
    plan = make_plan(cfg, device)                # the runs cut into groups, workers, threads
    start(folder, plan, data)                    # config.json, env.json
    results = train(plan, data, folder)          # checkpoints and tables after every epoch
    finish(folder, plan, results, t_start)       # summary.json, timing.json, report.md

How the runs share the machine: runs are cut into *groups* of ``group_size`` runs, each trained
as one network (:class:`normlab.train.GroupTrainer`), and ``workers`` threads train groups side by
side, one epoch at a time, always picking the group that is furthest behind. On a CPU each worker
uses ``cores // workers`` torch threads: tiny convolutions scale poorly across threads; with more
than one worker, each thread has the epochs trained in a process of its own
(:mod:`normlab.epoch_process`) and stays the one that schedules and writes. None of this changes
a run's numbers beyond floating-point rounding, and the same config on the same machine gives the
same numbers whichever worker trains which epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from normlab import __version__
from normlab.batches import DeviceSplit
from normlab.config import Config, continuation_diff
from normlab.device import resolve_precision, select_device
from normlab.envinfo import environment
from normlab.epoch_process import EpochProcess, Stopped, available, build_trainer
from normlab.errors import ConfigError
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, parse_formats
from normlab.runfolder import RunFolder, RunResult, SessionClock, check_version, load_run
from normlab.store import new_timestamped_folder
from normlab.study_data import StudyData, load_data
from normlab.table import results_table
from normlab.train import GroupTrainer, group_label
from normlab.variants import Variant

# On a CPU, grouping runs into one network pays only at small batches, where the per-step
# overhead dominates: benchmarks/bench_train.py's small-batch rows measure it (batch 4: 3 runs
# per group 1.66x faster than one at a time, batch 16: 1.14x, batch 32: 1.06x, batch 64 and 128:
# 1.00x). At or below CPU_GROUP_MAX_BATCH auto trains CPU_GROUP_SIZE runs per group (the size
# measured; fixed, so that the grouping, and with it the rounding, does not depend on the cores).
CPU_GROUP_MAX_BATCH = 32
CPU_GROUP_SIZE = 3


@dataclass
class Plan:
    """How a study's runs are trained: groups (each one network), worker threads, precision."""

    cfg: Config
    device: torch.device
    groups: list[list[tuple[Variant, int]]]
    workers: int
    threads: int            # torch threads per worker
    precision: str
    processes: bool = False   # each worker thread trains in a process (normlab.epoch_process)

    @property
    def runs(self) -> int:
        return sum(len(g) for g in self.groups)

    def resolved(self, data: StudyData) -> dict:
        """config.json: the Config's fields, plus what was resolved from them here."""
        d = self.cfg.to_dict()
        d["resolved"] = {
            "normlab_version": __version__, "device": str(self.device),
            "seed_list": self.cfg.seed_list(),
            "variants": [v.as_dict() for v in self.cfg.parsed_variants()],
            "train_images": len(data.train), "test_images": len(data.test),
            "val_images": 0 if data.val is None else len(data.val),
            # where this session found the data (a resumed session may find it elsewhere:
            # --data-dir is relocatable, and config.json keeps the first session's)
            "data_folder": None if data.folder is None else str(data.folder.absolute()),
            "pixel_mean": data.mean, "pixel_std": data.std, "classes": list(data.classes),
            "precision": self.precision, "group_size": len(self.groups[0]),
            "workers": self.workers, "threads_per_worker": self.threads,
        }
        return d


def auto_group_size(cfg: Config, device: torch.device, runs: int) -> int:
    """``--group-size 0``: all runs in one group on a GPU; on a CPU, CPU_GROUP_SIZE runs per
    group at small batches (see CPU_GROUP_MAX_BATCH), else one run per group."""
    if device.type != "cpu":
        return runs
    return CPU_GROUP_SIZE if cfg.batch_size <= CPU_GROUP_MAX_BATCH else 1


def make_plan(cfg: Config, device: torch.device | None = None, group_size: int | None = None,
              workers: int | None = None, threads: int | None = None) -> Plan:
    """The study's runs (variant-major, then seed) cut into groups, and the threads that train
    them. ``group_size``, ``workers``, ``threads`` override the config and the auto rules (a Ray
    task trains one run with the threads it declared)."""
    device = device if device is not None else select_device(cfg.device)
    runs = [(v, seed) for v in cfg.parsed_variants() for seed in cfg.seed_list()]
    cores = max(1, torch.get_num_threads())
    if cfg.compile:
        want_workers = 1   # torch.compile is not safe to run from several threads at once
    elif device.type != "cpu":
        want_workers = cfg.workers or 1
    else:
        want_workers = cfg.workers or cores
    want_workers = workers or want_workers
    size = group_size or cfg.group_size or auto_group_size(cfg, device, len(runs))
    groups = [runs[i:i + size] for i in range(0, len(runs), size)]
    n_workers = max(1, min(want_workers, len(groups)))
    if threads is None:
        threads = cores if (cfg.compile or device.type != "cpu") else max(1, cores // n_workers)
    # On a CPU, worker threads of one process train about 5% slower than processes
    # (benchmarks/bench_train.py's study-threads row): each gets one where it can.
    return Plan(cfg, device, groups, n_workers, threads, resolve_precision(cfg.precision, device),
                processes=n_workers > 1 and available(device, threads))


def start(folder: RunFolder, plan: Plan, data: StudyData, backend: str = "local") -> None:
    """Write config.json and env.json of a new study."""
    folder.write_start(plan.resolved(data), environment(plan.device, backend=backend))


def check_same_config(folder: RunFolder, cfg: Config, saved: dict) -> None:
    """A study continues only with the config it was started with (``saved``: config.json),
    except where its data lie (:data:`~normlab.config.RELOCATABLE`)."""
    diff = continuation_diff(saved, cfg.to_dict())
    if diff:
        raise ConfigError(f"cannot resume {str(folder.path)!r} with a different config "
                          f"({'; '.join(diff)}); drop the differing flags, or start a new study "
                          "with --out")


def check_resumable(folder: RunFolder, plan: Plan, saved: dict) -> None:
    """A training state continues only on the kind of device and in the groups it was made in
    (``saved``: the folder's config.json, already checked by :func:`check_same_config`)."""
    resolved = saved.get("resolved") if isinstance(saved.get("resolved"), dict) else {}
    saved_device, saved_size = resolved.get("device"), resolved.get("group_size")
    if isinstance(saved_device, str) and torch.device(saved_device).type != plan.device.type:
        raise ConfigError(f"{folder.path} was trained on {saved_device}, but here it would "
                          f"continue on {plan.device}; resume it on a machine with "
                          f"{saved_device.split(':')[0]} (a training state does not move between "
                          "kinds of device)")
    size = len(plan.groups[0])
    if isinstance(saved_size, int) and saved_size != size:
        raise ConfigError(f"{folder.path} trained its runs in groups of {saved_size}, here they "
                          f"would be groups of {size}; its training state cannot be regrouped, so "
                          "start a new study with --out")


EpochHook = Callable[[int, GroupTrainer], None]


def train(plan: Plan, data: StudyData, folder: RunFolder | None = None, resume: bool = False,
          progress: bool = True, on_epoch: EpochHook | None = None) -> list[RunResult]:
    """Train every run of ``plan`` to the end with its worker threads, one epoch at a time.

    With a ``folder``, each group's training state, the tables and every finished run's files
    are written after each epoch (``resume``: continue from the states found there). Without
    one, nothing is written (a Ray task, a benchmark). ``on_epoch(k, trainer)`` is called after
    each finished epoch of group k, under the scheduler's lock."""
    from tqdm.auto import tqdm  # imported here: the engine works without a terminal too

    names = [[(v.name, s) for v, s in g] for g in plan.groups]
    states = [folder.read_group_state(k, n) if resume and folder else None
              for k, n in enumerate(names)]
    old_threads = torch.get_num_threads()
    torch.set_num_threads(plan.threads)
    processes: list[EpochProcess] = []
    stop = threading.Event()
    try:
        trainers = [build_trainer(plan, data, k, st) for k, st in enumerate(states)]
        if plan.processes:
            for i in range(plan.workers):
                processes.append(EpochProcess(plan, data, f"normlab-worker-{i}"))
        lock = threading.Lock()
        busy: set[int] = set()
        errors: list[BaseException] = []
        per_epoch = len(trainers[0].bounds)
        labels = [group_label(g) for g in plan.groups]
        done_steps = {k: t.epoch * per_epoch for k, t in enumerate(trainers)}
        bar = tqdm(total=sum(t.total_steps for t in trainers), initial=sum(done_steps.values()),
                   unit="batch", disable=not progress,
                   desc=f"{plan.runs} run{'' if plan.runs == 1 else 's'}", dynamic_ncols=True)

        def save(k: int | None, state: dict | None = None) -> None:
            """After an epoch of group k (None: at the start): its state (``state``: as a worker
            process sent it, else the trainer's), finished runs, tables."""
            if folder is None:
                for t in trainers:
                    if t.done:
                        t.final_outputs()
                return
            if k is not None:
                folder.write_group_state(k, state or trainers[k].state())
            for j, t in enumerate(trainers):
                if t.done and (j == k or k is None):
                    t.final_outputs()
                    for r in t.results:
                        record(folder, r)
            # Only the epochs a trainer has finished: another worker may be appending rows.
            folder.write_tables([dataclasses.replace(
                r, epochs=[e for e in list(r.epochs) if e["epoch"] <= t.epoch],
                diagnostics=[d for d in list(r.diagnostics) if d["epoch"] <= t.epoch])
                for t in trainers for r in t.results])

        def work(i: int) -> None:
            try:
                while not stop.is_set():
                    with lock:
                        waiting = [k for k, t in enumerate(trainers) if not t.done and k not in busy]
                        if not waiting:
                            return
                        k = min(waiting, key=lambda k: (trainers[k].epoch, k))   # furthest behind
                        busy.add(k)
                    t, base = trainers[k], trainers[k].epoch * per_epoch

                    def on_step(steps: int, loss: float, k=k, base=base) -> None:
                        if stop.is_set():
                            raise Stopped   # abandons the epoch (Ctrl-C, an error)
                        with lock:
                            bar.update(base + steps - done_steps[k])
                            done_steps[k] = base + steps
                            # With several groups, whose loss this is: they report in turn.
                            bar.set_postfix(**({"run": labels[k]} if len(trainers) > 1 else {}),
                                            loss=f"{loss:.4f}", refresh=False)

                    state = None   # the group's training state, where a process sent it
                    try:
                        if processes:
                            state, finals = processes[i].train_epoch(k, t, on_step, stop)
                        else:
                            t.train_epoch(on_step)
                    except Stopped:
                        return
                    with lock:
                        if processes:   # the driver's copy of the group, as the process left it
                            # (built under the lock: building seeds the global RNG, fork_rng)
                            t = trainers[k] = build_trainer(plan, data, k, state)
                            for m, (preds, weights) in finals.items():
                                t.results[m].predictions, t.results[m].state_dict = preds, weights
                        save(k, state)
                        if on_epoch is not None:
                            on_epoch(k, t)
                        busy.discard(k)
            except BaseException as e:  # noqa: BLE001 - handed to the main thread
                errors.append(e)
                stop.set()

        with lock:
            save(None)
        workers = [threading.Thread(target=work, args=(i,), name=f"normlab-worker-{i}",
                                    daemon=True) for i in range(plan.workers)]
        try:
            for th in workers:
                th.start()
            # Poll with sleep: Ctrl-C raised inside Thread.join() can leave the interpreter
            # unable to shut down cleanly (it aborts at exit); one raised in sleep() is harmless.
            while any(th.is_alive() for th in workers):
                time.sleep(0.1)
        except KeyboardInterrupt:
            while True:
                try:
                    stop.set()
                    if not any(th.is_alive() for th in workers):
                        break
                    time.sleep(0.05)
                except KeyboardInterrupt:
                    # A second Ctrl-C while the workers finish their step: keep waiting. Left
                    # running in a C++ op when the interpreter exits, they would abort it
                    # ("terminate called without an active exception", exit code 134).
                    continue
            raise   # the first Ctrl-C
        finally:
            bar.close()
        if errors:
            raise errors[0]
    except BaseException:
        stop.set()   # worker processes are stopped, not waited for
        raise
    finally:
        for p in processes:
            p.close(stop=stop.is_set())
        torch.set_num_threads(old_threads)
    return [r for t in trainers for r in t.results]


def record(folder: RunFolder, result: RunResult) -> None:
    """A finished run's files (predictions, final checkpoint) in the run folder."""
    folder.write_run_outputs(result)


def train_group(cfg: Config, runs: list[tuple[Variant, int]], train_split: DeviceSplit,
                test: DeviceSplit, mean: float, std: float, progress: bool = False,
                on_epoch: Callable[[int, dict], None] | None = None,
                group_size: int | None = None) -> list[RunResult]:
    """Train the ``(variant, seed)`` runs in memory with the study driver: as one network
    (``group_size`` default: all of them), one worker. ``on_epoch(i, row)`` receives run i's
    metrics row after each epoch."""
    size = group_size or len(runs)
    plan = make_plan(cfg, train_split.images.device, group_size=size, workers=1)
    plan = dataclasses.replace(plan, groups=[runs[i:i + size] for i in range(0, len(runs), size)])
    data = StudyData(train_split, test, mean, std, classes=())

    def rows(k: int, t: GroupTrainer) -> None:
        for i, r in enumerate(t.results):
            if on_epoch is not None and r.epochs and r.epochs[-1]["epoch"] == t.epoch:
                on_epoch(k * size + i, r.epochs[-1])

    return train(plan, data, progress=progress, on_epoch=rows)


def train_run(cfg: Config, variant: Variant, seed: int, train_split: DeviceSplit,
              test: DeviceSplit, mean: float, std: float, progress: bool = False,
              on_epoch: Callable[[dict], None] | None = None) -> RunResult:
    """Train one run in memory: :func:`train_group` of one; ``on_epoch(row)`` per epoch."""
    cb = None if on_epoch is None else (lambda i, row: on_epoch(row))
    return train_group(cfg, [(variant, seed)], train_split, test, mean, std, progress, cb)[0]


def finish(folder: RunFolder, plan: Plan, results: list[RunResult], t_start: float,
           report: bool = True, resumed: bool = False,
           log: Callable[[str], None] = print,
           formats: Sequence[str] = DEFAULT_FIGURE_FORMATS,
           clock: SessionClock | None = None) -> dict:
    """The study's closing files: tables, summary.json, timing.json and (``report``) the figures
    (PNG and the other ``formats``) and report.md. Returns the summary. ``clock``: the session's,
    made when it started (default: one from ``t_start``, adding the time timing.json holds now)."""
    folder.write_tables(results)
    summary = folder.write_summary(plan.cfg, results)
    log(results_table(summary).text())
    # Seconds from the call on (data loading and checks included); a resumed study adds the time
    # of its earlier sessions. train_seconds ends here, wall_seconds when the report is written.
    clock = clock or SessionClock(folder.timing_json, t_start, resumed, plan.workers, plan.threads)
    timing = clock.save()
    if report:
        from normlab.report import write_report  # the same code as `normlab report RUN_DIR`
        write_report(folder.path, data_dir=plan.cfg.data_dir, formats=formats)   # a resumed
        # study's --data-dir (config.RELOCATABLE) is where the test images are now
    timing = clock.save(timing)   # now with wall_seconds
    log(f"results in {folder.path} ({timing['wall_seconds']:.0f} s)")
    return summary


def default_out(cfg: Config) -> Path:
    """A new, empty folder runs/DATASET-TIME (:func:`normlab.store.new_timestamped_folder`)."""
    return new_timestamped_folder("runs", cfg.dataset)


def run_study(cfg: Config, out: str | Path | None = None, progress: bool = True,
              log: Callable[[str], None] = print, report: bool = True,
              resume: bool = False,
              formats: str | Sequence[str] = DEFAULT_FIGURE_FORMATS) -> Path:
    """Train every variant x seed of ``cfg`` and write the run folder (and, with ``report``, its
    figures, as PNG and the other ``formats``, and report.md). Returns its path.

    With ``resume``, ``out`` is an existing run folder made with the same config: finished runs
    are kept, unfinished ones continue from their last finished epoch, and the final files are
    those of an uninterrupted study. Ctrl-C: a KeyboardInterrupt naming the resume command.
    """
    t_start = time.perf_counter()
    formats = parse_formats(formats)   # a bad one fails now, not after the training
    device = select_device(cfg.device)
    if resume and out is None:
        raise ConfigError("--resume needs the run folder to continue")
    folder = RunFolder(out if out is not None else default_out(cfg))
    saved = folder.read_saved_config() if resume else None
    if saved is not None:
        check_same_config(folder, cfg, saved)   # before locking or loading anything
        if folder.finished:
            # Complete, report included: nothing is trained or rewritten, so its timing stays
            # that of the sessions that trained it. The hint keeps a --format or --data-dir given.
            load_run(folder.path)   # a damaged file is named now, not by the report hinted at
            hint = f"normlab report {folder.path}"
            if formats != parse_formats(DEFAULT_FIGURE_FORMATS):
                hint += f" --format {','.join(formats)}"
            if cfg.data_dir != saved.get("data_dir"):   # the data moved (--data-dir given)
                hint += f" --data-dir {cfg.data_dir}"
            log(f"nothing to resume: every run in {folder.path} finished; '{hint}' redraws its "
                "figures and report")
            return folder.path
        check_version(folder.path, saved, "resume it with that version or start a new study "
                      "with --out")
        folder.ensure_writable()
    else:
        folder.create()                    # fail on a bad folder before loading anything
    with contextlib.ExitStack() as stack:
        stack.enter_context(folder.lock())  # one process at a time in a run folder
        if resume:
            folder.remove_stale_temporaries()   # half-written files of a killed process
        try:
            data = load_data(cfg, device)  # fail on missing or corrupt data before training
        except BaseException:
            if not resume:
                stack.close()
                folder.remove_if_unused()  # leave no empty run folder behind
            raise
        # A resumed study keeps the grouping it was trained in (auto may differ elsewhere).
        saved_size = (saved or {}).get("resolved", {}).get("group_size")
        plan = make_plan(cfg, device, group_size=saved_size if isinstance(saved_size, int)
                         and saved_size > 0 and not cfg.group_size else None)
        if saved is not None:
            check_resumable(folder, plan, saved)
        log(f"normlab {__version__}: device {device}, {len(plan.groups)} group(s) of runs, "
            f"{plan.workers} worker(s){' (processes)' if plan.processes else ''} x "
            f"{plan.threads} thread(s), out {folder.path}"
            + (" (continuing)" if resume else ""))
        if not resume:
            start(folder, plan, data)
        # timing.json after every saved epoch and at Ctrl-C: the time a resume adds to its own
        saved_epochs = any(folder.group_state(k).exists() for k in range(len(plan.groups)))
        clock = SessionClock(folder.timing_json, t_start, resume, plan.workers, plan.threads,
                             trained_before=resume and saved_epochs)
        try:
            try:
                results = train(plan, data, folder, resume=resume, progress=progress,
                                on_epoch=lambda k, t: clock.save())
            except KeyboardInterrupt:
                clock.save()
                raise
            # an interrupt in finish leaves the report to the resume
            finish(folder, plan, results, t_start, report=report, resumed=resume, log=log,
                   formats=formats, clock=clock)
        except KeyboardInterrupt:   # the CLI prints this message on stderr
            raise KeyboardInterrupt(f"interrupted: every run is saved up to its last finished "
                                    f"epoch; continue with 'normlab study --resume "
                                    f"{folder.path}'") from None
    return folder.path
