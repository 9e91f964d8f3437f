"""README.md speaks of the committed results only."""

import re
from pathlib import Path

import pytest

from normlab.report import load_summary, results_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results" / "mnist"

# README section heading -> the committed run or sweep folders (or result files) its numbers
# come from
SECTIONS = {
    "## Results on MNIST": [ROOT / "results" / "mnist"],
    "## Sweeps": [ROOT / "results" / "sweep-batch-size", ROOT / "results" / "sweep-l1"],
    "## Speed": [ROOT / "benchmarks" / "results-cpu.jsonl", ROOT / "results" / "mnist-default"],
}


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README has no section {heading!r}"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _rounded(text: str) -> set[str]:
    """Every decimal number in ``text``, as written, rounded to 0, 1 and 2 decimals, and in
    millions at 2 decimals (FLOP counts shown as MFLOP)."""
    out = set()
    for x in re.findall(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", text):
        out.add(x)
        try:
            v = float(x)
        except ValueError:
            continue
        out |= {f"{v:.0f}", f"{v:.1f}", f"{v:.2f}"}
        out.add(f"{v / 1e6:.2f}")  # FLOPs printed in MFLOP
    return out


def _allowed_numbers(source: Path) -> set[str]:
    """The numbers of a committed result as they may be printed. A run folder: summary values at
    2 (accuracy) and 4 (loss) decimals, every number in its report.md (and weights.csv) and its
    timing.json (rounded). A sweep folder: every number of its report.md, sweep.csv and
    weights.csv. A results file (benchmark JSON lines): every number in it (rounded)."""
    allowed: set[str] = set()
    if source.is_file():
        return _rounded(source.read_text(encoding="utf-8"))
    if (source / "summary.json").is_file():
        summary = load_summary(source)
        for s in summary["variants"].values():
            for key in ("final_test_acc", "best_test_acc"):
                st = s[key]
                allowed |= {f"{st['mean']:.2f}", f"{st['std']:.2f}"}
                allowed |= {f"{v:.2f}" for v in st["values"]}
            st = s["final_test_loss"]
            allowed |= {f"{st['mean']:.4f}", f"{st['std']:.4f}"}
    for extra in ("report.md", "weights.csv", "sweep.csv"):  # weights.csv: scripts/l1_weights.py
        if (source / extra).is_file():
            allowed |= set(re.findall(r"\d+\.\d+", (source / extra).read_text(encoding="utf-8")))
    if (source / "timing.json").is_file():
        allowed |= _rounded((source / "timing.json").read_text(encoding="utf-8"))
    return allowed


def test_readme_results_table_matches_summary() -> None:
    """The results table in README.md is exactly the one made from results/mnist/summary.json."""
    table = results_table_markdown(load_summary(RESULTS))
    assert table in _section("## Results on MNIST"), (
        "README's results table differs from results/mnist/summary.json; paste:\n" + table
    )


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_readme_numbers_come_from_results(heading: str) -> None:
    """Every decimal number quoted in a results section of the README comes from that section's
    committed results (see _allowed_numbers)."""
    allowed = set().union(*(_allowed_numbers(src) for src in SECTIONS[heading]))
    quoted = re.findall(r"(?<![\w.])\d+\.\d+(?![\w.])", _section(heading))
    stray = [q for q in quoted if q not in allowed]
    assert not stray, f"numbers in README's {heading!r} not in {SECTIONS[heading]}: {stray}"


def test_readme_images_exist() -> None:
    """Every image the README references exists in the repository, under results/mnist/figures/
    or the figures of another committed run."""
    text = README.read_text(encoding="utf-8")
    targets = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    assert targets, "README shows no figures"
    for target in targets:
        assert (ROOT / target).is_file(), f"README references missing image {target}"
        assert target.startswith("results/") and "/figures/" in target, target
