"""Reports made from a saved run folder (never from the training loop)."""

from __future__ import annotations

import json
from pathlib import Path

from normlab.errors import RunFolderError


def load_summary(run_dir: str | Path) -> dict:
    """summary.json of ``run_dir``, with a clear error when it is missing or damaged."""
    path = Path(run_dir) / "summary.json"
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; is {run_dir} a finished normlab run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFolderError(f"{path} is damaged ({e}); re-run the study to rebuild it") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("variants"), dict):
        raise RunFolderError(f"{path} has no 'variants' table; re-run the study to rebuild it")
    return summary


def _pm(stat: dict, digits: int) -> str:
    if stat.get("mean") is None:
        return "–"
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def results_table_markdown(summary: dict) -> str:
    """The per-variant results as a Markdown table: mean ± sample std over seeds."""
    lines = [
        "| variant | norm | L1 lambda | parameters | seeds | final test accuracy (%) "
        "| best test accuracy (%) | final test loss |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in summary["variants"].values():
        lines.append(
            f"| `{s['name']}` | {s['norm']} | {s['l1']:g} | {s['params']:,} "
            f"| {s['final_test_acc']['n']} | {_pm(s['final_test_acc'], 2)} "
            f"| {_pm(s['best_test_acc'], 2)} | {_pm(s['final_test_loss'], 4)} |"
        )
    return "\n".join(lines)
