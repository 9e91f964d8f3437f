"""Reports made from a saved run folder (never from the training loop)."""

from __future__ import annotations

import csv
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from normlab.errors import RunFolderError
from normlab.layout import METRIC_COLUMNS, PREDICTION_COLUMNS
from normlab.store import read_json_object


def load_summary(run_dir: str | Path) -> dict:
    """summary.json of ``run_dir``, with a clear error when it is missing or damaged."""
    path = Path(run_dir) / "summary.json"
    summary = read_json_object(
        path, f"is {run_dir} a finished normlab run folder? If so, re-run the study to rebuild it")
    if not isinstance(summary.get("variants"), dict):
        raise RunFolderError(f"{path} has no 'variants' table; re-run the study to rebuild it")
    return summary


def format_pm(stat: dict, digits: int, missing: str = "–") -> str:
    """A ``{mean, std, n}`` statistic as "mean ± std" (just the mean for one seed)."""
    if stat.get("mean") is None:
        return missing
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
            f"| {s['final_test_acc']['n']} | {format_pm(s['final_test_acc'], 2)} "
            f"| {format_pm(s['best_test_acc'], 2)} | {format_pm(s['final_test_loss'], 4)} |"
        )
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# A whole run folder, checked file by file

_INT_COLUMNS = ("seed", "epoch")
_STAT_KEYS = ("final_test_acc", "best_test_acc", "final_test_loss")
_STATUSES = ("ok", "partly-diverged", "diverged")
_REBUILD = "re-run the study to rebuild the run folder"

DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "kmnist": "KMNIST"}
NORM_NAMES = {"bn": "BatchNorm", "gn": "GroupNorm", "ln": "LayerNorm", "in": "InstanceNorm",
              "none": "no norm"}


@dataclass
class RunData:
    """Everything :func:`load_run` read from a run folder, checked.

    ``metrics`` rows are dicts with the columns of metrics.csv: ``variant`` a str, ``seed`` and
    ``epoch`` ints, the rest floats.
    """

    run_dir: Path
    config: dict
    summary: dict
    metrics: list[dict]
    env: dict
    timing: dict | None = None   # timing.json (wall time, workers), when present

    @property
    def variants(self) -> list[str]:
        """Variant names in the order of the study (summary.json's order)."""
        return list(self.summary["variants"])

    @property
    def dataset(self) -> str:
        return str(self.summary.get("dataset") or self.config.get("dataset"))

    @property
    def dataset_title(self) -> str:
        return DATASET_TITLES.get(self.dataset, self.dataset)

    @property
    def epochs(self) -> int:
        return int(self.summary.get("epochs") or self.config.get("epochs"))

    @property
    def classes(self) -> list[str]:
        resolved = self.config.get("resolved")
        if isinstance(resolved, dict) and isinstance(resolved.get("classes"), list):
            return [str(c) for c in resolved["classes"]]
        return [str(d) for d in range(10)]

    def seeds(self, variant: str) -> list[int]:
        return list(self.summary["variants"][variant]["seeds"])

    def ok_seeds(self, variant: str) -> list[int]:
        """The seeds of ``variant`` that finished (did not diverge), in order."""
        s = self.summary["variants"][variant]
        return [seed for seed in s["seeds"] if seed not in set(s["diverged_seeds"])]

    def rows(self, variant: str, seed: int) -> list[dict]:
        """metrics rows of one run, by epoch."""
        return sorted((r for r in self.metrics if r["variant"] == variant and r["seed"] == seed),
                      key=lambda r: r["epoch"])

    def per_epoch(self, variant: str, column: str) -> dict[int, list[float]]:
        """``column`` by epoch over the finished seeds of ``variant`` (seed order)."""
        out: dict[int, list[float]] = {}
        for seed in self.ok_seeds(variant):
            for r in self.rows(variant, seed):
                out.setdefault(r["epoch"], []).append(r[column])
        return dict(sorted(out.items()))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_config(path: Path, config: dict) -> None:
    fix = f"restore config.json from a copy of this run folder, or {_REBUILD}"
    if not isinstance(config.get("dataset"), str):
        raise RunFolderError(f"{path} has no 'dataset' name; {fix}")
    if not _is_number(config.get("epochs")) or config["epochs"] < 1:
        raise RunFolderError(f"{path} has no valid 'epochs' (a whole number >= 1); {fix}")
    resolved = config.get("resolved")
    if resolved is not None:
        if not isinstance(resolved, dict):
            raise RunFolderError(f"{path}: 'resolved' is not an object; {fix}")
        classes = resolved.get("classes")
        if classes is not None and not (isinstance(classes, list) and classes):
            raise RunFolderError(
                f"{path}: 'resolved'.'classes' is not a list of class names; {fix}"
            )


