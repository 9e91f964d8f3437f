"""What a sweep is: the settings it varies (``--param NAME=V1,V2,...``), its points (every
combination of values, each a :class:`~normlab.config.Config`) and their folder names.

:mod:`normlab.sweep` runs a sweep; this module only parses and names, so the command line,
the experiments, their report and the scripts that pair points ask it without the runner.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any

from normlab.config import DATASET_NAMES, PRECISIONS, Config, parse_arch
from normlab.errors import ConfigError
from normlab.variants import parse_number, variant_specs

# Settings that can be swept, with the Config field each one sets.
ALIASES = {"l1": "l1_default", "l2": "l2_default"}
SWEEPABLE = ("batch_size", "lr", "momentum", "warmup", "l1", "l2", "groups", "ghost_batch",
             "augment", "rotate", "translate", "clean_fraction", "dataset", "train_subset",
             "epochs", "precision", "arch", "label_smoothing", "weight_decay", "ema")


@dataclass(frozen=True)
class Param:
    name: str                    # as written by the user (e.g. "l1", "batch_size")
    values: tuple[Any, ...]

    @property
    def field(self) -> str:
        return ALIASES.get(self.name, self.name)


def _field_type(field: str) -> type:
    f = {f.name: f for f in dataclasses.fields(Config)}[field]
    text = str(f.type)
    for kind, word in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str")):
        if text.startswith(word) or text == kind.__name__:
            return kind
    raise AssertionError(f"unhandled config type {text} of {field}")


def _parse_value(name: str, text: str) -> Any:
    field = ALIASES.get(name, name)
    kind = _field_type(field)
    text = text.strip()
    if kind is bool:
        lowered = text.lower()
        if lowered in ("1", "true", "on", "yes"):
            return True
        if lowered in ("0", "false", "off", "no"):
            return False
        raise ConfigError(f"--param {name}: {text!r} is not true or false; write e.g. {name}=true,false")
    if kind is str and field == "arch":
        try:
            parse_arch(text)
        except ConfigError as e:   # its message names --arch; the value came from --param
            raise ConfigError(f"--param {name}: {e}") from None
        return text
    if kind is str:
        choices = DATASET_NAMES if field == "dataset" else PRECISIONS
        if text not in choices:
            raise ConfigError(f"--param {name}: unknown value {text!r}; valid: {', '.join(choices)}")
        return text
    try:
        value = parse_number(text, float if kind is float else int)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"--param {name}: {text!r} is not {what}; write e.g. "
                          f"{name}={'1,2,4' if kind is int else '1e-4,1e-3'}") from None
    if kind is float and not math.isfinite(value):
        raise ConfigError(f"--param {name}: {text!r} is not a finite number")
    return value


def parse_param(text: str) -> Param:
    """``name=v1,v2,...`` (``-`` or ``_`` in the name) -> Param. ConfigError on bad input."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name:
        raise ConfigError(f"--param {text!r}: write NAME=V1,V2,..., e.g. batch_size=32,128")
    if name not in SWEEPABLE:
        raise ConfigError(f"--param {name!r} cannot be swept; sweepable settings: "
                          f"{', '.join(SWEEPABLE)}")
    items = values.split(",")
    if not any(v.strip() for v in items):
        raise ConfigError(f"--param {name}: no values given; write e.g. {name}=V1,V2")
    if not all(v.strip() for v in items):   # '0.1,,0.2' or a trailing comma: likely a typo
        raise ConfigError(f"--param {name}: an empty value in {values!r}; separate the values "
                          "by single commas")
    parsed = tuple(_parse_value(name, v) for v in items)
    if len(set(parsed)) != len(parsed):
        raise ConfigError(f"--param {name}: a value is listed twice; list each value once")
    texts = [_value_text(v) for v in parsed]   # the points' folder names must differ
    if len(set(texts)) != len(texts):
        raise ConfigError(f"--param {name}: values {', '.join(items)} differ beyond 6 "
                          "significant digits; give values that differ sooner")
    return Param(name, parsed)


@dataclass(frozen=True)
class SweepSpec:
    params: tuple[Param, ...]
    scale_lr: bool = False       # lr = base lr * batch_size / base batch_size (linear rule)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if not names:
            raise ConfigError("a sweep needs at least one --param NAME=V1,V2,...")
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"--param {', '.join(twice)} is given twice; give each setting "
                              "once, with all its values: --param NAME=V1,V2,...")
        if self.scale_lr and "batch_size" not in names:
            raise ConfigError("--scale-lr scales the learning rate with a swept batch_size; add "
                              "--param batch_size=... or drop --scale-lr")
        if self.scale_lr and "lr" in names:
            raise ConfigError("--scale-lr sets lr from the batch size; do not sweep lr as well")


    def to_dict(self) -> dict:
        return {"params": [{"name": p.name, "values": list(p.values)} for p in self.params],
                "scale_lr": self.scale_lr}

    def points(self, base: Config) -> list[tuple[dict[str, Any], Config]]:
        """Every combination of values, as (values by param name, the point's Config)."""
        out = []
        for combo in itertools.product(*(p.values for p in self.params)):
            values = {p.name: v for p, v in zip(self.params, combo)}
            changes = {ALIASES.get(k, k): v for k, v in values.items()}
            if self.scale_lr:
                changes["lr"] = base.lr * values["batch_size"] / base.batch_size
            try:
                cfg = base.replace(**changes)
            except ConfigError as e:
                raise point_error(values, e) from None
            out.append((values, cfg))
        return out


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def point_name(values: dict[str, Any]) -> str:
    """Folder name of a point, e.g. ``batch_size=32`` or ``batch_size=32,l1=1e-05``."""
    return ",".join(f"{k}={_value_text(v)}" for k, v in values.items())


def point_error(values: dict[str, Any], e: ConfigError) -> ConfigError:
    """The error of a point whose config is refused. The message names the setting's flag (e.g.
    "use --groups ..."); where that setting is swept, it says the point's value came from
    --param, where it has to be changed."""
    text = str(e)
    swept = [k for k in values if f"--{k.replace('_', '-')} " in f"{text} "]
    hint = "".join(f"; this point's {k} comes from --param {k}, so change its values there"
                   for k in swept)
    return ConfigError(f"sweep point {point_name(values)}: {text}{hint}")


def point_specs(record: dict, values: dict[str, Any]) -> dict[str, str]:
    """``variants.variant_specs`` at one point of a sweep: {the name the sweep of ``record`` (its
    sweep.json) gives each variant at the point whose settings are ``values`` (a setting's name
    as swept, ``l1``, or its field, ``l1_default``): the variant as its --variants wrote it}."""
    base = record.get("base_config") or {}
    defaults = {k: base[k] for k in ALIASES.values() if k in base}
    defaults.update({ALIASES.get(k, k): v for k, v in values.items()
                     if ALIASES.get(k, k) in ALIASES.values()})
    return variant_specs(base.get("variants", []), **defaults)


__all__ = ["ALIASES", "SWEEPABLE", "Param", "SweepSpec", "parse_param", "point_error",
           "point_name", "point_specs"]
