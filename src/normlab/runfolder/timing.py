"""timing.json: a study's time, summed over every session that trained it.

A session's time runs from its start (data loading included) to the end of its training
(``train_seconds``) and on to its report written (``wall_seconds``, null until then). A resumed
study adds the time of its earlier sessions, which they leave in timing.json: while a study
trains, the record is rewritten after every saved epoch, and on Ctrl-C at the interrupt, so a
session that is stopped, or crashes or is killed after saving epochs, leaves its time up to then
(a killed session's time after its last saved epoch is lost, like the work it did). Where earlier
sessions saved epochs but left no record (a kill before the first one, a folder from an older
normlab), ``last_session_only`` (written only then) says that the time is the last session's
alone, and the report says so. ``peak_rss_mb`` is the driver process's peak resident memory;
worker processes (:mod:`normlab.epoch_process`) share its pages copy-on-write and add their own
working memory, which it leaves out.
"""

from __future__ import annotations

import time
from pathlib import Path

from normlab.envinfo import peak_rss_mb
from normlab.errors import RunFolderError
from normlab.store import read_json_object, write_json


def read_timing(path: Path) -> dict:
    """The recorded train_seconds and wall_seconds of a timing.json (each where it is a number),
    and last_session_only where it is true; {} when the file is missing or unreadable."""
    try:
        saved = read_json_object(path, "")
    except RunFolderError:
        return {}
    out = {k: float(saved[k]) for k in ("train_seconds", "wall_seconds")
           if isinstance(saved.get(k), (int, float))}
    return out | ({"last_session_only": True} if saved.get("last_session_only") is True else {})


class SessionClock:
    """One session of a study, timed from ``t_start`` (a ``time.perf_counter()`` reading) and
    added to the earlier sessions recorded in ``path`` (timing.json) when ``resumed``.
    ``trained_before``: earlier sessions saved epochs (their time is unknown if unrecorded)."""

    def __init__(self, path: Path, t_start: float, resumed: bool, workers: int, threads: int,
                 trained_before: bool = False):
        self.path, self.t_start, self.resumed = path, t_start, resumed
        self.workers, self.threads = workers, threads
        self.before = read_timing(path) if resumed else {}
        self.last_session_only = bool(self.before.get("last_session_only")) or (
            trained_before and "train_seconds" not in self.before)

    def record(self) -> dict:
        """timing.json as of now: train_seconds of every session so far, wall_seconds null."""
        return {"train_seconds": self.before.get("train_seconds", 0.0) + self.seconds(),
                "wall_seconds": None, "workers": self.workers, "threads_per_worker": self.threads,
                "resumed": self.resumed, "peak_rss_mb": peak_rss_mb()} | (
                    {"last_session_only": True} if self.last_session_only else {})

    def save(self, trained: dict | None = None) -> dict:
        """Write timing.json and return it: :meth:`record`, or the record ``trained`` saved when
        the training ended, completed with the wall time and peak memory now."""
        record = self.record() if trained is None else {
            **trained, "wall_seconds": self.wall_seconds(), "peak_rss_mb": peak_rss_mb()}
        write_json(self.path, record)
        return record

    def seconds(self) -> float:
        """This session's seconds so far."""
        return time.perf_counter() - self.t_start

    def wall_seconds(self) -> float:
        """Every session's wall time so far: an earlier session that recorded no wall time (it
        stopped before its report) counts its training time."""
        earlier = self.before.get("wall_seconds", self.before.get("train_seconds", 0.0))
        return earlier + self.seconds()