def _check_stat(path: Path, name: str, key: str, stat: object) -> None:
    where = f"{path}: variant {name!r}, {key!r}"
    if not isinstance(stat, dict):
        raise RunFolderError(f"{where} is missing or not an object; {_REBUILD}")
    values = stat.get("values")
    if not isinstance(values, list) or not all(_is_number(v) for v in values):
        raise RunFolderError(f"{where}: 'values' is not a list of numbers; {_REBUILD}")
    if stat.get("n") != len(values):
        raise RunFolderError(f"{where}: 'n' does not match the number of values; {_REBUILD}")
    for k in ("mean", "std"):
        v = stat.get(k)
        if not (v is None or _is_number(v)) or (v is None and values):
            raise RunFolderError(f"{where}: {k!r} is not a number; {_REBUILD}")


def _check_summary(path: Path, summary: dict) -> None:
    if not summary["variants"]:
        raise RunFolderError(f"{path} lists no variants; {_REBUILD}")
    for name, s in summary["variants"].items():
        if not isinstance(s, dict):
            raise RunFolderError(f"{path}: variant {name!r} is not an object; {_REBUILD}")
        if s.get("name") != name:
            raise RunFolderError(f"{path}: variant {name!r} has name {s.get('name')!r}; {_REBUILD}")
        if s.get("status") not in _STATUSES:
            raise RunFolderError(
                f"{path}: variant {name!r} has status {s.get('status')!r}, expected one of "
                f"{', '.join(_STATUSES)}; {_REBUILD}"
            )
        if s.get("params") is not None and not _is_number(s.get("params")):
            raise RunFolderError(f"{path}: variant {name!r}: 'params' is not a number; {_REBUILD}")
        for key in ("seeds", "diverged_seeds"):
            seeds = s.get(key)
            if not isinstance(seeds, list) or not all(isinstance(x, int) for x in seeds):
                raise RunFolderError(
                    f"{path}: variant {name!r}: {key!r} is not a list of seed numbers; {_REBUILD}"
                )
        for key in _STAT_KEYS:
            _check_stat(path, name, key, s.get(key))
    for key in ("epochs", "seeds"):
        if key in summary and not _is_number(summary[key]):
            raise RunFolderError(f"{path}: {key!r} is not a number; {_REBUILD}")
    wall = summary.get("wall_seconds")
    if wall is not None and not _is_number(wall):
        raise RunFolderError(f"{path}: 'wall_seconds' is not a number; {_REBUILD}")


def _read_csv(path: Path, fix: str) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header, [(line number, cells)]) of a CSV file, or RunFolderError naming the file."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            lines = [(reader.line_num, row) for row in reader]
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {fix}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise RunFolderError(f"{path} is damaged, not a CSV file ({e}); {fix}") from None
    except OSError as e:
        raise RunFolderError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    return header, lines


