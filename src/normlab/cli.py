"""Command-line interface: ``normlab study``, ``train``, ``sweep``, ``experiment``, ``report``,
``explain``. Bad input prints one line, ``normlab: error: <problem>; <fix>``, and exits 2."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Sequence

from normlab import __version__
from normlab.cli_checks import (check_augmentation, check_unused, warn_overridden,
                                warn_plain_ghost_batch)
from normlab.cli_flags import (DEFAULTS, HelpFormatter, Parser, add_format_flag, add_training_flags,
                               add_variant_seed_flags, flag_name, nonneg_float, nonneg_int,
                               number, path, positive_int, seed_int)
from normlab.config import MISTAKE_MODES, RELOCATABLE, Config, continuation_diff
from normlab.errors import NormlabError
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, parse_formats
from normlab.store import new_timestamped_folder
from normlab import norms


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser of every command. With ``suppress_defaults``, a flag not given is absent from
    the parsed namespace (argparse.SUPPRESS): what --resume compares with the saved config."""

    def D(value):   # noqa: N802 - reads as the flag's default
        return argparse.SUPPRESS if suppress_defaults else value

    parser = Parser(
        prog="normlab", allow_abbrev=False,
        description="Compare BatchNorm, GroupNorm and LayerNorm (and L1/L2 penalties) in a small CNN.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add = sub.add_parser
    # Flags must be written in full: --resume compares the flags given with the saved config.
    sub.add_parser = lambda *a, **k: _add(*a, allow_abbrev=False, **k)  # type: ignore[method-assign]
    sub.required = True

    def variant_help(what: str, examples: str) -> str:
        return (f"{what}: a norm ({', '.join(norms.NORMS)}) with optional '+ws' (weight "
                "standardization of the convs), '+l1', '+l1=LAMBDA', '+l2', '+l2=DECAY', e.g. "
                f"{examples}")

    variants_help = variant_help("comma-separated variants", "'gn,ln,bn+l1', 'bn+l1=5e-5' or 'gn+ws'")

    p = sub.add_parser("study", help="train several variants x seeds and save a run folder",
                       formatter_class=HelpFormatter,
                       description="Train every variant for every seed, evaluating on the test set "
                                   "after each epoch, and save config, metrics, summary, "
                                   "predictions and checkpoints in a run folder.")
    add_variant_seed_flags(p, D, variants_help, "variant")
    add_training_flags(p, D)
    add_format_flag(p, D)

    p = sub.add_parser("train", help="train one variant and save a run folder",
                       formatter_class=HelpFormatter,
                       description="Train a single variant (one seed) and save a run folder.")
    p.add_argument("--variant", default=D("bn"),
                   help=variant_help("one variant", "'bn+l1=5e-5' or 'gn+ws'"))
    p.add_argument("--seed", type=seed_int, default=D(0), help="random seed")
    add_training_flags(p, D, several_runs=False)
    add_format_flag(p, D)

    p = sub.add_parser("sweep", help="train variants x seeds for every value of one or more settings",
                       formatter_class=HelpFormatter,
                       description="Sweep settings of the config: every variant x value (x value of "
                                   "each further --param) x seed, each point a study folder under "
                                   "OUT/points/, with sweep.csv, figures/sweep_<param>.png and "
                                   "report.md. Running the same command again continues the sweep.")
    p.add_argument("--param", action="append", required=False, default=D(None), metavar="NAME=V1,V2",
                   help="a setting and its values, e.g. batch_size=2,8,32,128 or l1=0,1e-5,1e-4; "
                        "give it again for a grid of every combination. Sweepable: batch_size, lr, "
                        "momentum, warmup, l1, "
                        "l2, groups, ghost_batch, augment, rotate, translate, clean_fraction, dataset, "
                        "train_subset, epochs, precision, arch, label_smoothing, weight_decay, ema "
                        "(required, except with --resume; default: none)")
    add_variant_seed_flags(p, D, variants_help, "variant and point")
    p.add_argument("--scale-lr", action="store_true", default=D(False),
                   help="with a swept batch_size: lr = --lr x batch_size / --batch-size "
                        "(linear scaling rule), recorded in each point's config")
    p.add_argument("--backend", choices=("local", "ray"), default=D("local"),
                   help="local: points one after another on this machine; ray: every run a Ray "
                        "task (pip install 'normlab[ray]')")
    p.add_argument("--ray-address", default=D(None), metavar="ADDR",
                   help="Ray cluster to connect to (e.g. 127.0.0.1:6379); default: start a local "
                        "one for the sweep")
    p.add_argument("--ray-cpus", type=number(float, 0, inclusive=False), default=D(1.0),
                   metavar="N", help="CPUs each Ray task declares")
    p.add_argument("--ray-gpus", type=nonneg_float, default=D(0.0), metavar="N",
                   help="GPUs (a fraction is fine, e.g. 0.25) each Ray task declares")
    p.add_argument("--retries", metavar="N", type=nonneg_int, default=D(2),
                   help="times a failed Ray task is retried before its run is recorded as failed")
    add_training_flags(p, D, folder="sweep")
    add_format_flag(p, D, "the sweep's figures (each point's study draws its own as "
                           f"{','.join(DEFAULT_FIGURE_FORMATS)}; 'normlab report' redraws one in "
                           "other formats)")

    p = sub.add_parser("report", help="redraw the figures and report.md of a run folder",
                       formatter_class=HelpFormatter,
                       description="Regenerate every figure and report.md of a run folder from its "
                                   "saved files, without training.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=path, help="a run folder written by 'normlab study' or 'normlab train' (a sweep's point too)")
    p.add_argument("--mistakes", choices=MISTAKE_MODES, default=D("confident"),
                   help="which 10 misclassified test images to show: the most confident mistakes "
                        "or the first ones by test index")
    p.add_argument("--data-dir", metavar="DIR", type=path, default=D(None),
                   help="folder with the dataset's IDX files, for the test images of the grids; "
                        "default: the run's own data_dir, then $NORMLAB_DATA, then the cache")
    add_format_flag(p, D)

    from normlab.experiments import COMMON, EXPERIMENTS
    listing = "; ".join(f"{name}: {e.question}" for name, e in EXPERIMENTS.items())
    p = sub.add_parser("experiment", help="run a named experiment: a sweep whose protocol "
                       "isolates one question, plus the measurements that explain it",
                       formatter_class=HelpFormatter,
                       description=f"Experiments: {listing} Each is a sweep (the same command "
                                   "again continues it) followed by its mechanism tables "
                                   "(mechanism.csv, batch_stats.csv), figure and report.md.")
    p.add_argument("name", metavar="NAME", choices=tuple(EXPERIMENTS),
                   help=f"one of {', '.join(EXPERIMENTS)}")
    p.add_argument("--out", metavar="DIR", type=path, default=D(None),
                   help="the experiment's sweep folder; default: runs/experiment-NAME")
    for flag, kind in (("seeds", positive_int), ("epochs", positive_int),
                       ("train_subset", positive_int)):
        p.add_argument(flag_name(flag), type=kind, default=D(None), metavar="N",
                       help=f"override the experiment's {flag} (default: {COMMON[flag]}; fewer "
                            "for a quick check)")
    p.add_argument("--data-dir", metavar="DIR", type=path, default=D(None),
                   help="folder holding the dataset's IDX files; default: $NORMLAB_DATA, the "
                        "cache, then download")
    p.add_argument("--device", default=D(DEFAULTS.device), help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", default=D(False), help="no progress bars")
    add_format_flag(p, D)

    explained = ", ".join(norms.display_name(n) for n in norms.explained())
    p = sub.add_parser("explain", help=f"compute {explained}, Ghost BatchNorm and weight "
                       "standardization by hand and compare with PyTorch",
                       formatter_class=HelpFormatter,
                       description=f"Compute {explained} by hand on a small "
                                   "example tensor, Ghost BatchNorm on a 4-image one, and weight "
                                   "standardization (+ws) of a small kernel; print the "
                                   "statistics and the largest difference "
                                   "from PyTorch's layers (exit code 1 if any exceeds 1e-5), and the "
                                   "parameters each norm adds to normlab's model.")
    p.add_argument("--seed", type=seed_int, default=D(0), help="seed of the example tensor")
    p.add_argument("--figure", type=path, default=D(None), metavar="PATH",
                   help="also draw which elements share one mean and variance: PATH (ending in "
                        ".png, or .svg or .pdf for that format too) as a PNG, and next to it the "
                        "other --format files; existing files are not overwritten; default: no "
                        "figure")
    add_format_flag(p, D, "--figure", png="always written")
    return parser


# Every Config field but the runs (given per command) has a flag of its own name.
_TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(Config)
                       if f.name not in ("variants", "seeds", "first_seed"))


def _explain(args: argparse.Namespace) -> int:
    from normlab import axes_figure, explain
    from normlab.runfolder import figure_files

    files = {}
    if args.figure is None and tuple(args.formats) != tuple(DEFAULT_FIGURE_FORMATS):
        raise NormlabError("--format sets the files of --figure; give --figure PATH too")
    if args.figure is not None:   # checked before anything is printed or drawn
        png, formats = Path(args.figure), args.formats
        if png.suffix.lower() not in (".png", ".svg", ".pdf"):
            raise NormlabError(f"--figure {args.figure!r} is not a figure file name; give a path "
                               "ending in .png, .svg or .pdf, e.g. norm_axes.png")
        if png.suffix.lower() in (".svg", ".pdf"):   # axes.svg: axes.png and axes.svg
            formats = parse_formats([*formats, png.suffix[1:]])
            png = png.with_suffix(".png")
        files = figure_files(png, formats)
        parent = next(q for q in png.absolute().parents if q.exists())   # the / root exists
        if not parent.is_dir():
            raise NormlabError(f"cannot write --figure {args.figure!r}: {parent} is a file, not a "
                               "folder; choose another path")
        there = [str(f) for f in files.values() if f.exists()]
        if there:   # nothing already written is replaced
            raise NormlabError(f"--figure would overwrite {', '.join(there)}; delete "
                               f"{'them' if len(there) > 1 else 'it'} or choose another path")
    text, diff = explain.explain_text(seed=args.seed)
    print(text, end="")
    if files:
        try:
            axes_figure.draw_norm_axes(files["png"], formats=formats)
        except OSError as e:
            raise NormlabError(f"cannot write --figure {args.figure!r} ({e.strerror or e}); "
                               "choose a writable path") from None
        print(f"figure: {', '.join(str(p) for p in files.values())}")
    return 1 if diff > explain.TOLERANCE else 0


def _given(argv: Sequence[str]) -> set[str]:
    """The config keys whose flags appear in ``argv`` (parsed with the defaults suppressed)."""
    given = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    given -= {"command", "resume", "quiet", "out", "formats"}
    rename = {"variant": "variants", "seed": "first_seed"}
    return {rename.get(g, g) for g in given}


def _resume_config(argv: Sequence[str], args: argparse.Namespace) -> Config:
    """The saved config of ``--resume RUN_DIR``; flags given on the command line must agree."""
    from normlab.runfolder import RunFolder, SweepFolder

    if SweepFolder.holds_sweep(args.resume):
        raise NormlabError(f"{args.resume} is a sweep folder, not a run folder; continue it with "
                           f"'normlab sweep --resume {args.resume}'")
    folder = RunFolder(args.resume)
    saved = folder.read_saved_config()
    try:
        cfg = Config.from_saved(saved)
    except (TypeError, ValueError) as e:
        raise NormlabError(f"{folder.config} is not a valid config ({e}); start a new study "
                           "with --out") from None
    given = _given(argv)
    wanted = config_from_args(args).to_dict()
    diff = continuation_diff(saved, wanted, [k for k in sorted(given) if k in wanted])
    if args.command == "train":   # name the clash by train's own flags: --seed, --variant
        diff = [d.replace("first_seed:", "seed:", 1).replace("variants:", "variant:", 1)
                for d in diff]
    if diff:
        raise NormlabError(f"cannot resume {args.resume!r} with a different config "
                           f"({'; '.join(diff)}); drop those flags, or start a new study with --out")
    return _relocated(cfg, args, given)


def _relocated(cfg: Config, args: argparse.Namespace, given: set[str]) -> Config:
    """``cfg`` continued where its data lie now: the RELOCATABLE flags given (--data-dir after
    the data moved) replace the saved values."""
    return cfg.replace(**{k: getattr(args, k) for k in RELOCATABLE if k in given})


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of ``study``, ``sweep`` (its base) or ``train`` from the parsed flags."""
    kw = {k: getattr(args, k) for k in _TRAINING_KEYS if hasattr(args, k)}   # train: no --workers
    if args.command in ("study", "sweep"):
        return Config(variants=tuple(args.variants.split(",")), seeds=args.seeds,
                      first_seed=args.first_seed, **kw)
    if "," in args.variant:
        raise NormlabError("--variant takes one variant; use 'normlab study --variants' for several")
    return Config(variants=(args.variant,), seeds=1, first_seed=args.seed, **kw)


RAY_FLAGS = ("ray_address", "ray_cpus", "ray_gpus", "retries")   # sweep flags for Ray alone


def _sweep(argv: Sequence[str], args: argparse.Namespace) -> int:
    import functools

    from normlab.sweep import read_sweep_spec, run_sweep
    from normlab.sweep_spec import SweepSpec, parse_param

    given = _given(argv)   # parsed once: it builds and runs a parser of its own
    ray_only = sorted(given & set(RAY_FLAGS))
    if args.backend != "ray" and ray_only:
        verb = "apply" if len(ray_only) > 1 else "applies"
        raise NormlabError(f"{', '.join(map(flag_name, ray_only))} only {verb} to --backend "
                           f"ray; add --backend ray, or drop {'them' if len(ray_only) > 1 else 'it'}")
    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise NormlabError("give either --resume SWEEP_DIR or --out, not both")
        base, spec = read_sweep_spec(args.resume)
        kept = given - {"backend", *RAY_FLAGS}
        fixed = kept - set(RELOCATABLE)
        if fixed:
            raise NormlabError(f"--resume uses the saved sweep; drop "
                               f"{', '.join(map(flag_name, sorted(fixed)))}, or start a new "
                               "sweep with --out")
        base = _relocated(base, args, kept)
        out = args.resume
    else:
        if not args.param:
            raise NormlabError("give at least one --param NAME=V1,V2,..., e.g. "
                               "--param batch_size=32,128")
        spec = SweepSpec(tuple(parse_param(t) for t in args.param), scale_lr=args.scale_lr)
        check_augmentation(given, args, swept=[p.name for p in spec.params])
        check_unused(given, args, spec.params)
        base = config_from_args(args)   # a bad setting is refused before any warning
        warn_plain_ghost_batch(cfg for _, cfg in spec.points(base))   # a bad point fails here
        warn_overridden(given, spec)
        out = args.out or new_timestamped_folder("runs", "sweep")
    runner = None
    if args.backend == "ray":
        from normlab import sweep_ray

        runner = functools.partial(sweep_ray.run_points, ray_address=args.ray_address,
                                   retries=args.retries,
                                   resources={"num_cpus": args.ray_cpus,
                                              "num_gpus": args.ray_gpus})
    try:
        run_sweep(base, spec, out, runner=runner, backend=args.backend, progress=not args.quiet,
                  formats=args.formats)
    except BaseException:
        if args.resume is None and args.out is None:   # leave no empty default folder behind
            with contextlib.suppress(OSError):
                Path(out).rmdir()
        raise
    return 0


def _warn_if_none_finished(run_dir: Path) -> None:
    """A one-line warning on stderr when every run of the study in ``run_dir`` diverged: its
    table says so, but a script that checks only the exit code (0: the study ran) would not
    see it."""
    from normlab.runfolder import load_summary

    variants = load_summary(run_dir)["variants"].values()
    if variants and all(s.get("seeds") and len(s.get("diverged_seeds", ())) == len(s["seeds"])
                        for s in variants):
        print(f"normlab: warning: every run of {run_dir} diverged; a smaller --lr may train",
              file=sys.stderr)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # Warnings (e.g. "data not found where pointed to; downloading") as one line, no source line.
    print(f"normlab: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    warnings.showwarning = _one_line_warning
    try:
        if args.command == "explain":
            return _explain(args)
        if args.command == "experiment":
            from normlab.experiments import run_experiment

            keys = ("seeds", "epochs", "train_subset", "data_dir")
            overrides = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
            run_experiment(args.name, args.out or f"runs/experiment-{args.name}",
                           {**overrides, "device": args.device}, progress=not args.quiet,
                           formats=args.formats)
            return 0
        if args.command == "report":
            from normlab.report import write_report

            report = write_report(args.run_dir, mode=args.mistakes, data_dir=args.data_dir,
                                  formats=args.formats)
            print(f"report: {report}")
            return 0
        if args.command != "sweep" and args.resume is None:
            given = _given(argv)
            check_augmentation(given, args, swept=())
            check_unused(given, args)
        if args.command == "sweep":
            return _sweep(argv, args)
        from normlab.study import run_study

        if args.resume is not None:
            if args.out is not None and args.out != args.resume:
                raise NormlabError("give either --resume RUN_DIR or --out, not both")
            cfg = _resume_config(argv, args)
            out = run_study(cfg, out=args.resume, progress=not args.quiet, resume=True,
                            formats=args.formats)
        else:
            cfg = config_from_args(args)   # a bad setting is refused before any warning
            warn_plain_ghost_batch([cfg])
            out = run_study(cfg, out=args.out, progress=not args.quiet, formats=args.formats)
        _warn_if_none_finished(out)
    except NormlabError as e:
        print(f"normlab: error: {e}", file=sys.stderr)
        return 2
    except PermissionError as e:   # a path this user may not read or write: bad input, not a bug
        where = f" on {e.filename!r}" if e.filename else f" ({e.strerror or e})"
        print(f"normlab: error: permission denied{where}; give a path you may read and write, "
              "or change its permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:   # a study or sweep says in it how to continue
        if e.args:
            print(f"normlab: {e}", file=sys.stderr)
        return 130
    return 0


class _LogStream:
    """stdout or stderr of the console command, which goes quiet when its reader goes away
    (``normlab study | head -1``). What normlab prints is a log of the work; the run folder is
    the result, so the work goes on and is saved instead of stopping at a BrokenPipeError with
    half its files written."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self.silence()
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.silence()

    def silence(self) -> None:
        """Point the stream's file descriptor at the null device: the rest of the log, and the
        flush at exit, go there instead of raising again."""
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self.stream.fileno())
        os.close(null)

    def __getattr__(self, name: str):   # isatty, fileno, encoding, ... of the real stream
        return getattr(self.stream, name)


def run() -> None:
    """The console command: :func:`main`, then exit with its code. Its output streams go quiet
    when their reader goes away (:class:`_LogStream`). Once main has returned, a Ctrl-C is
    ignored: arriving while the interpreter shuts down, it would print a traceback of Python's
    own clean-up code under a result already complete."""
    # Kept until the process ends: at-exit flushes meet a closed pipe too. A stream Python set
    # to None (its descriptor closed at start) stays None, which print() skips.
    if sys.stdout is not None:
        sys.stdout = _LogStream(sys.stdout)
    if sys.stderr is not None:
        sys.stderr = _LogStream(sys.stderr)
    try:
        code = main()
    except KeyboardInterrupt:   # where main does not catch it, or just as it returned
        code = 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    run()
