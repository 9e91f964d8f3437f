"""The Ray backend's driver (``normlab.sweep_ray.run_points``) on points that a sweep left half
done, with an in-process stand-in for Ray: each task runs at once in this process, so these
tests need no cluster (``tests/test_sweep.py`` runs the real thing on a loopback head node)."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from normlab import sweep_ray
from normlab.config import Config
from normlab.errors import ConfigError
from normlab.runfolder import SweepFolder
from normlab.sweep import run_sweep
from normlab.sweep_spec import SweepSpec, parse_param


class InlineRay:
    """What ``run_points`` asks of the ``ray`` module: a cluster already running (so the driver
    neither starts nor stops one), and tasks that run when submitted."""

    class Ref:   # ray.ObjectRef: hashable, its result fetched by ray.get
        def __init__(self, result):
            self.result = result

    def __init__(self):
        self.submitted: list[tuple] = []

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}

    def remote(self, fn):
        ray = self

        class Task:
            def options(self, **_):
                return self

            def remote(self, *args):
                ray.submitted.append(args)
                return InlineRay.Ref(fn(*args))
        return Task()

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.result


@pytest.fixture()
def inline_ray(monkeypatch) -> InlineRay:
    ray = InlineRay()
    monkeypatch.setitem(sys.modules, "ray", ray)
    return ray


def _sweep(synthetic_data, out, batch_size: int = 128, runner=None, log=None):
    base = Config(variants=("gn",), seeds=3, epochs=1, batch_size=batch_size, device="cpu",
                  diagnostics=False, data_dir=str(synthetic_data.folder))
    spec = SweepSpec((parse_param("lr=0.05,0.1"),))
    return run_sweep(base, spec, out, runner=runner, backend="ray" if runner else "local",
                     progress=False, log=log or (lambda _: None), formats="png")


def _stopped_in_its_report(point) -> None:
    """As a point killed while it drew its report leaves it: summary.json written, no report,
    and timing.json without the wall time that marks a finished study."""
    point.report.unlink()
    timing = json.loads(point.timing_json.read_text())
    timing["wall_seconds"] = None
    point.timing_json.write_text(json.dumps(timing))
    assert point.summary.exists() and not point.finished


def test_ray_completes_a_point_stopped_while_it_wrote_its_report(synthetic_data, tmp_path,
                                                                 inline_ray) -> None:
    """A point with summary.json but no report (stopped while it wrote its closing files) is not
    skipped by the Ray backend: it trains nothing again (every run loads from its checkpoint)
    and writes the point's closing files, so the point is finished and its sweep.csv rows carry
    no 'not finished' message."""
    out = tmp_path / "sweep"
    _sweep(synthetic_data, out)
    point = SweepFolder(out).point("lr=0.05")
    _stopped_in_its_report(point)
    logs: list[str] = []
    _sweep(synthetic_data, out, runner=sweep_ray.run_points, log=logs.append)
    assert inline_ray.submitted == [] and "ray: 0 run(s) submitted" in logs, logs
    assert point.finished and point.report.is_file()
    rows = [r for r in SweepFolder(out).read_table() if r["lr"] == 0.05]
    assert len(rows) == 3 and all(r["message"] is None for r in rows), rows


def test_ray_refuses_a_point_a_local_sweep_trained_in_groups(synthetic_data, tmp_path,
                                                             inline_ray) -> None:
    """At batch 16 a local sweep on a CPU trains a point's three runs as one group. With a run
    left to train, the Ray backend (one run per task) refuses to continue the point, before any
    task is submitted, without touching its training state and without starting a point ahead
    of it that had not started, and names the backend that can; the local backend then finishes
    both, in groups of three."""
    out = tmp_path / "sweep"
    _sweep(synthetic_data, out, batch_size=16)
    point = SweepFolder(out).point("lr=0.1")
    assert json.loads(point.config.read_text())["resolved"]["group_size"] == 3
    _stopped_in_its_report(point)
    point.checkpoint("gn", 2).unlink()   # that run is left to train
    state = point.group_state(0).read_bytes()
    unstarted = SweepFolder(out).point("lr=0.05")   # a point ahead of it, not started
    shutil.rmtree(unstarted.path)
    with pytest.raises(ConfigError, match=r"sweep point lr=0\.1 was started by the local backend, "
                       r"its runs trained in groups of 3; .*continue this sweep with --backend "
                       r"local"):
        _sweep(synthetic_data, out, batch_size=16, runner=sweep_ray.run_points)
    assert inline_ray.submitted == [] and point.group_state(0).read_bytes() == state
    assert not unstarted.path.exists()   # not started by Ray, which would not continue the sweep
    _sweep(synthetic_data, out, batch_size=16)
    assert point.finished and point.checkpoint("gn", 2).is_file()
    for p in (point, unstarted):
        assert json.loads(p.config.read_text())["resolved"]["group_size"] == 3
        assert json.loads(p.env.read_text())["backend"] == "local"
