"""README.md speaks of the committed results only.

Every result file is found through :class:`~normlab.runfolder.RunFolder` and
:class:`~normlab.runfolder.SweepFolder`; this file spells only README.md, the results/ folders and
the benchmark's results files. How numbers are matched to results: ``readme_numbers``.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import pytest
from readme_numbers import (ROOT, allowed_decimals, allowed_quantities, cited_results,
                            split_blocks, stray_by_block, stray_quantities)

from normlab.runfolder import RunFolder, SweepFolder, load_summary
from normlab.table import results_table

README = ROOT / "README.md"
RESULTS = ROOT / "results" / "mnist"
BENCHMARK = ROOT / "benchmarks" / "results-cpu.jsonl"

# README section heading -> the committed run or sweep folders (or result files) its numbers
# come from
SECTIONS = {
    "## Results on MNIST": [ROOT / "results" / "mnist"],
    "## Model selection": [ROOT / "results" / "model-selection" / name
                           for name in ("arch", "arch-8-16-16-16-12-paired.md", "recipe",
                                        "stem", "lr", "translate", "stem-lr",
                                        "translate-0-paired.md", "translate-1-paired.md",
                                        "stem-lr-paired.md", "rotate", "rotate-5-paired.md",
                                        "rotate-15-paired.md", "stem-kernel",
                                        "stem-kernel-paired.md", "batch", "batch-32-paired.md",
                                        "batch-64-paired.md", "combined", "combined-paired.md",
                                        "weight-decay", "weight-decay-0.0005-paired.md",
                                        "weight-decay-0.002-paired.md",
                                        "weight-decay-4-seeds",
                                        "weight-decay-4-seeds-paired.md", "ema",
                                        "ema-paired.md", "l1", "l1-5e-06-paired.md",
                                        "l1-1e-05-paired.md", "l1-higher",
                                        "l1-4e-05-paired.md", "l1-8e-05-paired.md",
                                        "clean-fraction", "clean-fraction-0.2-paired.md",
                                        "clean-fraction-0.4-paired.md")]
    + [ROOT / "benchmarks" / name for name in (
        "results-step-cpu.jsonl", "results-cpu-batch64.jsonl", "results-cpu-3x3-stem.jsonl",
        "results-cpu-one-pass.jsonl",
        "results-cpu-2epochs.jsonl", "results-cpu-repeat.jsonl", "ratio-summary.json")],
    "## Experiments": [ROOT / "results" / "experiments" / name
                       for name in ("batch-size", "lr", "groups", "l1")]
    + [ROOT / "results" / "mnist"]
    + [ROOT / "benchmarks" / name for name in (
        "results-cpu.jsonl", "results-cpu-rounds-repeat.jsonl",
        "results-cpu-rounds-repeat2.jsonl", "results-cpu-rounds-repeat3.jsonl",
        "results-cpu-rounds-repeat4.jsonl")],
    "## Speed": [BENCHMARK, ROOT / "benchmarks" / "results-grouping-cpu.jsonl",
                 ROOT / "benchmarks" / "results-step-cpu.jsonl",
                 ROOT / "benchmarks" / "results-step-cpu-channels-last.jsonl",
                 ROOT / "benchmarks" / "results-cpu-2epochs.jsonl",
                 ROOT / "benchmarks" / "results-cpu-repeat.jsonl",
                 ROOT / "benchmarks" / "results-cpu-batch64.jsonl",
                 ROOT / "benchmarks" / "results-cpu-repeat-8s4.jsonl",
                 ROOT / "benchmarks" / "results-cpu-repeat2-8s4.jsonl",
                 ROOT / "benchmarks" / "results-cpu-3x3-stem.jsonl", ROOT / "results" / "mnist-default",
                 ROOT / "benchmarks" / "results-cpu-no-decay.jsonl",
                 ROOT / "benchmarks" / "results-cpu-repeat-decay.jsonl",
                 ROOT / "benchmarks" / "results-cpu-repeat2-decay.jsonl",
                 ROOT / "benchmarks" / "results-cpu-repeat3-decay.jsonl",
                 ROOT / "benchmarks" / "results-cpu-control-b9c533f.jsonl",
                 ROOT / "benchmarks" / "results-cpu-one-pass.jsonl",
                 ROOT / "benchmarks" / "results-cpu-rounds-repeat.jsonl",
                 ROOT / "benchmarks" / "results-cpu-rounds-repeat2.jsonl",
                 ROOT / "benchmarks" / "results-cpu-rounds-repeat3.jsonl",
                 ROOT / "benchmarks" / "results-cpu-rounds-repeat4.jsonl",
                 ROOT / "benchmarks" / "ratio-summary.json",
                 ROOT / "benchmarks" / "results-cpu-engine-control.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control2.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon1.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon2.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon3.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon4.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon5.jsonl",
                 ROOT / "benchmarks" / "results-cpu-processes.jsonl",
                 ROOT / "benchmarks" / "results-cpu-processes-repeat.jsonl",
                 ROOT / "benchmarks" / "results-step-cpu-foreach.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon6.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon7.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon8.jsonl",
                 ROOT / "benchmarks" / "results-cpu-engine-control-xeon9.jsonl",
                 ROOT / "benchmarks" / "ratio-summary-engine-control.json",
                 ROOT / "benchmarks" / "ratio-summary-engine-control-xeon4-9.json",
                 ROOT / "benchmarks" / "results-cpu-foreach.jsonl"],
}


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README has no section {heading!r}"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


# ----------------------------------------------------------------------------------------------
# Tests


def test_readme_results_table_matches_summary() -> None:
    """The results table in README.md is exactly the one normlab.table renders (as Markdown) from
    the committed results/mnist summary."""
    table = results_table(load_summary(RESULTS), markdown=True).markdown()
    assert table in _section("## Results on MNIST"), (
        "README's results table differs from the one of results/mnist; paste:\n" + table
    )


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_readme_numbers_come_from_results(heading: str) -> None:
    """Every number quoted in a results section of the README comes from the committed results
    its block names (else its subsection's, else the section's; see stray_by_block): each decimal (see allowed_decimals), each whole number with a unit such as "893 s",
    "8,522 parameters", "2-core" or "15 runs", and each ratio such as "8.42x" (see
    allowed_quantities). Percentages that are the method's settings (95% CI, the 5% level) are
    not results."""
    sources = SECTIONS[heading]
    stray = stray_by_block(_section(heading), sources)
    assert not stray, f"numbers in README's {heading!r} not in {sources}: {stray}"


def test_readme_number_check_catches_made_up_numbers() -> None:
    """The check of whole numbers and ratios is not blind: for the Speed section's results,
    numbers one off the committed ones (or of another kind) are flagged, and the committed ones,
    written as the README writes them, are not."""
    sources = SECTIONS["## Speed"]
    timing = json.loads(RunFolder(ROOT / "results" / "mnist-default").timing_json.read_text())
    wall = round(timing["wall_seconds"])
    bench = [json.loads(line) for line in BENCHMARK.read_text().splitlines() if line.strip()]
    ratio = max(b["ratio_vs_reference"] for b in bench)
    params = bench[0]["params"]
    true = (f"takes {wall} s, {ratio:.2f}x faster, a {params:,}-parameter CNN, "
            f"{ratio:.2f}× as fast, 95% CI")
    assert stray_quantities(true, sources) == []
    # A percentage no source holds (the benchmark's accuracies and shares cover many).
    held = set().union(*(allowed_quantities(s)[0].get("%", frozenset()) for s in sources))
    percent = next(p for p in range(99, 0, -1) if p not in held)
    made_up = [f"{wall + 1} s", f"{ratio + 0.01:.2f}x", f"{params + 1:,} parameters",
               f"{wall} epochs", f"{wall} MB", "7 cores", "99 runs", f"{percent}%"]
    assert sorted(stray_quantities(", ".join(made_up), sources)) == sorted(made_up)


def test_readme_number_check_passes_goals_only_when_written_as_goals() -> None:
    """A goal set before any result ("the target of at least 99.5%", "a budget of 8,000
    parameters") is not checked against the results; the same numbers written as results
    ("reached 99.5%", "8,001 parameters") are."""
    sources = SECTIONS["## Results on MNIST"]
    goals = "the target of at least 99.5% within a budget of 8,000 parameters"
    assert stray_by_block(goals, sources) == []
    claims = "reached 99.5% with 8,001 parameters, a target met by 99.57"
    assert sorted(stray_by_block(claims, sources)) == ["8,001 parameters", "99.5"]
    other_goals = "the target of 99.93% within a budget of 8,001 parameters"
    assert sorted(stray_by_block(other_goals, sources)) == ["8,001 parameters", "99.93"]


def test_readme_blocks_and_citations() -> None:
    """A block is a paragraph, a list item with its indented lines, or a heading; a fenced code
    block or a table joins the block before it. A block names a result by its name or a path
    ending in it (a bare folder name names every result of that name), not by another folder's
    path with the same last name nor by a bare word such as a setting. A sweep's settings count
    as its record writes them."""
    report = SweepFolder(MODEL_SELECTION / "l1").report.name
    text = (f"Intro `l1/{report}`.\n```\nnormlab sweep --out results/x\n```\n| a |\n| 1 |\n\n"
            "1. **Step** (`lr/`)\n   more\n\n   ```bash\n   cmd\n   ```\n2. next\n# H\nend\n")
    assert [b.split("\n")[0] for b in split_blocks(text)] == [f"Intro `l1/{report}`.",
                                                         "1. **Step** (`lr/`)", "2. next",
                                                         "# H", "end"]
    assert split_blocks(text)[0].endswith("| 1 |\n") and "   cmd" in split_blocks(text)[1]
    ms, ex = MODEL_SELECTION, ROOT / "results" / "experiments"
    sources = [ms / "l1", ms / "lr", ex / "l1", ROOT / "benchmarks" / "results-cpu.jsonl"]
    assert cited_results(f"`results/model-selection/l1/{report}`, `lr/`", sources) == sources[:2]
    assert cited_results("see `results/experiments/l1`", sources) == [ex / "l1"]
    assert cited_results(f"`l1/{report}`", sources) == [ms / "l1", ex / "l1"]   # a bare name: both
    assert cited_results("`benchmarks/results-cpu.jsonl`; `results-cpu.jsonl`", sources) == sources[3:]
    assert cited_results("the l1 and lr sweeps", sources) == []
    assert cited_results("`lr` and `l1`, settings", sources) == []
    # A sweep's settings count as written: its record's lr 0.05, not momentum 0.9 as "0.90".
    settings = allowed_decimals(ms / "lr")
    assert "0.05" in settings and "0.9" in settings and "0.90" not in settings


def _paired_mean(table: Path) -> str:
    """The 'all variants' mean difference of a paired table (scripts/paired_points.py)."""
    m = re.search(r"\| all variants, mean per seed \| \d+ \| [−+-]?(\d+\.\d+) \|",
                  table.read_text("utf-8"))
    assert m, f"{table} has no 'all variants' row"
    return m.group(1)


def test_readme_number_check_follows_citations() -> None:
    """A number is checked against the results its block names: the mean difference of
    l1-8e-05-paired.md passes in a block naming that table and is flagged in one naming only
    l1-5e-06-paired.md, though the section's other result holds it; a block naming none is
    checked against what its subsection names (all the section's results where that is
    nothing), and a '#' line in a fenced code block starts no subsection."""
    tables = [MODEL_SELECTION / "l1-5e-06-paired.md", MODEL_SELECTION / "l1-8e-05-paired.md"]
    number = _paired_mean(tables[1])
    assert number not in allowed_decimals(tables[0])
    assert stray_by_block(f"−{number} points (`l1-8e-05-paired.md`)", tables) == []
    assert stray_by_block(f"−{number} points (`l1-5e-06-paired.md`)", tables) == [number]
    text = (f"### A\n\nSee `l1-5e-06-paired.md`.\n\n- −{number} points\n\n"
            f"### B\n\n- −{number} points\n")
    assert stray_by_block(text, tables) == [number]   # A's bullet; B's may use either table
    fenced = text.replace(".\n\n- ", ".\n\n```bash\n# a comment, not a heading\n```\n\n- ", 1)
    assert stray_by_block(fenced, tables) == [number]


MODEL_SELECTION = ROOT / "results" / "model-selection"
# Numbers of results/model-selection/README.md that no committed result beside it holds, each
# with the reason.
MODEL_SELECTION_EXCEPTIONS = {"8,000 parameters": "the parameter budget, a bound, not a result"}


def _conv_weight_norms(sweep: Path) -> set[str]:
    """The mean ``weight_norm`` of the convs per point, variant and epoch in the points'
    diagnostics.csv (over layers and seeds), at 1 decimal: what step 12 quotes."""
    out = set()
    for point in SweepFolder(sweep).points():
        groups: dict[tuple[str, str], list[float]] = defaultdict(list)
        with open(point.diagnostics, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["layer"].startswith("conv"):
                    groups[row["variant"], row["epoch"]].append(float(row["weight_norm"]))
        out |= {f"{sum(v) / len(v):.1f}" for v in groups.values()}
    return out


def _last_epoch_fit(sweep: Path, point_name: str | None = None) -> set[str]:
    """Per point of ``sweep`` (or its point ``point_name``): the last epoch's mean ``train_acc``
    and ``val_acc`` over the point's runs (metrics.csv) and their gap, at 2 decimals: what
    step 17 quotes."""
    out = set()
    for point in SweepFolder(sweep).points():
        if point_name is not None and point.path.name != point_name:
            continue
        with open(point.metrics, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        last = str(max(int(r["epoch"]) for r in rows))
        train = [float(r["train_acc"]) for r in rows if r["epoch"] == last]
        val = [float(r["val_acc"]) for r in rows if r["epoch"] == last]
        t, v = sum(train) / len(train), sum(val) / len(val)
        out |= {f"{t:.2f}", f"{v:.2f}", f"{t - v:.2f}"}
    return out


def _ema_last_decay(sweep: Path) -> str:
    """The decay of the last update of the moving-average sweep's runs, at 4 decimals."""
    from normlab.batches import batch_bounds
    from normlab.config import Config, ModelConfig
    from normlab.ema import WeightAverage
    from normlab.model import MultiNet, Net

    point, = SweepFolder(sweep).points()
    saved = point.read_saved_config()
    cfg = Config.from_saved(saved)
    steps = cfg.epochs * len(batch_bounds(saved["resolved"]["train_images"], cfg.batch_size))
    average = WeightAverage(MultiNet([Net(ModelConfig())]), cfg.ema)
    return f"{average.decay_at(steps - 1):.4f}"


def test_model_selection_numbers_come_from_its_results() -> None:
    """Every number of results/model-selection/README.md comes from the sweep folders, paired
    tables and benchmark files its block names, checked as README's sections are; the
    convs' mean weight norms of step 12 from the weight-decay points' diagnostics.csv; the decay
    at step 14's last update from normlab.ema; the BatchNorm images from ema.BN_IMAGES. The
    few exceptions (MODEL_SELECTION_EXCEPTIONS) each occur in it, so none outlives its text."""
    from normlab import ema

    text = (MODEL_SELECTION / "README.md").read_text(encoding="utf-8")
    for number in MODEL_SELECTION_EXCEPTIONS:
        assert number in text, f"{number!r} is no longer in the text; drop its exception"
        text = text.replace(number, "")
    text = text.replace(f"{ema.BN_IMAGES:,} images", "")
    sources = [p for p in sorted(MODEL_SELECTION.iterdir()) if p.name != "README.md"]
    sources += [p for p in SECTIONS["## Model selection"] if p.suffix == ".jsonl"]
    extra = _conv_weight_norms(MODEL_SELECTION / "weight-decay") | {_ema_last_decay(
        MODEL_SELECTION / "ema")} | _last_epoch_fit(MODEL_SELECTION / "clean-fraction") \
        | _last_epoch_fit(MODEL_SELECTION / "weight-decay-4-seeds", "weight_decay=0.0005")
    stray = stray_by_block(text, sources, frozenset(extra))
    assert not stray, f"numbers in results/model-selection/README.md not in its results: {stray}"


def test_readme_images_exist() -> None:
    """Every image the README references exists in the repository, in the figures folder of a
    committed run or sweep under results/."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert targets, "README shows no figures"
    for target in targets:
        path = ROOT / target
        assert path.is_file(), f"README references missing image {target}"
        owner = path.parent.parent
        assert (ROOT / "results") in path.parents, target
        assert path.parent in (RunFolder(owner).figures, SweepFolder(owner).figures), target


def test_readme_names_every_sweepable_setting() -> None:
    """The Sweeps section lists, in backticks, every setting ``normlab sweep --param`` accepts
    (``normlab.sweep_spec.SWEEPABLE``), so no sweepable setting is undocumented."""
    from normlab.sweep_spec import SWEEPABLE

    text = _section("## Sweeps")
    missing = [name for name in SWEEPABLE if f"`{name}`" not in text]
    assert not missing, f"README's Sweeps section does not name {missing}"


def test_notebook_run_is_seed_0_of_the_study() -> None:
    """README says the notebook's committed run (results/mnist-default) and seed 0 of the
    five-seed study (results/mnist) agree to the last digit: the same config but the seed count,
    and the same metrics rows for seed 0, so the two committed folders come from one engine."""
    study = RunFolder(ROOT / "results" / "mnist")
    notebook = RunFolder(ROOT / "results" / "mnist-default")
    saved = [json.loads(f.config.read_text()) for f in (study, notebook)]
    assert [{k: v for k, v in c.items() if k not in ("seeds", "resolved")} for c in saved] \
        == [{k: v for k, v in saved[0].items() if k not in ("seeds", "resolved")}] * 2

    def seed_0(folder: RunFolder) -> list[dict]:
        with open(folder.metrics, newline="") as f:
            return [r for r in csv.DictReader(f) if r["seed"] == "0"]

    assert seed_0(notebook) and seed_0(notebook) == seed_0(study)
