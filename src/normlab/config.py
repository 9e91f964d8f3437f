"""The config dataclasses: the study's Config, saved with every result, and the network's
ModelConfig (variant specs such as "bn+l1" are parsed by normlab.variants). No torch here:
validation checks the group count against the model's widths by arithmetic, so configs can be
built and checked without loading PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from normlab import norms
from normlab.datasets import DATASETS
from normlab.errors import ConfigError
from normlab.norms import NORMS
from normlab.variants import (DEFAULT_L1, DEFAULT_L2, Variant, parse_variant, parse_variants,
                              variant_specs)

DATASET_NAMES = tuple(DATASETS)
PRECISIONS = ("auto", "fp32", "bf16")
MISTAKE_MODES = ("confident", "first")   # which misclassified images a report shows (mistakes.py)
DEFAULT_WEIGHT_DECAY = 5e-4   # chosen on validation data: results/model-selection/weight-decay
DEFAULT_ARCH = "8s4-16-16-16-12"  # chosen on validation data: results/model-selection
POOL_ARCH = "8-16-16-16-12"      # the same widths with the max-pool stem (the earlier default)
MAX_CONVS = 7   # 28 -> 26 -> 13 (pool) -> 11 -> 9 -> 7 -> 5 -> 3 -> 1
VAL_SEED = 20_261_121   # the generator that picks the --val images; fixed, so every run agrees
MAX_SEED = 2**32 - 1    # the largest seed: torch.manual_seed takes 64 bits, numpy's legacy 32
MAX_ROTATE = 180        # degrees: --rotate r draws angles in [-r, r], and beyond 180 they repeat
MAX_TRANSLATE = 14      # pixels: half the side of every dataset's 28x28 images
MAX_SEEDS = 10_000      # seeds per variant in one study (its seed list is built in memory)
MAX_EPOCHS = 10_000     # epochs per run: a guard against typos (10,000 MNIST epochs are weeks on a CPU)
MAX_BATCH = 2**31 - 1   # images per batch, a 32-bit count; far more crashed BatchNorm's stats


_STEM = re.compile(r"([0-9]{1,3})(s([2-4])?)?")   # the first width: "8", "8s" or "8s4"


def parse_arch(text: str) -> tuple[int, ...]:
    """``"8-16-16-16-16"`` -> the widths of the model's convs (the first runs at full
    resolution, then a 2x2 max pool; ``"8s-16-..."``: the first has stride 2 instead, and
    ``"8s4-16-..."`` also a 4x4 kernel, see :func:`arch_stem`). ConfigError with the fix on bad
    input."""
    parts = text.split("-") if isinstance(text, str) else []
    first = _STEM.fullmatch(parts[0]) if parts else None
    if first:
        parts[0] = first.group(1)
    if first is None or len(parts) < 2 or not all(
            re.fullmatch(r"[0-9]{1,3}", p) and 1 <= int(p) <= 512 for p in parts):
        raise ConfigError(f"--arch {text!r} is not a list of conv widths; write e.g. "
                          f"{DEFAULT_ARCH} (two or more whole numbers 1..512, joined by '-'; "
                          "an 's' after the first: a stride-2 first conv instead of the pool, "
                          "and a kernel size 2..4 after the 's': e.g. 8s4)")
    if len(parts) > MAX_CONVS:
        raise ConfigError(f"--arch {text!r} has {len(parts)} convs, but a 28x28 image shrinks to "
                          f"nothing after {MAX_CONVS} (13x13 after the pool, -2 per conv); give "
                          f"at most {MAX_CONVS} widths")
    return tuple(int(p) for p in parts)


def arch_stem(text: str) -> str:
    """How an --arch halves the map after its first conv: "stride" for "8s-...", else "pool"."""
    first = _STEM.fullmatch(text.split("-")[0])
    return "stride" if first and first.group(2) else "pool"


def arch_stem_kernel(text: str) -> int:
    """The first conv's kernel size: 3, or the number after the 's' ("8s4-..." -> 4)."""
    first = _STEM.fullmatch(text.split("-")[0])
    return int(first.group(3)) if first and first.group(3) else 3


