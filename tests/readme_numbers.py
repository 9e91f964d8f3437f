"""How README numbers are checked against committed results: every decimal, every whole
number with a unit ("893 s", "8,522 parameters") and every ratio ("1.31x") of a text block must be
held by the results that block names (a run or sweep folder, a paired table, a benchmark's JSON
lines). Used by tests/test_readme.py; results are found through normlab.runfolder, never by
spelling their file names here."""

from __future__ import annotations

import csv
import functools
import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterator

from normlab.runfolder import RunFolder, SweepFolder, load_summary

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------------
# Decimals


def rounded(text: str) -> set[str]:
    """Every decimal number in ``text``, as written, rounded to 0, 1 and 2 decimals, and in
    millions at 2 decimals (FLOP counts shown as MFLOP)."""
    out = set()
    for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text):
        out |= {x, x.lstrip("-")}   # README writes the sign apart (a typographic minus)
        try:
            v = float(x)
        except ValueError:
            continue
        out |= {f"{v:.0f}", f"{v:.1f}", f"{v:.2f}"}
        out.add(f"{v / 1e6:.2f}")  # FLOPs printed in MFLOP
    return out


@functools.lru_cache(maxsize=None)   # read once per test session
def allowed_decimals(source: Path) -> frozenset[str]:
    """The decimal numbers of a committed result as they may be printed. A run folder: summary
    values at 2 (accuracy) and 4 (loss) decimals, every number in its report and weights table
    (scripts/l1_weights.py) and its timing record (rounded). A sweep folder: its settings (the
    record's base config and swept values, as written), every number of its report, its table,
    its weights table, an experiment's mechanism.csv and batch_stats.csv, and its points'
    reports. A results file (benchmark JSON lines, a paired table): every number in it
    (rounded)."""
    allowed: set[str] = set()
    if source.is_file():
        return frozenset(rounded(source.read_text(encoding="utf-8")))
    run, sweep = RunFolder(source), SweepFolder(source)
    if run.summary.is_file():
        summary = load_summary(source)
        for s in summary["variants"].values():
            for key in ("final_test_acc", "best_test_acc"):
                st = s[key]
                allowed |= {f"{st['mean']:.2f}", f"{st['std']:.2f}"}
                allowed |= {f"{v:.2f}" for v in st["values"]}
            st = s["final_test_loss"]
            allowed |= {f"{st['mean']:.4f}", f"{st['std']:.4f}"}
    paths = {run.report, run.weights, sweep.report, sweep.table, sweep.weights, sweep.mechanism,
             sweep.batch_stats}
    if SweepFolder.holds_sweep(source):   # its settings as written, and the points' reports
        allowed |= {f"{v:g}" for _, v in json_numbers(sweep.read_record())}
        paths |= {point.report for point in sweep.points()}
    for path in paths:
        if path.is_file():
            allowed |= set(re.findall(r"\d+\.\d+", path.read_text(encoding="utf-8")))
    if run.timing_json.is_file():
        allowed |= rounded(run.timing_json.read_text(encoding="utf-8"))
    return frozenset(allowed)


