"""Sweeps: parsing, the sweep folder, resuming, bad input, and the Ray backend on a real
loopback head node (skipped when Ray is not installed).

Sweeps run as subprocesses (``python -m normlab sweep``) in an environment whose
``sitecustomize.py`` registers a synthetic MNIST-format dataset, so that the driver and every Ray
worker process see the same small data.
"""

from __future__ import annotations

import csv
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import synthetic_subprocess_env
from normlab.config import Config
from normlab.errors import ConfigError
from normlab.sweep import Param, SweepSpec, parse_param, point_name

N_TRAIN, N_TEST = 256, 64
SWEEP = ["sweep", "--variants", "gn,bn", "--param", "batch_size=16,32", "--seeds", "2",
         "--epochs", "2", "--workers", "2", "--quiet"]

# Run inside every subprocess (see helpers.synthetic_subprocess_env): a run with --rotate 7.5 and
# seed 1 raises, and leaves one file per attempt in $NORMLAB_TEST_ATTEMPTS (so a test can count
# Ray's retries).
INJECT_FAILURE = """
    from normlab import train
    _init = train.GroupTrainer.__init__

    def _failing_init(self, cfg, runs, *args, **kwargs):
        if cfg.rotate == 7.5 and any(seed == 1 for _, seed in runs):
            folder = os.environ.get("NORMLAB_TEST_ATTEMPTS")
            if folder:
                import tempfile
                tempfile.mkstemp(dir=folder)
            raise RuntimeError("injected failure for seed 1")
        _init(self, cfg, runs, *args, **kwargs)

    train.GroupTrainer.__init__ = _failing_init
"""


# ----------------------------------------------------------------------------------------------
# Parsing


def test_parse_param_types_and_aliases() -> None:
    """Values are parsed by the type of the config field they set; l1/l2 set the default lambdas;
    kebab-case names work."""
    assert parse_param("batch_size=2,8,32") == Param("batch_size", (2, 8, 32))
    assert parse_param("batch-size=4") == Param("batch_size", (4,))
    assert parse_param("l1=0,1e-5").values == (0.0, 1e-5) and parse_param("l1=0").field == "l1_default"
    assert parse_param("augment=true,off").values == (True, False)
    assert parse_param("dataset=mnist,kmnist").values == ("mnist", "kmnist")


@pytest.mark.parametrize(("text", "fragment"), [
    ("dropout=0.1,0.2", "cannot be swept"),
    ("batch_size", "NAME=V1,V2"),
    ("batch_size=", "no values"),
    ("batch_size=8,eight", "'eight' is not a whole number"),
    ("lr=fast", "'fast' is not a number"),
    ("lr=nan", "not a finite number"),
    ("dataset=cifar10", "unknown value 'cifar10'"),
    ("augment=maybe", "not true or false"),
    ("batch_size=8,8", "listed twice"),
    ("lr=0.1234561,0.1234564", "beyond 6 significant digits"),
])
def test_parse_param_rejects_bad_input(text: str, fragment: str) -> None:
    """Each malformed --param is a ConfigError naming the problem."""
    with pytest.raises(ConfigError, match=fragment):
        parse_param(text)


def test_points_grid_scale_lr_and_validation() -> None:
    """Two params make the full grid; --scale-lr sets lr = lr * batch_size / batch_size of the
    base config; a value the config rejects names the point."""
    base = Config(lr=0.1, batch_size=128)
    spec = SweepSpec((parse_param("batch_size=32,256"), parse_param("l1=0,1e-4")), scale_lr=True)
    points = spec.points(base)
    assert [v for v, _ in points] == [{"batch_size": 32, "l1": 0.0}, {"batch_size": 32, "l1": 1e-4},
                                      {"batch_size": 256, "l1": 0.0}, {"batch_size": 256, "l1": 1e-4}]
    assert [c.lr for _, c in points] == [0.025, 0.025, 0.2, 0.2]
    assert [c.l1_default for _, c in points] == [0.0, 1e-4, 0.0, 1e-4]
    assert point_name(points[1][0]) == "batch_size=32,l1=0.0001"
    with pytest.raises(ConfigError, match="batch_size=1: --batch-size 1 cannot train BatchNorm"):
        SweepSpec((parse_param("batch_size=1,2"),)).points(Config(variants=("bn",)))
    with pytest.raises(ConfigError, match="--scale-lr"):
        SweepSpec((parse_param("lr=0.1,0.2"),), scale_lr=True)
    with pytest.raises(ConfigError, match="twice"):
        SweepSpec((parse_param("lr=0.1"), parse_param("lr=0.2")))