@dataclass(frozen=True)
class ModelConfig:
    """The network's shape and norm (normlab.model.Net builds it)."""

    norm: str = "bn"
    groups: int = 4  # GroupNorm groups; must divide every width below
    ghost_batch: int = norms.DEFAULT_GHOST_BATCH   # images per virtual batch of gbn
    ws: bool = False   # weight standardization of every conv kernel (a "+ws" variant)
    # Output channels of the convolutions: 3x3 kernels, except the one that halves the map (below).
    widths: tuple[int, ...] = parse_arch(DEFAULT_ARCH)
    full_res: int = 1     # how many of the convs run at full resolution, before the max pool
    # The last full-resolution conv halves the map: "pool" (a 2x2 max pool after it) or "stride"
    # (it has stride 2).
    stem: str = arch_stem(DEFAULT_ARCH)
    # Kernel size of that conv: 2..4 with "stride", 3 with "pool" (Net refuses another); None
    # (the default) picks 3 for "pool" and the default arch's (4) for "stride".
    stem_kernel: int | None = None
    relu_before_pool: bool = False   # 0.1.0's order of ReLU and pool: same values, slower
    transition: int = 0   # >0: a 1x1 conv after the pool narrows the features to this many channels
    # conv -> ReLU -> norm. With the norm before the ReLU, LayerNorm (one mean for all channels)
    # can push a whole channel below zero, and the ReLU then kills it for every image.
    act_first: bool = True
    num_classes: int = 10
    in_channels: int = 1

    def __post_init__(self) -> None:
        if self.stem_kernel is None:   # frozen: set once, here, so equal configs compare equal
            kernel = 3 if self.stem == "pool" else arch_stem_kernel(DEFAULT_ARCH)
            object.__setattr__(self, "stem_kernel", kernel)

    def norm_layers(self) -> list[tuple[str, int]]:
        """(layer name, channels) of each conv + norm layer, in the order Net builds them:
        the full-resolution convs, the optional 1x1 transition, the convs after the pool."""
        w, f = self.widths, self.full_res
        layers = [(f"conv{i}", c) for i, c in enumerate(w[:f], start=1)]
        if self.transition:
            layers.append(("trans", self.transition))
        return layers + [(f"conv{i}", c) for i, c in enumerate(w[f:], start=f + 1)]