def _read_typed_csv(path: Path, columns: dict[str, tuple[type, str]], fix: str) -> list[dict]:
    """Rows of a run-folder CSV as dicts, each cell of ``columns`` converted by its type
    (``{column: (type, "what it must be")}``); RunFolderError naming the file, line and column
    on an empty file, wrong or repeated columns, a short row or a cell that does not convert."""
    header, lines = _read_csv(path, fix)
    if not header:
        raise RunFolderError(f"{path} is empty (no header line); {fix}")
    missing = [c for c in columns if c not in header]
    if missing or len(set(header)) != len(header):
        raise RunFolderError(
            f"{path} has the wrong columns: found {','.join(header)}; expected "
            f"{','.join(columns)}; {fix}"
        )
    pos = {c: header.index(c) for c in columns}
    rows = []
    for line, cells in lines:
        if not cells:  # a blank line
            continue
        if len(cells) != len(header):
            raise RunFolderError(
                f"{path}, line {line}: {len(cells)} cells, expected {len(header)}; the file is "
                f"truncated or damaged; {fix}"
            )
        row: dict = {}
        for col, (kind, what) in columns.items():
            text = cells[pos[col]] if kind is str else cells[pos[col]].strip()
            try:
                row[col] = kind(text)
            except ValueError:
                raise RunFolderError(
                    f"{path}, line {line}, column {col!r}: {text!r} is not {what}; {fix}"
                ) from None
        rows.append(row)
    return rows


_METRIC_TYPES = {c: (str, "text") if c == "variant" else
                 (int, "a whole number") if c in _INT_COLUMNS else (float, "a number")
                 for c in METRIC_COLUMNS}
_PREDICTION_TYPES = {c: (float, "a number") if c == "confidence" else (int, "a number")
                     for c in PREDICTION_COLUMNS}


def _read_metrics(path: Path) -> list[dict]:
    return _read_typed_csv(path, _METRIC_TYPES, _REBUILD)


def _check_consistency(run_dir: Path, summary: dict, metrics: list[dict]) -> None:
    path = run_dir / "metrics.csv"
    variants = summary["variants"]
    unknown = sorted({r["variant"] for r in metrics} - set(variants))
    if unknown:
        raise RunFolderError(
            f"{path} has rows for variant {unknown[0]!r}, which summary.json does not list; the "
            f"two files come from different runs; {_REBUILD}"
        )
    epochs = summary.get("epochs")
    for name, s in variants.items():
        for seed in s["seeds"]:
            if seed in s["diverged_seeds"]:
                continue
            done = sorted(r["epoch"] for r in metrics if r["variant"] == name and r["seed"] == seed)
            if not done:
                raise RunFolderError(
                    f"{path} has no rows for variant {name!r} seed {seed}, which summary.json "
                    f"lists as finished; metrics.csv is truncated or from another run; {_REBUILD}"
                )
            if epochs is not None and done[-1] != epochs:
                raise RunFolderError(
                    f"{path}: variant {name!r} seed {seed} ends at epoch {done[-1]}, but "
                    f"summary.json says {epochs} epochs; metrics.csv is truncated or from another "
                    f"run; {_REBUILD}"
                )


def load_run(run_dir: str | Path) -> RunData:
    """Read and check every file of a finished run folder (predictions are read when needed).

    A missing or damaged file raises RunFolderError naming the file, what is wrong, and the fix.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} is not a folder; give the run folder a study wrote")
    fix_config = f"restore it from a copy of this run folder, or {_REBUILD}"
    config = read_json_object(run_dir / "config.json", fix_config)
    _check_config(run_dir / "config.json", config)
    env = read_json_object(run_dir / "env.json", fix_config)
    if not (run_dir / "summary.json").exists():
        raise RunFolderError(
            f"{run_dir / 'summary.json'} is missing; a study writes it when it finishes, so the "
            f"study is still running or was interrupted: wait for it, continue it with "
            f"'normlab study --resume {run_dir}', or {_REBUILD}"
        )
    summary = load_summary(run_dir)
    _check_summary(run_dir / "summary.json", summary)
    metrics = _read_metrics(run_dir / "metrics.csv")
    _check_consistency(run_dir, summary, metrics)
    timing = (read_json_object(run_dir / "timing.json", _REBUILD)
              if (run_dir / "timing.json").exists() else None)
    return RunData(run_dir, config, summary, metrics, env, timing)


def read_predictions(path: str | Path) -> list[dict]:
    """Rows of a predictions CSV (``index``, ``label``, ``pred`` ints; ``confidence`` float)."""
    return _read_typed_csv(Path(path), _PREDICTION_TYPES, _REBUILD)


# ----------------------------------------------------------------------------------------------
# Numbers for the report


@dataclass
class VariantResult:
    """One row of the report's table."""

    name: str
    params: int | None
    status: str
    seeds: list[int]
    ok_seeds: list[int]
    diverged_seeds: list[int]
    final_acc: dict
    best_acc: dict
    final_loss: dict
    best_epoch: int | None      # argmax of the mean test-accuracy curve (earliest on ties)
    best_epoch_acc: float | None
    final_gap: float | None     # mean over finished seeds of train_acc - test_acc, last epoch