def test_sweep_figure_axes_and_missing_runs(tmp_path) -> None:
    """sweep_figure draws a PNG; values spanning a decade or more get a log x axis (a 0 among
    them is still placed), narrower spans a linear one; failed runs are left out, not plotted as
    zeros."""
    from normlab.plots import _is_log_scale, sweep_figure

    assert _is_log_scale([2, 8, 32, 128]) and _is_log_scale([0, 1e-5, 1e-4, 1e-3])
    assert not _is_log_scale([0.02, 0.05, 0.1]) and not _is_log_scale([16, 32])
    rows = [{"l1": l1, "variant": v, "seed": s, "status": "failed" if l1 == 1e-2 and s else "ok",
             "final_test_acc": None if l1 == 1e-2 and s else 99.0 - 1000 * l1 + 0.1 * s}
            for l1 in (0.0, 1e-4, 1e-3, 1e-2) for v in ("bn+l1",) for s in (0, 1)]
    path = sweep_figure(rows, "l1", [], tmp_path / "figures" / "sweep_l1.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


# ----------------------------------------------------------------------------------------------
# Sweep folders, through the command line


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(data folder, environment) for subprocess sweeps on synthetic data."""
    return synthetic_subprocess_env(tmp_path_factory.mktemp("sweep"), N_TRAIN, N_TEST,
                                    extra=INJECT_FAILURE)


def _normlab(env, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    _, environ = env
    return subprocess.run([sys.executable, "-m", "normlab", *args], env=environ,
                          capture_output=True, text=True, timeout=timeout)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def local_sweep(env, tmp_path_factory):
    folder, _ = env
    out = tmp_path_factory.mktemp("local") / "sweep"
    r = _normlab(env, SWEEP + ["--data-dir", str(folder), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return out


def test_sweep_folder(local_sweep) -> None:
    """A sweep writes sweep.json, sweep.csv with one row per variant x value x seed (the swept
    value, status, final/best accuracy and loss), one study folder per point, the figure
    sweep_batch_size.png and report.md with the table and findings."""
    out = local_sweep
    rows = _rows(out / "sweep.csv")
    assert list(rows[0]) == ["batch_size", "variant", "seed", "status", "final_test_acc",
                             "best_test_acc", "final_test_loss", "message"]
    assert sorted((r["batch_size"], r["variant"], r["seed"]) for r in rows) == sorted(
        (b, v, s) for b in ("16", "32") for v in ("gn", "bn") for s in ("0", "1"))
    assert all(r["status"] == "ok" and 0 <= float(r["final_test_acc"]) <= 100 for r in rows)
    for b in (16, 32):
        point = out / "points" / f"batch_size={b}"
        summary = json.loads((point / "summary.json").read_text())
        assert json.loads((point / "config.json").read_text())["batch_size"] == b
        for r in rows:
            if r["batch_size"] == str(b):
                vals = summary["variants"][r["variant"]]["final_test_acc"]["values"]
                assert float(r["final_test_acc"]) == vals[int(r["seed"])]
    assert (out / "figures" / "sweep_batch_size.png").stat().st_size > 10_000
    report = (out / "report.md").read_text()
    assert "## Findings" in report and "figures/sweep_batch_size.png" in report
    assert "Welch's p = " in report and "p = p" not in report
    assert "| 16 | `gn` | 2/2 |" in report
    saved = json.loads((out / "sweep.json").read_text())
    assert saved["params"] == [{"name": "batch_size", "values": [16, 32]}]


def test_same_command_again_skips_finished_and_redoes_unfinished(env, local_sweep, tmp_path) -> None:
    """Running the same command on a finished sweep trains nothing and rewrites the same
    sweep.csv; after a point is made unfinished (its summary deleted, one run's training state
    gone), the same command redoes just that and ends with the same results."""
    folder, _ = env
    out = tmp_path / "sweep"
    shutil.copytree(local_sweep, out)
    point = out / "points" / "batch_size=16"
    stamp = (point / "timing.csv").read_bytes()
    r = _normlab(env, SWEEP + ["--data-dir", str(folder), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert "done before, skipped" in r.stdout
    assert (point / "timing.csv").read_bytes() == stamp          # not retrained
    assert (out / "sweep.csv").read_bytes() == (local_sweep / "sweep.csv").read_bytes()
    (point / "summary.json").unlink()
    (point / "checkpoints" / "group-0.pt").unlink()              # gn seed 0: start over
    r = _normlab(env, SWEEP + ["--data-dir", str(folder), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    assert (out / "sweep.csv").read_bytes() == (local_sweep / "sweep.csv").read_bytes()
    assert (point / "metrics.csv").read_bytes() == \
        (local_sweep / "points" / "batch_size=16" / "metrics.csv").read_bytes()


def test_grid_of_two_params_draws_one_figure_per_param(env, tmp_path) -> None:
    """Two --param flags sweep every combination and draw sweep_<param>.png for each."""
    folder, _ = env
    out = tmp_path / "grid"
    r = _normlab(env, ["sweep", "--variants", "bn+l1", "--param", "l1=0,1e-3", "--param",
                       "lr=0.02,0.05", "--epochs", "1", "--data-dir", str(folder), "--out",
                       str(out), "--quiet"])
    assert r.returncode == 0, r.stderr
    rows = _rows(out / "sweep.csv")
    assert sorted((x["l1"], x["lr"]) for x in rows) == [("0.0", "0.02"), ("0.0", "0.05"),
                                                       ("0.001", "0.02"), ("0.001", "0.05")]
    for p in ("l1", "lr"):
        assert (out / "figures" / f"sweep_{p}.png").is_file()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--param", "dropout=0.1"], "cannot be swept"),
    (["--param", "batch_size=1,16", "--variants", "bn"], "batch_size=1: --batch-size 1"),
    ([], "give at least one --param"),
    (["--param", "lr=0.1", "--backend", "spark"], "--backend"),
])
def test_bad_sweep_input_exits_2_with_one_line(env, tmp_path, args, fragment) -> None:
    """Bad sweep input exits 2 with one 'normlab: error:' line naming the problem, and leaves no
    sweep folder behind."""
    folder, _ = env
    out = tmp_path / "bad"
    r = _normlab(env, ["sweep", "--epochs", "1", "--data-dir", str(folder), "--out", str(out),
                       "--quiet"] + args)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("normlab: error:") and fragment in lines[0]
    assert not out.exists()


def test_sweep_resume_uses_the_saved_sweep(env, local_sweep, tmp_path) -> None:
    """`normlab sweep --resume DIR` continues the sweep saved in DIR (here: finished, so nothing
    is retrained and sweep.csv stays the same); adding a --param to it is refused."""
    out = tmp_path / "copy"
    shutil.copytree(local_sweep, out)
    r = _normlab(env, ["sweep", "--resume", str(out), "--quiet"])
    assert r.returncode == 0, r.stderr
    assert (out / "sweep.csv").read_bytes() == (local_sweep / "sweep.csv").read_bytes()
    r = _normlab(env, ["sweep", "--resume", str(out), "--param", "lr=0.1"])
    assert r.returncode == 2 and "--resume uses the saved sweep" in r.stderr


def test_a_different_sweep_in_the_same_folder_is_refused(env, local_sweep) -> None:
    """Another sweep into an existing sweep folder exits 2, naming what differs; nothing there
    changes."""
    folder, _ = env
    before = (local_sweep / "sweep.csv").read_bytes()
    args = [a if a != "batch_size=16,32" else "batch_size=16,64" for a in SWEEP]
    r = _normlab(env, args + ["--data-dir", str(folder), "--out", str(local_sweep)])
    assert r.returncode == 2 and "holds a different sweep" in r.stderr
    assert "params" in r.stderr
    assert (local_sweep / "sweep.csv").read_bytes() == before


# ----------------------------------------------------------------------------------------------
# Ray


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_backend_on_a_loopback_head_node_matches_local(env, local_sweep, tmp_path) -> None:
    """A real Ray head node on loopback (ray start --head --num-cpus 2), the same sweep through
    --backend ray --ray-address: every run is a Ray task, and the sweep folder holds the same
    metrics as --backend local (sweep.csv and each point's metrics.csv and summary.json)."""
    pytest.importorskip("ray")
    folder, environ = env
    ray_bin = Path(sys.executable).with_name("ray")
    if not ray_bin.exists():
        pytest.skip("the ray command is not installed next to this Python")
    import tempfile

    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="nlray-", dir="/tmp"))  # Ray's socket paths must be short
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    environ = dict(environ, NORMLAB_TEST_ATTEMPTS=str(attempts))
    start = subprocess.run(
        [str(ray_bin), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
         "--temp-dir", str(temp)],
        env=environ, capture_output=True, text=True, timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    try:
        out = tmp_path / "ray-sweep"
        r = _normlab(env, SWEEP + ["--data-dir", str(folder), "--out", str(out), "--backend",
                                   "ray", "--ray-address", f"127.0.0.1:{port}"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert "ray: 8 run(s) submitted" in r.stdout
        # A task that keeps failing is retried --retries times, then recorded as failed with its
        # error; the sweep finishes the other runs and exits 0.
        failing = tmp_path / "ray-failing"
        r = _normlab(env, ["sweep", "--variants", "gn", "--param", "batch_size=16", "--seeds",
                           "2", "--epochs", "1", "--rotate", "7.5", "--retries", "1",
                           "--data-dir", str(folder), "--out", str(failing), "--backend", "ray",
                           "--ray-address", f"127.0.0.1:{port}", "--quiet"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(list(attempts.iterdir())) == 2          # the first try and one retry
        rows = {x["seed"]: x for x in _rows(failing / "sweep.csv")}
        assert rows["0"]["status"] == "ok" and float(rows["0"]["final_test_acc"]) >= 0
        assert rows["1"]["status"] == "failed" and "injected failure" in rows["1"]["message"]
        assert "run the same command again" in (failing / "report.md").read_text()
    finally:
        subprocess.run([str(ray_bin), "stop", "--force"], env=environ, capture_output=True,
                       timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert _rows(out / "sweep.csv") == _rows(local_sweep / "sweep.csv")
    for b in (16, 32):
        for name in ("metrics.csv", "summary.json"):
            got = (out / "points" / f"batch_size={b}" / name).read_bytes()
            assert got == (local_sweep / "points" / f"batch_size={b}" / name).read_bytes(), name
    assert (out / "figures" / "sweep_batch_size.png").is_file() and (out / "report.md").is_file()


def test_ray_backend_unreachable_cluster_is_one_line(env, tmp_path) -> None:
    """--ray-address pointing at nothing exits 2 with one line that says how to fix it."""
    pytest.importorskip("ray")
    folder, _ = env
    r = _normlab(env, ["sweep", "--param", "lr=0.05", "--epochs", "1", "--data-dir", str(folder),
                       "--out", str(tmp_path / "x"), "--backend", "ray", "--ray-address",
                       f"127.0.0.1:{_free_port()}", "--quiet"], timeout=300)
    lines = [x for x in r.stderr.splitlines() if x.strip() and "normlab" in x]
    assert r.returncode == 2, r.stderr
    assert lines and "ray start --head" in lines[-1]
