"""The normalizations, one registry entry each: the one place a norm is defined.

Every other module asks :data:`NORMS` (timm's ``create_norm`` habit): the model builds a norm's
layer with ``spec.build``, MultiNet merges neighbouring members' layers by ``spec.merge``, the
config checks ``--groups`` with :func:`check_groups` and ``--ghost-batch`` with
:func:`check_ghost_batch`, the CLI lists the names, reports print
``spec.title``, and ``normlab explain`` computes the norm by hand from ``spec.view`` and
``spec.reduce`` and checks it against ``spec.build``. Adding a norm is adding one entry.

All norms here are channels-first, input ``(N, C, H, W)``, and differ only in *which elements
share one mean and one variance*:

* ``bn``   BatchNorm2d: per channel over (N, H, W); running averages at test time.
* ``gbn``  Ghost BatchNorm (Hoffer et al. 2017): BatchNorm2d on each *virtual batch* of
           ``ghost_batch`` consecutive images, per channel over (N/V, H, W) of that virtual
           batch; running averages at test time (see :class:`normlab.layers.GhostBatchNorm2d`).
* ``gn``   GroupNorm(G, C): per image and group of C/G channels over (C/G, H, W).
* ``ln``   LayerNorm for conv features as GroupNorm(1, C): per image over (C, H, W), then one
           gamma and beta per channel. Per-element ``nn.LayerNorm([C, H, W])`` would learn 2*C*H*W
           parameters instead of 2*C and tie the model to one input size, so it is not used.
* ``in``   InstanceNorm as GroupNorm(C, C): per image and channel over (H, W).
* ``none`` no normalization.

``bn``, ``gbn``, ``gn``, ``ln`` and ``in`` each add 2*C parameters per layer, so the models have
the same parameter count. Weight standardization (``+ws`` in a variant) is not a norm of this
registry: it changes the convolutions, not the normalization after them, and combines with any
norm (see :mod:`normlab.layers` and :class:`normlab.variants.Variant`).

This module does not import torch (config validation and the CLI's help need the names without
paying for it); the builders import it when they run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from normlab.errors import ConfigError

# Axis names a norm's hand computation may use. x is (N, C, H, W); "G" and "C/G" split the
# channels into G groups of C/G consecutive channels, G = spec.stat_groups(C, groups); "V" and
# "N/V" split the images into V virtual batches of N/V = --ghost-batch consecutive images.
AXES = ("N", "C", "H", "W", "G", "C/G", "V", "N/V")
# How MultiNet merges the layers of neighbouring members with the same norm into one layer:
# "batch": BatchNorm2d over M*C channels (a GhostBatchNorm2d stays one, with its ghost batch: a
# virtual batch is the same rows of the batch for every member); "group": GroupNorm with M*G
# groups over M*C channels (groups are contiguous channel blocks, so none straddles two members);
# "identity": one nn.Identity. A norm with merge None keeps one layer per member on its own
# channel block.
MERGE_KINDS = ("batch", "group", "identity")

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")   # no '+', ',' or '=': those split variant specs
DEFAULT_GHOST_BATCH = 16   # images per virtual batch of gbn (--ghost-batch)


@dataclass(frozen=True)
class NormSettings:
    """The hyperparameters a norm's builder may read: ``groups`` (--groups, used by gn) and
    ``ghost_batch`` (--ghost-batch, used by gbn). One object, so a new setting reaches every
    builder without changing their signatures."""

    groups: int = 4
    ghost_batch: int = DEFAULT_GHOST_BATCH


@dataclass(frozen=True)
class NormSpec:
    """One normalization: how to build it, how to name it, how to compute it by hand."""

    name: str                  # as written in variant specs and run names: "gn"
    title: str                 # display name in reports and figures: "GroupNorm"
    description: str           # one line: which elements share a mean and a variance
    # (channels, NormSettings) -> the nn.Module (gn reads settings.groups, gbn
    # settings.ghost_batch).
    build: Callable[[int, NormSettings], Any]
    # (channels, groups) -> statistics per image (gn: groups, ln: 1, in: channels); None for
    # batch statistics (bn) and for no statistics (none). A count that does not divide the
    # channels is rejected by :func:`check_groups`; it is also the size of the "G" axis below.
    stat_groups: Callable[[int, int], int | None]
    merge: str | None = None   # one of MERGE_KINDS, or None: see MERGE_KINDS above
    # The memory layout its CPU kernel is fastest on: "nchw" for nn.GroupNorm (about three times
    # faster on contiguous maps), "channels_last" otherwise (see normlab.model.memory_format).
    layout: str = "channels_last"
    # The hand computation (normlab explain): x viewed with the axes ``view`` (names from AXES),
    # then mean and biased variance over the axes ``reduce``; () means no statistics (none).
    # A view with "V" and "N/V" (gbn) cuts the batch into virtual batches of --ghost-batch.
    view: tuple[str, ...] = ("N", "C", "H", "W")
    reduce: tuple[str, ...] = ()
    per: str = ""              # what one mean belongs to, for explain's text: "image and group"
    note: str = ""             # explain's remark on the statistics: "shared by all images ..."
    # PyTorch's layer as explain prints it; {C}, {G}, {C/G} (and {V}, {N/V}) are filled in.
    layer_text: str = ""
    explain: bool = False      # shown in `normlab explain`'s worked example and figure

    def __post_init__(self) -> None:
        # Mistakes in an entry surface at import (or when a test registers one), not mid-study.
        if not _NAME.match(self.name):
            raise ValueError(f"norm name {self.name!r} must be lower-case letters, digits or _")
        if self.layout not in ("nchw", "channels_last"):
            raise ValueError(f"norm {self.name!r}: layout must be 'nchw' or 'channels_last'")
        if self.merge is not None and self.merge not in MERGE_KINDS:
            raise ValueError(f"norm {self.name!r}: merge must be one of {MERGE_KINDS} or None")
        unknown = [a for a in (*self.view, *self.reduce) if a not in AXES]
        if unknown or not set(self.reduce) <= set(self.view):
            raise ValueError(f"norm {self.name!r}: view and reduce must use axes {AXES}, "
                             "and reduce only axes of view")
        if ("G" in self.view) != ("C/G" in self.view) or ("C" in self.view) == ("G" in self.view):
            raise ValueError(f"norm {self.name!r}: view must hold C, or G and C/G instead")
        if ("V" in self.view) != ("N/V" in self.view) or ("N" in self.view) == ("V" in self.view):
            raise ValueError(f"norm {self.name!r}: view must hold N, or V and N/V instead")

    @property
    def has_stats(self) -> bool:
        """Whether the norm subtracts a mean (so a conv bias right before it is redundant)."""
        return bool(self.reduce)

    @property
    def uses_groups(self) -> bool:
        """Whether --groups changes this norm (gn): its statistic-group count depends on it.
        Reports show the group count only for such norms."""
        return self.stat_groups(12, 1) != self.stat_groups(12, 2)

    @property
    def uses_ghost_batch(self) -> bool:
        """Whether --ghost-batch changes this norm (gbn): its statistics are per virtual batch."""
        return "N/V" in self.view

    @property
    def batch_stats(self) -> bool:
        """Whether one statistic spans the images of a batch or of a virtual batch (needs a
        batch of 2 or more)."""
        return "N" in self.reduce or "N/V" in self.reduce


# -- builders: torch is imported only here, when a layer is built --------------------------------

def _batch_norm(channels: int, settings: NormSettings) -> Any:
    import torch.nn as nn
    return nn.BatchNorm2d(channels)


def _ghost_batch_norm(channels: int, settings: NormSettings) -> Any:
    from normlab.layers import GhostBatchNorm2d
    return GhostBatchNorm2d(channels, ghost_batch=settings.ghost_batch)


def _group_norm(channels: int, settings: NormSettings) -> Any:
    import torch.nn as nn
    return nn.GroupNorm(settings.groups, channels)


def _layer_norm(channels: int, settings: NormSettings) -> Any:
    import torch.nn as nn
    return nn.GroupNorm(1, channels)   # LayerNorm over (C, H, W) with per-channel affine


def _instance_norm(channels: int, settings: NormSettings) -> Any:
    import torch.nn as nn
    return nn.GroupNorm(channels, channels)


def _identity(channels: int, settings: NormSettings) -> Any:
    import torch.nn as nn
    return nn.Identity()


def _given_groups(channels: int, groups: int) -> int:
    return groups


def _one_group(channels: int, groups: int) -> int:
    return 1


def _group_per_channel(channels: int, groups: int) -> int:
    return channels


def _no_groups(channels: int, groups: int) -> None:
    return None


NORMS: dict[str, NormSpec] = {spec.name: spec for spec in (
    NormSpec("bn", "BatchNorm", "per channel over (N, H, W); running averages at test time",
             build=_batch_norm, stat_groups=_no_groups, merge="batch",
             reduce=("N", "H", "W"), per="channel", note="shared by all images in the batch",
             layer_text="nn.BatchNorm2d({C}), training mode", explain=True),
    # Not in explain's worked example: its 2 images make one virtual batch (= bn) or two of one.
    NormSpec("gbn", "Ghost BatchNorm",
             "per channel over (N/V, H, W) of each virtual batch of --ghost-batch images; "
             "running averages at test time",
             build=_ghost_batch_norm, stat_groups=_no_groups, merge="batch",
             view=("V", "N/V", "C", "H", "W"), reduce=("N/V", "H", "W"),
             per="virtual batch and channel", note="shared by the images of one virtual batch",
             layer_text="GhostBatchNorm2d({C}), training mode, virtual batches of {N/V} images"),
    NormSpec("gn", "GroupNorm", "per image and group over (C/G, H, W)",
             build=_group_norm, stat_groups=_given_groups, merge="group", layout="nchw",
             view=("N", "G", "C/G", "H", "W"), reduce=("C/G", "H", "W"), per="image and group",
             layer_text="nn.GroupNorm({G}, {C}), G = {G} groups of C/G = {C/G} channels",
             explain=True),
    NormSpec("ln", "LayerNorm", "per image over (C, H, W), as GroupNorm(1, C)",
             build=_layer_norm, stat_groups=_one_group, merge="group", layout="nchw",
             reduce=("C", "H", "W"), per="image", note="independent of the other images",
             layer_text="nn.GroupNorm(1, {C}): LayerNorm over (C, H, W) with per-channel affine",
             explain=True),
    NormSpec("in", "InstanceNorm", "per image and channel over (H, W), as GroupNorm(C, C)",
             build=_instance_norm, stat_groups=_group_per_channel, merge="group",
             layout="nchw",
             reduce=("H", "W"), per="image and channel", note="independent of the other images",
             layer_text="nn.GroupNorm({C}, {C}): InstanceNorm with per-channel affine"),
    NormSpec("none", "no norm", "no normalization",
             build=_identity, stat_groups=_no_groups, merge="identity"),
)}


def get(name: str) -> NormSpec:
    """The registry entry of ``name``; ConfigError listing the valid names for an unknown one."""
    try:
        return NORMS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown norm {name!r}; valid norms: {', '.join(NORMS)}") from None


def display_name(name: str) -> str:
    """Display name of ``name`` ("GroupNorm"); an unregistered name is shown as it is."""
    spec = NORMS.get(name) if isinstance(name, str) else None
    return spec.title if spec else str(name)


def explained() -> list[str]:
    """The norms `normlab explain` works through, in registry order."""
    return [name for name, spec in NORMS.items() if spec.explain]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_ghost_batch(ghost_batch: int) -> None:
    """Raise ConfigError unless ``ghost_batch`` (--ghost-batch, gbn's images per virtual batch)
    is a whole number >= 2: a virtual batch of one image has no batch statistics."""
    if isinstance(ghost_batch, bool) or not isinstance(ghost_batch, int) or ghost_batch < 2:
        raise ConfigError(f"--ghost-batch must be a whole number >= 2 (images per virtual batch "
                          f"of gbn), got {ghost_batch!r}; use e.g. --ghost-batch "
                          f"{DEFAULT_GHOST_BATCH}")


def check_groups(norm: str, groups: int, layers: Iterable[tuple[str, int]]) -> None:
    """Raise ConfigError for the first layer whose channels ``norm``'s statistic groups (for
    ``groups``, i.e. --groups) do not divide. ``layers``: (layer name, channels) in build order,
    e.g. ``ModelConfig.norm_layers()``. Arithmetic only, so config validation needs no torch."""
    spec = get(norm)
    layers = list(layers)
    for layer, channels in layers:
        g = spec.stat_groups(channels, groups)
        if g is not None and (g < 1 or channels % g != 0):
            # The values that divide every layer's channels, so that following the advice works.
            fits = divisors(math.gcd(*(c for _, c in layers)))
            every = " (they divide every layer's channels)" if len(layers) > 1 else ""
            fix = (f"use --groups with one of {fits}{every}" if spec.uses_groups
                   else f"{norm} does not fit this model; choose another norm")
            raise ConfigError(
                f"{layer}: {spec.title} with {g} groups does not divide its {channels} channels; "
                f"{fix}"
            )


__all__ = ["AXES", "DEFAULT_GHOST_BATCH", "MERGE_KINDS", "NORMS", "NormSettings", "NormSpec",
           "check_ghost_batch", "check_groups", "divisors", "display_name", "explained", "get"]
