"""An experiment's mechanism: the measurements that explain its sweep, as tables, a figure and
sections of its report.md. Reads the saved sweep (sweep.csv, each point's diagnostics.csv and,
for BatchNorm's batch statistics, each run's saved final weights), never the training loop.

* ``mechanism.csv``: per run, its final-epoch diagnostics summed up over the conv layers
  (:mod:`normlab.diag_plots`' measures: dead ReLU units, kernel norm, gradient / weight ratio,
  BatchNorm's batch-vs-running mean gap);
* ``batch_stats.csv`` (experiments with ``batch_stats``): per BatchNorm run, test accuracy with
  running statistics and with batch statistics at its training batch size
  (:mod:`normlab.posthoc`);
* ``figures/mechanism.png``: those against the first swept setting, mean and 95% CI over seeds;
* ``report.md``: the sweep's report with the question, the protocol, the CPU time and the
  mechanism tables added.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from normlab.compare import EXACT_NOTE, compare_points, format_paired_p, points_table
from normlab.diag_plots import PANELS, bn_gap, conv_weight_norm, dead_pct, grad_ratio
from normlab.findings import fmt_value
from normlab.errors import RunFolderError
from normlab.runfolder import (BATCH_STAT_COLUMNS, MECHANISM_COLUMNS, PROBE_SIZE, SweepFolder,
                               load_diagnostics, load_run, six_digits)
from normlab.stats import ALPHA, POWER, describe, detectable_after_holm, holm, mean_ci, paired
from normlab.style import DPI, RC, line_styles, plain_log_y, save_figure
from normlab.sweep_spec import point_name, point_specs
from normlab.sweep_report import ValueAxis, point_groups
from normlab.table import (Table, format_ci, format_detectable, format_pm, signed_ci,
                           signed_points)

# (column, measure, title, digits, y-axis label); the labels of the per-epoch measures are those
# of the diagnostics figure (normlab.diag_plots.PANELS), which draws the same numbers over epochs.
_YLABEL = {value: ylabel for value, _, ylabel, _ in PANELS}
MEASURES = (("dead_pct", dead_pct, "dead ReLU units (%)", 2, _YLABEL[dead_pct]),
            ("weight_norm", conv_weight_norm, "conv ||w||", 2, _YLABEL[conv_weight_norm]),
            ("grad_ratio", grad_ratio, "||grad|| / ||w|| (last step, penalties incl.)", 4,
             _YLABEL[grad_ratio]),
            ("bn_gap", bn_gap, "BN mean gap (running std)", 3, _YLABEL[bn_gap]),
            # from the saved final weights (normlab.posthoc), not from diagnostics.csv
            ("loss_grad_ratio", None, "loss-only ||dL/dw|| / ||w|| (final weights)", 4,
             "||dL/dw|| / ||w||, mean over conv layers"))
AGAINST = "## Against "   # the first section this module adds after the sweep's own
MARKER = "\n<!-- normlab experiment sections -->"   # where the added sections begin


def _points(rows: list[dict], params: list[str]) -> list[dict]:
    """The swept values of each point, in sweep.csv order, once each."""
    seen: dict[tuple, dict] = {}
    for r in rows:
        seen.setdefault(tuple(r[p] for p in params), {p: r[p] for p in params})
    return list(seen.values())


def mechanism_rows(sweep: SweepFolder, params: list[str], rows: list[dict]) -> list[dict]:
    """Per finished run of the sweep: its swept values, variant, seed and the final-epoch value
    of every measure of :data:`MEASURES` (None where it does not apply)."""
    ok = {(tuple(r[p] for p in params), r["variant"], r["seed"]) for r in rows
          if r["status"] == "ok"}
    out = []
    for values in _points(rows, params):
        per_run: dict[tuple[str, int], dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for d in load_diagnostics(sweep.point(point_name(values)).path):
            per_run[(d["variant"], d["seed"])][d["epoch"]].append(d)
        for (variant, seed), epochs in per_run.items():
            if (tuple(values.values()), variant, seed) not in ok:
                continue
            last = epochs[max(epochs)]
            measured = {col: f(last) for col, f, *_ in MEASURES if f}
            out.append({**values, "variant": variant, "seed": seed,
                        **{col: None if v is None else six_digits(v)
                           for col, v in measured.items()}})
    return out


def posthoc_rows(sweep: SweepFolder, params: list[str], rows: list[dict],
                 batch_stats: bool, progress: bool = False) -> tuple[list[dict], list[dict]]:
    """(BatchNorm tested with running and batch statistics if ``batch_stats``, else [];
    the loss gradient on the final weights), per finished run, with its swept values: the
    measurements of :mod:`normlab.posthoc` on each point's saved weights. ``progress``: a
    progress bar over the points (the measurements take seconds per point)."""
    import torch
    from tqdm.auto import tqdm

    from normlab.config import Config
    from normlab.posthoc import evaluate_point, gradient_rows
    from normlab.study_data import load_data

    batch, grads, cache = [], [], {}
    points = _points(rows, params)
    for values in tqdm(points, desc="measuring final weights", unit="point",
                       disable=not progress, dynamic_ncols=True):
        folder = sweep.point(point_name(values))
        if not folder.finished:
            continue
        cfg = Config.from_saved(load_run(folder.path).config)
        key = (cfg.dataset, cfg.train_subset, cfg.val, cfg.data_dir)
        if key not in cache:   # on the CPU, where the checkpoints load: the same on any machine
            cache[key] = load_data(cfg.replace(device="cpu"), torch.device("cpu"))
        data = cache[key]
        if batch_stats:
            batch += [{**values, **r} for r in evaluate_point(
                folder, cfg, data.test.images, data.test.labels, data.mean, data.std)]
        grads += [{**values, **r} for r in gradient_rows(
            folder, cfg, data.train.images, data.train.labels, data.mean, data.std)]
    return batch, grads


def _cell(values: list[float], digits: int) -> str:
    """mean ± std [95% CI] of one group's values."""
    stat = describe(values)
    return f"{format_pm(stat, digits)} {format_ci(stat, digits, missing='')}".strip()


