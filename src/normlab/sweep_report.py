"""A sweep's report: its table, its figure per swept setting and report.md, from its rows.

The rows are sweep.csv's (one per run, see :func:`normlab.sweep.sweep_rows`); the table groups
them by everything except the seed (every swept setting and the variant) and shows N, mean ±
std and the 95% interval of each group.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
from normlab.findings import fmt_value, sweep_findings
from normlab.runfolder import SweepFolder
from normlab.stats import describe, mean_ci
from normlab.style import DPI, FIGSIZE, RC, line_styles, save_figure
from normlab.table import Table, format_ci, format_pm


def selection_metric(rows: list[dict]) -> tuple[str, str]:
    """(column, word) the sweep is judged by: validation accuracy when it held out --val
    images (a sweep that chooses a model never looks at the test set), else test accuracy."""
    if any(r.get("final_val_acc") is not None for r in rows):
        return "final_val_acc", "val"
    return "final_test_acc", "test"


def point_groups(rows: list[dict], params: list[str]) -> dict[tuple, list[dict]]:
    """The runs of ``rows`` (sweep.csv rows) that differ only in their seed, keyed by
    ``(value of each of params..., variant)``, in the order of their first row."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[p] for p in params) + (r["variant"],), []).append(r)
    return groups


def sweep_table(rows: list[dict], params: list[str], markdown: bool = True) -> Table:
    """One line per group of runs that differ only in their seed (every swept setting and the
    variant in common): N, the number of its runs that finished (with "of M" when some did not),
    then mean ± sample std and the 95% t-interval of the mean of the final accuracy, and mean ±
    std of the best accuracy, over those N. ``markdown``: variant names as code."""
    metric, word = selection_metric(rows)
    best_key = metric.replace("final_", "best_")
    t = Table(list(params) + ["variant", "N", f"final {word} acc (%)", "95% CI",
                              f"best {word} acc (%)"],
              numeric=set(range(len(params))) | {len(params) + i for i in (1, 2, 3, 4)})
    for key, rs in point_groups(rows, params).items():
        ok = [r for r in rs if r["status"] == "ok" and r[metric] is not None]
        fin = describe([r[metric] for r in ok])
        best = describe([r[best_key] for r in ok])
        n = str(len(ok)) if len(ok) == len(rs) else f"{len(ok)} of {len(rs)}"
        t.rows.append([fmt_value(v) for v in key[:-1]] + [f"`{key[-1]}`" if markdown else key[-1], n,
                      format_pm(fin, 2), format_ci(fin, 2), format_pm(best, 2)])
    return t


def _is_log_scale(values: Sequence[float]) -> bool:
    """Log x when the positive values span a decade or more (batch sizes, lambdas)."""
    pos = [v for v in values if v > 0]
    return len(pos) >= 3 and max(pos) / min(pos) >= 10


@dataclass(frozen=True)
class ValueAxis:
    """Where a swept setting's values go on an x axis: numbers at their value (log scale where
    they span decades, a 0 then drawn a quarter of the smallest value to its left), anything
    else (an --arch) at 0, 1, 2, ... in sorted order."""

    values: list          # sorted, numbers before text
    numeric: bool
    log: bool
    position: dict

    @classmethod
    def of(cls, values) -> "ValueAxis":
        xs = sorted(set(values), key=lambda v: (isinstance(v, str), v))
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
        log = numeric and _is_log_scale([float(v) for v in xs])
        zero_at = None
        if log and any(v == 0 for v in xs):
            zero_at = min(v for v in xs if v > 0) / 4  # where a lambda of 0 is drawn
        position = {v: (float(v) if v != 0 or zero_at is None else zero_at) if numeric else i
                    for i, v in enumerate(xs)}
        return cls(xs, numeric, log, position)

    def draw(self, ax, name: str) -> None:
        """Scale, ticks at every value (labelled as written, 0 as 0) and label of ``ax``'s x."""
        if self.log:
            ax.set_xscale("log")
        ax.set_xticks([self.position[v] for v in self.values])
        ax.set_xticklabels(["0" if self.numeric and v == 0 else
                            f"{v:g}" if self.numeric else str(v) for v in self.values])
        ax.xaxis.set_minor_formatter(NullFormatter())
        what = AXIS_LABELS.get(name)
        ax.set_xlabel((f"{what} ({name})" if what else name) + (", log scale" if self.log else ""))