def variant_results(run: RunData) -> list[VariantResult]:
    out = []
    for name in run.variants:
        s = run.summary["variants"][name]
        curve = {e: statistics.fmean(v) for e, v in run.per_epoch(name, "test_acc").items()}
        best_epoch = max(curve, key=lambda e: (curve[e], -e)) if curve else None
        gaps = []
        for seed in run.ok_seeds(name):
            rows = run.rows(name, seed)
            if rows:
                gaps.append(rows[-1]["train_acc"] - rows[-1]["test_acc"])
        out.append(VariantResult(
            name=name, params=s.get("params"), status=s["status"], seeds=list(s["seeds"]),
            ok_seeds=run.ok_seeds(name), diverged_seeds=list(s["diverged_seeds"]),
            final_acc=s["final_test_acc"], best_acc=s["best_test_acc"],
            final_loss=s["final_test_loss"], best_epoch=best_epoch,
            best_epoch_acc=curve.get(best_epoch) if best_epoch is not None else None,
            final_gap=statistics.fmean(gaps) if gaps else None,
        ))
    return out


def _pp(x: float) -> str:
    """A signed difference in percentage points."""
    return f"{x:+.2f}".replace("-", "−")


def _p_text(p: float) -> str:
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def _seeds_text(seeds: list[int]) -> str:
    word = "seed" if len(seeds) == 1 else "seeds"
    return f"{word} {', '.join(str(s) for s in seeds)}"


# Train-test gaps closer than this (percentage points) are not called different: one test
# image is 0.01 points, and seeds move the gap by several times that.
GAP_MARGIN = 0.1