def mechanism_table(rows: list[dict], params: list[str]) -> Table:
    """One line per point and variant: N and every measure as mean ± std [95% CI]."""
    shown = [m for m in MEASURES if any(r.get(m[0]) is not None for r in rows)]
    t = Table(params + ["variant", "N"] + [title for _, _, title, *_ in shown],
              numeric=set(range(len(params))) | set(range(len(params) + 1, len(params) + 2 + len(shown))))
    for key, rs in point_groups(rows, params).items():
        cells = []
        for col, _, _, digits, _ in shown:
            vals = [r[col] for r in rs if r.get(col) is not None and math.isfinite(r[col])]
            cells.append(_cell(vals, digits) if vals else "–")
        t.rows.append([fmt_value(v) for v in key[:-1]] + [f"`{key[-1]}`", str(len(rs))] + cells)
    return t


def batch_stats_table(rows: list[dict], params: list[str]) -> Table:
    """One line per point and BatchNorm variant: accuracy with running and with batch
    statistics, and their paired difference (batch − running) with its 95% CI."""
    t = Table(params + ["variant", "N", "running stats acc (%)", "batch stats acc (%)",
                        "batch − running (points)", "95% CI"],
              numeric=set(range(len(params))) | {len(params) + i for i in range(1, 6)})
    for key, rs in point_groups(rows, params).items():
        run, bat = [r["acc_running"] for r in rs], [r["acc_batch"] for r in rs]
        d = mean_ci([b - r for b, r in zip(bat, run)])   # an interval even where all agree
        ci = signed_ci(d.lo, d.hi) if d.available else "–"
        t.rows.append([fmt_value(v) for v in key[:-1]] + [
            f"`{key[-1]}`", str(len(rs)), format_pm(describe(run), 2), format_pm(describe(bat), 2),
            signed_points(d.mean), ci])
    return t


def add_specs(record: dict, params: list[str], rows: list[dict]) -> None:
    """Adds "spec" to each of ``rows`` (of sweep.csv, or measured per run): the variant as the
    sweep's --variants wrote it (``sweep_spec.point_specs`` at the row's point), the same at every
    point where the name carries a swept lambda ("bn+l1" for "bn+l1=0.0001"). ``record``: the
    sweep's sweep.json."""
    for r in rows:
        written = point_specs(record, {p: r[p] for p in params})
        if r["variant"] not in written:   # its runs would lose their pairs without a word
            raise RunFolderError(f"the sweep's sweep.json lists no variant that it names "
                                 f"{r['variant']!r}; run the experiment's command again with "
                                 "a new --out")
        r["spec"] = written[r["variant"]]


