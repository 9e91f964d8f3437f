"""The run folder and the sweep folder, owned here alone: names, columns, writers, readers, lock.

:mod:`normlab.runfolder.folder` lays out a run folder's files and writes them (atomically),
:mod:`normlab.runfolder.sweepfolder` a sweep folder's;
:mod:`normlab.runfolder.checks` reads a finished folder back and checks it file by file;
:mod:`normlab.runfolder.timing` keeps timing.json over a study's sessions. Every
other part of normlab (and its tests) goes through the names exported here.
"""

from normlab.runfolder.results import Predictions, RunResult, summarize
from normlab.runfolder.checks import (RunData, is_number, load_diagnostics, load_run, load_summary,
                                      load_test_images, read_predictions)
from normlab.runfolder.folder import (BATCH_STAT_COLUMNS, DIAGNOSTIC_COLUMNS, MECHANISM_COLUMNS, FIGURES, PROBE_SIZE, METRIC_COLUMNS, PREDICTION_COLUMNS, REBUILD,
                                      STAT_KEYS, STATUSES, SWEEP_COLUMNS, TIMING_COLUMNS,
                                      VAL_STAT_KEYS, WEIGHT_COLUMNS, WEIGHT_THRESHOLDS,
                                      RunFolder, check_version, figure_files,
                                      run_name, six_digits)
from normlab.runfolder.sweepfolder import SweepFolder
from normlab.runfolder.timing import SessionClock, read_timing

__all__ = ["BATCH_STAT_COLUMNS", "DIAGNOSTIC_COLUMNS", "MECHANISM_COLUMNS", "FIGURES", "PROBE_SIZE", "figure_files", "load_diagnostics",
           "RunData", "is_number", "load_test_images", "load_run", "load_summary", "read_predictions",
           "METRIC_COLUMNS", "PREDICTION_COLUMNS", "REBUILD", "STAT_KEYS", "STATUSES",
           "SWEEP_COLUMNS", "TIMING_COLUMNS", "Predictions", "RunFolder", "RunResult", "check_version",
           "SessionClock", "read_timing",
           "SweepFolder", "run_name", "six_digits", "summarize", "VAL_STAT_KEYS",
           "WEIGHT_COLUMNS", "WEIGHT_THRESHOLDS"]
