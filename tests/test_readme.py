"""README.md speaks of the committed results only."""

import re
from pathlib import Path

from normlab.report import load_summary, results_table_markdown

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RESULTS = ROOT / "results" / "mnist"


def test_readme_results_table_matches_summary() -> None:
    """The results table in README.md is exactly the one made from results/mnist/summary.json."""
    table = results_table_markdown(load_summary(RESULTS))
    assert table in README.read_text(encoding="utf-8"), (
        "README's results table differs from results/mnist/summary.json; paste:\n" + table
    )


def test_readme_numbers_in_results_section_come_from_summary() -> None:
    """Every accuracy quoted in the README's results section is one of the summary's values,
    rounded as printed."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Results on MNIST", 1)[1].split("\n## ", 1)[0]
    summary = load_summary(RESULTS)
    allowed = set()
    for s in summary["variants"].values():
        for key in ("final_test_acc", "best_test_acc"):
            st = s[key]
            allowed |= {f"{st['mean']:.2f}", f"{st['std']:.2f}"}
            allowed |= {f"{v:.2f}" for v in st["values"]}
        st = s["final_test_loss"]
        allowed |= {f"{st['mean']:.4f}", f"{st['std']:.4f}"}
    quoted = re.findall(r"\b\d+\.\d{2}(?:\d{2})?\b", section)
    stray = [q for q in quoted if q not in allowed]
    assert not stray, f"numbers in README's results section not in summary.json: {stray}"


def test_readme_images_exist() -> None:
    """Every image the README references exists in the repository."""
    text = README.read_text(encoding="utf-8")
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text):
        assert (ROOT / target).is_file(), f"README references missing image {target}"