@dataclass(frozen=True)
class Config:
    """Everything that decides a study's results. Saved, fully resolved, as config.json."""

    variants: tuple[str, ...] = ("gn", "ln", "bn+l1")
    seeds: int = 1                    # number of seeds per variant
    first_seed: int = 0               # runs seeds first_seed .. first_seed+seeds-1
    epochs: int = 20
    # Batch and peak learning rate (of the one-cycle schedule): chosen on validation data
    # (results/model-selection/lr; batch 64 at lr 0.05 was within the noise and slower).
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9             # peak momentum (one-cycle cycles it down to 0.85 at peak lr)
    warmup: float = 0.25              # fraction of steps spent raising the learning rate
    l1_default: float = DEFAULT_L1    # lambda for a bare "+l1" in a variant spec
    l2_default: float = DEFAULT_L2    # weight decay for a bare "+l2"
    groups: int = 4                   # GroupNorm groups ("gn")
    ghost_batch: int = norms.DEFAULT_GHOST_BATCH   # images per virtual batch of Ghost BatchNorm ("gbn")
    augment: bool = True              # random rotation + translation of training batches
    rotate: float = 15.0              # max rotation, degrees (results/model-selection/rotate)
    translate: float = 2.0            # max shift, pixels
    # Fraction of the training steps, at the end, that train on the images as they are (no
    # rotation or shift). Off by default: it did not raise the validation accuracy
    # (results/model-selection/clean-fraction).
    clean_fraction: float = 0.0
    dataset: str = "mnist"
    data_dir: str | None = None
    train_subset: int | None = None   # use the first N training images
    eval_batch_size: int = 1000
    # Model selection: hold out `val` training images (a fixed seeded choice, VAL_SEED, the same
    # for every variant and seed) and report accuracy on them beside the test set's.
    val: int = 0
    arch: str = DEFAULT_ARCH          # the conv widths, e.g. "8-16-16-16-16" (see parse_arch)
    label_smoothing: float = 0.0      # of the training cross-entropy (metrics report plain CE)
    # SGD weight decay of every variant's conv and linear weights (the recipe's; a variant's +l2
    # adds its own decay to it). Biases and the norms' gamma/beta are not decayed.
    weight_decay: float = DEFAULT_WEIGHT_DECAY
    # Decay per step of a moving average of the weights (0: off; normlab.ema). With it, the
    # averaged weights are the ones evaluated and saved. Off by default: its gain on validation
    # data was within the noise (results/model-selection/ema).
    ema: float = 0.0
    device: str = "auto"
    # How runs share the machine (see normlab.study). Both change results only by floating-point
    # rounding; the resolved values are saved in config.json.
    group_size: int = 0               # runs trained as one network; 0: auto (normlab.study)
    workers: int = 0                  # workers training groups side by side; 0: auto (CPU: cores, GPU: 1)
    # Speed options that change numbers beyond rounding (documented in README "Speed").
    precision: str = "auto"           # fp32 or bf16 (autocast); auto: see device.resolve_precision
    compile: bool = False             # torch.compile the training network
    # Per-epoch measurements on a fixed probe batch (normlab.diagnostics); they read the model
    # without changing it, so they never change results.
    diagnostics: bool = True

    def __post_init__(self) -> None:
        # Normalize lists given as a comma string.
        if isinstance(self.variants, str):
            object.__setattr__(self, "variants", tuple(self.variants.split(",")))
        else:
            object.__setattr__(self, "variants", tuple(self.variants))
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        def positive_int(name: str, flag: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{flag} must be a whole number >= 1, got {v!r}")

        def fraction(name: str, flag: str, note: str) -> None:   # a number in [0, 1)
            v = getattr(self, name)
            if type(v) not in (int, float) or not 0 <= v < 1:
                raise ConfigError(f"{flag} must be a number in [0, 1) ({note}), got {v!r}")

        positive_int("seeds", "--seeds")
        if self.seeds > MAX_SEEDS:
            raise ConfigError(f"--seeds {self.seeds} is more than {MAX_SEEDS:,} runs per variant; "
                              "give fewer (more seeds go in another folder: a study or sweep with "
                              "--first-seed)")
        positive_int("epochs", "--epochs")
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(f"--epochs {self.epochs} is more than {MAX_EPOCHS:,}; give at most "
                              "that")
        positive_int("batch_size", "--batch-size")
        positive_int("eval_batch_size", "--eval-batch-size")
        for name, flag in (("batch_size", "--batch-size"), ("eval_batch_size", "--eval-batch-size")):
            if getattr(self, name) > MAX_BATCH:   # beyond what torch's index arithmetic takes
                raise ConfigError(f"{flag} {getattr(self, name)} is more than {MAX_BATCH:,}; give "
                                  "at most that (a batch larger than the data takes all of it)")
        positive_int("groups", "--groups")
        norms.check_ghost_batch(self.ghost_batch)
        if isinstance(self.first_seed, bool) or not isinstance(self.first_seed, int) \
                or self.first_seed < 0:
            raise ConfigError(f"--first-seed (train: --seed) must be a whole number >= 0, got "
                              f"{self.first_seed!r}")
        if self.first_seed + self.seeds - 1 > MAX_SEED:
            raise ConfigError(f"--first-seed (train: --seed) {self.first_seed} with --seeds {self.seeds} "
                              f"runs seeds up to {self.first_seed + self.seeds - 1}, above "
                              f"{MAX_SEED} (a 32-bit generator seed); give a smaller one")
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"--lr must be a finite number > 0, got {self.lr!r}")
        for name, flag in (("l1_default", "--l1"), ("l2_default", "--l2"),
                           ("weight_decay", "--weight-decay"), ("rotate", "--rotate"),
                           ("translate", "--translate"), ("momentum", "--momentum")):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{flag} must be a finite number >= 0, got {v!r}")
        for flag, v, top, why in (("--rotate", self.rotate, MAX_ROTATE, "degrees: larger angles "
                                   "repeat smaller ones"), ("--translate", self.translate,
                                   MAX_TRANSLATE, "pixels: half the side of the 28x28 images")):
            if v > top:
                raise ConfigError(f"{flag} {v!r} is more than {top} {why}; give at most {top}")
        fraction("clean_fraction", "--clean-fraction",
                 "0: every step augmented; for none give --no-augment")
        if self.momentum >= 1:   # a momentum of 1 or more makes SGD's steps grow without bound
            raise ConfigError(f"--momentum must be below 1 (e.g. 0.9; 0: none), got "
                              f"{self.momentum!r}")
        fraction("ema", "--ema", "0: off; e.g. 0.999")
        if not 0 < self.warmup < 1:
            raise ConfigError(f"--warmup must be between 0 and 1 (exclusive), got {self.warmup!r}")
        if self.dataset not in DATASET_NAMES:
            raise ConfigError(
                f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASET_NAMES)}"
            )
        if self.train_subset is not None:
            positive_int("train_subset", "--train-subset")
        if isinstance(self.val, bool) or not isinstance(self.val, int) or self.val < 0:
            raise ConfigError(f"--val must be a whole number >= 0 (0: no validation split), "
                              f"got {self.val!r}")
        if self.train_subset is not None and self.val >= self.train_subset:
            raise ConfigError(f"--val {self.val} leaves none of the {self.train_subset} images of "
                              "--train-subset to train on; hold out fewer or train on more")
        parse_arch(self.arch)
        if not isinstance(self.label_smoothing, (int, float)) \
                or not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"--label-smoothing must be a number in [0, 1), got "
                              f"{self.label_smoothing!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown --precision {self.precision!r}; valid: {', '.join(PRECISIONS)}")
        for name, flag in (("group_size", "--group-size"), ("workers", "--workers")):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ConfigError(f"{flag} must be a whole number >= 0 (0: auto), got {v!r}")
        variants = self.parsed_variants()
        used = list(dict.fromkeys(v.norm for v in variants))   # in variant order, once each
        batch = [norms.get(n).title for n in used if norms.get(n).batch_stats]
        if batch:
            free = " or ".join(
                [n for n, spec in NORMS.items() if spec.has_stats and not spec.batch_stats][:2])
            if self.batch_size < 2:
                raise ConfigError(
                    f"--batch-size 1 cannot train {batch[0]} (a batch of one has no variance); "
                    f"use --batch-size 2 or more, or a batch-independent norm such as {free}"
                )
        if self.train_subset is not None:
            self.check_training_images(self.train_subset)
        # The group count against every layer's width of the model train.py builds.
        for norm in used:
            norms.check_groups(norm, self.groups, self.model_config(norm).norm_layers())

    def check_training_images(self, n: int) -> None:
        """ConfigError when the ``n`` training images (--train-subset, or the dataset's), less
        the --val held out, leave one image to a variant with batch statistics (BatchNorm)."""
        batch = [norms.get(v.norm).title for v in self.parsed_variants()
                 if norms.get(v.norm).batch_stats]
        if batch and n - self.val < 2:
            what = f"--train-subset {n}" if self.train_subset is not None else f"{n:,} images"
            held = f" with --val {self.val}" if self.val else ""
            raise ConfigError(f"{what}{held} leaves {n - self.val} training image, and "
                              f"{batch[0]} needs 2 or more; train on more images"
                              + (", or hold out fewer" if self.val else ""))

    def model_config(self, variant: Variant | str) -> ModelConfig:
        """The network a run of ``variant`` trains (train.build_model builds it): its norm and
        weight standardization, this config's --groups, --ghost-batch and --arch. A spec string
        ("gn+ws") is parsed with this config's penalty defaults."""
        if isinstance(variant, str):
            variant = parse_variant(variant, self.l1_default, self.l2_default)
        return ModelConfig(norm=variant.norm, ws=variant.ws, groups=self.groups,
                           ghost_batch=self.ghost_batch, widths=parse_arch(self.arch),
                           stem=arch_stem(self.arch), stem_kernel=arch_stem_kernel(self.arch))

    def parsed_variants(self) -> tuple[Variant, ...]:
        return parse_variants(list(self.variants), self.l1_default, self.l2_default)

    # -- (de)serialization ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["variants"] = list(self.variants)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; valid keys: {sorted(known)}")
        d = {**LEGACY_VALUES, **d}
        if "variants" in d and isinstance(d["variants"], list):
            d["variants"] = tuple(d["variants"])
        return cls(**d)

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> "Config":
        """The Config of a folder's saved config.json dict: its fields, without the ``resolved``
        record the study adds (device, seeds, variants as trained; not a Config field)."""
        return cls.from_dict({k: v for k, v in saved.items() if k != "resolved"})

    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def replace(self, **changes: Any) -> "Config":
        return dataclasses.replace(self, **changes)