def stray_decimals(text: str, allowed: set[str]) -> list[str]:
    return [q for q in re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", text) if q not in allowed]


# ----------------------------------------------------------------------------------------------
# Whole numbers with a unit ("893 s", "8,522 parameters", "2-core") and ratios ("8.42x")

# unit as written -> the kind of quantity it counts
UNITS = {
    "ms|milliseconds?": "ms", "s|secs?|seconds?": "s", "min|minutes?": "min",
    "h|hours?": "h", "MB|MiB": "MB", "GB|GiB": "GB", "%": "%",
    "params|parameters?": "params", "images?": "images", "epochs?": "epochs",
    "seeds?": "seeds", "runs?": "runs", "cores?": "cores", "weights": "weights",
}
_UNIT_KIND = [(re.compile(rf"(?:{u})\Z"), kind) for u, kind in UNITS.items()]
# A whole number (1,234 or 1234; not part of a decimal, a range like seed-0 or a signed number),
# optionally hyphenated to its unit, with at most one qualifying word in between.
QUANTITY = re.compile(
    r"(?<![\w.,\-−+±])(\d{1,3}(?:,\d{3})+|\d+)(?![.,]?\d)"
    r"(?:[ \u00a0-]?)(?:(?:training|test|train|penalized|finished|timed)[ \u00a0])?"
    rf"({'|'.join(UNITS)})(?![\w-])")   # not "8s-16-16" (an --arch)
RATIO = re.compile(r"(?<![\w.,])(\d+(?:\.\d+)?)[x×](?!\w)")
# Percentages that are the method's settings, not results: 95% CI, the 5% level.
METHOD_PERCENT = re.compile(r"\d+%\s+(?:CI|confidence|level|intervals?)\b")
# The goals the model was set before any result, written as such: "the target of at least
# 99.5%", "a budget of 8,000 parameters". Only these goals, and only after these words; "reached
# 99.5%" or "a target of 99.54%" is checked like any other number.
GOAL = re.compile(r"\b(?:target\s+of\s+(?:at\s+least\s+)?99\.5%|"
                  r"budget\s+of\s+(?:at\s+most\s+)?8,000(?:\s+parameters)?)")


def quantities(text: str) -> list[tuple[str, int, str]]:
    """(kind, value, as written) of every whole number with a unit in ``text``."""
    out = []
    for m in QUANTITY.finditer(METHOD_PERCENT.sub("", text)):
        kind = next(k for pattern, k in _UNIT_KIND if pattern.match(m.group(2)))
        out.append((kind, int(m.group(1).replace(",", "")), m.group(0)))
    return out


def json_numbers(obj, keys: tuple = ()) -> Iterator[tuple[tuple, float]]:
    """(key path, number) of every number in a JSON value."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from json_numbers(v, keys + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from json_numbers(v, keys + (i,))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield keys, float(obj)


def csv_numbers(path: Path) -> Iterator[tuple[tuple, float]]:
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            for column, cell in row.items():
                try:
                    yield (column,), float(cell)
                except (TypeError, ValueError):
                    pass


def kinds_of(keys: tuple, v: float) -> Iterator[tuple[str, float]]:
    """The quantities a result value may be quoted as, by the name of its field."""
    names = [k.lower() for k in keys if isinstance(k, str)]
    last = names[-1] if names else ""
    direct = bool(keys) and isinstance(keys[-1], str)   # a field of its own, not a list item
    if direct and last.endswith("seconds"):
        yield from (("s", v), ("min", v / 60), ("h", v / 3600), ("ms", v * 1000))
    if direct and last.endswith("_mb"):
        yield from (("MB", v), ("GB", v / 1024), ("GB", v / 1000))
    if last != "n" and any("acc" in n or n.startswith("pct") or n.endswith("_pct") for n in names):
        yield "%", v   # an accuracy (not its seed count) or a percentage
    simple = {"params": "params", "weights": "weights", "train_images": "images",
              "test_images": "images", "train_subset": "images", "epochs": "epochs",
              "seeds": "seeds", "runs": "runs", "cpu_count": "cores", "threads": "cores",
              "torch_threads": "cores"}
    if direct and last in simple:
        yield simple[last], v


def run_numbers(run: RunFolder) -> Iterator[tuple[tuple, float]]:
    for path in (run.config, run.env, run.summary, run.timing_json):
        if path.is_file():
            yield from json_numbers(json.loads(path.read_text(encoding="utf-8")))
    if run.summary.is_file():
        variants = load_summary(run.path)["variants"].values()
        yield ("runs",), float(sum(len(s["seeds"]) for s in variants))


@functools.lru_cache(maxsize=None)
def allowed_quantities(source: Path) -> tuple[dict[str, frozenset[int]], frozenset[str]]:
    """({kind: whole numbers}, ratios as they may be printed) of a committed result: its fields
    read by name (seconds as s, min, h and ms; memory in MB and GB; accuracies and percentages as
    %; parameter, weight, image, epoch, seed, run and core counts), rounded to whole numbers, and
    the quantities its report states. A run folder: config, env, summary and timing (its runs:
    every variant's seeds). A sweep folder: its record, table and weights table, and every
    point's run folder (its runs: the rows of its table). A results file: its JSON lines (or one
    JSON document, a .json), whose ``ratio`` fields give the ratios at 0, 1 and 2 decimals; a
    Markdown table (scripts/paired_points.py): the quantities it states."""
    records: list[tuple[tuple, float]] = []
    reports: list[Path] = []
    if source.is_file() and source.suffix == ".md":   # a generated table: its stated quantities
        reports.append(source)
    elif source.is_file() and source.suffix == ".json":   # one JSON document
        records += json_numbers(json.loads(source.read_text(encoding="utf-8")))
    elif source.is_file():
        for line in source.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records += json_numbers(json.loads(line))
    elif SweepFolder.holds_sweep(source):
        sweep = SweepFolder(source)
        records += json_numbers(sweep.read_record())
        records += csv_numbers(sweep.table)
        records.append((("runs",), float(len(sweep.read_table()))))
        if sweep.weights.is_file():
            records += csv_numbers(sweep.weights)
        reports.append(sweep.report)
        for point in sweep.points():
            records += run_numbers(point)
            reports.append(point.report)
    else:
        run = RunFolder(source)
        records += run_numbers(run)
        reports.append(run.report)
    allowed: dict[str, set[int]] = defaultdict(set)
    ratios: set[str] = set()
    for keys, v in records:
        for kind, x in kinds_of(keys, v):
            allowed[kind].add(round(x))
        if any(isinstance(k, str) and "ratio" in k for k in keys):
            ratios |= {f"{v:.0f}", f"{v:.1f}", f"{v:.2f}", repr(v)}
    for report in reports:
        if report.is_file():
            for kind, x, _ in quantities(report.read_text(encoding="utf-8")):
                allowed[kind].add(x)
    return {kind: frozenset(v) for kind, v in allowed.items()}, frozenset(ratios)


def stray_quantities(text: str, sources: list[Path]) -> list[str]:
    """The whole numbers with a unit and the ratios in ``text`` that ``sources`` do not hold."""
    allowed: dict[str, set[int]] = defaultdict(set)
    ratios: set[str] = set()
    for src in sources:
        a, r = allowed_quantities(src)
        for kind, values in a.items():
            allowed[kind] |= values
        ratios |= r
    stray = [written for kind, x, written in quantities(text) if x not in allowed[kind]]
    stray += [m.group(0) for m in RATIO.finditer(text) if m.group(1) not in ratios]
    return stray


# ----------------------------------------------------------------------------------------------
# Blocks and the results they cite


FENCE = re.compile(r"\s*(```|~~~)")


def subsections(text: str) -> list[str]:
    """``text`` cut at its headings (a line starting with '#' outside a fenced code block)."""
    parts: list[list[str]] = [[]]
    fence = False
    for line in text.splitlines():
        if not fence and line.startswith("#") and parts[-1]:
            parts.append([])
        parts[-1].append(line)
        if FENCE.match(line):
            fence = not fence
    return ["\n".join(p) for p in parts]


def split_blocks(text: str) -> list[str]:
    """``text`` cut into its top-level blocks: a paragraph, a list item (with its indented lines)
    or a heading; a fenced code block or a table belongs to the block before it (the command or
    the output that block describes)."""
    blocks: list[list[str]] = []
    fence, blank = False, True
    for line in text.splitlines():
        starts = (not fence and line.strip() and not line.startswith((" ", "\t", "|"))
                  and not FENCE.match(line) and (blank or re.match(r"(?:\d+\.|[*-]) |#", line)))
        if starts or not blocks:
            blocks.append([])
        blocks[-1].append(line)
        if FENCE.match(line):
            fence = not fence
        blank = not line.strip() or (not fence and line.startswith("#"))   # a heading ends
    return ["\n".join(b) for b in blocks]


def cited_results(block: str, sources: list[Path]) -> list[Path]:
    """The ``sources`` that ``block`` names: in backticks or as a path in a command, by a path
    that ends in one (``l1/``, ``l1/report.md``, ``results/model-selection/l1``,
    ``benchmarks/results-cpu.jsonl``; ``results/experiments/l1`` is not
    ``results/model-selection/l1``) or by a file name (``results-cpu.jsonl``). A bare word in
    backticks (```l1```, a setting) names nothing."""
    names = [n for n in re.findall(r"`([^`\s]+)`", block) if "/" in n or Path(n).suffix]
    names += re.findall(r"(?:results|benchmarks)/[\w./=-]+", block)
    cited = []
    for src in sources:
        rel = src.relative_to(ROOT).parts
        for name in names:
            parts = [p for p in name.rstrip(".,;:)").split("/") if p]
            if any(p == src.name and tuple(parts[:i + 1]) == rel[len(rel) - i - 1:]
                   for i, p in enumerate(parts)):
                cited.append(src)
                break
    return cited


def stray_by_block(text: str, sources: list[Path], extra: frozenset = frozenset()) -> list[str]:
    """The numbers of ``text`` that its blocks' results do not hold: a block that names some of
    ``sources`` is checked against those alone; a block that names none against those its
    subsection (from its heading to the next) names, or, where that names none either, all
    ``sources``. ``extra``: decimals allowed everywhere."""
    stray = []
    for part in subsections(text):
        scope = cited_results(part, sources) or sources
        for block in split_blocks(part):
            cited = cited_results(block, sources) or scope
            block = GOAL.sub("", block)
            allowed = set(extra).union(*(allowed_decimals(s) for s in cited))
            stray += stray_decimals(block, allowed) + stray_quantities(block, cited)
    return stray
