"""Sweeps: settings of the config over lists of values, every variant x value x seed.

    normlab sweep --variants bn,gn,ln --param batch_size=2,8,32,128 --seeds 3 --epochs 5

Two or more ``--param`` flags make a grid (every combination). Each *point* (one combination of
values) is a study of its own, in ``points/<name>/`` with the files of any study run folder; the
sweep folder adds::

    sweep.json    the base config, the swept settings and their values
    sweep.csv     one row per run: swept values, variant, seed, status, accuracies, loss, error
    figures/      final test accuracy (validation accuracy with --val) against each swept setting
    report.md     the table of every point and generated findings (:mod:`normlab.sweep_report`)

(the names are :class:`normlab.runfolder.SweepFolder`'s).

A sweep is resumable and idempotent: the same command again skips finished runs, continues
unfinished ones from their last finished epoch and retries failed ones.

Backends: ``local`` trains the points one after another, each with the study's concurrent
training; another backend (``normlab.sweep_ray.run_points``) is passed in as ``runner``.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from normlab import __version__
from normlab.config import Config, config_diff, continuation_diff
from normlab.errors import ConfigError, NormlabError, RunFolderError, brief
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, parse_formats
from normlab.runfolder import RunFolder, SweepFolder, check_version, load_run
from normlab.store import not_a_folder, read_json_object
from normlab.sweep_spec import Param, SweepSpec, point_error, point_name
from normlab.variants import variant_specs

# ----------------------------------------------------------------------------------------------
# The sweep folder


def _sweep_record(base: Config, spec: SweepSpec) -> dict:
    return {"normlab_version": __version__, "base_config": base.to_dict(), **spec.to_dict()}


def prepare_sweep_out(out: Path, base: Config, spec: SweepSpec,
                      experiment: str | None = None) -> bool:
    """Create the sweep folder (recording the ``experiment`` that runs it, if one does), or
    check that an existing one holds this very sweep. Returns True when it continues an
    existing sweep."""
    record = _sweep_record(base, spec)
    folder = SweepFolder(out)
    if not folder.record.exists():
        folder.create({**record, **({"experiment": experiment} if experiment else {})})
        return False
    saved = folder.read_record()
    old = saved.get("base_config") if isinstance(saved.get("base_config"), dict) else {}
    diff = (config_diff(saved, record, ["params", "scale_lr"])
            + continuation_diff(old, record["base_config"], as_written=True))
    if diff:
        raise ConfigError(f"{str(out)!r} holds a different sweep ({'; '.join(diff)}); run the "
                          "same command to continue it, or choose a new --out")
    folder.ensure_writable()
    return True


def check_continuable(out: Path, names: list[str]) -> None:
    """RunFolderError unless this normlab version may train the unfinished points ``names`` of
    the sweep in ``out``: the version of its sweep.json and of each started point's config.json
    (checked before the data load, for every backend)."""
    sweep = SweepFolder(out)
    left = [point for point in map(sweep.point, names) if not point.finished]
    fix = "continue it with that version or start a new sweep with --out"
    if left:
        check_version(out, sweep.read_record(), fix)
    for point in left:
        if point.config.exists():
            check_version(point.path, point.read_saved_config(), fix)


def check_points(out: Path, points: list[tuple[dict, Config]]) -> None:
    """ConfigError or RunFolderError, before anything is trained or written, for a started point
    of the sweep in ``out`` whose config.json is not the config the sweep gives it, or a
    finished one whose results do not load (its rows would become failed runs, and retrying
    would skip it again as done)."""
    sweep = SweepFolder(out)
    for values, cfg in points:
        name = point_name(values)
        point = sweep.point(name)
        if not point.config.exists():
            continue
        again = f"delete {point.path} to train sweep point {name} again"
        diff = continuation_diff(read_json_object(point.config, again), cfg.to_dict())
        if diff:
            raise ConfigError(f"sweep point {name} ({point.path}) holds another config than the "
                              f"sweep gives it ({'; '.join(diff)}); restore its config.json, or "
                              f"{again}")
        if point.finished:
            try:
                load_run(point.path)
            except RunFolderError as e:
                raise RunFolderError(f"{e}; or {again}") from None


def read_sweep_spec(out: str | Path) -> tuple[Config, "SweepSpec"]:
    """The base config and the spec saved in a sweep folder (for --resume)."""
    folder = SweepFolder(out)
    if not folder.path.is_dir():
        raise ConfigError(f"--resume {str(out)!r} {not_a_folder(folder.path)}; give the folder "
                          "a sweep wrote")
    if not folder.record.exists():
        study = (f" ({str(out)!r} holds a study: continue it with 'normlab study --resume "
                 f"{out}')" if RunFolder(out).config.exists() else "")
        raise ConfigError(f"--resume {str(out)!r}: no sweep.json there; give the folder a sweep "
                          f"wrote{study}")
    saved = folder.read_record("start a new sweep with --out")
    try:
        base = Config.from_dict(saved["base_config"])
        spec = SweepSpec(tuple(Param(p["name"], tuple(p["values"])) for p in saved["params"]),
                         scale_lr=bool(saved.get("scale_lr")))
    except (ValueError, KeyError, TypeError) as e:
        raise RunFolderError(f"{folder.record} cannot be read ({e}); start a new sweep with "
                             "--out") from None
    return base, spec


@dataclass
class PointOutcome:
    values: dict[str, Any]
    cfg: Config
    folder: RunFolder
    error: str = ""             # why the point failed (no summary.json), else ""

    @property
    def name(self) -> str:
        return point_name(self.values)


Runner = Callable[[list[PointOutcome], Callable[[str], None]], None]


def interrupted(out: Path) -> KeyboardInterrupt:
    """The KeyboardInterrupt a sweep into ``out`` stops with: its message names the command
    that continues it (the CLI prints it)."""
    name = SweepFolder(out).experiment()
    again = (f"the same 'normlab experiment {name}' command with --out {out}" if name
             else f"'normlab sweep --resume {out}'")
    return KeyboardInterrupt(f"interrupted: finished runs are kept; continue with {again}")


def run_points_locally(outcomes: list[PointOutcome], log: Callable[[str], None],
                       progress: bool = True) -> None:
    """Train the points one after another, each a study (continued where it stopped)."""
    from normlab.study import run_study

    for k, o in enumerate(outcomes, start=1):
        if o.folder.finished:
            log(f"[{k}/{len(outcomes)}] {o.name}: done before, skipped")
            continue
        log(f"[{k}/{len(outcomes)}] {o.name}")
        try:   # a Ctrl-C goes up to run_sweep, which names the sweep's continue command
            run_study(o.cfg, out=o.folder.path, progress=progress, log=lambda _: None,
                      resume=o.folder.config.exists())
        except NormlabError as e:
            o.error = str(e)
            log(f"{o.name}: failed ({e}); continuing")
        except Exception as e:  # noqa: BLE001 - one failed point must not end the sweep
            o.error = f"{type(e).__name__}: {brief(e, 300)}"
            log(f"{o.name}: failed ({o.error}); continuing")
            traceback.print_exc()


def run_sweep(base: Config, spec: SweepSpec, out: str | Path, runner: Runner | None = None,
              backend: str = "local", progress: bool = True,
              log: Callable[[str], None] = print,
              formats: str | Sequence[str] = DEFAULT_FIGURE_FORMATS,
              experiment: str | None = None) -> Path:
    """Run (or continue) the sweep into ``out`` and write sweep.csv, figures and report.md.
    ``runner`` trains the points (default: one after another here); ``backend`` names it.
    The sweep's figures are saved as PNG and the other ``formats``; each point's study draws
    its own in the default formats. ``experiment``: the name of the experiment that runs the
    sweep (recorded in sweep.json); without it, the folder of an experiment is refused, even one
    stopped before its first report (its report would be replaced by a plain sweep's)."""
    from normlab.device import select_device
    from normlab.study_data import check_split_sizes, load_data
    from normlab.sweep_report import sweep_table, write_sweep_outputs

    out = Path(out)
    formats = parse_formats(formats)
    points = spec.points(base)                     # bad values fail here, before any training
    device = select_device(base.device)
    if not SweepFolder.holds_sweep(out):
        SweepFolder(out).check_new()               # a bad --out fails before the data load
    elif experiment is None and (name := SweepFolder(out).experiment()):
        raise ConfigError(f"{str(out)!r} holds the experiment {name}, whose report a plain sweep "
                          f"would replace; continue it with 'normlab experiment {name} --out "
                          f"{out}' and the flags on the Command line of its report.md")
    elif experiment is not None and (name := SweepFolder(out).experiment()) not in (
            experiment, "NAME", None):   # another experiment, by the name sweep.json records
        raise ConfigError(f"{str(out)!r} holds the experiment {name}, not {experiment}; continue "
                          f"it with 'normlab experiment {name} --out {out}' and the flags on the "
                          "Command line of its report.md, or choose a new --out")
    else:
        check_continuable(out, [point_name(values) for values, _ in points])
    # Check data and folder before the first run: every dataset the sweep touches, and every
    # point's --train-subset and --val against its size (bad input, not a failed run).
    for dataset in sorted({cfg.dataset for _, cfg in points}):
        data = load_data(base.replace(dataset=dataset, train_subset=None, val=0), device)
        for values, cfg in points:
            if cfg.dataset == dataset:
                try:
                    check_split_sizes(cfg, len(data.train))
                except ConfigError as e:
                    raise point_error(values, e) from None
    resumed = prepare_sweep_out(out, base, spec, experiment)   # the same sweep, or refused
    if resumed:
        check_points(out, points)   # then its points: what a changed flag would not explain
    runs = sum(len(cfg.parsed_variants()) * cfg.seeds for _, cfg in points)
    log(f"normlab sweep: {len(points)} point(s), {runs} run(s), backend {backend}"
        f"{' (continuing)' if resumed else ''}, out {out}")
    sweep = SweepFolder(out)
    outcomes = [PointOutcome(values, cfg, sweep.point(point_name(values))) for values, cfg in points]
    try:
        if runner is None:
            run_points_locally(outcomes, log, progress)
        else:
            runner(outcomes, log)
        rows = sweep_rows(spec, outcomes)
        write_sweep_outputs(out, spec, rows, formats)
    except KeyboardInterrupt:
        # In a point's study (whose message names that point's resume), the Ray runner or the
        # outputs: the sweep continues by its own command.
        raise interrupted(out) from None
    failed = sum(1 for r in rows if r["status"] == "failed")
    log(sweep_table(rows, [p.name for p in spec.params], markdown=False).text())
    # An experiment replaces this report with its own and names that one when it is written.
    report = "" if experiment else f"; report: {sweep.report}"
    log(f"sweep results in {out}" + (f" ({failed} run(s) failed; run the same command to retry "
                                     "them)" if failed else "") + report)
    return out


def sweep_rows(spec: SweepSpec, outcomes: list[PointOutcome]) -> list[dict]:
    """One row per run (values, variant, seed, status, accuracies, loss, message)."""
    rows = []
    for o in outcomes:
        variants = o.cfg.parsed_variants()
        per_run: dict[tuple[str, int], list[dict]] = {}   # each run's epochs
        status: dict[tuple[str, int], str] = {}
        messages: dict[tuple[str, int], str | None] = {}   # a diverged run's message
        error = o.error
        if o.folder.finished and not error:
            try:
                run = load_run(o.folder.path)
            except RunFolderError as e:
                error = str(e)
            else:
                for name, s in run.summary["variants"].items():
                    for seed in s["seeds"]:
                        status[(name, seed)] = "diverged" if seed in s["diverged_seeds"] else "ok"
                for v in variants:   # why a run diverged is in its final checkpoint
                    for seed in run.summary["variants"].get(v.name, {}).get("diverged_seeds", []):
                        try:
                            saved = o.folder.read_run_outputs(v, seed)
                        except RunFolderError:
                            saved = None
                        messages[(v.name, seed)] = saved.message if saved else None
                for m in run.metrics:
                    per_run.setdefault((m["variant"], m["seed"]), []).append(m)
        else:
            # An unfinished point: runs that finished have their final checkpoint already.
            for v in variants:
                for seed in o.cfg.seed_list():
                    try:
                        saved = o.folder.read_run_outputs(v, seed)
                    except RunFolderError:
                        saved = None
                    if saved is None:
                        continue
                    status[(v.name, seed)] = saved.status   # a run diverged in epoch 1 has no rows
                    messages[(v.name, seed)] = saved.message
                    if not saved.epochs:
                        continue
                    per_run[(v.name, seed)] = saved.epochs
            error = error or "not finished"
        # "spec": the variant as written in --variants ("bn+l1"), the same at every point even
        # where the canonical name carries the swept lambda ("bn+l1=0.0001").
        written = variant_specs(o.cfg.variants, o.cfg.l1_default, o.cfg.l2_default)
        for v in variants:
            for seed in o.cfg.seed_list():
                st = status.get((v.name, seed), "failed")
                epochs = per_run.get((v.name, seed)) if st == "ok" else None
                rows.append({**{p.name: o.values[p.name] for p in spec.params},
                             "variant": v.name, "spec": written[v.name], "norm": v.norm,
                             "seed": seed, "status": st, **_run_numbers(epochs),
                             # a failed point's error on all its rows, else the run's own
                             "message": error or messages.get((v.name, seed)) or None})
    return rows


def _run_numbers(epochs: list[dict] | None) -> dict:
    """A run's final and best accuracies (val ones None without --val), final test loss."""
    def final_best(col: str) -> tuple:
        if not epochs or epochs[-1].get(col) is None:
            return None, None
        return epochs[-1][col], max(e[col] for e in epochs)

    (fv, bv), (ft, bt) = final_best("val_acc"), final_best("test_acc")
    return {"final_val_acc": fv, "best_val_acc": bv, "final_test_acc": ft, "best_test_acc": bt,
            "final_test_loss": epochs[-1]["test_loss"] if epochs else None}


__all__ = ["PointOutcome", "run_sweep", "run_points_locally", "read_sweep_spec", "sweep_rows"]
