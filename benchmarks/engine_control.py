"""normlab 0.1.0's default study trained by 0.1.0's own engine, beside ``bench_train.py``'s
reference row and today's default study, in one run.

``bench_train.py``'s row ``study-0.1.0`` stands for "normlab 0.1.0's model and engine": it is
0.1.0's model and recipe rebuilt through ``ModelConfig`` (``timed_studies.Release010``) and
trained by *today's* engine. This script checks that stand-in against the real thing. It checks
out an earlier commit (``--commit``, by default the last one before this release's model work)
into a temporary ``git worktree`` and times three rows, each in a fresh Python process, R rounds
in an order that rotates from round to round (as ``bench_train.py``'s study rows):

* ``engine-<commit>``: that commit's ``normlab`` (first on ``PYTHONPATH``) training its own
  default study;
* ``study-0.1.0``: ``bench_train.py``'s stand-in, today's engine with 0.1.0's worker threads
  (no worker processes: ``Plan.processes`` off);
* ``normlab-study``: today's default study, diagnostics included.

Each process times ``study.train`` alone (every run of the study, its evaluations included; the
imports and the data loading are left out) and prints the final test accuracy of every run.
Left out with the imports: the first ``torch.optim`` optimizer of a process imports
``torch._dynamo`` (once per process, in either engine), so the process builds a throwaway
optimizer before the clock starts (its seconds are the row's ``import_seconds``, the median
over rounds; ``imports_warm``: ``torch._dynamo`` was loaded before the clock started, in every
round); a 2-epoch study would otherwise count that import among the 3 model-epochs of each
worker. Besides the wall time each row records the process's CPU time over the same span
(``cpu_seconds``, user + system, both workers together, the worker processes of today's engine
included: they end, and are counted, before ``study.train`` returns): a shared machine's slow spells
stretch the wall time more than the work. The JSON line of each row has its seconds per round
and, for the two rows of today's engine, the ratio to ``engine-<commit>`` within each round
(``round_ratios_vs_engine``, higher: faster; ``round_cpu_ratios_vs_engine`` in CPU time) and
their median; ``study-0.1.0``'s line says whether it trained the very numbers of the old engine
(``same_accuracies``: every run's final test accuracy equal). Every line also names the CPU
(``cpu``, its model name) and its count (``cpus``). Nothing here asserts a time. POSIX only
(the CPU seconds come from ``resource.getrusage``).

    NORMLAB_DATA=/path/to/mnist python benchmarks/engine_control.py --out control.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from normlab.envinfo import cpu_model
from normlab.store import print_and_save

ROOT = Path(__file__).resolve().parent.parent
# The last commit before the work on the 8,000-parameter model: normlab 0.1.0's default study
# (8,522 parameters, lr 0.05, rotation 10 degrees, no weight decay) and its engine.
RELEASE_COMMIT = "2e90c5c"
TODAY = ("study-0.1.0", "normlab-study")

# Run in a fresh process with either version of normlab first on sys.path: it uses only what
# both have (load_data, study.make_plan / train, Config's epochs and train_subset); load_data
# moved from normlab.study to normlab.study_data after the old commit.
CHILD = """
import json, resource, sys, time, torch
from normlab import study
from normlab.config import Config
try:
    from normlab.study_data import load_data
except ImportError:
    load_data = study.load_data
row, epochs, subset = sys.argv[1], int(sys.argv[2]), (int(sys.argv[3]) or None)
if row == "study-0.1.0":
    from timed_studies import RELEASE_010, Release010
    cfg = Release010(epochs=epochs, diagnostics=False, train_subset=subset, **RELEASE_010)
else:
    cfg = Config(epochs=epochs, train_subset=subset)
device = torch.device("cpu")
data = load_data(cfg, device)
plan = study.make_plan(cfg, device)
if row == "study-0.1.0" and getattr(plan, "processes", False):   # 0.1.0 trained in threads
    import dataclasses
    plan = dataclasses.replace(plan, processes=False)
t_import = time.perf_counter()
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)   # its one-time import, unclocked
import_seconds, warm = time.perf_counter() - t_import, "torch._dynamo" in sys.modules


def cpu() -> float:   # this process and its ended children (today's worker processes)
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


t0, c0 = time.perf_counter(), cpu()
results = study.train(plan, data, progress=False)
seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "imports_warm": warm,
                  "worker_processes": getattr(plan, "processes", False),
                  "import_seconds": import_seconds,
                  "arch": cfg.arch, "normlab": study.__file__,
                  "final_test_acc": {f"{r.variant.name}/{r.seed}": r.epochs[-1]["test_acc"]
                                     for r in results}}))