# Fields that say where a study's inputs lie, not what they are (the data are verified by
# checksum when loaded): a resumed study may point them elsewhere, e.g. after the data moved.
RELOCATABLE = ("data_dir",)


def config_diff(saved: dict, wanted: dict, keys=None) -> list[str]:
    """``"key: saved X, now Y"`` for each of ``keys`` (default: all of ``wanted``'s but
    'resolved') whose value differs between two config dicts (config.json, sweep.json).

    A Config field missing from ``saved`` counts as its default: the folder was written before
    the field existed (e.g. ghost_batch), when it trained as the default does now; or, for the
    fields of :data:`LEGACY_VALUES`, as it trained then."""
    keys = [k for k in wanted if k != "resolved"] if keys is None else keys
    saved = {k: v for k, v in completed(saved).items() if k in saved or k in wanted}
    out = []
    for k in keys:
        a, b = saved.get(k), wanted.get(k)
        if a != b:
            texts = (shown(a), shown(b))
            if texts[0] == texts[1]:   # differ only where the command-line form hides it
                texts = (repr(a), repr(b))
            out.append(f"{k}: saved {texts[0]}, now {texts[1]}")
    return out


def shown(value) -> str:
    """A saved setting as the command line writes it: a list as its items joined by commas
    (``gn,ln``), a sweep's parameters as ``--param`` flags, a flag (alone or in a list) as
    true/false, an unset setting as none, anything else as Python writes it."""
    def item(v) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, dict) and set(v) == {"name", "values"}
                         and isinstance(v["values"], list) for v in value):
            return " ".join(f"--param {v['name']}={','.join(map(item, v['values']))}"
                            for v in value)
        return ",".join(map(item, value)) if value else "none"
    if value is None:   # an unset setting (e.g. no --train-subset: every image)
        return "none"
    return item(value) if isinstance(value, bool) else repr(value)