def setting_comparisons(rows: list[dict], params: list[str], reference) -> list[dict]:
    """Each value of the first swept setting against ``reference``, per spec (the variant as
    written, each row's "spec": :func:`add_specs`; its name where it has none) and value of the
    other settings, paired by seed: runs with the same seed start from the same weights and draw
    their data order from the same generator. Per comparison: N pairs
    (seeds finished at both values), the mean difference (value − reference, final test
    accuracy), its 95% CI, the paired t-test's p, Holm-adjusted over every comparison of the
    experiment, and the difference detectable with 80% power at the observed spread after that
    adjustment (at the level 5% / m of the m comparisons with a test, Holm's strictest)."""
    x, others = params[0], params[1:]
    acc: dict[tuple, dict[int, float]] = defaultdict(dict)
    sds: list[float | None] = []   # per comparison, the sd of its paired differences
    for r in rows:   # every point, also one where no run finished (N pairs 0)
        key = (r.get("spec", r["variant"]),) + tuple(r[o] for o in others) + (r[x],)
        if r["status"] == "ok" and r["final_test_acc"] is not None:
            acc[key][r["seed"]] = r["final_test_acc"]
        else:
            acc.setdefault(key, {})
    out = []
    for key in sorted({k[:-1] for k in acc}, key=str):
        base = acc.get(key + (reference,), {})
        for value in sorted({k[-1] for k in acc if k[:-1] == key}):
            if value == reference:
                continue
            seeds = sorted(set(base) & set(acc[key + (value,)]))
            item = {"spec": key[0], **dict(zip(others, key[1:])), x: value, "n": len(seeds)}
            if seeds:
                d = paired([acc[key + (value,)][s] for s in seeds], [base[s] for s in seeds])
                item.update(diff=d["diff"], lo=d["ci_lo"], hi=d["ci_hi"], p=d["p"])
            out.append(item)
            sds.append(d["sd"] if seeds else None)
    for c, detectable in zip(out, detectable_after_holm(list(zip(sds, (c["n"] for c in out))))):
        if detectable is not None:
            c["detectable"] = detectable
    for c, adjusted in zip(out, holm([c.get("p") for c in out])):
        if adjusted is not None:
            c["holm_p"] = adjusted
    return out


def setting_table(comparisons: list[dict], params: list[str], reference) -> Table:
    """The comparisons of :func:`setting_comparisons` as a table."""
    x, others = params[0], params[1:]
    t = Table(others + ["variant", f"{x} vs {fmt_value(reference)}", "N pairs",
                        "mean diff (pts)", "95% CI", "Holm p", "detectable (pts)"],
              numeric=set(range(len(others))) | {len(others) + i for i in range(1, 7)})
    for c in comparisons:
        tested = c.get("diff") is not None
        ci = signed_ci(c.get("lo") if tested else None, c.get("hi"))
        t.rows.append([fmt_value(c[o]) for o in others] + [
            f"`{c['spec']}`", fmt_value(c[x]), str(c["n"]),
            signed_points(c["diff"]) if tested else "–", ci,
            format_paired_p(c["holm_p"], exact=c.get("lo") is None)
            if c.get("holm_p") is not None else "–",
            format_detectable(c["detectable"]) if c.get("detectable") is not None else "–"])
    return t


