"""The results table: one model of a study's per-variant results, rendered as text or Markdown.

The terminal (end of ``normlab study``), report.md, README.md and the notebook all show this one
table, so they never disagree on columns or rounding. Each statistic is shown as mean ± sample
std over the seeds that finished, with N and the t-based 95% confidence interval of the mean.
Its formatters (:func:`signed_points`, :func:`format_p`) are shared with the comparisons table
(:mod:`normlab.compare`) and the findings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from normlab.stats import ALPHA, mean_ci


def signed_points(x: float) -> str:
    """A signed difference in percentage points, with a true minus sign."""
    return f"{x:+.2f}".replace("-", "−")


def signed_ci(lo: float | None, hi: float | None, missing: str = "–") -> str:
    """A confidence interval of a signed difference in points as "[lo, hi]"; ``missing`` when it
    has none (fewer than two pairs)."""
    return missing if lo is None else f"[{signed_points(lo)}, {signed_points(hi)}]"


def format_detectable(x: float) -> str:
    """A detectable difference in points, marked where it lies past the 100-point scale of an
    accuracy (too few or too spread seeds to detect any difference)."""
    return f"{x:.2f}" + (" (beyond the 100-point scale)" if x > 100 else "")


def format_p(p: float, decimals: int | None = None) -> str:
    """A p-value as printed: "< 0.001", 3 decimals below 0.1, else 2; just below the 5% level
    (0.0495 to 0.05), which 3 would round up to "0.050" beside a verdict of significance, 4
    decimals, or "< 0.05" where 4 would too. ``decimals``: that many at every p from 0.001 on
    (a table of p-values in one column width)."""
    if p < 0.001:
        return "< 0.001"
    if p < ALPHA <= round(p, 3):
        return f"{p:.4f}" if round(p, 4) < ALPHA else f"< {ALPHA:g}"
    if decimals is not None:
        return f"{p:.{decimals}f}"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def format_pm(stat: dict, digits: int, missing: str = "–") -> str:
    """A ``{mean, std, n}`` statistic as "mean ± std" (just the mean for one seed)."""
    if stat.get("mean") is None:
        return missing
    if stat.get("n", 1) > 1:
        return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"
    return f"{stat['mean']:.{digits}f}"


def format_ci(stat: dict, digits: int, missing: str = "–") -> str:
    """The 95% confidence interval of a statistic's mean as "[lo, hi]" (none for one seed)."""
    values = stat.get("values") or []
    if len(values) < 2:
        return missing
    ci = mean_ci(values)
    return f"[{ci.lo:.{digits}f}, {ci.hi:.{digits}f}]".replace("-", "−")   # a true minus sign


@dataclass
class Table:
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    numeric: set[int] = field(default_factory=set)   # right-aligned columns

    def text(self) -> str:
        """Aligned plain text for a terminal."""
        rows = [self.columns] + self.rows
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]

        def line(r: list[str]) -> str:
            return "  ".join(c.rjust(w) if i in self.numeric and r is not self.columns
                             else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()

        return "\n".join([line(self.columns), "  ".join("-" * w for w in widths)]
                         + [line(r) for r in self.rows])

    def markdown(self) -> str:
        rule = ["--:" if i in self.numeric else "---" for i in range(len(self.columns))]
        # A '|' inside a cell (e.g. 'conv ||w||') would end the cell: written as '\|'.
        cells = [[str(c).replace("|", "\\|") for c in r] for r in [self.columns] + self.rows]
        return "\n".join("| " + " | ".join(r) + " |" for r in [cells[0], rule] + cells[1:])


def _status(s: dict) -> str:
    if s["status"] == "diverged":
        return "diverged"
    if s["diverged_seeds"]:
        return f"{len(s['diverged_seeds'])} of {len(s['seeds'])} seeds diverged"
    return "ok"


def results_table(summary: dict, extra: dict[str, dict[str, str]] | None = None,
                  markdown: bool = False) -> Table:
    """The table of a summary (summary.json, or its 'variants'). ``extra``: more columns, as
    ``{column: {variant: cell}}`` (report.md adds the epoch of best and the train-test gap)."""
    variants = summary.get("variants", summary)
    name = (lambda n: f"`{n}`") if markdown else (lambda n: n)
    extra = dict(extra or {})
    if any(s.get("final_val_acc", {}).get("n") for s in variants.values()):   # --val
        extra = {"final val acc (%)": {v: format_pm(s["final_val_acc"], 2)
                                       for v, s in variants.items()}} | extra
    t = Table(["variant", "parameters", "N", "final test acc (%)", "95% CI",
               "best test acc (%)", "final test loss"] + list(extra) + ["status"],
              numeric={1, 2, 3, 4, 5, 6} | set(range(7, 7 + len(extra))))
    for v, s in variants.items():
        acc = s["final_test_acc"]
        t.rows.append([name(v), "–" if s.get("params") is None else f"{s['params']:,}",
                       str(acc["n"]), format_pm(acc, 2), format_ci(acc, 2),
                       format_pm(s["best_test_acc"], 2), format_pm(s["final_test_loss"], 4)]
                      + [col.get(v, "–") for col in extra.values()] + [_status(s)])
    return t
