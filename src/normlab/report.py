"""report.md of a run folder: what ran, the results table, the paired comparisons, the findings
and every figure.

Made from the saved files alone (:mod:`normlab.runfolder`), never from the training loop, by
``normlab report RUN_DIR`` and at the end of every study. The comparisons come from
:mod:`normlab.compare`, the sentences from :mod:`normlab.findings`, the results table from
:mod:`normlab.table`, the figures from :mod:`normlab.plots` and :mod:`normlab.mistakes`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from normlab import norms
from normlab.compare import EXACT_NOTE, Comparison, comparison_table, run_comparisons
from normlab.config import completed
from normlab.errors import ConfigError, DataError, RunFolderError, brief
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, parse_formats
from normlab.findings import findings
from normlab.runfolder import (PROBE_SIZE, REBUILD, RunData, SweepFolder, is_number,
                               load_diagnostics, load_run, load_test_images)
from normlab.stats import ALPHA, POWER, mean_ci
from normlab.table import results_table, signed_points


@dataclass
class VariantResult:
    """What the report computes for a variant beyond summary.json (whose numbers the results
    table shows itself)."""

    name: str
    params: int | None
    ok_seeds: list[int]
    best_epoch: int | None      # argmax of the mean test-accuracy curve (earliest on ties)
    best_epoch_acc: float | None
    final_gap: float | None     # mean over finished seeds of train_acc - test_acc, last epoch


def variant_results(run: RunData) -> list[VariantResult]:
    out = []
    for name in run.variants:
        s = run.summary["variants"][name]
        curve = run.mean_per_epoch(name, "test_acc")
        best_epoch = run.best_epoch(name, "test_acc")
        out.append(VariantResult(
            name=name, params=s.get("params"), ok_seeds=run.ok_seeds(name), best_epoch=best_epoch,
            best_epoch_acc=curve.get(best_epoch) if best_epoch is not None else None,
            final_gap=run.final_gap(name),
        ))
    return out


def _table(run: RunData, results: list[VariantResult]) -> str:
    """The results table with the report's two extra columns."""
    extra = {"epoch of best": {r.name: str(r.best_epoch) for r in results
                               if r.best_epoch is not None},
             "train − test gap (pts)": {r.name: signed_points(r.final_gap) for r in results
                                        if r.final_gap is not None}}
    return results_table(run.summary, extra, markdown=True).markdown()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _variant_description(s: dict, config: dict) -> str:
    norm = norms.display_name(s.get("norm"))
    spec = norms.NORMS.get(s.get("norm"))
    if spec is not None and spec.uses_groups and config.get("groups"):
        norm += f", {config['groups']} groups"
    if spec is not None and spec.uses_ghost_batch and config.get("ghost_batch"):
        norm += f", virtual batches of {config['ghost_batch']}"
    parts = [norm]
    if s.get("ws"):
        parts.append("weight standardization")
    if s.get("l1"):
        parts.append(f"L1 λ = {s['l1']:g}")
    if s.get("l2"):
        parts.append(f"L2 weight decay {s['l2']:g}")
    return " + ".join(parts)