def mechanism_figure(rows: list[dict], batch_rows: list[dict], params: list[str],
                     path: Path, formats) -> Path:
    """Each measure (and, with ``batch_rows``, BatchNorm's accuracy with running and batch
    statistics) against the first swept setting: a line per variant and value of the other
    settings, mean and 95% t-interval over seeds; log x where the values span a decade."""
    x_param, others = params[0], params[1:]
    panels = [m for m in MEASURES if any(r.get(m[0]) is not None for r in rows)]
    n = len(panels) + (1 if batch_rows else 0)
    cols = 2 if n > 1 else 1
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(10.0, 3.6 * math.ceil(n / cols) + 0.6), dpi=DPI)
        axes = fig.subplots(math.ceil(n / cols), cols, squeeze=False).flat
        def label_of(r):
            return (r.get("spec", r["variant"]),) + tuple(r[o] for o in others)

        # In the rows' order (the sweep's points, then the study's variants), as the sweep's
        # figure orders its lines: batch 8 before 128, each line's style the same in both.
        labels = list(dict.fromkeys(label_of(r) for r in rows))
        names = {k: ", ".join([k[0]] + [f"{o}={fmt_value(v)}" for o, v in zip(others, k[1:])])
                 for k in labels}
        by_name = line_styles([names[k] for k in labels])
        styles = {k: by_name[names[k]] for k in labels}

        def draw(ax, data, column, label_of, style=None, suffix=""):
            for key in labels:
                pts = defaultdict(list)
                for r in data:
                    if label_of(r) == key and r.get(column) is not None \
                            and math.isfinite(r[column]):
                        pts[position[r[x_param]]].append(r[column])
                if not pts:
                    continue
                xs = sorted(pts)
                cis = [mean_ci(pts[x]) for x in xs]
                name = names[key]
                ax.errorbar(xs, [c.mean for c in cis],
                            yerr=[[c.mean - c.lo for c in cis], [c.hi - c.mean for c in cis]],
                            ms=4, lw=1.6, capsize=3, label=name + suffix,
                            **{**styles[key], **({"linestyle": style} if style else {})})

        def within(ax, top: float | None = None) -> None:
            # Every measure is >= 0 and a percentage <= 100: a few seeds' t-interval can pass
            # both, and is drawn clipped to what the measure can be.
            lo, hi = ax.get_ylim()
            ax.set_ylim(max(lo, 0.0), hi if top is None else min(hi, top))

        axis = ValueAxis.of(r[x_param] for r in rows)
        position = axis.position
        for ax, (col, _, title, _, ylabel) in zip(axes, panels):
            draw(ax, rows, col, label_of)
            ax.set_title(title)
            ax.set_ylabel(ylabel, fontsize=10)
            values = [r[col] for r in rows if r.get(col) is not None and math.isfinite(r[col])]
            if values and min(values) > 0 and max(values) / min(values) >= 20:
                plain_log_y(ax)   # values over decades (a diverging run's weights)
            else:
                within(ax, 100.0 if col == "dead_pct" else None)
        if batch_rows:
            ax = list(fig.axes)[len(panels)]
            draw(ax, batch_rows, "acc_running", label_of, "-", " running")
            draw(ax, batch_rows, "acc_batch", label_of, "--", " batch")
            ax.set_title("BatchNorm test acc (%): running vs batch stats")
            ax.set_ylabel("test accuracy (%)", fontsize=10)
            within(ax, 100.0)
            ax.legend(frameon=False)
        for ax in fig.axes:
            axis.draw(ax, x_param)
        for ax in list(fig.axes)[n:]:
            ax.set_visible(False)
        handles, legend = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, legend, loc="lower center", ncol=min(5, len(legend)), frameon=False)
        seeds = len({r["seed"] for r in rows})
        fig.suptitle(f"Final-epoch diagnostics against {x_param} (mean and 95% CI over "
                     f"{seeds} seeds; bars clipped to the axes)" if seeds > 1 else
                     f"Final-epoch diagnostics against {x_param} (one seed)")
        fig.tight_layout(rect=(0, 0.06, 1, 0.96))
        return save_figure(fig, path, formats)


def cpu_time(sweep: SweepFolder) -> tuple[float, str]:
    """(seconds, CPU) the sweep's points took: the sum of their recorded wall times (a resumed
    point adds its earlier sessions), and the CPU model its env.json names."""
    seconds, cpus = 0.0, set()
    for point in sweep.points():
        if not point.finished:
            continue
        run = load_run(point.path)
        seconds += float((run.timing or {}).get("wall_seconds") or 0.0)
        cpus.add(str(run.env.get("cpu") or "unknown CPU"))
    return seconds, ", ".join(sorted(cpus))


