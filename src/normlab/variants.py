"""Variant specs: what a run trains, written as one string (``--variants gn,ln,bn+l1``).

A *variant* is a norm plus an optional modifier and optional penalties::

    gn            GroupNorm, no penalty
    bn+l1         BatchNorm + L1 with the default lambda (Config.l1_default)
    bn+l1=5e-5    BatchNorm + L1, lambda 5e-5
    gn+l2=1e-4    GroupNorm + L2 through SGD weight decay 1e-4
    gn+ws         GroupNorm, every conv kernel weight-standardized (normlab.layers.WSConv2d)

Terms may come in any order; the canonical name, used in file names and tables, is the norm, then
``+ws``, then ``+l1=LAMBDA``, then ``+l2=DECAY``: ``ln+l1+ws`` is ``ln+ws+l1=2e-05``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from normlab.errors import ConfigError
from normlab import norms
from normlab.norms import NORMS

DEFAULT_L1 = 2e-5   # lambda of a bare "+l1" (Config.l1_default; results/model-selection/l1)
DEFAULT_L2 = 5e-4   # decay of a bare "+l2" (Config.l2_default)


@dataclass(frozen=True)
class Variant:
    """One parsed variant spec (see the module docstring)."""

    name: str          # canonical spec, e.g. "bn+l1=2e-05"; used in file names and tables
    norm: str
    l1: float = 0.0    # lambda of lambda * sum(|w|) over conv and linear weights
    l2: float = 0.0    # SGD weight decay
    ws: bool = False   # weight standardization of the conv kernels ("+ws")

    def as_dict(self) -> dict[str, Any]:
        """The fields as a dict (config.json's resolved variants, checkpoints)."""
        return dataclasses.asdict(self)


_TERM = re.compile(r"^(l1|l2|ws)(?:=(.*))?$")


def parse_number(text: str, kind: type = float):
    """``kind(text)`` (int or float) of ASCII text only: the one reader of numbers a user writes
    (flags, --param values, variant lambdas). ValueError otherwise: int() and float() also read
    other scripts' digits ('٣' as 3), which --arch and every number refuse alike."""
    if not text.isascii():
        raise ValueError(f"not ASCII: {text!r}")
    return kind(text)


def _spec_number(text: str, what: str, spec: str) -> float:
    try:
        value = parse_number(text)
    except ValueError:
        raise ConfigError(
            f"variant {spec!r}: {what} value {text!r} is not a number; write e.g. {what}=1e-4"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"variant {spec!r}: {what} must be a finite number >= 0, got {text}")
    return value


def _number_name(value: float) -> str:
    """``value`` as written in a canonical variant name: ``%g`` where that is exact, else the
    shortest exact form; never with ``e+`` (a ``+`` would split the name when re-parsed)."""
    text = f"{value:g}"
    if float(text) != value:
        text = repr(value)
    return text.replace("e+", "e")


def parse_variant(spec: str, l1_default: float = DEFAULT_L1, l2_default: float = DEFAULT_L2) -> Variant:
    """Parse a variant spec such as ``bn+l1=5e-5``. Raises ConfigError with the fix on bad input."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError("empty variant; write a norm name such as 'gn' or 'bn+l1'")
    text = spec.strip().lower()
    norm, *terms = text.split("+")
    if norm not in NORMS:
        hint = (f"+{norm} comes after the norm, e.g. gn+{norm}" if _TERM.match(norm) else
                "the modifier +ws and penalties +l1, +l1=LAMBDA, +l2, +l2=DECAY follow the norm")
        raise ConfigError(f"variant {spec!r}: unknown norm {norm!r}; valid norms: "
                          f"{', '.join(NORMS)} ({hint})")
    given: dict[str, float] = {}
    for term in terms:
        m = _TERM.match(term)
        if not m:
            raise ConfigError(f"variant {spec!r}: unknown term {term!r}; use +ws, +l1, "
                              "+l1=LAMBDA, +l2 or +l2=DECAY")
        kind, value = m.group(1), m.group(2)
        if kind in given:
            raise ConfigError(f"variant {spec!r}: {kind} given twice; give +{kind} once")
        if kind == "ws":
            if value is not None:
                raise ConfigError(f"variant {spec!r}: ws takes no value; write +ws")
            given[kind] = 1.0
            continue
        default = l1_default if kind == "l1" else l2_default
        given[kind] = default if value is None else _spec_number(value, kind, spec)
    l1, l2, ws = given.get("l1", 0.0), given.get("l2", 0.0), "ws" in given
    # The canonical order: norm, modifier, penalties (l1 before l2).
    name = norm + ("+ws" if ws else "")
    if "l1" in given:
        name += f"+l1={_number_name(l1)}"
    if "l2" in given:
        name += f"+l2={_number_name(l2)}"
    return Variant(name=name, norm=norm, l1=l1, l2=l2, ws=ws)


def variant_specs(specs: Sequence[str], l1_default: float = DEFAULT_L1,
                  l2_default: float = DEFAULT_L2) -> dict[str, str]:
    """{canonical name: the variant as written (trimmed, lower case)} of ``specs`` parsed with
    these penalty defaults. A sweep over l1 or l2 renames a bare ``bn+l1`` at each point
    (``bn+l1=2e-05``, ``bn+l1=5e-06``) while the variant as written stays the same: a sweep's
    rows carry it as "spec", and experiment reports and paired tables pair runs across points
    by it."""
    return {parse_variant(s, l1_default, l2_default).name: s.strip().lower() for s in specs}


# The Config fields that only some variants read (see settings_read).
VARIANT_SETTINGS = frozenset({"l1_default", "l2_default", "groups", "ghost_batch"})


def settings_read(spec: str) -> set[str]:
    """Which of :data:`VARIANT_SETTINGS` a run of ``spec`` reads: ``l1_default`` (``l2_default``)
    for a bare ``+l1`` (``+l2``), ``groups`` and ``ghost_batch`` for a norm that uses them. A
    setting that no variant of a study reads was given for nothing (see the CLI's check)."""
    variant = parse_variant(spec)
    terms = spec.strip().lower().split("+")[1:]
    norm = norms.get(variant.norm)
    read = {f"{kind}_default" for kind in ("l1", "l2") if kind in terms}
    return read | {name for name, used in (("groups", norm.uses_groups),
                                           ("ghost_batch", norm.uses_ghost_batch)) if used}


def parse_variants(specs: str | list[str] | tuple[str, ...], l1_default: float = DEFAULT_L1,
                   l2_default: float = DEFAULT_L2) -> tuple[Variant, ...]:
    """Parse a comma-separated list (or a list) of specs; duplicates are an error."""
    items = [s for s in specs.split(",")] if isinstance(specs, str) else list(specs)
    variants = tuple(parse_variant(s, l1_default, l2_default) for s in items)
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"variant {dupes[0]!r} is listed twice; list each variant once")
    if not variants:
        raise ConfigError("no variants given; e.g. --variants gn,ln,bn+l1")
    return variants
