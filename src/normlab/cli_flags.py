"""The argparse pieces the commands of :mod:`normlab.cli` share: the parser that fails in one
line, the help formatter that states each default, the number types, and the training flags
(one per field of :class:`~normlab.config.Config`, its default shown in ``--help``)."""

from __future__ import annotations

import argparse
import difflib

from normlab.config import (DATASET_NAMES, MAX_EPOCHS, MAX_ROTATE, MAX_SEED, MAX_SEEDS, MAX_TRANSLATE,
                            PRECISIONS, Config)
from normlab.errors import ConfigError
from normlab.figure_formats import DEFAULT_FIGURE_FORMATS, FIGURE_FORMATS, parse_formats
from normlab.variants import DEFAULT_L1, DEFAULT_L2, parse_number

DEFAULTS = Config()  # the defaults shown in --help come from the config itself


# Flags whose closest spelling would mislead, and the one meant: a study's --seed is its
# --first-seed (its --seeds counts them); the rest are other tools' names for normlab's flags
# (pytorch/examples' mnist script, common training scripts), which difflib matches to a look-alike
# (--lrate to --rotate, --data to --dataset) or to nothing. The first of the command's flags
# in the list is named, with the value to give where one is written.
MEANT: dict[str, tuple[str, ...]] = {
    "--seed": ("--first-seed",),
    **dict.fromkeys(("--lrate", "--learning-rate", "--max-lr", "--lr-max"), ("--lr",)),
    **dict.fromkeys(("--bs", "--batch"), ("--batch-size",)),
    "--test-batch-size": ("--eval-batch-size",),
    "--wd": ("--weight-decay",),
    **dict.fromkeys(("--data", "--data-root", "--root"), ("--data-dir",)),
    **dict.fromkeys(("--output-dir", "--outdir", "--save-dir", "--log-dir"), ("--out",)),
    **dict.fromkeys(("--norm", "--norms"), ("--variants", "--variant")),
    **dict.fromkeys(("--no-cuda", "--cpu"), ("--device cpu",)),
    "--no-progress": ("--quiet",),
}


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (argparse's default prints the usage block too),
    which names the nearest flag of the command for one it does not know."""

    def __init__(self, *args, **kwargs):
        self.flags: list[str] = []        # this parser's --flags, for "did you mean"
        self.commands: dict[str, Parser] = {}
        super().__init__(*args, **kwargs)   # adds --help through add_argument

    def add_argument(self, *args, **kwargs):
        self.flags += [a for a in args if isinstance(a, str) and a.startswith("--")]
        return super().add_argument(*args, **kwargs)

    def add_subparsers(self, **kwargs):
        action = super().add_subparsers(**kwargs)
        self.commands = action.choices   # command name -> its Parser, filled as they are added
        return action

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"normlab: error: {message}; see '{self.prog} --help'\n")

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # argparse reports flags no parser knows from the top-level parser, whose help lists no
        # command's flags; point at the help of the command they were given to instead.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            known = self.commands.get(command, self).flags
            names = [e.split("=", 1)[0] for e in extras if e.startswith("--") and e != "--"]
            if command and any(n in known for n in names):   # a flag of it, given before it
                hint = f" (give the flags of '{prog}' after '{command}')"
            else:
                hint = self._hint(names, known, command)
            self.exit(2, f"normlab: error: unrecognized arguments: {' '.join(extras)}{hint}; "
                         f"see '{prog} --help'\n")
        return parsed

    def _hint(self, names: list[str], known: list[str], command: str | None) -> str:
        """What the unknown flags ``names`` of ``command`` may have meant: the command's nearest
        flag, if one is close, and for a flag of other commands those commands too (``train
        --seeds``: --seed, or the --seeds of study, sweep and experiment; ``train --group-size``:
        only theirs, as --groups is a mere look-alike)."""
        near, elsewhere = [], []
        for n in names:
            others = [f"'{self.prog} {c}'" for c, p in self.commands.items()
                      if c != command and n in p.flags]
            if n in MEANT:
                near += [m for m in MEANT[n] if m.split()[0] in known][:1]
            else:
                near += _close_flag(n, known, cutoff=0.85 if others else 0.65)
            if others:
                listed = " and ".join(filter(None, [", ".join(others[:-1]), others[-1]]))
                elsewhere.append(f"{n} is a flag of {listed}")
        parts = ([f"did you mean {', '.join(dict.fromkeys(near))}?"] if near else []) + elsewhere
        return f" ({'; '.join(parts)})" if parts else ""


def _close_flag(name: str, known, cutoff: float) -> list[str]:
    """The flag of ``known`` closest to the unknown ``name``, if any is close (difflib's ratio
    of at least ``cutoff``; 0.65 gives ``--out`` for ``--output``, not ``--rotate`` for
    ``--frobnicate``), compared without the leading dashes: with them, every short flag
    (``--lr``) is as close to ``--help`` as to a real neighbour."""
    bare = {k.lstrip("-"): k for k in known if k.startswith("--")}
    return [bare[m] for m in difflib.get_close_matches(name.lstrip("-"), bare, n=1,
                                                       cutoff=cutoff)]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' after each flag's help unless the help already states its default;
    a switch shows '(default: off)'."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default:" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0:  # a switch: off unless given
            return f"{text} (default: off)"
        return super()._get_help_string(action)


# Settings whose flag is not their name in kebab-case (the flags' ``dest``).
_FLAGS = {"l1_default": "--l1", "l2_default": "--l2", "augment": "--no-augment",
          "diagnostics": "--no-diagnostics", "formats": "--format"}


def flag_name(key: str) -> str:
    """The command-line flag of a config setting or parsed argument: ray_cpus -> --ray-cpus,
    l1_default -> --l1."""
    return _FLAGS.get(key, "--" + key.replace("_", "-"))


def number(kind: type, minimum: float, inclusive: bool, maximum: float | None = None):
    """An argparse type: ``kind`` (int or float) that is finite and >= (or >) ``minimum``, and
    at most ``maximum`` when one is given."""
    what = "a whole number" if kind is int else "a finite number"
    fmt = ",d" if kind is int else "g"   # 10,000 as Config's own messages write it
    bound = f"{'>=' if inclusive else '>'} {minimum:{fmt}}"
    if maximum is not None:
        bound = (f"from {minimum:{fmt}} to {maximum:{fmt}}" if inclusive
                 else f"{bound} and <= {maximum:{fmt}}")

    def parse(text: str):
        try:
            v = parse_number(text, kind)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        ok = v >= minimum if inclusive else v > minimum
        if maximum is not None and v > maximum:
            ok = False
        if not ok or v in (float("inf"), float("-inf")) or v != v:
            raise argparse.ArgumentTypeError(f"must be {what} {bound}, got {text}")
        return v

    parse.__name__ = f"{what} {bound}"  # argparse names the type in some messages
    return parse


def path(text: str) -> str:
    """An argparse type: a file or folder path, refused when empty (Path('') is the current
    folder, which a study would then write into or a report read)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a folder or file name")
    return text


def figure_formats(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated figure formats (:func:`parse_formats`)."""
    try:
        return parse_formats(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_format_flag(p: argparse.ArgumentParser, D, what: str = "the figures",
                    png: str = "the one report.md shows") -> None:
    p.add_argument("--format", dest="formats", type=figure_formats, metavar="LIST",
                   default=D(",".join(DEFAULT_FIGURE_FORMATS)),
                   help=f"file formats of {what}, comma-separated, of {', '.join(FIGURE_FORMATS)}: "
                        f"each figure is a PNG ({png}) and, next to it, a file of "
                        "the same stem per other format (SVG keeps text as text; PDF for LaTeX)")


positive_int = number(int, 1, inclusive=True)
nonneg_int = number(int, 0, inclusive=True)
seed_int = number(int, 0, inclusive=True, maximum=MAX_SEED)
positive_float = number(float, 0, inclusive=False)
nonneg_float = number(float, 0, inclusive=True)


def add_variant_seed_flags(p: argparse.ArgumentParser, D, variant_help: str, per: str) -> None:
    """--variants, --seeds and --first-seed: which runs a study (or each point of a sweep)
    trains. ``per`` says what the seed count is per ("variant", "variant and point")."""
    p.add_argument("--variants", default=D(",".join(DEFAULTS.variants)), help=variant_help)
    p.add_argument("--seeds", type=number(int, 1, inclusive=True, maximum=MAX_SEEDS),
                   default=D(DEFAULTS.seeds), metavar="N",
                   help=f"number of seeds per {per}, 1 to {MAX_SEEDS:,}: seeds SEED..SEED+N-1 run, "
                        "SEED the --first-seed")
    p.add_argument("--first-seed", type=seed_int, default=D(DEFAULTS.first_seed), metavar="SEED",
                   help="the first seed, e.g. --seeds 4 --first-seed 4 runs seeds 4..7 (more "
                        "seeds beside an earlier folder)")


FOLDER_HELP = {   # what --out and --resume mean: a run folder (study, train) or a sweep folder
    "study": ("run folder to create (a new or empty folder); default: "
              "runs/<dataset>-<timestamp>", "RUN_DIR",
              "continue the interrupted run folder RUN_DIR (of 'normlab study' or 'normlab "
              "train') with its saved config: finished runs are "
              "kept, unfinished ones go on from their last finished epoch; default: start "
              "afresh in --out"),
    "sweep": ("sweep folder to create, or to continue when it holds the same sweep; default: "
              "runs/sweep-<timestamp>", "SWEEP_DIR",
              "continue the interrupted sweep in SWEEP_DIR with its saved config and settings: "
              "finished points and runs are kept, unfinished ones go on from their last finished "
              "epoch; default: start a new sweep"),
}


def add_training_flags(p: argparse.ArgumentParser, D, folder: str = "study",
                       several_runs: bool = True) -> None:
    """The config's flags, and --out/--resume for a ``folder`` of FOLDER_HELP's kind; without
    ``several_runs`` (``train``: one run) not --group-size and --workers, which only spread
    several runs."""
    p.add_argument("--epochs", metavar="N", type=number(int, 1, inclusive=True, maximum=MAX_EPOCHS),
                   default=D(DEFAULTS.epochs), help=f"epochs per run, 1 to {MAX_EPOCHS:,}")
    p.add_argument("--batch-size", metavar="N", type=positive_int, default=D(DEFAULTS.batch_size),
                   help="training batch size (>= 2 for BatchNorm, at most 2,147,483,647)")
    p.add_argument("--lr", type=positive_float, default=D(DEFAULTS.lr),
                   help="peak learning rate of the one-cycle schedule (SGD, Nesterov momentum)")
    p.add_argument("--momentum", metavar="M", type=nonneg_float, default=D(DEFAULTS.momentum), help="peak SGD momentum, in [0, 1)")
    p.add_argument("--warmup", metavar="F", type=float, default=D(DEFAULTS.warmup), help="fraction of the steps "
                   "spent raising the learning rate to its peak, in (0, 1)")
    p.add_argument("--l1", type=nonneg_float, default=D(DEFAULT_L1), dest="l1_default", metavar="LAMBDA",
                   help="L1 lambda used by a variant written '+l1' without a value")
    p.add_argument("--l2", type=nonneg_float, default=D(DEFAULT_L2), dest="l2_default", metavar="DECAY",
                   help="weight decay used by a variant written '+l2' without a value")
    p.add_argument("--groups", metavar="G", type=positive_int, default=D(DEFAULTS.groups),
                   help="GroupNorm groups for 'gn' (must divide every width of --arch)")
    p.add_argument("--ghost-batch", type=number(int, 2, inclusive=True),
                   default=D(DEFAULTS.ghost_batch), metavar="N",
                   help="images per virtual batch of Ghost BatchNorm 'gbn' (>= 2; with N >= "
                        "--batch-size gbn is bn)")
    p.add_argument("--no-augment", dest="augment", action="store_false", default=D(True),
                   help="turn off the random rotation and shift of training batches; "
                        "augmentation is on unless this flag is given")
    p.add_argument("--rotate", metavar="DEGREES", type=nonneg_float, default=D(DEFAULTS.rotate),
                   help=f"max random rotation of training images, degrees (at most {MAX_ROTATE})")
    p.add_argument("--translate", metavar="PIXELS", type=nonneg_float, default=D(DEFAULTS.translate),
                   help=f"max random shift of training images, pixels (at most {MAX_TRANSLATE}: half "
                        "the image side)")
    p.add_argument("--clean-fraction", type=float, default=D(DEFAULTS.clean_fraction),
                   metavar="F",
                   help="train the last fraction F of the steps on the images as they are, "
                        "without the random rotation and shift; F in [0, 1), e.g. 0.2: the last "
                        "4 of 20 epochs; 0: every step augmented")
    p.add_argument("--dataset", default=D(DEFAULTS.dataset), choices=DATASET_NAMES, metavar="NAME",
                   help=f"dataset: {', '.join(DATASET_NAMES)}")
    p.add_argument("--data-dir", metavar="DIR", type=path, default=D(None),
                   help="folder holding the dataset's four IDX files (.gz or not); "
                        "default: $NORMLAB_DATA, then ~/.cache/normlab/<dataset>, then download")
    p.add_argument("--train-subset", type=positive_int, default=D(None), metavar="N",
                   help="train on the first N training images only (quick runs); default: all")
    p.add_argument("--eval-batch-size", metavar="N", type=positive_int, default=D(DEFAULTS.eval_batch_size),
                   help="batch size for test evaluation")
    p.add_argument("--val", type=nonneg_int, default=D(DEFAULTS.val), metavar="N",
                   help="hold out N training images (the first N of one fixed seeded "
                        "permutation of the training images, after --train-subset: the same for "
                        "every variant, seed and machine), train on the rest and report val_loss "
                        "and val_acc per epoch: choose models and recipes on these, not on the "
                        "test set; 0: train on all")
    p.add_argument("--arch", default=D(DEFAULTS.arch), metavar="W1-W2-...",
                   help="output channels of the model's convs, then global average pooling and "
                        "a linear classifier; the first width says how the 28x28 image is "
                        "halved: '8s4' (the default's) is a 4x4 conv with stride 2, '8s' the "
                        "same with a 3x3 kernel ('8s2'..'8s4' set the kernel), a plain '8' a 3x3 "
                        "conv at full resolution followed by a 2x2 max pool; every later conv "
                        "is 3x3")
    p.add_argument("--label-smoothing", type=float, default=D(DEFAULTS.label_smoothing), metavar="EPS",
                   help="label smoothing of the training loss, in [0, 1) (metrics report the "
                        "plain cross-entropy); 0: none")
    p.add_argument("--weight-decay", type=nonneg_float, default=D(DEFAULTS.weight_decay),
                   metavar="DECAY",
                   help="SGD weight decay of every variant's conv and linear weights (not of "
                        "biases or the norms' gamma/beta); a variant's +l2 adds to it; 0: none")
    p.add_argument("--ema", type=float, default=D(DEFAULTS.ema), metavar="DECAY",
                   help="evaluate and save a moving average of the weights, decay min(DECAY, "
                        "(1+t)/(10+t)) at update t; DECAY in [0, 1), e.g. 0.999 (BatchNorm "
                        "statistics recomputed for it); train_loss/train_acc and the diagnostics "
                        "stay the trained weights'; 0: off")
    p.add_argument("--device", default=D(DEFAULTS.device),
                   help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps")
    if several_runs:
        p.add_argument("--group-size", type=nonneg_int, default=D(DEFAULTS.group_size),
                       metavar="N", help="train up to N runs at once as one network; 0: auto "
                       "(all runs on a GPU; on a CPU 3 runs per group at batch sizes up to 32, "
                       "else 1)")
        p.add_argument("--workers", type=nonneg_int, default=D(DEFAULTS.workers), metavar="N",
                       help="workers that train groups of runs side by side, one epoch at a "
                            "time, at most one per group, on a CPU under Linux each in a process "
                            "of its own; 0: auto (CPU: one per core, GPU: 1)")
    p.add_argument("--precision", default=D(DEFAULTS.precision), choices=PRECISIONS,
                   help="arithmetic of the forward pass: fp32, or bf16 autocast (float32 weights "
                        "and optimizer); auto: bf16 on a CUDA GPU of compute capability 8.0 "
                        "or newer, fp32 elsewhere")
    p.add_argument("--compile", action="store_true", default=D(False),
                   help="torch.compile the training network (slower start, faster steps on a GPU)")
    p.add_argument("--no-diagnostics", dest="diagnostics", action="store_false", default=D(True),
                   help="do not record diagnostics.csv (per epoch and layer, on a fixed probe batch: "
                        "activation mean/std around each norm, dead ReLU units, weight and "
                        "gradient norms, BatchNorm's batch-vs-running statistics gap); recorded "
                        "unless this flag is given, and never changes results")
    out_help, resume_var, resume_help = FOLDER_HELP[folder]
    p.add_argument("--out", metavar="DIR", type=path, default=D(None), help=out_help)
    p.add_argument("--resume", type=path, default=D(None), metavar=resume_var, help=resume_help)
    p.add_argument("--quiet", action="store_true", default=D(False), help="no progress bars")