def write_experiment_outputs(exp, out: str | Path, formats, overrides: dict | None = None,
                             progress: bool = False) -> Path:
    """mechanism.csv, batch_stats.csv (if ``exp.batch_stats``), figures/mechanism.png and the
    experiment's sections of report.md, from the finished sweep in ``out`` (run with
    ``overrides``, as the report's command then shows); ``progress``: a bar while the final
    weights are measured."""
    sweep = SweepFolder(out)
    rows = sweep.read_table()
    params = [p.split("=", 1)[0] for p in exp.params]
    mech = mechanism_rows(sweep, params, rows)
    batch, grads = posthoc_rows(sweep, params, rows, exp.batch_stats, progress)
    record = sweep.read_record()

    def run_key(r: dict) -> tuple:
        return tuple(r[p] for p in params) + (r["variant"], r["seed"])

    # The measurements on final weights need the checkpoints, which a copy of the folder (e.g.
    # the repository's, without checkpoints/) may lack: a run measured before keeps its values.
    before = {path: {run_key(r): r for r in sweep.read_rows(path)} if path.is_file() else {}
              for path in (sweep.mechanism, sweep.batch_stats)}
    by_run = {run_key(g): g["loss_grad_ratio"] for g in grads}
    for r in mech:
        old = before[sweep.mechanism].get(run_key(r), {})
        r["loss_grad_ratio"] = by_run.get(run_key(r), old.get("loss_grad_ratio"))
    fresh = {run_key(b) for b in batch}
    order = {run_key(r): i for i, r in enumerate(rows) if r["status"] == "ok"}   # finished runs
    batch = sorted(batch + [b for k, b in before[sweep.batch_stats].items()
                            if k not in fresh and k in order],
                   key=lambda b: order[run_key(b)])
    sweep.write_rows(sweep.mechanism, tuple(params) + MECHANISM_COLUMNS, mech)
    if exp.batch_stats:
        sweep.write_rows(sweep.batch_stats, tuple(params) + BATCH_STAT_COLUMNS, batch)
    add_specs(record, params, rows + mech + batch)   # what comparisons and lines pair runs by
    drawable = any(r.get(m[0]) is not None for r in mech for m in MEASURES) or batch
    figure = (mechanism_figure(mech, batch, params, sweep.mechanism_figure(), formats)
              if drawable else None)
    seconds, cpu = cpu_time(sweep)
    # The sweep's own sections (from "## What ran" on), without what an earlier call added
    # (from the marker on; "## Against " and "## Mechanism" in reports written before it).
    report = sweep.report.read_text(encoding="utf-8")
    if "## What ran" not in report:
        raise RunFolderError(f"{sweep.report} is not a sweep's report; run the experiment's "
                             "command again to rewrite it")
    body = report[report.find("## What ran"):]
    for end in (MARKER, f"\n{AGAINST}", "\n## Mechanism"):
        body = body.split(end, 1)[0]
    head = [f"# Experiment `{exp.name}`", "", f"**Question.** {exp.question}", "",
            f"**Protocol.** {exp.protocol}", ""]
    departures = exp.departures(overrides)
    if departures:
        head += [f"**This run departs from that design:** {', '.join(departures)}; the numbers "
                 "in the Protocol are the design's.", ""]
    head += [
            f"**Command:** `{exp.experiment_command(overrides, out)}`: the sweep "
            f"`{exp.command(overrides)}`, then the measurements below.", "",
            f"**Time:** {seconds / 60:.1f} min of training and evaluation in all (wall time, "
            f"summed over the points' records; the batch-statistics test not included), on "
            f"{cpu}.", ""]
    comparisons = setting_comparisons(rows, params, exp.reference)
    tested = [c for c in comparisons if c.get("p") is not None]
    tail = [MARKER.strip(), "",
            f"{AGAINST}{params[0]} = {fmt_value(exp.reference)}, seed by seed", "",
            f"Each value of {params[0]} against {fmt_value(exp.reference)}, per variant: the "
            "runs with the same seed start from the same weights and draw their data order from "
            "the same generator, so they are paired. *Mean diff*: final test accuracy at the "
            f"value minus at {fmt_value(exp.reference)}, mean over the N pairs (seeds finished "
            "at both), in percentage points, with its t-based 95% CI; *Holm p*: the paired "
            + (f"t-test's p, adjusted with Holm's method over the {len(tested)} comparison"
               f"{' of this table that has' if len(tested) == 1 else 's of this table that have'} "
               "pairs"
               if tested else "t-test's p, adjusted with Holm's method over the comparisons of "
               "this table that have pairs (none here: a t-test needs two or more pairs)")
            + "; *detectable*: the smallest difference the paired t-test "
            f"detects with {POWER:.0%} power at the observed spread, "
            + (f"at the level {ALPHA:.0%} / {len(tested)}: the strictest level of that "
               "adjustment, so a difference of that size is found after it whatever its rank"
               if len(tested) > 1 else f"at the {ALPHA:.0%} level") + "."
            + (EXACT_NOTE if any(c.get("lo") is None for c in tested) else "")
            + f" A difference whose Holm p is above {ALPHA:g} is not called "
            "a difference. (The Findings above compare each variant's "
            "best and worst setting with Welch's test, Holm-adjusted over the pairs of that "
            "setting's values only: a first look, not a ranking.)",
            "",
            setting_table(comparisons, params, exp.reference).markdown(), ""]
    points: dict[tuple, dict] = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        if r["status"] == "ok" and r["final_test_acc"] is not None:
            points[tuple(r[p] for p in params)][r.get("spec", r["variant"])][r["seed"]] = \
                r["final_test_acc"]
    between = compare_points({k: dict(v) for k, v in points.items()})
    tail += [] if not between else [
             "### Between variants at every point, adjusted over the experiment", "",
             "The pairs of variants compared seed by seed as in each point's report, but with "
             f"Holm's adjustment and the detectable difference over all {len(between)} pairs "
             "of all points as one family: a difference picked out by scanning the points "
             "must pass this *Holm t-test p*; each point's own report adjusts over its pairs "
             "alone." + (EXACT_NOTE if any(c.exact for _, c in between) else ""), "",
             points_table(between, params).markdown(), ""]
    tail += ["## Mechanism", "",
            "Final-epoch diagnostics of every finished run (`mechanism.csv`; defined in "
            f"`normlab.diagnostics`, measured on {PROBE_SIZE} fixed training images), per point "
            "and variant: mean ± std [95% CI] over the N seeds. *Dead ReLU units*: percent of "
            "(channel, position) units zero for every probe image, mean over the conv layers' "
            "fractions. *conv ||w||*: the norm of all conv kernels. *||grad|| / ||w|| (last step, "
            "penalties incl.)*: mean "
            "over the conv layers of the gradient norm of the epoch's last training step (loss "
            "and penalty; that step's batch may be smaller than the others) over the kernel "
            "norm (as plotted; multiplied by the learning rate it would be the relative size of a "
            "plain SGD step). *BN mean "
            "gap*: distance of a training-size batch's mean from BatchNorm's running mean, in "
            "running standard deviations. *loss-only ||dL/dw|| / ||w||*: the same ratio for the "
            "cross-entropy alone, on the final weights and the whole probe batch in training "
            "mode (`normlab.posthoc`): steadier, and free of the penalty.", "",
            mechanism_table(mech, params).markdown(), ""]
    if exp.batch_stats:
        tail += ["### BatchNorm with batch statistics at test time", "",
                 "Each BatchNorm run's final weights tested twice (`batch_stats.csv`): with the "
                 "running statistics evaluation normally uses, and in training mode, each test "
                 "batch of the training batch size normalized by its own statistics. The "
                 "difference is paired run by run, with its t-based 95% CI over the seeds "
                 "(each row's on its own, not adjusted for the table's several rows).", "",
                 batch_stats_table(batch, params).markdown(), ""]
    if figure is not None:
        rel = figure.relative_to(sweep.path).as_posix()
        tail += [f"![Final-epoch diagnostics against {params[0]}]({rel})", ""]
    else:
        tail += ["No finished run recorded diagnostics, so there is no mechanism figure.", ""]
    text = "\n".join(head) + "\n" + body.lstrip("\n").rstrip() + "\n\n" + "\n".join(tail)
    return sweep.write_report(text.rstrip() + "\n")


__all__ = ["MEASURES", "add_specs", "posthoc_rows", "batch_stats_table", "cpu_time",
           "mechanism_figure", "mechanism_rows", "mechanism_table", "setting_comparisons",
           "setting_table", "write_experiment_outputs"]
