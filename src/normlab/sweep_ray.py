"""The Ray backend of ``normlab sweep``: every run a Ray task, results recorded by the driver.

Each run (point x variant x seed) becomes a task that declares its resources (CPUs, a fraction of
a GPU), loads and verifies the dataset where it runs, trains with the study driver
(:func:`normlab.study.train`, a plan of one run) and returns plain data: metrics, final weights and
predictions. The driver records each result in its point's run folder as it arrives, through the
same study steps as ``normlab study`` (:func:`~normlab.study.start`, the run folder's writers,
:func:`~normlab.study.finish`), so a Ray point holds exactly the files of a local one. A task that
raises is retried ``retries`` times by Ray, then its run is recorded as failed with the error,
and the sweep goes on. Ray is optional: ``pip install "normlab[ray]"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Callable

from normlab.errors import ConfigError, RunFolderError, brief
from normlab.runfolder import Predictions, RunResult, SessionClock
from normlab.sweep import PointOutcome


def train_one(cfg_dict: dict, variant_name: str, seed: int, threads: int) -> dict[str, Any]:
    """One run, as a Ray task runs it: plain data back (tensors, numbers, strings)."""
    from normlab import study
    from normlab.study_data import load_data
    from normlab.config import Config

    cfg = Config.from_dict(cfg_dict)
    variant = next(v for v in cfg.parsed_variants() if v.name == variant_name)
    whole = study.make_plan(cfg, group_size=1, workers=1, threads=max(1, threads))
    plan = dataclasses.replace(whole, groups=[[(variant, seed)]])   # this run alone
    data = load_data(cfg, plan.device)
    last: dict = {}   # the training state after the last epoch, as a local study keeps it

    def keep_final_state(k: int, t) -> None:
        if t.done:   # earlier states would be copied only to be replaced
            last["state"] = t.state()

    r = study.train(plan, data, progress=False, on_epoch=keep_final_state)[0]
    p = r.predictions
    return {"variant": r.variant.name, "seed": seed, "params": r.params, "status": r.status,
            "message": r.message, "epochs": r.epochs, "model": r.state_dict,
            "diagnostics": r.diagnostics,
            "predictions": None if p is None else (p.label, p.pred, p.confidence),
            "state": last.get("state")}


def _result(cfg, data: dict) -> RunResult:
    variant = next(v for v in cfg.parsed_variants() if v.name == data["variant"])
    r = RunResult(variant=variant, seed=data["seed"], params=data["params"], status=data["status"],
                  epochs=data["epochs"], message=data["message"], state_dict=data["model"],
                  diagnostics=data.get("diagnostics", []))
    if data["predictions"] is not None:
        r.predictions = Predictions(*data["predictions"])
    return r


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds (Ray itself retries for minutes) when nothing listens at ``address``."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r} is not HOST:PORT; give e.g. 127.0.0.1:6379")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start "
                          "it with 'ray start --head' or give the right --ray-address") from None


class _Point:
    """The driver's side of one point: its plan, what has come back, when it started."""

    def __init__(self, o: PointOutcome, threads: int):
        from normlab import study

        self.o, self.done, self.t_start = o, {}, time.perf_counter()
        self.plan = study.make_plan(o.cfg, group_size=1, workers=1, threads=threads)
        self.wanted = [(v, s) for v in o.cfg.parsed_variants() for s in o.cfg.seed_list()]
        self.resumed = o.folder.config.exists()
        # Ray sessions record no time until a point finishes: a resumed point's earlier sessions
        # are counted where timing.json holds them, else the report says "last session only".
        self.clock = SessionClock(o.folder.timing_json, self.t_start, self.resumed,
                                  self.plan.workers, self.plan.threads,
                                  trained_before=self.resumed)
        for v, seed in (self.wanted if self.resumed else ()):   # runs finished before
            try:
                saved = o.folder.read_run_outputs(v, seed)
            except RunFolderError:
                saved = None   # a damaged final checkpoint: train that run again
            if saved is not None:
                self.done[(v.name, seed)] = saved

    def start(self) -> None:
        """config.json and env.json of a new point, written before any of its runs is
        submitted, so that a point whose runs all finish in a session that is then killed can
        still be completed later."""
        from normlab import study
        from normlab.study_data import load_data

        if not self.resumed:
            study.start(self.o.folder, self.plan, load_data(self.o.cfg, self.plan.device),
                        backend="ray")

    def check_regrouping(self) -> None:
        """ConfigError when this point was started by the local backend in groups of several
        runs and has runs left to train: Ray trains one run per task, so they would start again
        from scratch (a local resume goes on from the last finished epoch) and the folder's
        training states would be overwritten with ones its own groups cannot read."""
        if not self.resumed:   # a new point: Ray starts it, one run per group
            return
        resolved = self.o.folder.read_saved_config().get("resolved") or {}
        size = resolved.get("group_size") if isinstance(resolved, dict) else None
        left = [v for v, s in self.wanted if (v.name, s) not in self.done]
        if isinstance(size, int) and size > 1 and left:
            raise ConfigError(f"sweep point {self.o.name} was started by the local backend, its "
                              f"runs trained in groups of {size}; Ray would train its "
                              f"{len(left)} unfinished run(s) one per task, from scratch; "
                              "continue this sweep with --backend local")

    def complete(self, log: Callable[[str], None]) -> None:
        """The point's closing files once all its runs are back; a failure here is the point's
        error, not the sweep's end."""
        from normlab import study

        if self.o.folder.finished or any((v.name, s) not in self.done
                                         for v, s in self.wanted):
            return
        try:
            study.finish(self.o.folder, self.plan, [self.done[(v.name, s)] for v, s in self.wanted],
                         self.t_start, resumed=self.resumed, log=lambda _: None,
                         clock=self.clock)
        except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
            self.o.error = f"{type(e).__name__}: {brief(e, 300)}"
            log(f"{self.o.name}: its study files could not be written ({self.o.error})")


