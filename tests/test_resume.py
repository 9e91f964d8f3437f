"""Interrupted studies resume exactly: SIGKILL at many moments, Ctrl-C, config changes, and
checkpoints that are damaged or carry arbitrary pickled objects; a run folder is used by one
process at a time.

Studies run as real subprocesses (``python -m normlab``, with a synthetic MNIST-format dataset:
conftest's ``synthetic_subprocess``), so that they can be killed. Every path of a run folder comes
from :class:`normlab.runfolder.RunFolder`.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from normlab import __version__
from normlab.config import Config
from normlab.runfolder import RunFolder

N_TRAIN, N_TEST = 640, 100
STUDY = ["study", "--variants", "gn,bn+l1", "--seeds", "2", "--epochs", "4", "--batch-size", "32",
         "--workers", "2", "--quiet"]
# (variant name, seed) of every run of STUDY, in the study's order
RUNS = [(v.name, s) for v in Config(variants=("gn", "bn+l1")).parsed_variants() for s in (0, 1)]


# Run inside every subprocess (see conftest's synthetic_subprocess): where $NORMLAB_TEST_GATE is
# set, loading the dataset waits until that file exists (at most 300 s). A study locks its folder
# before it loads the data and writes config.json after, so the lock test can hold a study in that
# window for as long as it probes it. $NORMLAB_TEST_HOLD holds a study after its first epochs.
GATE_AT_DATA_LOADING = """
    import time
    _load_split = data.load_split

    def _gated_load_split(*args, **kwargs):
        gate = os.environ.get("NORMLAB_TEST_GATE")
        end = time.monotonic() + 300
        while gate and not os.path.exists(gate) and time.monotonic() < end:
            time.sleep(0.01)
        return _load_split(*args, **kwargs)

    data.load_split = _gated_load_split

    # Where $NORMLAB_TEST_HOLD is set, every group waits before its second epoch (at most 300 s):
    # the study has saved an epoch and cannot finish, so a test can stop it there without racing
    # it to the end. The wait reports progress as a step does, so a Ctrl-C still stops it.
    from normlab import train
    _train_epoch = train.GroupTrainer.train_epoch

    def _held_train_epoch(self, on_step=None):
        end = time.monotonic() + 300
        while self.epoch >= 1 and os.environ.get("NORMLAB_TEST_HOLD") and time.monotonic() < end:
            if on_step is not None:
                on_step(0, 0.0)
            time.sleep(0.01)
        return _train_epoch(self, on_step)

    train.GroupTrainer.train_epoch = _held_train_epoch

    # Ctrl-C as a terminal delivers it: a test run started in the background (a non-interactive
    # shell's "cmd &") hands its children SIGINT ignored, and Python then installs no
    # KeyboardInterrupt handler at all.
    import signal
    signal.signal(signal.SIGINT, signal.default_int_handler)
"""


@pytest.fixture(scope="module")
def normlab(synthetic_subprocess):
    """`python -m normlab` processes on synthetic data (conftest's NormlabSubprocess; its
    ``data`` is the dataset's folder), with GATE_AT_DATA_LOADING."""
    return synthetic_subprocess(N_TRAIN, N_TEST, extra=GATE_AT_DATA_LOADING)


def _checkpointed(out: Path) -> bool:
    """The study in ``out`` has saved a training state (finished an epoch of some group)."""
    f = RunFolder(out)
    return any(f.group_state(k).exists() for k in range(len(RUNS)))


@pytest.fixture(scope="module")
def reference(normlab, tmp_path_factory):
    """An uninterrupted study: the result every resumed study must reproduce."""
    out = tmp_path_factory.mktemp("ref") / "run"
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--out", str(out)])
    assert r.returncode == 0, r.stderr
    return out


def _file_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (by its relative path) and its bytes: to show nothing changed."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _check_every_file_parses(run_dir: Path) -> None:
    """Every file in the run folder (not a writer's temporary file, not the lock file) is
    complete: JSON loads, CSVs have rectangular rows under a header, checkpoints load with
    weights_only=True."""
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
    """metrics.csv, diagnostics.csv, summary.json and every run's predictions are byte-identical
    in the run folders ``a`` and ``b``, and neither holds predictions of any other run."""
    fa, fb = RunFolder(a), RunFolder(b)
    for pa, pb in ((fa.metrics, fb.metrics), (fa.diagnostics, fb.diagnostics),
                   (fa.summary, fb.summary)):
        assert pa.read_bytes() == pb.read_bytes(), pa.name
    for f in (fa, fb):
        expected = sorted(f.predictions(v, s) for v, s in RUNS)
        assert sorted(f.predictions(*RUNS[0]).parent.iterdir()) == expected
    for v, s in RUNS:
        assert fa.predictions(v, s).read_bytes() == fb.predictions(v, s).read_bytes(), (v, s)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.002)
    return False