"""


def child_env(src: Path) -> dict[str, str]:
    """The environment of a row's process: ``src`` (a normlab checkout's src/) first on the path,
    then ``benchmarks/`` (for ``timed_studies``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT / "benchmarks")])
    return env


def time_row(row: str, src: Path, epochs: int, subset: int) -> dict:
    """One study of ``row`` in a fresh process; its JSON (seconds, arch, accuracies)."""
    done = subprocess.run([sys.executable, "-c", CHILD, row, str(epochs), str(subset)],
                          env=child_env(src), capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"row {row} failed: {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summarize(rounds: list[dict[str, dict]], engine_row: str) -> list[dict]:
    """One JSON line per row from the rounds' results ({row: child JSON} per round)."""
    lines = []
    for row in [engine_row, *TODAY]:
        line = {"name": row, "arch": rounds[0][row]["arch"],
                "final_test_acc": rounds[0][row]["final_test_acc"]}
        for key, prefix in (("seconds", ""), ("cpu_seconds", "cpu_")):
            seconds = [r[row][key] for r in rounds]
            line[f"round_{key}"] = [round(s, 2) for s in seconds]
            line[key] = round(statistics.median(seconds), 2)
            if row != engine_row:
                ratios = [r[engine_row][key] / r[row][key] for r in rounds]
                line[f"round_{prefix}ratios_vs_engine"] = [round(x, 3) for x in ratios]
                line[f"{prefix}ratio_vs_engine"] = round(statistics.median(ratios), 3)
        line["imports_warm"] = all(r[row]["imports_warm"] for r in rounds)
        line["worker_processes"] = any(r[row].get("worker_processes") for r in rounds)
        line["import_seconds"] = round(statistics.median(r[row]["import_seconds"] for r in rounds), 2)
        if row == "study-0.1.0":
            line["same_accuracies"] = all(r[row]["final_test_acc"] == r[engine_row]["final_test_acc"]
                                          for r in rounds)
        lines.append(line)
    return lines


def worktree(commit: str, where: Path) -> Path:
    """Check ``commit`` out at ``where`` (a detached git worktree); its src/ folder."""
    done = subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where),
                           commit], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise ValueError(f"--commit {commit!r} cannot be checked out ({tail}); give a commit "
                         "of this repository's history")
    return where / "src"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--commit", default=RELEASE_COMMIT,
                    help="the earlier commit whose engine trains its own default study")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of every study")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each times every row once")
    ap.add_argument("--train-subset", type=int, default=0,
                    help="train on the first N training images (0: all 60,000)")
    ap.add_argument("--out", type=Path, default=None,
                    help="also write the JSON lines here (atomically)")
    args = ap.parse_args(argv)
    for flag, value, low in (("--epochs", args.epochs, 1), ("--rounds", args.rounds, 1),
                             ("--train-subset", args.train_subset, 0)):
        if value < low:
            print(f"error: {flag} must be at least {low}, got {value}", file=sys.stderr)
            return 2
    if args.out and not (args.out.parent.is_dir() and os.access(args.out.parent, os.W_OK)):
        print(f"error: --out {args.out}: its folder is missing or not writable; give a path in "
              "a writable folder", file=sys.stderr)   # checked before minutes of training
        return 2
    engine_row = f"engine-{args.commit}"
    with tempfile.TemporaryDirectory(prefix="normlab-engine-") as tmp:
        try:
            old_src = worktree(args.commit, Path(tmp) / "tree")
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            sources = {engine_row: old_src, **{row: ROOT / "src" for row in TODAY}}
            order, rounds = list(sources), []
            for r in range(args.rounds):
                timed = {}
                for row in order[r % 3:] + order[:r % 3]:
                    print(f"round {r + 1}/{args.rounds}: {row}", file=sys.stderr, flush=True)
                    timed[row] = time_row(row, sources[row], args.epochs, args.train_subset)
                rounds.append(timed)
        except RuntimeError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(Path(tmp) / "tree")], capture_output=True)
    lines = summarize(rounds, engine_row)
    text = "".join(json.dumps({**line, "commit": args.commit, "epochs": args.epochs,
                               "train_subset": args.train_subset or None,
                               "cpu": cpu_model(), "cpus": os.cpu_count()}) + "\n"
                   for line in lines)
    print_and_save(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