def run_points(outcomes: list[PointOutcome], log: Callable[[str], None],
               ray_address: str | None = None, retries: int = 2,
               resources: dict[str, float] | None = None) -> None:
    """Train every unfinished run of ``outcomes`` (sweep points) as Ray tasks."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray; install it with pip install 'normlab[ray]', "
                          "or use --backend local") from None
    resources = resources or {"num_cpus": 1.0, "num_gpus": 0.0}
    started = not ray.is_initialized()
    if started and ray_address:
        _check_reachable(ray_address)
    if started:
        try:
            if ray_address:
                ray.init(address=ray_address, log_to_driver=False, include_dashboard=False)
            else:
                ray.init(num_cpus=os.cpu_count(), log_to_driver=False, include_dashboard=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"cannot reach the Ray cluster at {ray_address!r} "
                              f"({brief(e)}); start it with 'ray start "
                              "--head' or give the right --ray-address") from None
    want_gpus = resources.get("num_gpus", 0) or 0
    have_gpus = ray.cluster_resources().get("GPU", 0)
    if want_gpus > have_gpus:
        if started:
            ray.shutdown()
        raise ConfigError(f"--ray-gpus {want_gpus:g} asked for, but the Ray cluster has "
                          f"{have_gpus:g} GPUs; its tasks would never start; use --ray-gpus 0")
    threads = max(1, int(resources.get("num_cpus", 1)))
    from normlab import study

    held = contextlib.ExitStack()   # the point folders this driver writes into
    task = ray.remote(train_one).options(
        num_cpus=resources.get("num_cpus", 1), num_gpus=want_gpus,
        max_retries=retries, retry_exceptions=True)
    try:
        pending: dict[Any, tuple] = {}
        points: dict[int, _Point] = {}
        # Every point is read and checked before any is started or any task submitted, so that
        # a refusal leaves the sweep folder as it was.
        try:
            for k, o in enumerate(outcomes):
                # Finished, not merely summarized: a point stopped while it wrote its report has
                # a summary.json, and is completed below (its runs load from their checkpoints).
                if o.folder.finished:
                    continue
                o.folder.path.mkdir(parents=True, exist_ok=True)
                held.enter_context(o.folder.lock())   # as a local study locks its folder
                points[k] = _Point(o, threads)
                points[k].check_regrouping()
            for p in points.values():
                p.start()
        except BaseException:
            held.close()
            for o in outcomes:
                o.folder.remove_if_unused()   # no folder holding only a lock file behind
            raise
        for k, p in points.items():
            for v, seed in p.wanted:
                if (v.name, seed) not in p.done:
                    pending[task.remote(p.o.cfg.to_dict(), v.name, seed, threads)] = (k, v, seed)
        log(f"ray: {len(pending)} run(s) submitted")
        errors: dict[int, list[str]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                k, v, seed = pending.pop(ref)
                p = points[k]
                try:
                    data = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
                    first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
                    errors.setdefault(k, []).append(f"{v.name} seed {seed}: {first}")
                    log(f"{p.o.name} {v.name} seed {seed}: failed after {retries} retries "
                        f"({first})")
                    continue
                r = _result(p.o.cfg, data)
                if data["state"] is not None:   # group k of a plan of one run per group
                    p.o.folder.write_group_state(p.wanted.index((v, seed)), data["state"])
                study.record(p.o.folder, r)
                p.done[(v.name, seed)] = r
                log(f"{p.o.name} {v.name} seed {seed}: {r.status}")
                p.complete(log)
        for k, msgs in errors.items():
            outcomes[k].error = "; ".join(msgs)
        for p in points.values():   # points whose runs were all finished before
            p.complete(log)
    finally:
        held.close()
        if started:
            ray.shutdown()