def test_sigkill_at_many_moments_then_resume_gives_the_uninterrupted_result(normlab, reference,
                                                                           tmp_path) -> None:
    """A study killed with SIGKILL six times (during epochs, and the moment a file is being
    written), then resumed each time, ends with metrics.csv, summary.json and predictions
    byte-identical to an uninterrupted study; after every kill every file in the folder parses,
    and resuming removes the writers' leftover temporary files."""
    out = tmp_path / "run"
    args = STUDY + ["--data-dir", str(normlab.data)]
    session_start = 0

    def saved_an_epoch() -> bool:   # this session (not an earlier one) saved a training state
        states = (RunFolder(out).group_state(k) for k in range(len(RUNS)))
        return any(p.exists() and p.stat().st_mtime_ns > session_start for p in states)

    def writing() -> bool:  # a temporary file of an atomic write exists right now
        return out.is_dir() and any(out.rglob(".*.tmp"))

    # (when to kill, extra delay): once the session has trained an epoch, at varied depths into
    # the next, and at the very moment a file is being written.
    moments = [(saved_an_epoch, 0.0), (saved_an_epoch, 0.1), (writing, 0.0),
               (saved_an_epoch, 0.2), (writing, 0.0), (saved_an_epoch, 0.05)]
    kills = 0
    for k, (when, delay) in enumerate(moments):
        session_start = time.time_ns()
        proc = normlab.start(args + (["--out", str(out)] if k == 0 else ["--resume", str(out)]))
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
    r = normlab.run(args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert not list(out.rglob(".*.tmp"))
    _same_results(out, reference)


def test_ctrl_c_saves_and_says_how_to_resume(normlab, reference, tmp_path) -> None:
    """SIGINT stops the study cleanly: exit code 130, a message naming the resume command, every
    file parses, no summary.json; resuming (its header says it continues) then gives the
    uninterrupted result."""
    out = tmp_path / "run"
    args = STUDY + ["--data-dir", str(normlab.data)]
    proc = normlab.with_env(NORMLAB_TEST_HOLD="1").start(args + ["--out", str(out)])
    try:
        assert _wait_for(lambda: _checkpointed(out), proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert f"normlab: interrupted: every run is saved up to its last finished epoch; continue " \
        f"with 'normlab study --resume {out}'" in stderr.splitlines(), stderr
    assert "Traceback" not in stderr
    _check_every_file_parses(out)
    assert not RunFolder(out).summary.exists()
    assert f"out {out}\n" in stdout   # a new study's header ...
    r = normlab.run(args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert f"out {out} (continuing)\n" in r.stdout   # ... and a resumed one's
    _same_results(out, reference)


def _longest_run_seconds(folder: RunFolder) -> float:
    """The most seconds timing.csv records for one run, over all its saved epochs: a run's epochs
    ran one after another, within the sessions that trained it, so the study took at least that."""
    with open(folder.timing_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    runs: dict[tuple[str, str], float] = {}
    for row in rows:
        key = (row["variant"], row["seed"])
        runs[key] = runs.get(key, 0.0) + float(row["seconds"])
    return max(runs.values(), default=0.0)


def _training_time_line(folder: RunFolder) -> str:
    return next(line for line in folder.report.read_text().splitlines()
                if "**Training time:**" in line)


def _stop_study(normlab, out: Path, args: list[str], until, sig: int) -> int:
    """Start the study ``args`` into ``out``, send it ``sig`` once ``until()`` holds; its exit code."""
    proc = normlab.start(args + ["--out", str(out)])
    try:
        assert _wait_for(until, proc), "the study never reached the point to stop it"
        proc.send_signal(sig)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode


def _resume_adds_its_time(normlab, args: list[str], out: Path, first: dict) -> dict:
    """Resume the study ``args`` in ``out``; check that its train_seconds is ``first``'s plus at
    most the resume's lifetime, and more than ``first``'s; its final timing.json."""
    t0 = time.monotonic()
    r = normlab.run(args + ["--resume", str(out)])
    lifetime = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    final = json.loads(RunFolder(out).timing_json.read_text())
    assert first["train_seconds"] < final["train_seconds"] <= first["train_seconds"] + lifetime
    return final


def test_ctrl_c_then_resume_counts_the_time_of_both_sessions(normlab, reference,
                                                            tmp_path) -> None:
    """A study stopped with Ctrl-C after saving epochs leaves timing.json holding its time so far
    (train_seconds at least the longest run's saved epoch seconds; wall_seconds null, so it is
    not finished). The resumed study's train_seconds is that time plus its own session's (more
    than the first, at most the first plus the resume process's lifetime), covers every epoch
    timing.csv records, and is not marked as the last session's only; the results are those of
    the uninterrupted study."""
    out = tmp_path / "run"
    f = RunFolder(out)
    args = STUDY + ["--data-dir", str(normlab.data)]
    held = normlab.with_env(NORMLAB_TEST_HOLD="1")   # it cannot finish before the Ctrl-C
    assert _stop_study(held, out, args, lambda: _checkpointed(out), signal.SIGINT) == 130
    assert f.timing_json.exists(), "the interrupted session left no record of its time"
    first = json.loads(f.timing_json.read_text())
    assert first["wall_seconds"] is None and not f.finished
    assert first["train_seconds"] >= _longest_run_seconds(f) > 0
    final = _resume_adds_its_time(normlab, args, out, first)
    assert final["train_seconds"] >= _longest_run_seconds(f)
    assert final["wall_seconds"] >= final["train_seconds"] and final["resumed"] is True
    assert "last_session_only" not in final and "last session" not in _training_time_line(f)
    _same_results(out, reference)


def test_a_killed_study_leaves_its_time_for_the_resume(normlab, tmp_path) -> None:
    """A study killed (SIGKILL) while it trains, after saving epochs, has left timing.json with
    its time up to its last saved epoch (before any summary.json, wall_seconds null); the resume
    adds its own session's time to it."""
    out = tmp_path / "run"
    f = RunFolder(out)
    args = STUDY + ["--data-dir", str(normlab.data)]
    # Held after its first epochs, the study cannot finish between the check and the kill.
    _stop_study(normlab.with_env(NORMLAB_TEST_HOLD="1"), out, args,
                lambda: f.timing_json.exists() and not f.summary.exists(), signal.SIGKILL)
    first = json.loads(f.timing_json.read_text())
    assert first["train_seconds"] > 0 and first["wall_seconds"] is None
    _resume_adds_its_time(normlab, args, out, first)


def test_resume_without_a_time_record_says_it_covers_the_last_session(normlab, reference,
                                                                      tmp_path) -> None:
    """Where earlier sessions saved epochs but left no time record (here removed, like a folder
    an older normlab left interrupted), the resumed study's timing.json has last_session_only
    true and its report's training time says it covers only the last session; an uninterrupted
    study's says neither."""
    out = tmp_path / "run"
    f = RunFolder(out)
    args = STUDY + ["--data-dir", str(normlab.data)]
    _stop_study(normlab.with_env(NORMLAB_TEST_HOLD="1"), out, args, lambda: _checkpointed(out),
                signal.SIGKILL)
    f.timing_json.unlink(missing_ok=True)
    r = normlab.run(args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert json.loads(f.timing_json.read_text()).get("last_session_only") is True
    assert "last session" in _training_time_line(f)
    ref = RunFolder(reference)
    assert "last_session_only" not in json.loads(ref.timing_json.read_text())
    assert "last session" not in _training_time_line(ref)


def test_resume_of_a_finished_study_changes_nothing(normlab, reference, tmp_path) -> None:
    """Resuming a study that already finished, report included, trains nothing, says so and
    leaves every file as it was (its timing too: no seconds are added). One whose report was
    interrupted (timing.json without wall_seconds) writes the report and the same results. One
    whose metrics.csv is damaged is refused, naming that file (one line, exit 2)."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    before = _file_bytes(out)
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert "nothing to resume" in r.stdout and f"normlab report {out}" in r.stdout
    assert _file_bytes(out) == before
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out), "--format",
                             "png,pdf"])   # what was asked of the resume goes into the hint
    assert r.returncode == 0 and f"'normlab report {out} --format png,pdf" in r.stdout, r.stdout
    assert _file_bytes(out) == before
    folder = RunFolder(out)
    timing = json.loads(folder.timing_json.read_text())
    folder.timing_json.write_text(json.dumps({**timing, "wall_seconds": None}))
    folder.report.unlink()
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert "nothing to resume" not in r.stdout and folder.report.exists()
    _same_results(out, reference)
    # A finished folder whose table is damaged says so, instead of "nothing to resume" and a
    # hint at a report that would fail on that table.
    folder.metrics.write_text(folder.metrics.read_text()[:200])
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    err = r.stderr.strip()
    assert r.returncode == 2 and "nothing to resume" not in r.stdout, (r.stdout, err)
    assert folder.metrics.name in err and "\n" not in err, err


def test_resume_after_the_data_moved_takes_the_new_data_dir(normlab, reference, tmp_path) -> None:
    """A study whose data folder has moved since it started resumes with --data-dir pointing at
    the new place (the files are checked by checksum, so only where they lie changes) and gives
    the same results, its report's grids drawn from the data there; without it, one line names
    the missing folder. (The study here stopped while writing its report: timing.json without
    wall_seconds; a complete one has nothing to resume.)"""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(reference, out)
    folder = RunFolder(out)
    timing = json.loads(folder.timing_json.read_text())
    folder.timing_json.write_text(json.dumps({**timing, "wall_seconds": None}))
    saved = json.loads(folder.config.read_text())
    folder.config.write_text(json.dumps({**saved, "data_dir": str(tmp_path / "moved-away")}))
    r = normlab.run(STUDY + ["--resume", str(out)])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "moved-away" in lines[0], r.stderr
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    assert r.returncode == 0, r.stderr
    _same_results(out, reference)
    report = folder.report.read_text()   # its grids drawn from the test images there
    assert "were not made" not in report
    assert all(folder.misclassified_figure(v).relative_to(out).as_posix() in report
               for v in dict.fromkeys(v for v, _ in RUNS))


def test_resume_with_a_different_config_is_refused(normlab, reference) -> None:
    """--resume with a flag that differs from the saved config exits 2 with one line that names
    the setting, its saved value and the asked-for value; nothing in the folder changes."""
    before = _file_bytes(reference)
    r = normlab.run(STUDY[:-3] + ["--epochs", "5", "--quiet", "--data-dir", str(normlab.data),
                                  "--resume", str(reference)])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("normlab: error: cannot resume")
    assert "epochs: saved 4, now 5" in lines[0]
    assert _file_bytes(reference) == before


def _pickled_object_checkpoint(path: Path) -> None:
    # A checkpoint that unpickles an arbitrary object (here a harmless one, a Fraction): exactly
    # what torch.load(weights_only=True) must refuse, as such objects can run code when loaded.
    from fractions import Fraction

    torch.save({"version": 1, "state": Fraction(1, 3)}, path)


@pytest.mark.parametrize("damage", ["pickled-object", "truncated", "garbage"])
def test_resume_refuses_a_hostile_or_damaged_checkpoint(normlab, reference, tmp_path,
                                                        damage) -> None:
    """A group checkpoint that carries arbitrary pickled objects is refused (weights_only=True),
    and a truncated or garbage one is reported as damaged: exit 2, one line naming the file and
    the fix, and never torch's advice to load it with weights_only=False (the unsafe way)."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    f = RunFolder(out)
    f.summary.unlink()
    target = f.group_state(0)
    if damage == "pickled-object":
        _pickled_object_checkpoint(target)
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:200])
    else:
        target.write_bytes(b"not a checkpoint at all")
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0], lines
    assert ("refused" if damage == "pickled-object" else "damaged") in lines[0]
    assert "delete it" in lines[0] and "weights_only=False" not in lines[0].replace(
        "` set to `", "=").replace("`", "")


def test_resume_refuses_a_folder_from_another_version(normlab, reference, tmp_path) -> None:
    """A run folder whose config.json was written by another normlab version is not trained
    further: refused with the two versions named, in one line, and nothing changes. Finished,
    it has nothing to resume, and this version reports it."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    f = RunFolder(out)
    cfg = json.loads(f.config.read_text())
    cfg["resolved"]["normlab_version"] = "0.0.1"
    f.config.write_text(json.dumps(cfg))
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    assert r.returncode == 0 and "nothing to resume" in r.stdout, r.stderr
    r = normlab.run(["report", str(out)])
    assert r.returncode == 0 and f.report.exists(), r.stderr
    timing = json.loads(f.timing_json.read_text())   # stopped while writing its report
    f.timing_json.write_text(json.dumps({**timing, "wall_seconds": None}))
    before = _file_bytes(out)   # refused before the data are looked for (none at no-data)
    r = normlab.run(STUDY + ["--data-dir", str(tmp_path / "no-data"), "--resume", str(out)])
    assert r.returncode == 2
    assert f"normlab 0.0.1, this is {__version__}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and _file_bytes(out) == before


def test_resume_on_another_kind_of_device_is_refused(normlab, reference, tmp_path) -> None:
    """A study whose config.json says it trained on another kind of device (here: cuda) is not
    continued on this one: exit 2 with one line naming both devices."""
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    f = RunFolder(out)
    f.summary.unlink()
    cfg = json.loads(f.config.read_text())
    cfg["resolved"]["device"] = "cuda:0"
    f.config.write_text(json.dumps(cfg))
    r = normlab.run(STUDY + ["--data-dir", str(normlab.data), "--resume", str(out)])
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "trained on cuda:0" in lines[0] and "cpu" in lines[0]


# ----------------------------------------------------------------------------------------------
# One process at a time in a run folder


# The first study of the lock test: long enough (many epochs, one worker) that a second study
# can try its --resume many times while it runs. One torch thread each, so that the first study
# trains on one core and the second ones start on the other.
LONG_EPOCHS = 32   # about 9 refused attempts on a 2-core CPU, MIN_REFUSALS of them needed
LONG_STUDY = ["study", "--variants", "gn,bn+l1", "--seeds", "2", "--epochs", str(LONG_EPOCHS),
              "--batch-size", "32", "--workers", "1", "--quiet"]
MIN_REFUSALS = 5   # second studies that must be refused while the first holds the folder


def _flock_holders(path: Path) -> set[int]:
    """PIDs holding a flock on ``path``, read from /proc/locks (without touching the lock)."""
    st = path.stat()
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        # "1: FLOCK  ADVISORY  WRITE 10604 fe:00:2147995 0 EOF" (a waiter has "->" after "1:")
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            holders.add(int(fields[4]))
    return holders


def test_a_folder_in_use_is_refused_at_every_moment(normlab, tmp_path) -> None:
    """While study A runs in a folder, second studies (real processes) are refused.

    First, in the window between A taking the folder's lock and writing config.json (A is held
    there, at the start of its data loading, by GATE_AT_DATA_LOADING), when the folder holds
    nothing but the lock file: a new study into that folder (`--out`), which would take a folder
    holding only an unheld lock file as empty, exits 2 with the one line saying the folder is in
    use by another normlab process and how to proceed, and writes nothing there. Then A goes on,
    and `--resume`s of the folder are started back to back, the first as soon as A has written
    config.json (before A saved any training state) and the last ending at most one attempt
    before A lets go of the folder. Every one started and ended while A held the lock (checked in
    /proc/locks) exits 2 with that same line, and there are at least MIN_REFUSALS of them. A is
    not disturbed: it exits 0 with every run and epoch recorded. Afterwards the lock file is still
    there (never unlinked), nobody holds it, and a --resume is not refused: it exits 0 and changes
    no result."""
    if not Path("/proc/locks").is_file():
        pytest.skip("needs /proc/locks to see who holds the folder's lock")
    normlab = normlab.with_env(OMP_NUM_THREADS="1")
    out = tmp_path / "run"
    f = RunFolder(out)
    args = LONG_STUDY + ["--data-dir", str(normlab.data)]
    expected_line = (f"normlab: error: {out} is in use by another normlab process; wait for it to "
                     "finish or stop it, then try again")
    gate = tmp_path / "gate"   # A loads its data once this file exists
    a = normlab.with_env(NORMLAB_TEST_GATE=str(gate)).start(args + ["--out", str(out)])
    refused = []   # (seconds since A wrote config.json, A had saved a training state) per attempt
    try:
        # The window between taking the lock and writing config.json: A waits at the gate.
        assert _wait_for(lambda: f.lock_file.exists() and _flock_holders(f.lock_file) == {a.pid},
                         a), a.communicate(timeout=60)
        assert sorted(p.name for p in out.iterdir()) == [f.lock_file.name]
        b = normlab.run(args + ["--out", str(out)])
        lines = [x for x in b.stderr.splitlines() if x.strip()]
        assert b.returncode == 2 and lines == [expected_line], b.stderr
        assert a.poll() is None and _flock_holders(f.lock_file) == {a.pid}
        assert sorted(p.name for p in out.iterdir()) == [f.lock_file.name]   # B wrote nothing
        gate.touch()

        assert _wait_for(lambda: f.config.exists(), a), a.communicate(timeout=60)
        t0 = time.monotonic()
        assert _flock_holders(f.lock_file) == {a.pid}   # A locks before it writes config.json
        while True:
            launched, checkpointed = time.monotonic() - t0, _checkpointed(out)
            held_before = _flock_holders(f.lock_file) == {a.pid}
            b = normlab.run(args + ["--resume", str(out)])
            # A takes the lock once and lets go once: held before and after B means held
            # throughout B's life, so B must have been refused.
            held_after = a.poll() is None and _flock_holders(f.lock_file) == {a.pid}
            if not (held_before and held_after):
                break   # A let go while this B ran: its outcome says nothing about the lock
            lines = [x for x in b.stderr.splitlines() if x.strip()]
            assert b.returncode == 2 and lines == [expected_line], (len(refused), b.stderr)
            refused.append((launched, checkpointed))
        stdout, stderr = a.communicate(timeout=300)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
    assert a.returncode == 0, stderr
    assert len(refused) >= MIN_REFUSALS, f"only {len(refused)} attempts while A held the folder"
    assert not refused[0][1], "the first attempt came after A had saved a training state"
    assert any(checkpointed for _, checkpointed in refused), refused

    # A is complete: every run and epoch recorded, every file whole.
    _check_every_file_parses(out)
    with open(f.metrics, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["variant"], int(r["seed"]), int(r["epoch"])) for r in rows) == sorted(
        (v, s, e) for v, s in RUNS for e in range(1, LONG_EPOCHS + 1))
    summary = json.loads(f.summary.read_text())
    assert all(summary["variants"][v]["seeds"] == [0, 1] for v, _ in RUNS)

    # The lock file stays; nobody holds it; a resume is allowed and changes nothing.
    assert f.lock_file.is_file() and _flock_holders(f.lock_file) == set()
    before = {p: p.read_bytes() for p in (f.metrics, f.summary)}
    r = normlab.run(args + ["--resume", str(out)])
    assert r.returncode == 0, r.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert f.lock_file.is_file()


def test_folder_lock_excludes_a_second_holder(tmp_path) -> None:
    """RunFolder.lock: a second holder of the same folder gets a ConfigError saying it is in use
    by another normlab process; after the first releases, the lock can be taken again; the lock
    file stays in place throughout (it is never unlinked)."""
    from normlab.errors import ConfigError

    f = RunFolder(tmp_path)
    with f.lock():
        assert f.lock_file.is_file()
        with pytest.raises(ConfigError, match="in use by another normlab process"):
            with RunFolder(tmp_path).lock():
                pass
        assert f.lock_file.is_file()
    assert f.lock_file.is_file()
    with RunFolder(tmp_path).lock():
        with pytest.raises(ConfigError, match="in use by another normlab process"):
            with f.lock():
                pass
    assert f.lock_file.is_file()


def test_an_unused_folder_keeps_a_held_lock_file(tmp_path) -> None:
    """RunFolder.remove_if_unused (a study that failed before writing anything) does not unlink
    the lock file, nor remove the folder, while another holder has the lock: unlinking a held
    lock file would let a newcomer lock a fresh file beside the holder. Once nobody holds it, the
    empty folder is removed."""
    f = RunFolder(tmp_path / "run")
    f.create()
    with RunFolder(f.path).lock():
        RunFolder(f.path).remove_if_unused()
        assert f.lock_file.is_file()
    with f.lock():
        pass
    f.remove_if_unused()
    assert not f.path.exists()