ZOOM_WITHIN = 3.0   # accuracy points: a sweep figure whose means spread wider adds a zoom panel
# What a swept setting is, with its unit, for axis labels (the setting's name follows it).
AXIS_LABELS = {
    "lr": "peak learning rate", "l1": "L1 lambda", "l2": "L2 decay of +l2",
    "batch_size": "batch size, images", "rotate": "max rotation, degrees",
    "translate": "max shift, pixels", "weight_decay": "weight decay", "groups": "GroupNorm groups",
    "ghost_batch": "virtual batch, images", "momentum": "peak momentum",
    "warmup": "warm-up, fraction of steps", "train_subset": "training images",
    "label_smoothing": "label smoothing", "ema": "weight-average decay", "arch": "conv widths",
    "clean_fraction": "fraction of the steps without augmentation",
}


def sweep_figure(rows: Sequence[dict], param: str, others: Sequence[str], path: str | Path,
                 formats: Sequence[str] = DEFAULT_FIGURE_FORMATS) -> Path:
    """Final accuracy (test, or val when the sweep held out --val images) against the swept
    ``param``: one line per variant (and per value of the ``others`` swept settings), mean over
    seeds with 95% t-confidence bars. Failed and diverged runs are left out (and counted in the
    title's note); a point that lost some of its runs is hollow and labelled "k of n". Log x
    where the values span decades; a value 0 on a log axis is drawn at the left edge and
    labelled 0. Saved as the PNG ``path`` and in the other ``formats`` next to it;
    returns the PNG's path."""
    metric, word = selection_metric(list(rows))
    path = Path(path)
    series: dict[str, dict[object, list[float]]] = {}
    order: list[str] = []
    missing = 0
    totals: dict[tuple[str, object], int] = {}   # runs per (line, value), finished or not
    for r in rows:
        label = r.get("spec", r["variant"]) + "".join(f", {o}={fmt_value(r[o])}" for o in others)
        if label not in series:
            series[label] = {}
            order.append(label)
        totals[label, r[param]] = totals.get((label, r[param]), 0) + 1
        values = series[label].setdefault(r[param], [])
        if r["status"] == "ok" and r[metric] is not None:
            values.append(float(r[metric]))
        else:
            missing += 1
    axis = ValueAxis.of(r[param] for r in rows)
    position = axis.position
    styles = line_styles(order)   # a norm's colour, as in every other figure
    points = {label: sorted((position[x], mean_ci(v)) for x, v in series[label].items() if v)
              for label in order}
    cis = [ci for pts in points.values() for _, ci in pts]
    # Diverged or untrainable settings stretch the axis over tens of points and flatten the
    # differences that matter: then a second panel zooms on the points near the best (if there
    # are two: one alone has nothing to be compared with).
    best = max((ci.mean for ci in cis), default=0.0)
    near = [ci for ci in cis if ci.mean >= best - ZOOM_WITHIN]
    zoom = 2 <= len(near) < len(cis)
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * (1.7 if zoom else 1)), dpi=DPI)
        axes = fig.subplots(2 if zoom else 1, 1, squeeze=False)[:, 0]
        for ax in axes:
            for label, pts in points.items():
                if pts:
                    ax.errorbar([x for x, _ in pts], [ci.mean for _, ci in pts],
                                yerr=[[ci.mean - ci.lo for _, ci in pts],
                                      [ci.hi - ci.mean for _, ci in pts]],
                                ms=5, lw=1.8, capsize=4, label=label, **styles[label])
                # A point some of whose runs failed or diverged is hollow and says how many it
                # holds: beside its neighbours it would read as the same evidence.
                at, color = dict(pts), styles[label].get("color")
                for x, v in series[label].items():
                    if v and len(v) < totals[label, x]:
                        mean = at[position[x]].mean
                        ax.plot([position[x]], [mean], marker="o", ms=8, mfc="white", mec=color,
                                mew=1.8, ls="none", zorder=4)
                        ax.annotate(f"{len(v)} of {totals[label, x]}", (position[x], mean),
                                    xytext=(6, 6), textcoords="offset points", fontsize=9,
                                    color=color)
            axis.draw(ax, param)
            ax.set_ylabel(f"final {word} accuracy (%)")
        for ax, shown in zip(axes, (cis, near)):
            if not shown:
                continue
            if ax is axes[0]:   # every point with its interval (up to 5 points below its mean)
                low = min(min(ci.mean, max(ci.lo, ci.mean - 5)) for ci in shown)
                bottom, top = max(0.0, low - 0.3), min(100.0, max(ci.hi for ci in shown)) + 0.1
            else:   # the zoom: the means near the best, their bars clipped
                means = [ci.mean for ci in shown]
                margin = max(0.1, 0.15 * (max(means) - min(means)))
                bottom, top = max(0.0, min(means) - margin), min(100.0, max(means) + margin)
            pad = 0.04 * (top - bottom)   # a marker at either end is drawn whole
            # A t-interval of two seeds can pass 100%, which accuracy cannot: the axis stops
            # just above it.
            ax.set_ylim(bottom - pad, min(top + pad, 100.5))
        if zoom:
            axes[1].set_title(f"zoom: the y-range of the means within {ZOOM_WITHIN:g} points of "
                              "the best", fontsize=RC["axes.labelsize"])
        ax = axes[0]
        counts = [ci.n for ci in cis]   # seeds behind each point
        few, most = min(counts, default=1), max(counts, default=1)
        n = f"{most}" if few == most else f"{few} to {most}"
        bars = (f"mean and 95% CI over {n} seeds; bars clipped to the axes"
                if most > 1 else "one seed each")
        note = f"\n({missing} run(s) failed or diverged, not shown)" if missing else ""
        ax.set_title(f"Final {word} accuracy against {AXIS_LABELS.get(param, param)}\n"
                     f"({bars}){note}")
        ax.legend(loc="best", frameon=False)
        fig.tight_layout()
        return save_figure(fig, path, formats)


