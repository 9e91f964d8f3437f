"""Pool the study rows' speed ratios over several runs of ``bench_train.py``: one number with
its interval instead of a run-by-run list.

Each run of ``bench_train.py`` times every study row in rounds and records, per row, the ratio to
``study-0.1.0`` within each round (``round_ratios_vs_0.1.0``). Rounds of one run share the
machine's mood of those minutes, so they are not independent draws; the runs are. This script
therefore takes each run's geometric mean over its rounds as one observation and reports, per
row, the geometric mean over runs with its t-based 95% confidence interval
(``normlab.stats.mean_ci`` on the log ratios), next to every run's median (what the run's table
prints), the range of the rounds and how many rounds fell below ``--goal``. ``--pairs A/B``
pools the speed of row A relative to row B the same way: in each round A's ratio divided by
B's, both taken against the same ``study-0.1.0`` study (e.g. what the weight decay costs:
``study-nodecay/normlab-study-nodiag``), its rounds below 1 counted::

    python benchmarks/ratio_summary.py benchmarks/results-cpu.jsonl \\
        benchmarks/results-cpu-rounds-repeat*.jsonl --out benchmarks/ratio-summary.json

With ``--against engine`` it pools runs of ``engine_control.py`` instead, whose rounds record
each row's ratio to the old commit's own study (``round_ratios_vs_engine``)::

    python benchmarks/ratio_summary.py --against engine \\
        benchmarks/results-cpu-engine-control-xeon6.jsonl ...

Only runs of one machine type and code should be pooled; the output names the files it read.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from normlab.stats import mean_ci
from normlab.store import print_and_save

# --against: the reference of the ratios -> the field of a row's JSON line holding its rounds'
ROUNDS_KEYS = {"0.1.0": "round_ratios_vs_0.1.0",      # bench_train.py: the stand-in study-0.1.0
               "engine": "round_ratios_vs_engine"}    # engine_control.py: the old commit itself
ROUNDS_KEY = ROUNDS_KEYS["0.1.0"]
# per --against: the rows pooled and the pairs compared when --rows and --pairs are not given
DEFAULT_ROWS = {"0.1.0": "normlab-study,normlab-study-nodiag,study-nodecay",
                "engine": "normlab-study,study-0.1.0"}
DEFAULT_PAIRS = {"0.1.0": "study-nodecay/normlab-study-nodiag", "engine": ""}


def read_rounds(paths: list[Path], rows: list[str], key: str = ROUNDS_KEY
                ) -> dict[str, list[list[float]]]:
    """{row: [the round ratios of each file]} for the ``rows`` named, read from the field ``key``;
    ValueError with the fix when a file lacks one of them (a run without rounds, another row
    name, or a file of the other script)."""
    out: dict[str, list[list[float]]] = {row: [] for row in rows}
    for path in paths:
        found = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("name") in out and key in record:
                    found[record["name"]] = [float(r) for r in record[key]]
        for row in rows:
            if row not in found:
                script = "engine_control.py" if key == ROUNDS_KEYS["engine"] else \
                    "bench_train.py with --study-rounds"
                raise ValueError(f"{path} has no {key} for row {row!r}; give runs of {script}, "
                                 "other --rows, or the other --against")
            out[row].append(found[row])
    return out


def summarize(runs: list[list[float]], goal: float) -> dict:
    """The pooled ratio of one row over runs (each a list of round ratios)."""
    per_run = [math.fsum(math.log(r) for r in rounds) / len(rounds) for rounds in runs]
    ci = mean_ci(per_run)
    rounds = [r for run in runs for r in run]
    return {
        "runs": len(runs), "rounds": len(rounds),
        "ratio_geomean": round(math.exp(ci.mean), 3),
        "ratio_ci95_lo": round(math.exp(ci.lo), 3) if ci.available else None,
        "ratio_ci95_hi": round(math.exp(ci.hi), 3) if ci.available else None,
        "ratio_run_medians": [round(statistics.median(run), 3) for run in runs],
        "ratio_round_min": round(min(rounds), 3), "ratio_round_max": round(max(rounds), 3),
        "goal": goal, "rounds_below_goal": sum(r < goal for r in rounds),
    }


def pair_rounds(rounds: dict[str, list[list[float]]], a: str, b: str) -> list[list[float]]:
    """Row ``a``'s speed over row ``b``'s, round by round in each run: the ratio of their ratios
    to the same round's ``study-0.1.0``."""
    out = []
    for k, (ra, rb) in enumerate(zip(rounds[a], rounds[b]), start=1):
        if len(ra) != len(rb):
            raise ValueError(f"run {k} timed {a} in {len(ra)} rounds and {b} in {len(rb)}; pair "
                             "rows that every run timed in the same rounds")
        out.append([x / y for x, y in zip(ra, rb)])
    return out


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """'A/B,C/D' -> [(A, B), (C, D)]; ValueError naming the fix for a malformed entry."""
    pairs = []
    for item in (t for t in text.split(",") if t):
        a, sep, b = item.partition("/")
        if not sep or not a or not b or "/" in b:
            raise ValueError(f"--pairs entry {item!r} is not ROW_A/ROW_B; e.g. "
                             "--pairs study-nodecay/normlab-study-nodiag")
        pairs.append((a, b))
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path,
                    help="JSON-lines outputs of bench_train.py (or of engine_control.py, with "
                         "--against engine)")
    ap.add_argument("--against", choices=sorted(ROUNDS_KEYS), default="0.1.0",
                    help="the ratios' reference: the stand-in study-0.1.0 of bench_train.py, or "
                         "the old commit's own study of engine_control.py (default: %(default)s)")
    ap.add_argument("--rows", default=None,
                    help="comma-separated study rows to pool (default: "
                         f"{DEFAULT_ROWS['0.1.0']}; with --against engine, "
                         f"{DEFAULT_ROWS['engine']})")
    ap.add_argument("--goal", type=float, default=1.3,
                    help="count the rounds below this ratio (default: %(default)s)")
    ap.add_argument("--pairs", default=None,
                    help="comma-separated ROW_A/ROW_B: pool A's speed relative to B's, round by "
                         "round; rounds below 1 counted ('' for none; default: "
                         f"{DEFAULT_PAIRS['0.1.0']}; with --against engine, none)")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON here (atomically)")
    args = ap.parse_args(argv)
    try:
        rows = [r for r in (args.rows if args.rows is not None
                            else DEFAULT_ROWS[args.against]).split(",") if r]
        pairs = parse_pairs(args.pairs if args.pairs is not None else DEFAULT_PAIRS[args.against])
        needed = list(dict.fromkeys(rows + [r for pair in pairs for r in pair]))
        rounds = read_rounds(args.files, needed, ROUNDS_KEYS[args.against])
        relative = {f"{a}/{b}": summarize(pair_rounds(rounds, a, b), 1.0) for a, b in pairs}
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"files": [p.name for p in args.files], "against": args.against,
               "rows": {row: summarize(rounds[row], args.goal) for row in rows}}
    if relative:
        summary["pairs"] = relative
    text = json.dumps(summary, indent=2) + "\n"
    print_and_save(text, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
