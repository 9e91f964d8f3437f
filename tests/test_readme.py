"""README.md speaks of the committed results only."""

import re
from pathlib import Path

import pytest

from normlab.report import load_summary, results_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results" / "mnist"

# README section heading -> the committed run folder its numbers come from
SECTIONS = {
    "## Results on MNIST": ROOT / "results" / "mnist",
    "## What L1 does here": ROOT / "results" / "mnist-l1",
}


def _section(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    assert heading in text, f"README has no section {heading!r}"
    return text.split(heading, 1)[1].split("\n## ", 1)[0]


def _allowed_numbers(run_dir: Path) -> set[str]:
    """The numbers of a run folder as they may be printed: summary values at 2 (accuracy) and
    4 (loss) decimals, and every number written in its report.md (and weights.csv, if any)."""
    summary = load_summary(run_dir)
    allowed = set()
    for s in summary["variants"].values():
        for key in ("final_test_acc", "best_test_acc"):
            st = s[key]
            allowed |= {f"{st['mean']:.2f}", f"{st['std']:.2f}"}
            allowed |= {f"{v:.2f}" for v in st["values"]}
        st = s["final_test_loss"]
        allowed |= {f"{st['mean']:.4f}", f"{st['std']:.4f}"}
    for extra in ("report.md", "weights.csv"):  # weights.csv: scripts/l1_weights.py
        if (run_dir / extra).is_file():
            allowed |= set(re.findall(r"\d+\.\d+", (run_dir / extra).read_text(encoding="utf-8")))
    return allowed


def test_readme_results_table_matches_summary() -> None:
    """The results table in README.md is exactly the one made from results/mnist/summary.json."""
    table = results_table_markdown(load_summary(RESULTS))
    assert table in _section("## Results on MNIST"), (
        "README's results table differs from results/mnist/summary.json; paste:\n" + table
    )


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_readme_numbers_come_from_results(heading: str) -> None:
    """Every decimal number quoted in a results section of the README is one of its run's
    summary values (rounded as printed) or appears in that run's committed report.md."""
    allowed = _allowed_numbers(SECTIONS[heading])
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