def write_sweep_report(out: str | Path, spec, rows: list[dict]) -> Path:
    """report.md of a sweep folder: what ran, the table of every point, findings, figures."""
    folder = SweepFolder(out)
    params = [p.name for p in spec.params]
    base = folder.read_record().get("base_config", {})
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Sweep of {', '.join(params)}", "", "## What ran", ""]
    lines.append("- **Swept:** " + "; ".join(
        f"{p.name} = {', '.join(fmt_value(v) for v in p.values)}" for p in spec.params) +
        (" (every combination)" if len(params) > 1 else "") + ".")
    if spec.scale_lr:
        lines.append(f"- **Learning rate** scaled with the batch size (linear rule): "
                     f"lr = {base.get('lr')} x batch_size / {base.get('batch_size')}.")
    # Each run's name (bn+l1=2e-05), or where a swept lambda names its runs bn+l1=0,
    # bn+l1=2e-05, ..., the variant as --variants wrote it (bn+l1), once.
    names: dict[str, set] = {}
    for r in rows:
        names.setdefault(r.get("spec", r["variant"]), set()).add(r["variant"])
    variants = [next(iter(n)) if len(n) == 1 else spec for spec, n in names.items()]
    # A swept setting is the points' own, not the base config's (see Swept above).
    swept = {p.field for p in spec.params}
    subset = (" (training images swept)" if "train_subset" in swept else
              f" (first {base['train_subset']} training images)" if base.get("train_subset")
              else "")
    lines.append(f"- **Variants:** {', '.join(f'`{v}`' for v in variants)}; "
                 f"**seeds:** {', '.join(map(str, seeds))}; **epochs:** "
                 f"{'swept' if 'epochs' in swept else base.get('epochs')}; **dataset:** "
                 f"{'swept' if 'dataset' in swept else base.get('dataset')}{subset}.")
    lines.append(f"- **Runs:** {len(rows)}, of which {sum(r['status'] == 'ok' for r in rows)} ok, "
                 f"{sum(r['status'] == 'diverged' for r in rows)} diverged, "
                 f"{sum(r['status'] == 'failed' for r in rows)} failed. Each point's study is in "
                 "`points/<setting>=<value>/`; one row per run in `sweep.csv`.")
    lines += ["", "## Results", "", "One row per swept setting and variant (its runs differ only in the seed): N, the "
              "number of its seeds that finished (\"of M\" when some failed or diverged), mean ± "
              "sample standard deviation over those N, and the t-based 95% confidence interval "
              "of the mean.",
              "", sweep_table(rows, params).markdown(), "", "## Findings", ""]
    metric, word = selection_metric(rows)
    if word == "val":
        lines.append(f"- **Judged on** the accuracy of the {base.get('val')} training images held "
                     "out by `--val` (never trained on); the test set's numbers are in sweep.csv "
                     "but are not used to choose.")
    lines += [f"- {f}" for f in sweep_findings(rows, params, metric, word)]
    lines += ["", "## Figures", ""]
    for p in params:
        rel = folder.figure(p).relative_to(folder.path).as_posix()
        lines += [f"![Final {word} accuracy against {p}]({rel})", ""]
    return folder.write_report("\n".join(lines).rstrip() + "\n")


def write_sweep_outputs(out: str | Path, spec, rows: list[dict],
                        formats: Sequence[str] = DEFAULT_FIGURE_FORMATS) -> None:
    """sweep.csv, a figure per swept setting (a PNG, and the other ``formats`` next to it) and
    report.md."""
    folder = SweepFolder(out)
    folder.write_table(tuple(p.name for p in spec.params), rows)
    for p in spec.params:
        sweep_figure(rows, p.name, [q.name for q in spec.params if q.name != p.name],
                     folder.figure(p.name), formats)
    write_sweep_report(out, spec, rows)