def _what_ran(run: RunData) -> list[str]:
    cfg, env, summary = run.config, run.env, run.summary
    resolved = cfg.get("resolved") if isinstance(cfg.get("resolved"), dict) else {}
    seed_list = resolved.get("seed_list") or sorted({x for s in summary["variants"].values()
                                                      for x in s["seeds"]})
    lines = []
    data = f"**Dataset:** {run.dataset_title}"
    sizes = []
    if resolved.get("train_images"):
        subset = " (a subset)" if cfg.get("train_subset") else ""
        sizes.append(f"{resolved['train_images']:,} training images{subset}")
    if resolved.get("val_images"):   # held out of the training images by --val
        sizes.append(f"{resolved['val_images']:,} held-out validation images")
    if resolved.get("test_images"):
        sizes.append(f"{resolved['test_images']:,} test images")
    lines.append(data + (f": {', '.join(sizes)}" if sizes else "") + ".")
    described = ", ".join(f"`{n}` ({_variant_description(s, cfg)})"
                          for n, s in summary["variants"].items())
    lines.append(f"**Variants:** {described}.")
    seeds_word = "seed" if len(seed_list) == 1 else "seeds"
    lines.append(f"**Epochs:** {run.epochs} per run; **{seeds_word}:** "
                 f"{', '.join(str(x) for x in seed_list)} ({len(seed_list)} per variant).")
    training = []
    for key, text in (("batch_size", "batch size {}"), ("lr", "peak learning rate {:g}")):
        if cfg.get(key) is not None:
            training.append(text.format(cfg[key]))
    images = resolved.get("train_images")
    if is_number(cfg.get("batch_size")) and is_number(images) and 0 < images < cfg["batch_size"]:
        training[0] += f" (each step all {images:,} training images: fewer than a batch)"
    full = completed(cfg)   # a folder older than a field trained as it did then (e.g. no decay)
    decay = full["weight_decay"]
    if is_number(decay) and "lr" in cfg:
        training.append(f"weight decay {decay:g}" if decay else "no weight decay")
    if cfg.get("ema"):
        training.append(f"evaluated with a moving average of the weights (decay at most "
                        f"{cfg['ema']:g} per step)")
    if "augment" in cfg:
        training.append("augmentation " + (
            f"on (rotation ±{cfg.get('rotate', 0):g}°, shift ±{cfg.get('translate', 0):g} px)"
            if cfg["augment"] else "off"))
        if cfg["augment"] and full["clean_fraction"]:
            training.append(f"the last {full['clean_fraction']:g} of the steps on the plain "
                            "images (--clean-fraction)")
    if training:
        lines.append(f"**Training:** {', '.join(training)}.")
    device = str(env.get("device", "unknown"))
    extra = []
    if env.get("gpu"):
        extra.append(str(env["gpu"]))
    timing = run.timing or {}
    split = is_number(timing.get("workers")) and is_number(timing.get("threads_per_worker"))
    if device == "cpu" and env.get("cpu_count"):
        # The process's torch threads, unless the timing line below says how the workers used
        # them (each worker sets its own count, so the process's says nothing of training).
        threads = "" if split else f", {env.get('torch_threads', '?')} torch threads"
        extra.append(f"{env['cpu_count']} CPU cores{threads}")
    if env.get("torch"):
        extra.append(f"torch {env['torch']}")
    lines.append(f"**Device:** {device}" + (f" ({'; '.join(extra)})" if extra else "") + ".")
    wall = timing.get("train_seconds")
    if is_number(wall):
        how = ""
        if split:
            how = (f", {timing['workers']} worker(s) x {timing['threads_per_worker']} "
                   "torch thread(s)")
        # train_seconds: from the call to the end of training (data loading and every
        # evaluation included), summed over the sessions of a resumed study (those recorded:
        # runfolder.timing); timing.json's wall_seconds adds the writing of this report.
        only = ("; the last session of a resumed study only, as the earlier ones left no record "
                "of their time" if timing.get("last_session_only") is True else "")
        lines.append(f"**Training time:** {_duration(wall)} of wall time (all runs and their "
                     f"evaluations{how}{only}).")
    return [f"- {line}" for line in lines]


DIAGNOSTICS_CAPTION = (
    f"Measured after every epoch on the same {PROBE_SIZE} unaugmented training images "
    "(diagnostics.csv): "
    "dead ReLU units (zero for every probe image), the conv kernels' norm, the gradient-to-"
    "weight norm ratio (as plotted; multiplied by the learning rate it would be the relative "
    "size of a plain SGD step) and, for "
    "BatchNorm, how far a training batch's mean lies from the running mean used at test time.")


def _comparisons_text(comparisons: list[Comparison]) -> str:
    """How the pairs were compared (the paragraph above the comparisons table)."""
    level, power = f"{ALPHA:.0%}", f"{POWER:.0%}"
    tested = sum(c.p is not None for c in comparisons)
    detect_level = (f"at the {level} level" if tested <= 1 else
                    f"at the level {level} / {tested}: the strictest level of Holm's adjustment "
                    f"over the {tested} tested pairs, so a difference of that size is found after "
                    "the adjustment whatever its rank")
    holm = ("With one pair, Holm's adjustment changes nothing." if len(comparisons) == 1 else
            f"With {len(comparisons)} pairs, every p-value is adjusted for the multiple "
            "comparisons with Holm's method (*Holm*), the t-tests and the McNemar tests each as "
            "one family.")
    return (
        "Runs with the same seed share their data order and augmentation, so each pair of "
        "variants is compared seed by seed, over the *N pairs* of seeds both finished. *Mean "
        "diff*: the first variant's final test accuracy minus the second's, mean over the pairs, "
        "in percentage points, with its t-based 95% CI and the two-sided paired t-test's p. "
        "*McNemar*: the final models' predictions on every test image, b = images only the first "
        "variant got right, c = images only the second got right, summed over the paired seeds, "
        "and one exact binomial test of b out of b + c (exact McNemar). Pooling the seeds treats "
        "every (image, seed) as independent, which it is not quite: the same test images recur "
        "in every seed, and the test holds the trained models fixed, leaving out the "
        "seed-to-seed variation of training. It tells whether these trained networks differ on "
        "these images, so the Findings rank two variants only when the paired t-test over seeds "
        f"finds a difference at the {level} level (after Holm's adjustment). {holm} *Detectable*: the smallest true mean "
        f"difference that a two-sided paired t-test would detect with {power} power, given N "
        "pairs and the observed standard deviation of the per-seed differences, "
        f"{detect_level}." + (EXACT_NOTE if any(c.exact for c in comparisons) else ""))


