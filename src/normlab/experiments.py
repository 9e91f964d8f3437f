"""Named experiments: sweeps whose protocol isolates one question about the norms, plus the
measurements that explain the answer.

    normlab experiment batch-size --out results/experiments/batch-size

An experiment is data (:class:`Experiment`, one entry of :data:`EXPERIMENTS`): the variants,
the swept settings, what is held fixed and why. Running one is running its sweep
(:func:`normlab.sweep.run_sweep`: resumable, the same command continues it) and then
:mod:`normlab.experiment_report`, which reads the saved sweep (and, for BatchNorm's batch
statistics, the saved final weights) and writes the mechanism tables, figure and report.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from normlab.cli_flags import flag_name
from normlab.config import DEFAULT_ARCH, Config
from normlab.errors import ConfigError

# What every experiment shares: 5 seeds (paired across variants), 3 epochs on the first 10,000
# training images, the default model and augmentation, at batch 128 and a peak lr of 0.05 (these
# short runs were designed at that batch and rate; the 20-epoch defaults were chosen later, on
# validation data, for 20 epochs on 60,000 images). No weight decay: each experiment varies
# one thing (a batch size, a learning rate, a group count, an L1 lambda), and a decay of every
# weight would add a second penalty to the L1 experiment and change every run's effective step.
# All four run in under half an hour on two CPU cores, and every normalized variant reaches 96
# to 98%.
COMMON = {"seeds": 5, "epochs": 3, "train_subset": 10_000, "batch_size": 128, "lr": 0.05,
          "arch": DEFAULT_ARCH, "weight_decay": 0.0}


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str                  # one sentence
    protocol: str                  # what changes, what is held fixed, and why (Markdown)
    variants: tuple[str, ...]
    params: tuple[str, ...]        # as given to --param: "batch_size=2,4,8"
    scale_lr: bool = False         # lr = 0.05 x batch_size / 128 (see --scale-lr)
    config: dict[str, Any] = field(default_factory=dict)   # Config fields besides COMMON
    batch_stats: bool = False      # also test BatchNorm runs with batch statistics
    # The value of the first swept setting every other value is compared with, seed by seed.
    reference: Any = None

    def command(self, overrides: dict[str, Any] | None = None) -> str:
        """The equivalent `normlab sweep` command (the report prints it), with ``overrides``
        (the flags given to `normlab experiment`) in place of the experiment's own settings."""
        flags = [f"--variants {','.join(self.variants)}"]
        flags += [f"--param {p}" for p in self.params]
        flags += ["--scale-lr"] if self.scale_lr else []
        flags += settings_flags({**COMMON, **self.config, **(overrides or {})})
        return "normlab sweep " + " ".join(flags)

    def departures(self, overrides: dict[str, Any] | None = None) -> list[str]:
        """The settings of ``overrides`` that differ from the experiment's design (its
        ``COMMON`` and ``config``), as flags with the designed value: ``--epochs 1 (designed:
        3)``. The Protocol's numbers are the design's; a report says where a run left them."""
        designed = {**COMMON, **self.config}
        return [f"{flag_name(k)} {v} (designed: {designed[k]})"
                for k, v in (overrides or {}).items() if k in designed and v != designed[k]]

    def experiment_command(self, overrides: dict[str, Any] | None = None,
                           out: str | Path | None = None) -> str:
        """The `normlab experiment` command that ran it into ``out``, its ``overrides``
        included: the command that continues it."""
        flags = settings_flags(overrides or {}) + ([f"--out {out}"] if out is not None else [])
        return " ".join([f"normlab experiment {self.name}", *flags])


def settings_flags(settings: dict[str, Any]) -> list[str]:
    """Config settings as command-line flags (``train_subset=600`` -> ``--train-subset 600``);
    the automatic device, the default, is left out."""
    return [f"{flag_name(k)} {v}" for k, v in settings.items()
            if not (k == "device" and v == "auto")]


EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "batch-size",
        "Does BatchNorm need large batches, and is its small-batch failure the mismatch between "
        "the batch statistics it trains with and the running statistics it tests with?",
        "Batch size 2 to 128 for `bn`, `gn` and `ln`. The learning rate is scaled with the batch "
        "size (linear rule: lr = 0.05 x B / 128) and every run sees the same 10,000 images for "
        "3 epochs, so the step per image and the data seen are the same at every batch size: "
        "the number of images per step, and per BatchNorm statistic, changes, and with it the "
        "number of steps (64 times as many at batch 2 as at 128, each at a 64th of the rate). "
        "(A fixed "
        "learning rate would give batch 2 sixty-four times the steps of batch 128 at the same "
        "rate, and a fixed number of steps would show the batch sizes different amounts of "
        "data: both confound the batch size with the training budget.) Each BatchNorm run is "
        "also tested with batch statistics, on test batches of its training batch size, beside "
        "the running statistics that evaluation normally uses.",
        ("bn", "gn", "ln"), ("batch_size=2,4,8,16,32,128",), scale_lr=True, batch_stats=True,
        reference=128),
    Experiment(
        "lr",
        "Which norms tolerate which learning rates?",
        "Peak learning rate of the one-cycle schedule from 0.005 to 1.5 (300x, two and a half "
        "decades) for `bn`, `gn`, `ln` and `none`, everything else fixed. A run whose loss "
        "becomes NaN, infinite or larger than 1e4 is stopped and counted as diverged; the table "
        "shows how many of the 5 seeds finished at each rate.",
        ("bn", "gn", "ln", "none"), ("lr=0.005,0.015,0.05,0.15,0.5,1.5",), reference=0.05),
    Experiment(
        "groups",
        "How does GroupNorm's number of groups matter, from G = 1 (LayerNorm) to G = C "
        "(InstanceNorm), at a small and a normal batch?",
        "GroupNorm with G = 1, 2, 4, 8, 16 groups at batch 8 and 128 (learning rate scaled with "
        "the batch as in the batch-size experiment). The model has 16 channels in every conv "
        "(`--arch 16s4-16-16-16-16`, 9,882 parameters), so that every G divides every layer and "
        "G = 16 is InstanceNorm throughout; it is the one experiment outside the 8,000-parameter "
        "budget, because the default widths (8, 16, 16, 16, 12) share only G = 1, 2, 4.",
        ("gn",), ("groups=1,2,4,8,16", "batch_size=8,128"), scale_lr=True,
        config={"arch": "16s4-16-16-16-16"}, reference=1),
    Experiment(
        "l1",
        "What does L1 do with and without BatchNorm, and why does BatchNorm absorb it?",
        "L1 lambda from 0 to 1e-2 on the conv kernels and the classifier, with BatchNorm "
        "(`bn+l1`) and without any norm (`none+l1`), everything else fixed. The diagnostics "
        "measure the mechanism: the final norm of the conv kernels, and the gradient-to-weight "
        "norm ratio (which, multiplied by the learning rate, is the relative size of a plain "
        "SGD step). A conv "
        "followed by ReLU and BatchNorm computes the same function when its kernel and bias are "
        "scaled together, so L1 (which leaves the bias alone) can shrink the kernel while "
        "changing the output little, and the gradient grows as 1/||w||: the step, relative to "
        "the weight, grows as 1/||w||^2.",
        ("bn+l1", "none+l1"), ("l1=0,2e-5,1e-4,5e-4,2e-3,1e-2",), reference=0.0),
)}


def get(name: str) -> Experiment:
    """The experiment called ``name``; ConfigError listing the names for an unknown one."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ConfigError(f"unknown experiment {name!r}; experiments: "
                          f"{', '.join(EXPERIMENTS)}") from None


def plan(exp: Experiment, overrides: dict[str, Any] | None = None):
    """(base Config, SweepSpec) of ``exp``; ``overrides`` (e.g. seeds, epochs, data_dir for a
    quick check) replace the experiment's own settings."""
    from normlab.sweep_spec import SweepSpec, parse_param

    settings = {**COMMON, **exp.config, **(overrides or {})}
    base = Config(variants=exp.variants, **settings)
    spec = SweepSpec(tuple(parse_param(p) for p in exp.params), scale_lr=exp.scale_lr)
    return base, spec


def run_experiment(name: str, out: str | Path, overrides: dict[str, Any] | None = None,
                   progress: bool = True, log: Callable[[str], None] = print,
                   formats=None) -> Path:
    """Run (or continue) experiment ``name`` into the sweep folder ``out`` and write its
    mechanism tables, figure and report.md. Returns ``out``."""
    from normlab.experiment_report import write_experiment_outputs
    from normlab.figure_formats import DEFAULT_FIGURE_FORMATS
    from normlab.runfolder import SweepFolder
    from normlab.sweep import interrupted, run_sweep

    exp = get(name)
    base, spec = plan(exp, overrides)
    formats = formats or DEFAULT_FIGURE_FORMATS
    run_sweep(base, spec, out, progress=progress, log=log, formats=formats, experiment=name)
    try:
        write_experiment_outputs(exp, out, formats, overrides, progress=progress)
    except KeyboardInterrupt:
        raise interrupted(Path(out)) from None
    log(f"experiment {name}: report in {SweepFolder(out).report}")
    return Path(out)


__all__ = ["COMMON", "EXPERIMENTS", "Experiment", "get", "plan", "run_experiment"]
