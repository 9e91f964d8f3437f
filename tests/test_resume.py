"""Interrupted studies resume exactly: SIGKILL at many moments, Ctrl-C, config changes, and
checkpoints that are damaged or carry arbitrary pickled objects.

Studies run as real subprocesses (``python -m normlab``, with a synthetic MNIST-format dataset
registered by helpers.synthetic_subprocess_env), so that they can be killed.
"""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import synthetic_subprocess_env

N_TRAIN, N_TEST = 640, 100
STUDY = ["study", "--variants", "gn,bn+l1", "--seeds", "2", "--epochs", "4", "--batch-size", "32",
         "--workers", "2", "--quiet"]

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """(data folder, environment) for subprocess studies on synthetic data."""
    return synthetic_subprocess_env(tmp_path_factory.mktemp("resume"), N_TRAIN, N_TEST)


def _start(env, args: list[str]) -> subprocess.Popen:
    _, environ = env
    return subprocess.Popen([sys.executable, "-m", "normlab", *args], env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(env, args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    _, environ = env
    return subprocess.run([sys.executable, "-m", "normlab", *args], env=environ,
                          capture_output=True, text=True, timeout=timeout)


def _checkpointed(out: Path) -> bool:
    """The study in ``out`` has saved a training state (finished an epoch)."""
    return (out / "checkpoints").is_dir() and any((out / "checkpoints").glob("group-*.pt"))


@pytest.fixture(scope="module")
def reference(env, tmp_path_factory):
    """An uninterrupted study: the result every resumed study must reproduce."""
    folder, _ = env
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _run(env, STUDY + ["--data-dir", str(folder), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return out


def _check_every_file_parses(run_dir: Path) -> None:
    """Every file in the run folder (not a writer's temporary file) is complete: JSON loads, CSVs
    have rectangular rows under a header, checkpoints load with weights_only=True."""
    for path in run_dir.rglob("*"):
        if path.is_dir() or path.name.startswith("."):
            continue
        if path.suffix == ".json":
            assert isinstance(json.loads(path.read_text()), dict), path
        elif path.suffix == ".csv":
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            assert rows and all(len(r) == len(rows[0]) for r in rows), path
        elif path.suffix == ".pt":
            assert isinstance(torch.load(path, map_location="cpu", weights_only=True), dict), path


def _same_results(a: Path, b: Path) -> None:
    for name in ("metrics.csv", "summary.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    preds = sorted(p.name for p in (a / "predictions").iterdir())
    assert preds == sorted(p.name for p in (b / "predictions").iterdir()) and preds
    for name in preds:
        assert (a / "predictions" / name).read_bytes() == (b / "predictions" / name).read_bytes()


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


def test_sigkill_at_many_moments_then_resume_gives_the_uninterrupted_result(env, reference,
                                                                           tmp_path) -> None:
    """A study killed with SIGKILL six times (during epochs, and the moment a file is being
    written), then resumed each time, ends with metrics.csv, summary.json and predictions
    byte-identical to an uninterrupted study; after every kill every file in the folder parses,
    and resuming removes the writers' leftover temporary files."""
    folder, _ = env
    out = tmp_path / "run"
    args = STUDY + ["--data-dir", str(folder)]

    def first_checkpoint() -> bool:
        return _checkpointed(out)

    def writing() -> bool:  # a temporary file of an atomic write exists right now
        return out.is_dir() and any(out.rglob(".*.tmp"))

    # (when to kill, extra delay): after training began, at varied depths into an epoch, and
    # at the very moment a file is being written.
    moments = [(first_checkpoint, 0.0), (first_checkpoint, 0.35), (writing, 0.0),
               (first_checkpoint, 0.8), (writing, 0.0), (first_checkpoint, 0.15)]
    kills = 0
    for k, (when, delay) in enumerate(moments):
        proc = _start(env, args + (["--out", str(out)] if k == 0 else ["--resume", str(out)]))
        try:
            if _wait_for(when, proc):
                time.sleep(delay)
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        _check_every_file_parses(out)
    assert kills >= 5, f"only {kills} kills landed before the study finished"
    r = _run(env, args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert not list(out.rglob(".*.tmp"))
    _same_results(out, reference)


def test_ctrl_c_saves_and_says_how_to_resume(env, reference, tmp_path) -> None:
    """SIGINT stops the study cleanly: exit code 130, a message naming the resume command, every
    file parses; resuming then gives the uninterrupted result."""
    folder, _ = env
    out = tmp_path / "run"
    args = STUDY + ["--data-dir", str(folder)]
    proc = _start(env, args + ["--out", str(out)])
    try:
        assert _wait_for(lambda: _checkpointed(out), proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert f"normlab study --resume {out}" in stdout + stderr
    assert "Traceback" not in stderr
    _check_every_file_parses(out)
    assert not (out / "summary.json").exists()
    r = _run(env, args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    _same_results(out, reference)


def test_resume_of_a_finished_study_changes_nothing(env, reference, tmp_path) -> None:
    """Resuming a study that already finished trains nothing and rewrites the same results."""
    import shutil

    folder, _ = env
    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    r = _run(env, STUDY + ["--data-dir", str(folder), "--resume", str(out)])
    assert r.returncode == 0, r.stderr
    _same_results(out, reference)


def test_resume_with_a_different_config_is_refused(env, reference) -> None:
    """--resume with a flag that differs from the saved config exits 2 with one line that names
    the setting, its saved value and the asked-for value; nothing in the folder changes."""
    folder, _ = env
    before = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    r = _run(env, STUDY[:-3] + ["--epochs", "5", "--quiet", "--data-dir", str(folder),
                                "--resume", str(reference)])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("normlab: error: cannot resume")
    assert "epochs: saved 4, now 5" in lines[0]
    assert {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()} == before


def _pickled_object_checkpoint(path: Path) -> None:
    # A checkpoint that unpickles an arbitrary object (here a harmless one, a Fraction): exactly
    # what torch.load(weights_only=True) must refuse, as such objects can run code when loaded.
    from fractions import Fraction

    torch.save({"version": 1, "state": Fraction(1, 3)}, path)


@pytest.mark.parametrize("damage", ["pickled-object", "truncated", "garbage"])
def test_resume_refuses_a_hostile_or_damaged_checkpoint(env, reference, tmp_path, damage) -> None:
    """A group checkpoint that carries arbitrary pickled objects is refused (weights_only=True),
    and a truncated or garbage one is reported as damaged: exit 2, one line naming the file and
    the fix."""
    import shutil

    folder, _ = env
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "summary.json").unlink()
    target = out / "checkpoints" / "group-0.pt"
    if damage == "pickled-object":
        _pickled_object_checkpoint(target)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    else:
        target.write_bytes(b"not a checkpoint at all")
    r = _run(env, STUDY + ["--data-dir", str(folder), "--resume", str(out)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "group-0.pt" in lines[0], lines
    assert ("refused" if damage == "pickled-object" else "damaged") in lines[0]
    assert "delete it" in lines[0]


def test_resume_refuses_a_folder_from_another_version(env, reference, tmp_path) -> None:
    """A run folder whose config.json was written by another normlab version is refused with the
    two versions named."""
    import shutil

    folder, _ = env
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["resolved"]["normlab_version"] = "0.0.1"
    (out / "config.json").write_text(json.dumps(cfg))
    r = _run(env, STUDY + ["--data-dir", str(folder), "--resume", str(out)])
    assert r.returncode == 2
    assert "normlab 0.0.1" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_resume_on_another_kind_of_device_is_refused(env, reference, tmp_path) -> None:
    """A study whose config.json says it trained on another kind of device (here: cuda) is not
    continued on this one: exit 2 with one line naming both devices."""
    import shutil

    folder, _ = env
    out = tmp_path / "run"
    shutil.copytree(reference, out)
    (out / "summary.json").unlink()
    cfg = json.loads((out / "config.json").read_text())
    cfg["resolved"]["device"] = "cuda:0"
    (out / "config.json").write_text(json.dumps(cfg))
    r = _run(env, STUDY + ["--data-dir", str(folder), "--resume", str(out)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "trained on cuda:0" in lines[0] and "cpu" in lines[0]


def test_a_folder_in_use_is_refused(env, tmp_path) -> None:
    """While a study trains in a folder, a second process resuming the same folder exits 2 with
    one line saying the folder is in use, and does not disturb the first; after a kill the lock
    is gone with the process and --resume works."""
    folder, _ = env
    out = tmp_path / "run"
    args = STUDY + ["--data-dir", str(folder)]
    proc = _start(env, args + ["--out", str(out)])
    try:
        assert _wait_for(lambda: _checkpointed(out), proc)
        second = _run(env, args + ["--resume", str(out)])
        alive = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    if alive:   # the first study was still training when the second one started
        lines = second.stderr.strip().splitlines()
        assert second.returncode == 2 and len(lines) == 1 and "in use" in lines[0], second.stderr
    r = _run(env, args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert not (out / ".normlab.lock").exists()


def test_folder_lock_excludes_a_second_holder(tmp_path) -> None:
    """folder_lock: a second holder of the same folder gets a ConfigError saying it is in use;
    after the first releases, the lock can be taken again and leaves no file behind."""
    from normlab.errors import ConfigError
    from normlab.store import folder_lock

    with folder_lock(tmp_path):
        with pytest.raises(ConfigError, match="in use by another normlab process"):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):
        pass
    assert not (tmp_path / ".normlab.lock").exists()