def findings(summary: dict, gaps: dict[str, float | None] | None = None,
             augment: bool | None = None) -> list[str]:
    """The Findings sentences, made only from the numbers of ``summary`` (and the train-test
    ``gaps`` by variant, in percentage points, if given). One string per bullet point."""
    from normlab.stats import welch

    variants = summary["variants"]
    out: list[str] = []
    for name, s in variants.items():
        if s["status"] == "diverged":
            out.append(f"`{name}` diverged in every run ({_seeds_text(s['diverged_seeds'])}): "
                       "training stopped when its loss blew up, so it has no results.")
        elif s["status"] == "partly-diverged" or s["diverged_seeds"]:
            n_ok = s["final_test_acc"]["n"]
            out.append(f"`{name}` diverged in {_seeds_text(s['diverged_seeds'])}; its numbers are "
                       f"over the other {n_ok} seed{'s' if n_ok != 1 else ''}.")

    ranked = [n for n in variants if variants[n]["final_test_acc"]["n"] > 0]
    if not ranked:
        out.append("No run finished, so there is nothing to compare.")
        return out
    if len(ranked) == 1:
        s = variants[ranked[0]]["final_test_acc"]
        out.append(f"Only `{ranked[0]}` has results (final test accuracy {s['mean']:.2f}%), so "
                   "there is nothing to compare it with.")
    else:
        best = max(ranked, key=lambda n: variants[n]["final_test_acc"]["mean"])  # first on ties
        bs = variants[best]["final_test_acc"]
        n_text = (f"mean of {bs['n']} seeds" if bs["n"] > 1 else "one seed")
        out.append(f"`{best}` has the highest final test accuracy: {bs['mean']:.2f}% ({n_text}).")
        single: list[str] = []   # comparisons where a group has one seed: no inference
        for other in ranked:
            if other == best:
                continue
            os_ = variants[other]["final_test_acc"]
            w = welch(bs["values"], os_["values"])
            if w["p"] is None:
                single.append(other)
                continue
            lead = (f"Over `{other}` ({os_['mean']:.2f}%) its lead is {_pp(w['diff'])} "
                    "percentage points")
            if w["diff"] == 0:
                lead = f"It ties with `{other}` ({os_['mean']:.2f}%)"
            ci = (f"95% CI of the difference {_pp(w['ci_lo'])} to {_pp(w['ci_hi'])}, "
                  f"Welch's t = {w['t']:.2f}, df = {w['df']:.1f}, {_p_text(w['p'])}")
            if w["se"] == 0:
                ci = "every seed of both gave the same final accuracy, so the difference is exact"
            if w["ci_lo"] > 0 or w["ci_hi"] < 0:
                verdict = ("significant at the 5% level: larger than the seed-to-seed noise")
            else:
                verdict = ("not significant at the 5% level: the interval includes 0, so the "
                           "difference may be seed-to-seed noise")
            out.append(f"{lead} ({ci}); {verdict}.")
        if single:
            leads = [f"{_pp(bs['mean'] - variants[o]['final_test_acc']['mean'])} over `{o}` "
                     f"({variants[o]['final_test_acc']['mean']:.2f}%)" for o in single]
            leads[0] = leads[0].replace(" over ", " percentage points over ", 1)
            leads = ", ".join(leads)
            few = [n for n in [best] + single if variants[n]["final_test_acc"]["n"] < 2]
            who = ("each variant has" if len(few) == len(ranked) else
                   " and ".join(f"`{n}`" for n in few) + (" has" if len(few) == 1 else " have"))
            comparison = "this comparison is" if len(single) == 1 else "these comparisons are"
            out.append(f"Its lead is {leads}; but {who} only one finished seed, so "
                       f"no confidence interval is possible and {comparison} not conclusive.")

    if gaps:
        known = {n: g for n, g in gaps.items() if g is not None}
        if known:
            listed = ", ".join(f"`{n}` {_pp(g)}" for n, g in known.items())
            several = any(s["final_test_acc"]["n"] > 1 for s in variants.values())
            text = (f"Train − test accuracy gap at the final epoch"
                    f"{' (mean over seeds)' if several else ''}: {listed} percentage points.")
            worst = max(known, key=lambda n: known[n])
            others = sorted((g for n, g in known.items() if n != worst), reverse=True)
            if known[worst] > 0:
                if others and known[worst] - others[0] < GAP_MARGIN:
                    runner_up = next(n for n, g in known.items() if n != worst and g == others[0])
                    text += (f" The largest gap, `{worst}`'s {_pp(known[worst])}, is within "
                             f"{GAP_MARGIN:g} points of `{runner_up}`'s {_pp(others[0])}: by this "
                             "measure no variant overfits clearly more than another.")
                elif others:
                    text += (f" `{worst}` has the largest gap ({_pp(known[worst])}), so by this "
                             "measure it overfits the most of these variants.")
                else:
                    text += (f" Its training accuracy is above its test accuracy by "
                             f"{_pp(known[worst])} points.")
            else:
                text += (" No variant's training accuracy exceeds its test accuracy, so the "
                         "numbers show no overfitting.")
            if augment:
                text += (" (Training accuracy is the running accuracy on augmented batches during "
                         "each epoch; test accuracy is measured on clean images after it.)")
            out.append(text)
    return out


# ----------------------------------------------------------------------------------------------
# report.md


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _variant_description(s: dict, config: dict) -> str:
    norm = NORM_NAMES.get(s.get("norm"), str(s.get("norm")))
    if s.get("norm") == "gn" and config.get("groups"):
        norm += f", {config['groups']} groups"
    parts = [norm]
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
    if "augment" in cfg:
        training.append("augmentation " + (
            f"on (rotation ±{cfg.get('rotate', 0):g}°, shift ±{cfg.get('translate', 0):g} px)"
            if cfg["augment"] else "off"))
    if training:
        lines.append(f"**Training:** {', '.join(training)}.")
    device = str(env.get("device", "unknown"))
    extra = []
    if env.get("gpu"):
        extra.append(str(env["gpu"]))
    if device == "cpu" and env.get("cpu_count"):
        extra.append(f"{env['cpu_count']} CPU cores, {env.get('torch_threads', '?')} torch threads")
    if env.get("torch"):
        extra.append(f"torch {env['torch']}")
    lines.append(f"**Device:** {device}" + (f" ({'; '.join(extra)})" if extra else "") + ".")
    timing = run.timing or {}
    wall = timing.get("train_seconds")
    if _is_number(wall):
        how = ""
        if _is_number(timing.get("workers")) and _is_number(timing.get("threads_per_worker")):
            how = (f", {timing['workers']} worker(s) x {timing['threads_per_worker']} "
                   "torch thread(s)")
        lines.append(f"**Total wall time:** {_duration(wall)} (all runs{how}).")
    return [f"- {line}" for line in lines]