def _ci_past_the_scale(run: RunData) -> str:
    """A sentence for the Results legend when a variant's CI reaches past 0 or 100%, which a
    t-interval of few, widely spread seeds can (accuracy itself cannot); else ""."""
    past = []
    for v in run.variants:
        values = run.summary["variants"][v]["final_test_acc"]["values"]
        ci = mean_ci(values) if len(values) > 1 else None
        if ci is not None and not 0 <= ci.lo <= ci.hi <= 100:
            past.append(v)
    if not past:
        return ""
    names = ", ".join(f"`{v}`" for v in past)
    return (f" The CI of {names} reaches past 0 or 100%: its seeds lie too far apart for so few "
            "of them to pin the mean down (the accuracy itself lies within 0 and 100%).")


def build_report(run: RunData, figures: list[Path], notes: list[str] = ()) -> str:
    """The text of report.md for ``run``, linking the figures given (paths in run/figures)."""
    results = variant_results(run)
    names = ", ".join(f"`{n}`" for n in run.variants)
    out = [f"# {run.dataset_title}: {names}", ""]
    out += ["## What ran", ""] + _what_ran(run) + [""]
    out += ["## Results", "",
            "Mean ± sample standard deviation over the N seeds that finished; *95% CI*: the "
            "t-based confidence interval of the mean final test accuracy. *Epoch of best*: the "
            "epoch where the mean test-accuracy curve is highest. *Train − test gap*: training "
            "accuracy minus test accuracy at the final epoch, mean over seeds, in percentage "
            "points." + _ci_past_the_scale(run), "", _table(run, results), ""]
    comparisons = run_comparisons(run)
    if comparisons:
        out += ["## Comparisons", "", _comparisons_text(comparisons), "",
                comparison_table(comparisons).markdown(), ""]
    gaps = {r.name: r.final_gap for r in results}
    out += ["## Findings", ""]
    out += [f"- {s}" for s in findings(run.summary, gaps, augment=bool(run.config.get("augment")),
                                       comparisons=comparisons,
                                       clean_fraction=completed(run.config)["clean_fraction"])]
    out.append("")

    f = run.folder
    rel = {p: p.relative_to(f.path).as_posix() for p in figures if p.is_file()}
    curve_captions = (
        ("test_acc", "Test accuracy per epoch",
         "Mean over seeds with its 95% confidence band (t-based); the star marks each variant's "
         "best epoch, the number at the right its final accuracy."),
        ("test_loss", "Test loss per epoch", "Cross-entropy on the test set, same layout."),
        ("train_vs_test", "Train vs test accuracy",
         "Dashed: training accuracy; solid: test accuracy; same colour per variant."),
    )
    shown = [(f.figure(k), t, c) for k, t, c in curve_captions if f.figure(k) in rel]
    if f.diagnostics_figure() in rel:
        shown.append((f.diagnostics_figure(), "Diagnostics", DIAGNOSTICS_CAPTION))
    grids = [(n, f.misclassified_figure(n)) for n in run.variants
             if f.misclassified_figure(n) in rel]
    if shown or grids or notes:
        out += ["## Figures", ""]
    for path, title, caption in shown:
        out += [f"### {title}", "", f"![{title}]({rel[path]})", "", caption, ""]
    if grids or notes:
        out += ["### Misclassified test images", ""]
        out += [f"{note}" for note in notes] + ([""] if notes else [])
    for name, path in grids:
        out += [f"![Misclassified test images of {name}]({rel[path]})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(run_dir: str | Path, mode: str = "confident",
                 data_dir: str | Path | None = None,
                 formats: str | Sequence[str] = DEFAULT_FIGURE_FORMATS) -> Path:
    """Regenerate every figure of ``run_dir`` and write ``report.md`` there (atomically).

    Each figure is a PNG, which report.md shows, and a file of the same stem in each other of
    ``formats`` (png, svg, pdf; a ConfigError names them for an unknown one).

    The test images for the grids come from ``data_dir`` if given, else from where the run found
    its data. If they cannot be found there, the grids are left out, report.md says why and a
    warning says how to give them; a ``data_dir`` given from which they cannot be loaded (nor
    from the usual fallbacks: $NORMLAB_DATA, the cache, a download) is a DataError, raised
    before anything is written. Every file the report reads (metrics, diagnostics, predictions)
    is read and checked before the first figure is drawn, so a damaged one leaves the folder as
    it was.
    """
    from normlab import mistakes, plots
    from normlab.diag_plots import plot_diagnostics
    from normlab.config import Config

    mistakes.check_mode(mode)
    formats = parse_formats(formats)
    if SweepFolder.holds_sweep(run_dir):   # not a run folder: say what to give instead
        sweep = SweepFolder(run_dir)
        points = sweep.point("x").path.parent
        try:
            name = sweep.experiment("restore it from a copy of the sweep folder")
        except RunFolderError as e:   # its sweep.json cannot be read: only the points can help
            raise RunFolderError(f"{run_dir} is a sweep folder; give one of its points (a run "
                                 f"folder under {points}). Its own report can be rewritten once "
                                 f"{sweep.record} is restored: {e}") from None
        again = (f"normlab experiment {name} --out {run_dir}" if name else
                 f"normlab sweep --resume {run_dir} (normlab experiment NAME --out {run_dir} for "
                 "an experiment's folder)")
        raise RunFolderError(f"{run_dir} is a sweep folder; give one of its points (a run "
                             f"folder under {points}), or rewrite its own report with {again}")
    run = load_run(run_dir)
    folder = run.folder
    fix = f"restore it from a copy of the run folder, or {REBUILD}"
    try:  # the saved config must still be one normlab accepts
        Config.from_saved(run.config)
    except (ConfigError, TypeError) as e:
        raise RunFolderError(f"{folder.config} holds an invalid config ({e}); {fix}") from None
    # Asked for with data_dir: bad input if they cannot be loaded, checked before any writing.
    test = load_test_images(run, data_dir) if data_dir is not None else None
    notes = []
    if test is None and any(run.ok_seeds(v) for v in run.variants):
        try:
            test = load_test_images(run)
        except DataError as e:
            notes.append(f"The grids of misclassified images were not made: the test images "
                         f"could not be loaded ({e}).")
            warnings.warn(f"{folder.report} leaves out the grids of misclassified images: the "
                          f"test images of {run.dataset} were not found; to draw them, run "
                          f"'normlab report {folder.path} --data-dir DIR' with the folder of its "
                          "IDX files, or set $NORMLAB_DATA")
    diagnostics = load_diagnostics(folder.path)   # read and checked before anything is drawn
    try:
        # The grids first: they read (and check) every predictions file before drawing one.
        grids = ([] if test is None else
                 mistakes.make_misclassified(run, mode, test=test, formats=formats))
        figures = plots.plot_curves(run, formats)
        figures += [p for p in [plot_diagnostics(run, formats, diagnostics)] if p is not None]
        figures += grids
        if grids:
            what = ("the 10 most confident mistakes" if mode == "confident"
                    else "the first 10 mistakes by test index")
            notes.insert(0, f"For each variant, {what} of its first finished seed, with the true "
                            "and predicted class, the model's confidence (softmax probability of "
                            "the predicted class) and the test-set index.")
        return folder.write_report(build_report(run, figures, notes))
    except OSError as e:
        raise RunFolderError(f"cannot write into {folder.path} ({e.strerror or e}: "
                             f"{getattr(e, 'filename', '') or ''}); make the run folder writable, "
                             "or copy it somewhere writable and report on the copy") from None
    except (TypeError, ValueError, KeyError) as e:
        # load_run checks the fields it needs; anything else damaged shows up here.
        raise RunFolderError(f"{folder.path} holds a damaged value ({type(e).__name__}: {brief(e)}); "
                             f"{fix}") from None
