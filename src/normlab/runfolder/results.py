"""What a run leaves behind, in memory: its per-epoch rows, predictions and final weights
(:class:`RunResult`), and the per-variant statistics of summary.json (:func:`summarize`).
:mod:`normlab.runfolder.folder` writes them into the run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from normlab.stats import describe
from normlab.variants import Variant



@dataclass
class Predictions:
    """The final model's predictions on the test split (tensors on the CPU)."""

    label: Any       # (N,) true class
    pred: Any        # (N,) predicted class
    confidence: Any  # (N,) softmax probability of the predicted class


@dataclass
class RunResult:
    variant: Variant
    seed: int
    params: int
    status: str = "ok"                       # "ok" or "diverged"
    epochs: list[dict] = field(default_factory=list)   # METRIC_COLUMNS[2:] + "seconds" per epoch
    predictions: Predictions | None = None
    state_dict: dict | None = None
    message: str = ""
    diagnostics: list[dict] = field(default_factory=list)   # DIAGNOSTIC_COLUMNS[2:] per row


def summarize(variants: tuple[Variant, ...], results: list[RunResult]) -> dict:
    """summary.json's 'variants': per variant its parameters, status and seed statistics."""
    out = {}
    for v in variants:
        runs = [r for r in results if r.variant.name == v.name]
        ok = [r for r in runs if r.status == "ok"]
        diverged = [r.seed for r in runs if r.status != "ok"]
        status = "ok" if not diverged else ("diverged" if not ok else "partly-diverged")
        out[v.name] = {
            "name": v.name, "norm": v.norm, "ws": v.ws, "l1": v.l1, "l2": v.l2,
            "params": runs[0].params if runs else None,
            "status": status,
            "seeds": [r.seed for r in runs],
            "diverged_seeds": diverged,
            "final_test_acc": describe([r.epochs[-1]["test_acc"] for r in ok]),
            "best_test_acc": describe([max(e["test_acc"] for e in r.epochs) for r in ok]),
            "final_test_loss": describe([r.epochs[-1]["test_loss"] for r in ok]),
            "final_val_acc": describe([r.epochs[-1]["val_acc"] for r in ok
                                       if r.epochs[-1].get("val_acc") is not None]),
            "best_val_acc": describe([max(e["val_acc"] for e in r.epochs) for r in ok
                                      if r.epochs[-1].get("val_acc") is not None]),
        }
    return out
