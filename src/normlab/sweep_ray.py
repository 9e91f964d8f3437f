"""The Ray backend of ``normlab sweep``: every run a Ray task, results written by the driver.

Each run (point x variant x seed) becomes a task that declares its resources (CPUs, a fraction of
a GPU), loads and verifies the dataset where it runs, trains with normlab's engine and returns
plain data: metrics, final weights and predictions. The driver writes each result into the sweep
folder as it arrives (atomically, as every file normlab writes), so interrupting a sweep loses only
the runs in progress, and a point's study files once all its runs are back. A task that raises is
retried ``retries`` times by Ray, then its run is recorded as failed with the error, and the sweep
goes on with the rest. Ray is optional: ``pip install "normlab[ray]"``.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from normlab.errors import ConfigError, RunFolderError


def train_one(cfg_dict: dict, variant_name: str, seed: int, threads: int) -> dict[str, Any]:
    """One run, as a Ray task runs it: plain data back (tensors, numbers, strings)."""
    import torch

    from normlab.config import Config
    from normlab.study import load_study_data
    from normlab.train import GroupTrainer, select_device

    torch.set_num_threads(max(1, threads))
    cfg = Config.from_dict(cfg_dict)
    device = select_device(cfg.device)
    data = load_study_data(cfg, device)
    variant = next(v for v in cfg.parsed_variants() if v.name == variant_name)
    trainer = GroupTrainer(cfg, [(variant, seed)], data.train, data.test, data.mean, data.std)
    while not trainer.done:
        trainer.train_epoch()
    trainer.final_outputs()
    r = trainer.results[0]
    p = r.predictions
    return {"variant": variant_name, "seed": seed, "params": r.params, "status": r.status,
            "message": r.message, "epochs": r.epochs, "model": r.state_dict,
            "predictions": None if p is None else (p.label, p.pred, p.confidence),
            "threads": torch.get_num_threads()}


def _result(cfg, data: dict):
    from normlab.train import Predictions, RunResult

    variant = next(v for v in cfg.parsed_variants() if v.name == data["variant"])
    r = RunResult(variant=variant, seed=data["seed"], params=data["params"], status=data["status"],
                  epochs=data["epochs"], message=data["message"], state_dict=data["model"])
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


def run_points_on_ray(outcomes: list, ray_address: str | None, retries: int,
                      log: Callable[[str], None], resources: dict[str, float]) -> None:
    """Train every unfinished run of ``outcomes`` (sweep points) as Ray tasks."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--backend ray needs Ray; install it with pip install 'normlab[ray]', "
                          "or use --backend local") from None
    from normlab.store import write_json
    from normlab.study import read_run_outputs, write_run_outputs
    from normlab.sweep import point_name

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
                              f"({str(e).splitlines()[0][:160]}); start it with 'ray start "
                              "--head' or give the right --ray-address") from None
    want_gpus = resources.get("num_gpus", 0) or 0
    have_gpus = ray.cluster_resources().get("GPU", 0)
    if want_gpus > have_gpus:
        if started:
            ray.shutdown()
        raise ConfigError(f"--ray-gpus {want_gpus:g} asked for, but the Ray cluster has "
                          f"{have_gpus:g} GPUs; its tasks would never start; use --ray-gpus 0")
    threads = max(1, int(resources.get("num_cpus", 1)))
    task = ray.remote(train_one).options(
        num_cpus=resources.get("num_cpus", 1), num_gpus=resources.get("num_gpus", 0) or 0,
        max_retries=retries, retry_exceptions=True)
    try:
        pending: dict[Any, tuple] = {}
        done: dict[int, dict[tuple, Any]] = {}
        for k, o in enumerate(outcomes):
            if (o.folder / "summary.json").exists():
                continue
            done[k] = {}
            if not (o.folder / "config.json").exists():
                # Written before any run is submitted, so that a point whose runs all finish
                # in a session that is then killed can still be completed later.
                _describe_point(o, write_json)
            for v in o.cfg.parsed_variants():
                for seed in o.cfg.seed_list():
                    try:
                        saved = read_run_outputs(o.folder, v, seed)
                    except RunFolderError:
                        saved = None   # a damaged final checkpoint: train that run again
                    if saved is not None:
                        done[k][(v.name, seed)] = saved
                        continue
                    ref = task.remote(o.cfg.to_dict(), v.name, seed, threads)
                    pending[ref] = (k, v, seed)
        log(f"ray: {len(pending)} run(s) submitted")
        errors: dict[int, list[str]] = {}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                k, v, seed = pending.pop(ref)
                o = outcomes[k]
                try:
                    data = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
                    first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:300]
                    errors.setdefault(k, []).append(f"{v.name} seed {seed}: {first}")
                    log(f"{point_name(o.values)} {v.name} seed {seed}: failed after {retries} "
                        f"retries ({first})")
                    continue
                r = _result(o.cfg, data)
                write_run_outputs(o.folder, r)
                done[k][(v.name, seed)] = r
                log(f"{point_name(o.values)} {v.name} seed {seed}: {r.status}")
                _complete_point(o, done[k], log)
        for k, msgs in errors.items():
            outcomes[k].error = "; ".join(msgs)
        for k in done:   # points whose runs were all finished before (nothing was submitted)
            _complete_point(outcomes[k], done[k], log)
    finally:
        if started:
            ray.shutdown()


def _describe_point(o, write_json) -> None:
    """config.json and env.json of a point, made by the driver."""
    from normlab.study import environment, load_study_data, resolved_config
    from normlab.train import select_device

    device = select_device(o.cfg.device)
    data = load_study_data(o.cfg, device)
    resolved = resolved_config(o.cfg, device, data)
    resolved["resolved"].update(backend="ray")
    write_json(o.folder / "config.json", resolved)
    write_json(o.folder / "env.json", environment(device))


def _complete_point(o, done: dict, log: Callable[[str], None]) -> None:
    """Write a point's study files once all its runs are back; a failure here is the point's
    error, not the sweep's end."""
    from normlab.report import write_report
    from normlab.study import write_summary, write_tables
    from normlab.sweep import point_name

    wanted = [(v, s) for v in o.cfg.parsed_variants() for s in o.cfg.seed_list()]
    if (o.folder / "summary.json").exists() or any((v.name, s) not in done for v, s in wanted):
        return
    results = [done[(v.name, s)] for v, s in wanted]
    try:
        write_tables(o.folder, results)
        write_summary(o.folder, o.cfg, results)
        write_report(o.folder)
    except Exception as e:  # noqa: BLE001 - recorded, the sweep goes on
        o.error = f"{type(e).__name__}: {e}"
        log(f"{point_name(o.values)}: its study files could not be written ({o.error})")