def continuation_diff(saved: dict, wanted: dict, keys=None, as_written: bool = False) -> list[str]:
    """:func:`config_diff` of a saved study or sweep and the config that would continue it:
    every key (default: all of ``wanted``'s but 'resolved') except where the data lie
    (:data:`RELOCATABLE`), which may change.

    Variants are compared as the runs they name, in order: ``GN``, `` gn`` and ``gn`` are one
    variant, and so are ``ln+l1`` and ``ln+l1=2e-05`` under an l1 default of 2e-5 (both train
    the run ``ln+l1=2e-05``). With ``as_written`` (a sweep's base config, where a bare
    ``+l1`` takes each point's swept lambda and an explicit one does not) only case and spaces
    may differ. The same runs in another order differ (a study's groups, and their training
    states, follow the order), and the difference says so."""
    keys = [k for k in wanted if k != "resolved"] if keys is None else keys
    keys = [k for k in keys if k not in RELOCATABLE]
    before, now = _variant_runs(saved, as_written), _variant_runs(wanted, as_written)
    if "variants" in keys and before is not None and before == now:
        keys.remove("variants")
    diff = config_diff(saved, wanted, keys)
    if before is not None and now is not None and before != now and sorted(before) == sorted(now):
        # The runs are cut into groups in this order, so a training state fits only it.
        diff = [f"{d} (the same runs in another order: give them in the saved order)"
                if d.startswith("variants:") else d for d in diff]
    return diff


def _variant_runs(d: dict, as_written: bool) -> list[str] | None:
    """The runs the variants of a config dict name, in order (see :func:`continuation_diff`);
    None where they do not parse."""
    d = completed(d)
    specs = d.get("variants")
    if not isinstance(specs, (list, tuple)):
        return None
    try:
        named = variant_specs(specs, d["l1_default"], d["l2_default"])
    except (ConfigError, TypeError, ValueError):
        return None
    return list(named.values() if as_written else named)


def completed(saved: dict) -> dict:
    """A saved config dict with every Config field it predates filled in as that folder trained:
    the field's default, or its :data:`LEGACY_VALUES` entry."""
    return {**_FIELD_DEFAULTS, **LEGACY_VALUES, **saved}


_FIELD_DEFAULTS = {k: v for k, v in Config().to_dict().items() if k != "variants"}
# How a folder written before a field existed trained, where that is not the field's default now
# (folders read with Config.from_dict and compared with config_diff): without weight decay.
LEGACY_VALUES = {"weight_decay": 0.0}


__all__ = ["Config", "completed", "config_diff", "parse_arch", "VAL_SEED", "ModelConfig",
           "DATASET_NAMES", "MISTAKE_MODES", "PRECISIONS"]