def _status_text(r: VariantResult) -> str:
    if r.status == "diverged":
        return "diverged"
    if r.diverged_seeds:
        return f"{len(r.diverged_seeds)} of {len(r.seeds)} seeds diverged"
    return "ok"


def results_table(results: list[VariantResult]) -> str:
    """The report's table: mean ± sample std over the finished seeds."""
    lines = [
        "| variant | parameters | seeds | final test accuracy (%) | best test accuracy (%) "
        "| final test loss | epoch of best | train − test gap (pts) | status |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        params = f"{r.params:,}" if r.params is not None else "–"
        gap = _pp(r.final_gap) if r.final_gap is not None else "–"
        epoch = str(r.best_epoch) if r.best_epoch is not None else "–"
        lines.append(
            f"| `{r.name}` | {params} | {len(r.ok_seeds)} | {format_pm(r.final_acc, 2)} "
            f"| {format_pm(r.best_acc, 2)} | {format_pm(r.final_loss, 4)} | {epoch} | {gap} "
            f"| {_status_text(r)} |"
        )
    return "\n".join(lines)


def build_report(run: RunData, figures: list[Path], notes: list[str] = ()) -> str:
    """The text of report.md for ``run``, linking the figures given (paths in run/figures)."""
    results = variant_results(run)
    names = ", ".join(f"`{n}`" for n in run.variants)
    out = [f"# {run.dataset_title}: {names}", ""]
    out += ["## What ran", ""] + _what_ran(run) + [""]
    out += ["## Results", "",
            f"Mean ± sample standard deviation over the seeds that finished. *Epoch of best*: the "
            f"epoch where the mean test-accuracy curve is highest. *Train − test gap*: training "
            f"accuracy minus test accuracy at the final epoch, mean over seeds, in percentage "
            f"points.", "", results_table(results), ""]
    gaps = {r.name: r.final_gap for r in results}
    out += ["## Findings", ""]
    out += [f"- {s}" for s in findings(run.summary, gaps, augment=bool(run.config.get("augment")))]
    n_max = max((len(r.ok_seeds) for r in results), default=0)
    if n_max > 1 and len([r for r in results if r.ok_seeds]) > 2:
        out.append("- Each comparison is a separate Welch test at the 5% level, with no correction "
                   "for making several comparisons.")
    out.append("")

    rel = {p.name: f"figures/{p.name}" for p in figures if p.is_file()}
    curve_captions = (
        ("test_accuracy.png", "Test accuracy per epoch",
         "Mean over seeds with its 95% confidence band (t-based); the star marks each variant's "
         "best epoch, the number at the right its final accuracy."),
        ("test_loss.png", "Test loss per epoch", "Cross-entropy on the test set, same layout."),
        ("train_vs_test.png", "Train vs test accuracy",
         "Dashed: training accuracy; solid: test accuracy; same colour per variant."),
    )
    shown = [(f, t, c) for f, t, c in curve_captions if f in rel]
    grids = [(n, f"misclassified_{n}.png") for n in run.variants
             if f"misclassified_{n}.png" in rel]
    if shown or grids or notes:
        out += ["## Figures", ""]
    for fname, title, caption in shown:
        out += [f"### {title}", "", f"![{title}]({rel[fname]})", "", caption, ""]
    if grids or notes:
        out += ["### Misclassified test images", ""]
        out += [f"{note}" for note in notes] + ([""] if notes else [])
    for name, fname in grids:
        out += [f"![Misclassified test images of {name}]({rel[fname]})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(run_dir: str | Path, mode: str = "confident",
                 data_dir: str | Path | None = None) -> Path:
    """Regenerate every figure of ``run_dir`` and write ``report.md`` there (atomically).

    The test images for the grids come from ``data_dir`` if given, else from where the run found
    its data. If they cannot be found, the grids are left out and report.md says why.
    """
    from normlab import plots
    from normlab.config import Config
    from normlab.errors import ConfigError, DataError
    from normlab.store import atomic_write_text

    if mode not in plots.MODES:
        raise ConfigError(f"unknown mode {mode!r}; valid: {', '.join(plots.MODES)}")
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    fix = f"restore it from a copy of the run folder, or {_REBUILD}"
    try:  # the saved config must still be one normlab accepts
        Config.from_dict({k: v for k, v in run.config.items() if k != "resolved"})
    except (ConfigError, TypeError) as e:
        raise RunFolderError(f"{run_dir / 'config.json'} holds an invalid config ({e}); {fix}") from None
    try:
        figures = plots.plot_curves(run_dir, run=run)
        notes = []
        try:
            figures += plots.make_misclassified(run_dir, mode, run=run, data_dir=data_dir)
        except DataError as e:
            notes.append(f"The grids of misclassified images were not made: the test images "
                         f"could not be loaded ({e}).")
        if any(f.name.startswith("misclassified_") for f in figures):
            what = ("the 10 most confident mistakes" if mode == "confident"
                    else "the first 10 mistakes by test index")
            notes.insert(0, f"For each variant, {what} of its first finished seed, with the true "
                            "and predicted class, the model's confidence (softmax probability of "
                            "the predicted class) and the test-set index.")
        path = run_dir / "report.md"
        atomic_write_text(path, build_report(run, figures, notes))
    except OSError as e:
        raise RunFolderError(f"cannot write into {run_dir} ({e.strerror or e}: "
                             f"{getattr(e, 'filename', '') or ''}); make the run folder writable, "
                             "or copy it somewhere writable and report on the copy") from None
    except (TypeError, ValueError, KeyError) as e:
        # load_run checks the fields it needs; anything else damaged shows up here.
        raise RunFolderError(f"{run_dir} holds a damaged value ({type(e).__name__}: {e}); "
                             f"{fix}") from None
    return path


# ----------------------------------------------------------------------------------------------
# Sweeps


def _fmt_value(v: object) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def sweep_findings(rows: list[dict], params: list[str]) -> list[str]:
    """Per variant (and combination of the other swept settings) and per swept setting: the
    value with the highest and the lowest mean final test accuracy, and whether the difference
    is larger than seed-to-seed noise (Welch's t-test)."""
    from normlab.stats import welch

    out = []
    for p in params:
        others = [q for q in params if q != p]
        groups: dict[tuple, dict[object, list[float]]] = {}
        for r in rows:
            key = (r.get("spec", r["variant"]),) + tuple(r[o] for o in others)
            vals = groups.setdefault(key, {}).setdefault(r[p], [])
            if r["status"] == "ok" and r["final_test_acc"] is not None:
                vals.append(float(r["final_test_acc"]))
        for key, by_value in groups.items():
            done = {v: xs for v, xs in by_value.items() if xs}
            if len(done) < 2:
                continue
            means = {v: statistics.fmean(xs) for v, xs in done.items()}
            best = max(means, key=lambda v: means[v])
            worst = min(means, key=lambda v: means[v])
            where = f"`{key[0]}`" + "".join(f" ({o}={_fmt_value(x)})" for o, x in zip(others, key[1:]))
            text = (f"{where}: final test accuracy is highest at {p}={_fmt_value(best)} "
                    f"({means[best]:.2f}%) and lowest at {p}={_fmt_value(worst)} "
                    f"({means[worst]:.2f}%)")
            w = welch(done[best], done[worst])
            if w["p"] is None:
                text += f"; {means[best] - means[worst]:+.2f} points, one seed each: no test possible."
            else:
                verdict = ("larger than seed-to-seed noise" if w["ci_lo"] > 0 else
                           "not significant at the 5% level")
                text += (f"; {w['diff']:+.2f} points (95% CI {w['ci_lo']:+.2f} to "
                         f"{w['ci_hi']:+.2f}, Welch's {_p_text(w['p'])}): {verdict}.")
            collapsed = [v for v, m in means.items() if m < 50.0]
            if collapsed:
                text += (" It collapses (mean below 50%) at " +
                         ", ".join(f"{p}={_fmt_value(v)}" for v in collapsed) + ".")
            out.append(text)
    failed = [r for r in rows if r["status"] == "failed"]
    diverged = [r for r in rows if r["status"] == "diverged"]
    if diverged:
        out.append(f"{len(diverged)} run(s) diverged and are left out of the means: " +
                   ", ".join(f"`{r['variant']}` seed {r['seed']} at " +
                             ", ".join(f"{q}={_fmt_value(r[q])}" for q in params)
                             for r in diverged[:8]) + (" ..." if len(diverged) > 8 else "") + ".")
    if failed:
        out.append(f"{len(failed)} run(s) failed (see `message` in sweep.csv); run the same "
                   "command again to retry them.")
    return out


def sweep_table(rows: list[dict], params: list[str]) -> str:
    head = "| " + " | ".join(params) + " | variant | runs ok | final test accuracy (%) | best test accuracy (%) |"
    lines = [head, "|" + "---|" * (len(params) + 4)]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[p] for p in params) + (r["variant"],), []).append(r)
    for key, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok" and r["final_test_acc"] is not None]
        fin = _stats_of([r["final_test_acc"] for r in ok])
        best = _stats_of([r["best_test_acc"] for r in ok])
        cells = [_fmt_value(v) for v in key[:-1]] + [f"`{key[-1]}`", f"{len(ok)}/{len(rs)}",
                                                      format_pm(fin, 2), format_pm(best, 2)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _stats_of(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def write_sweep_report(out: str | Path, spec, rows: list[dict]) -> Path:
    """report.md of a sweep folder: what ran, the table of every point, findings, figures."""
    from normlab.store import atomic_write_text

    out = Path(out)
    params = [p.name for p in spec.params]
    try:
        record = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
        base = record.get("base_config", {})
    except (OSError, ValueError):
        base = {}
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"# Sweep of {', '.join(params)}", "", "## What ran", ""]
    lines.append("- **Swept:** " + "; ".join(
        f"{p.name} = {', '.join(_fmt_value(v) for v in p.values)}" for p in spec.params) +
        (" (every combination)" if len(params) > 1 else "") + ".")
    if spec.scale_lr:
        lines.append(f"- **Learning rate** scaled with the batch size (linear rule): "
                     f"lr = {base.get('lr')} x batch_size / {base.get('batch_size')}.")
    lines.append(f"- **Variants:** {', '.join(f'`{v}`' for v in dict.fromkeys(r['variant'] for r in rows))}; "
                 f"**seeds:** {', '.join(map(str, seeds))}; **epochs:** {base.get('epochs')}; "
                 f"**dataset:** {base.get('dataset')}"
                 + (f" (first {base['train_subset']} training images)" if base.get("train_subset") else "")
                 + ".")
    lines.append(f"- **Runs:** {len(rows)}, of which {sum(r['status'] == 'ok' for r in rows)} ok, "
                 f"{sum(r['status'] == 'diverged' for r in rows)} diverged, "
                 f"{sum(r['status'] == 'failed' for r in rows)} failed. Each point's study is in "
                 "`points/<setting>=<value>/`; one row per run in `sweep.csv`.")
    lines += ["", "## Results", "", "Mean ± sample standard deviation over the seeds that finished.",
              "", sweep_table(rows, params), "", "## Findings", ""]
    lines += [f"- {f}" for f in sweep_findings(rows, params)]
    lines += ["", "## Figures", ""]
    for p in params:
        lines += [f"![Final test accuracy against {p}](figures/sweep_{p}.png)", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path
