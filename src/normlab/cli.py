"""Command-line interface: ``normlab study``, ``train``, ``sweep``, ``experiment``, ``report``,
``explain``. Bad input prints one line, ``normlab: error: <problem>; <fix>``, and exits 2."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Sequence

from normlab import __version__
from normlab.config import DATASET_NAMES, DEFAULT_L1, DEFAULT_L2, Config, config_diff
from normlab.errors import ConfigError, NormlabError
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, FIGURE_FORMATS, parse_formats
from normlab import norms

_D = Config()  # the defaults shown in --help come from the config itself


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (argparse's default prints the usage block too)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"normlab: error: {message}; see '{self.prog} --help'\n")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' after each flag's help unless the help already states its default;
    a switch shows '(default: off)'."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # a switch: off unless given
            return f"{text} (default: off)"
        return super()._get_help_string(action)


def _number(kind: type, minimum: float, inclusive: bool):
    """An argparse type: ``kind`` (int or float) that is finite and >= (or >) ``minimum``."""
    what = "a whole number" if kind is int else "a number"
    bound = f"{'>=' if inclusive else '>'} {minimum:g}"

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        ok = v >= minimum if inclusive else v > minimum
        if not ok or v in (float("inf"), float("-inf")) or v != v:
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text}")
        return v

    parse.__name__ = f"{what} {bound}"  # argparse names the type in some messages
    return parse


def _figure_formats(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated figure formats (:func:`parse_formats`)."""
    try:
        return parse_formats(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_format_flag(p: argparse.ArgumentParser, D, what: str = "the figures") -> None:
    p.add_argument("--format", dest="formats", type=_figure_formats, metavar="LIST",
                   default=D(",".join(DEFAULT_FIGURE_FORMATS)),
                   help=f"file formats of {what}, comma-separated, of {', '.join(FIGURE_FORMATS)}: "
                        "each figure is a PNG (the one report.md shows) and, next to it, a file of "
                        "the same stem per other format (SVG keeps text as text; PDF for LaTeX)")


_positive_int = _number(int, 1, inclusive=True)
_nonneg_int = _number(int, 0, inclusive=True)
_positive_float = _number(float, 0, inclusive=False)
_nonneg_float = _number(float, 0, inclusive=True)


def _add_training_flags(p: argparse.ArgumentParser, D) -> None:
    p.add_argument("--epochs", type=_positive_int, default=D(_D.epochs), help="epochs per run")
    p.add_argument("--batch-size", type=_positive_int, default=D(_D.batch_size),
                   help="training batch size (>= 2 for BatchNorm)")
    p.add_argument("--lr", type=_positive_float, default=D(_D.lr),
                   help="peak learning rate of the one-cycle schedule (SGD, Nesterov momentum)")
    p.add_argument("--momentum", type=_nonneg_float, default=D(_D.momentum), help="peak SGD momentum")
    p.add_argument("--warmup", type=float, default=D(_D.warmup), help="fraction of the steps "
                   "spent raising the learning rate to its peak")
    p.add_argument("--l1", type=_nonneg_float, default=D(DEFAULT_L1), dest="l1_default", metavar="LAMBDA",
                   help="L1 lambda used by a variant written '+l1' without a value")
    p.add_argument("--l2", type=_nonneg_float, default=D(DEFAULT_L2), dest="l2_default", metavar="DECAY",
                   help="weight decay used by a variant written '+l2' without a value")
    p.add_argument("--groups", type=_positive_int, default=D(_D.groups),
                   help="GroupNorm groups for 'gn' (must divide every width of --arch)")
    p.add_argument("--ghost-batch", type=_number(int, 2, inclusive=True),
                   default=D(_D.ghost_batch), metavar="N",
                   help="images per virtual batch of Ghost BatchNorm 'gbn' (>= 2; with N >= "
                        "--batch-size gbn is bn)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=D(True),
                   help="turn off the random rotation and shift of training batches; "
                        "augmentation is on unless this flag is given")
    p.add_argument("--rotate", type=_nonneg_float, default=D(_D.rotate),
                   help="max random rotation of training images, degrees")
    p.add_argument("--translate", type=_nonneg_float, default=D(_D.translate),
                   help="max random shift of training images, pixels")
    p.add_argument("--dataset", default=D(_D.dataset), choices=DATASET_NAMES, metavar="NAME",
                   help=f"dataset: {', '.join(DATASET_NAMES)}")
    p.add_argument("--data-dir", default=D(None),
                   help="folder holding the dataset's four IDX files (.gz or not); "
                        "default: $NORMLAB_DATA, then ~/.cache/normlab/<dataset>, then download")
    p.add_argument("--train-subset", type=_positive_int, default=D(None), metavar="N",
                   help="train on the first N training images only (quick runs); default: all")
    p.add_argument("--eval-batch-size", type=_positive_int, default=D(_D.eval_batch_size),
                   help="batch size for test evaluation")
    p.add_argument("--val", type=_nonneg_int, default=D(_D.val), metavar="N",
                   help="hold out N training images (the same seeded choice for every variant "
                        "and seed), train on the rest and report val_loss and val_acc per epoch: "
                        "choose models and recipes on these, not on the test set; 0: train on all")
    p.add_argument("--arch", default=D(_D.arch), metavar="W1-W2-...",
                   help="output channels of the model's 3x3 convs, then a linear classifier; "
                        "the first conv runs at full resolution and a 2x2 max pool follows it, "
                        "or with an 's' after its width (8s-...) it has stride 2 instead, and a "
                        "kernel size 2..4 after the 's' (8s4-...) sets its kernel")
    p.add_argument("--label-smoothing", type=float, default=D(_D.label_smoothing), metavar="EPS",
                   help="label smoothing of the training loss (metrics report the plain "
                        "cross-entropy); 0: none")
    p.add_argument("--weight-decay", type=_nonneg_float, default=D(_D.weight_decay),
                   metavar="DECAY",
                   help="SGD weight decay of every variant's conv and linear weights (not of "
                        "biases or the norms' gamma/beta); a variant's +l2 adds to it; 0: none")
    p.add_argument("--ema", type=float, default=D(_D.ema), metavar="DECAY",
                   help="evaluate and save a moving average of the weights, decay min(DECAY, "
                        "(1+t)/(10+t)) at update t; DECAY in [0, 1), e.g. 0.999 (BatchNorm "
                        "statistics recomputed for it); train_loss/train_acc and the diagnostics "
                        "stay the trained weights'; 0: off")
    p.add_argument("--device", default=D(_D.device),
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    p.add_argument("--group-size", type=_nonneg_int, default=D(_D.group_size), metavar="N",
                   help="train up to N runs at once as one network; 0: auto (all runs on a GPU; "
                        "on a CPU one group per worker at batch sizes up to 32, else 1)")
    p.add_argument("--workers", type=_nonneg_int, default=D(_D.workers), metavar="N",
                   help="threads that train groups of runs side by side, one epoch at a time; "
                        "0: auto (CPU: one per core, GPU: 1)")
    p.add_argument("--precision", default=D(_D.precision), choices=("auto", "fp32", "bf16"),
                   help="arithmetic of the forward pass: fp32, or bf16 autocast (float32 weights "
                        "and optimizer); auto: bf16 on CUDA, fp32 on CPU")
    p.add_argument("--compile", action="store_true", default=D(False),
                   help="torch.compile the training network (slower start, faster steps on a GPU)")
    p.add_argument("--no-diagnostics", dest="diagnostics", action="store_false", default=D(True),
                   help="do not record diagnostics.csv (per epoch and layer, on a fixed probe batch: "
                        "activation mean/std around each norm, dead ReLU units, weight and "
                        "gradient norms, BatchNorm's batch-vs-running statistics gap); recorded "
                        "unless this flag is given, and never changes results")
    p.add_argument("--out", default=D(None),
                   help="run folder to create; default: runs/<dataset>-<timestamp>")
    p.add_argument("--resume", default=D(None), metavar="RUN_DIR",
                   help="continue the interrupted study in RUN_DIR with its saved config: finished "
                        "runs are kept, unfinished ones go on from their last finished epoch; "
                        "default: start a new study")
    p.add_argument("--quiet", action="store_true", default=D(False), help="no progress bars")


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    """The parser of every command. With ``suppress_defaults``, a flag not given is absent from
    the parsed namespace (argparse.SUPPRESS): what --resume compares with the saved config."""

    def D(value):   # noqa: N802 - reads as the flag's default
        return argparse.SUPPRESS if suppress_defaults else value

    parser = _Parser(
        prog="normlab", allow_abbrev=False,
        description="Compare BatchNorm, GroupNorm and LayerNorm (and L1/L2 penalties) in a small CNN.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add = sub.add_parser
    # Flags must be written in full: --resume compares the flags given with the saved config.
    sub.add_parser = lambda *a, **k: _add(*a, allow_abbrev=False, **k)  # type: ignore[method-assign]
    sub.required = True

    variant_help = (
        "comma-separated variants: a norm ({norms}) with optional '+ws' (weight "
        "standardization of the convs), '+l1', '+l1=LAMBDA', '+l2', '+l2=DECAY', e.g. "
        "'gn,ln,bn+l1', 'bn+l1=5e-5' or 'gn+ws'"
    ).format(norms=", ".join(norms.NORMS))

    p = sub.add_parser("study", help="train several variants x seeds and save a run folder",
                       formatter_class=_Formatter,
                       description="Train every variant for every seed, evaluating on the test set "
                                   "after each epoch, and save config, metrics, summary, "
                                   "predictions and checkpoints in a run folder.")
    p.add_argument("--variants", default=D(",".join(_D.variants)), help=variant_help)
    p.add_argument("--seeds", type=_positive_int, default=D(_D.seeds),
                   help="number of seeds per variant: N runs seeds 0..N-1")
    _add_training_flags(p, D)
    _add_format_flag(p, D)

    p = sub.add_parser("train", help="train one variant and save a run folder",
                       formatter_class=_Formatter,
                       description="Train a single variant (one seed) and save a run folder.")
    p.add_argument("--variant", default=D("bn"), help=variant_help.replace("comma-separated variants",
                                                                        "one variant"))
    p.add_argument("--seed", type=_nonneg_int, default=D(0), help="random seed")
    _add_training_flags(p, D)
    _add_format_flag(p, D)

    p = sub.add_parser("sweep", help="train variants x seeds for every value of one or two settings",
                       formatter_class=_Formatter,
                       description="Sweep settings of the config: every variant x value (x value of a "
                                   "second --param) x seed, each point a study folder under "
                                   "OUT/points/, with sweep.csv, figures/sweep_<param>.png and "
                                   "report.md. Running the same command again continues the sweep.")
    p.add_argument("--param", action="append", required=False, default=D(None), metavar="NAME=V1,V2",
                   help="a setting and its values, e.g. batch_size=2,8,32,128 or l1=0,1e-5,1e-4; "
                        "give it twice for a grid. Sweepable: batch_size, lr, momentum, warmup, l1, "
                        "l2, groups, ghost_batch, augment, rotate, translate, dataset, "
                        "train_subset, epochs, precision, arch, label_smoothing, weight_decay, ema "
                        "(required, except with --resume)")
    p.add_argument("--variants", default=D(",".join(_D.variants)), help=variant_help)
    p.add_argument("--seeds", type=_positive_int, default=D(_D.seeds),
                   help="number of seeds per variant and point")
    p.add_argument("--scale-lr", action="store_true", default=D(False),
                   help="with a swept batch_size: lr = --lr x batch_size / --batch-size "
                        "(linear scaling rule), recorded in each point's config")
    p.add_argument("--backend", choices=("local", "ray"), default=D("local"),
                   help="local: points one after another on this machine; ray: every run a Ray "
                        "task (pip install 'normlab[ray]')")
    p.add_argument("--ray-address", default=D(None), metavar="ADDR",
                   help="Ray cluster to connect to (e.g. 127.0.0.1:6379); default: start a local "
                        "one for the sweep")
    p.add_argument("--ray-cpus", type=_number(float, 0, inclusive=False), default=D(1.0),
                   metavar="N", help="CPUs each Ray task declares")
    p.add_argument("--ray-gpus", type=_nonneg_float, default=D(0.0), metavar="N",
                   help="GPUs (a fraction is fine, e.g. 0.25) each Ray task declares")
    p.add_argument("--retries", type=_nonneg_int, default=D(2),
                   help="times a failed Ray task is retried before its run is recorded as failed")
    _add_training_flags(p, D)
    _add_format_flag(p, D, "the sweep's figures (each point's study draws its own as "
                           f"{','.join(DEFAULT_FIGURE_FORMATS)}; 'normlab report' redraws one in "
                           "other formats)")

    p = sub.add_parser("report", help="redraw the figures and report.md of a run folder",
                       formatter_class=_Formatter,
                       description="Regenerate every figure and report.md of a run folder from its "
                                   "saved files, without training.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder written by 'normlab study'")
    p.add_argument("--mistakes", choices=("confident", "first"), default=D("confident"),
                   help="which 10 misclassified test images to show: the most confident mistakes "
                        "or the first ones by test index")
    p.add_argument("--data-dir", default=D(None),
                   help="folder with the dataset's IDX files, for the test images of the grids; "
                        "default: the run's own data_dir, then $NORMLAB_DATA, then the cache")
    _add_format_flag(p, D)

    from normlab.experiments import COMMON, EXPERIMENTS
    listing = "; ".join(f"{name}: {e.question}" for name, e in EXPERIMENTS.items())
    p = sub.add_parser("experiment", help="run a named experiment: a sweep whose protocol "
                       "isolates one question, plus the measurements that explain it",
                       formatter_class=_Formatter,
                       description=f"Experiments: {listing} Each is a sweep (the same command "
                                   "again continues it) followed by its mechanism tables "
                                   "(mechanism.csv, batch_stats.csv), figure and report.md.")
    p.add_argument("name", metavar="NAME", choices=tuple(EXPERIMENTS),
                   help=f"one of {', '.join(EXPERIMENTS)}")
    p.add_argument("--out", default=D(None),
                   help="the experiment's sweep folder; default: runs/experiment-NAME")
    for flag, kind in (("seeds", _positive_int), ("epochs", _positive_int),
                       ("train_subset", _positive_int)):
        p.add_argument(f"--{flag.replace('_', '-')}", type=kind, default=D(None), metavar="N",
                       help=f"override the experiment's {flag} (default: {COMMON[flag]}; fewer "
                            "for a quick check)")
    p.add_argument("--data-dir", default=D(None),
                   help="folder holding the dataset's IDX files; default: $NORMLAB_DATA, the "
                        "cache, then download")
    p.add_argument("--device", default=D(_D.device), help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", default=D(False), help="no progress bars")
    _add_format_flag(p, D)

    explained = ", ".join(norms.display_name(n) for n in norms.explained())
    p = sub.add_parser("explain", help=f"compute {explained} by hand and compare with PyTorch",
                       formatter_class=_Formatter,
                       description=f"Compute {explained} by hand on a small "
                                   "example tensor, and weight standardization (+ws) of a small "
                                   "kernel; print the statistics and the largest difference "
                                   "from PyTorch's layers (exit code 1 if any exceeds 1e-5), and the "
                                   "parameters each norm adds to normlab's model.")
    p.add_argument("--seed", type=_nonneg_int, default=D(0), help="seed of the example tensor")
    p.add_argument("--figure", default=D(None), metavar="PATH",
                   help="also draw which elements share one mean and variance: PATH as a PNG, and "
                        "next to it the other --format files (PATH may end in .svg or .pdf "
                        "instead); default: no figure")
    _add_format_flag(p, D, "--figure")
    return parser


# Every Config field but the runs (given per command) has a flag of its own name.
_TRAINING_KEYS = tuple(f.name for f in dataclasses.fields(Config)
                       if f.name not in ("variants", "seeds", "first_seed"))


def _explain(args: argparse.Namespace) -> int:
    from normlab import axes_figure, explain

    text, diff = explain.explain_text(seed=args.seed)
    print(text, end="")
    if args.figure:
        from normlab.runfolder import figure_files

        png, formats = Path(args.figure), args.formats
        if png.suffix.lower() in (".svg", ".pdf"):   # axes.svg: axes.png and axes.svg
            formats = parse_formats([*formats, png.suffix[1:]])
            png = png.with_suffix(".png")
        try:
            png = axes_figure.draw_norm_axes(png, formats=formats)
        except OSError as e:
            raise NormlabError(f"cannot write --figure {args.figure!r} ({e.strerror or e}); "
                               "choose a writable path") from None
        print(f"figure: {', '.join(str(p) for p in figure_files(png, formats).values())}")
    return 1 if diff > explain.TOLERANCE else 0


def _given(argv: Sequence[str]) -> set[str]:
    """The config keys whose flags appear in ``argv`` (parsed with the defaults suppressed)."""
    given = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    given -= {"command", "resume", "quiet", "out", "formats"}
    rename = {"variant": "variants", "seed": "first_seed"}
    return {rename.get(g, g) for g in given}


def _resume_config(argv: Sequence[str], args: argparse.Namespace) -> Config:
    """The saved config of ``--resume RUN_DIR``; flags given on the command line must agree."""
    from normlab.runfolder import RunFolder

    folder = RunFolder(args.resume)
    saved = {k: v for k, v in folder.read_saved_config().items() if k != "resolved"}
    try:
        cfg = Config.from_dict(saved)
    except (TypeError, ValueError) as e:
        raise NormlabError(f"{folder.config} is not a valid config ({e}); start a new study "
                           "with --out") from None
    given = _given(argv)
    wanted = config_from_args(args).to_dict()
    diff = config_diff(saved, wanted, [k for k in sorted(given) if k in wanted])
    if diff:
        raise NormlabError(f"cannot resume {args.resume!r} with a different config "
                           f"({'; '.join(diff)}); drop those flags, or start a new study with --out")
    return cfg


def config_from_args(args: argparse.Namespace) -> Config:
    """The Config of ``study``, ``sweep`` (its base) or ``train`` from the parsed flags."""
    kw = {k: getattr(args, k) for k in _TRAINING_KEYS}
    if args.command in ("study", "sweep"):
        return Config(variants=tuple(args.variants.split(",")), seeds=args.seeds, **kw)
    if "," in args.variant:
        raise NormlabError("--variant takes one variant; use 'normlab study --variants' for several")
    return Config(variants=(args.variant,), seeds=1, first_seed=args.seed, **kw)


def _sweep(argv: Sequence[str], args: argparse.Namespace) -> int:
    import functools
    import time

    from normlab.sweep import SweepSpec, parse_param, read_sweep_spec, run_sweep

    if args.resume is not None:
        if args.out is not None and args.out != args.resume:
            raise NormlabError("give either --resume SWEEP_DIR or --out, not both")
        base, spec = read_sweep_spec(args.resume)
        given = _given(argv) - {"backend", "ray_address", "ray_cpus", "ray_gpus", "retries"}
        if given:
            raise NormlabError(f"--resume uses the saved sweep; drop {', '.join(sorted(given))}, "
                               "or start a new sweep with --out")
        out = args.resume
    else:
        if not args.param:
            raise NormlabError("give at least one --param NAME=V1,V2,..., e.g. "
                               "--param batch_size=32,128")
        spec = SweepSpec(tuple(parse_param(t) for t in args.param), scale_lr=args.scale_lr)
        base = config_from_args(args)
        out = args.out or f"runs/sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    runner = None
    if args.backend == "ray":
        from normlab import sweep_ray

        runner = functools.partial(sweep_ray.run_points, ray_address=args.ray_address,
                                   retries=args.retries,
                                   resources={"num_cpus": args.ray_cpus,
                                              "num_gpus": args.ray_gpus})
    run_sweep(base, spec, out, runner=runner, backend=args.backend, progress=not args.quiet,
              formats=args.formats)
    return 0


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
        if args.command == "sweep":
            return _sweep(argv, args)
        from normlab.study import run_study

        if args.resume is not None:
            if args.out is not None and args.out != args.resume:
                raise NormlabError("give either --resume RUN_DIR or --out, not both")
            cfg = _resume_config(argv, args)
            run_study(cfg, out=args.resume, progress=not args.quiet, resume=True,
                      formats=args.formats)
        else:
            run_study(config_from_args(args), out=args.out, progress=not args.quiet,
                      formats=args.formats)
    except NormlabError as e:
        print(f"normlab: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130  # run_study has said how to resume
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
