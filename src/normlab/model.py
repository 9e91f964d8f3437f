"""The network: one small CNN whose normalization layer is chosen by name.

This file holds only the network and its config. The training loop lives in ``train.py``.

Normalizations (all channels-first, input ``(B, C, H, W)``):

* ``bn``   BatchNorm2d: mean and variance per channel over (B, H, W); running averages at test time.
* ``gn``   GroupNorm(G, C): the C channels are split into G groups; mean and variance per image and
           group over (C/G, H, W). Independent of the batch.
* ``ln``   LayerNorm for conv features, implemented as GroupNorm(1, C): mean and variance per image
           over all of (C, H, W), then one affine pair (gamma, beta) per channel. Per-element
           ``nn.LayerNorm([C, H, W])`` would learn a gamma and beta for every element (2*C*H*W
           parameters instead of 2*C) and tie the model to one input size, so it is not used.
* ``in``   InstanceNorm as GroupNorm(C, C): mean and variance per image and channel over (H, W).
* ``none`` no normalization.

``bn``, ``gn``, ``ln`` and ``in`` each add 2*C parameters per layer, so the models have the same
parameter count and differ only in which elements share a mean and a variance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from normlab.errors import ConfigError


def _group_norm(channels: int, groups: int, layer: str) -> nn.Module:
    if groups < 1 or channels % groups != 0:
        divisors = [d for d in range(1, channels + 1) if channels % d == 0]
        raise ConfigError(
            f"{layer}: GroupNorm with {groups} groups does not divide its {channels} channels; "
            f"use --groups with one of {divisors}"
        )
    return nn.GroupNorm(groups, channels)


# name -> (description, builder(channels, groups, layer)). One small map, as in timm's create_norm.
NORMS: dict[str, tuple[str, object]] = {
    "bn": ("BatchNorm: per channel over (B, H, W)", lambda c, g, layer: nn.BatchNorm2d(c)),
    "gn": ("GroupNorm: per image and group over (C/G, H, W)", _group_norm),
    "ln": ("LayerNorm: per image over (C, H, W), as GroupNorm(1, C)",
           lambda c, g, layer: nn.GroupNorm(1, c)),
    "in": ("InstanceNorm: per image and channel over (H, W), as GroupNorm(C, C)",
           lambda c, g, layer: nn.GroupNorm(c, c)),
    "none": ("no normalization", lambda c, g, layer: nn.Identity()),
}


def make_norm(name: str, channels: int, groups: int = 4, layer: str = "norm") -> nn.Module:
    """Build the normalization layer called ``name`` for ``channels`` channels.

    ``groups`` is used by ``gn`` only. ``layer`` names the layer in error messages.
    Raises ``ConfigError`` (a ``ValueError``) for an unknown name or a group count that does not
    divide ``channels``.
    """
    if name not in NORMS:
        raise ConfigError(f"unknown norm {name!r}; valid norms: {', '.join(NORMS)}")
    _, build = NORMS[name]
    return build(channels, groups, layer)  # type: ignore[operator]


@dataclass(frozen=True)
class ModelConfig:
    norm: str = "bn"
    groups: int = 4  # GroupNorm groups; must divide every width below
    # Output channels of the 3x3 convolutions; a 1x1 "transition" conv after the pool
    # narrows the features to `transition` channels (0: no transition conv).
    widths: tuple[int, ...] = (8, 16, 16, 16, 16)
    transition: int = 8
    # conv -> ReLU -> norm. With the norm before the ReLU, LayerNorm (one mean for all channels)
    # can push a whole channel below zero, and the ReLU then kills it for every image.
    act_first: bool = True
    num_classes: int = 10
    in_channels: int = 1


class ConvNormAct(nn.Sequential):
    """conv -> ReLU -> norm (``act_first``) or conv -> norm -> ReLU."""

    def __init__(self, cin: int, cout: int, k: int, cfg: ModelConfig, name: str, padding: int = 0):
        norm = make_norm(cfg.norm, cout, cfg.groups, layer=name)
        if cfg.act_first:
            layers = [nn.Conv2d(cin, cout, k, padding=padding, bias=True), nn.ReLU(inplace=True), norm]
        else:
            # A norm right after the conv subtracts the mean, which makes a conv bias redundant.
            layers = [nn.Conv2d(cin, cout, k, padding=padding, bias=cfg.norm == "none"), norm,
                      nn.ReLU(inplace=True)]
        super().__init__(*layers)


class Net(nn.Module):
    """A compact MNIST CNN (under 8k parameters) with a selectable normalization.

    28x28 -> conv3 (26) -> conv3 (24) -> maxpool (12) -> conv1x1 -> conv3 (10) -> conv3 (8)
    -> conv3 (6) -> global average pool -> linear classifier.
    """

    def __init__(self, cfg: ModelConfig | None = None, **overrides):
        super().__init__()
        if cfg is None:
            cfg = ModelConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a ModelConfig or keyword overrides, not both")
        if cfg.norm not in NORMS:
            raise ConfigError(f"unknown norm {cfg.norm!r}; valid norms: {', '.join(NORMS)}")
        if len(cfg.widths) < 3:
            raise ConfigError("ModelConfig.widths needs at least 3 convolutions")
        self.cfg = cfg
        w = cfg.widths
        # Two convs at full resolution, then a pool; the rest work at 12x12 and below.
        self.stem = nn.Sequential(
            ConvNormAct(cfg.in_channels, w[0], 3, cfg, "conv1"),  # (B, w0, 26, 26)
            ConvNormAct(w[0], w[1], 3, cfg, "conv2"),             # (B, w1, 24, 24)
        )
        self.pool = nn.MaxPool2d(2)                               # (B, w1, 12, 12)
        if cfg.transition:
            self.trans = ConvNormAct(w[1], cfg.transition, 1, cfg, "trans")  # (B, t, 12, 12)
        else:
            self.trans = nn.Identity()
        layers, cin = [], cfg.transition or w[1]
        for i, cout in enumerate(w[2:], start=3):
            layers.append(ConvNormAct(cin, cout, 3, cfg, f"conv{i}"))     # spatial -2 each
            cin = cout
        self.body = nn.Sequential(*layers)                         # (B, w[-1], 6, 6)
        self.head = nn.Linear(cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)                 # (B, C, 24, 24)
        x = self.trans(self.pool(x))     # (B, t, 12, 12)
        x = self.body(x)                 # (B, C, 6, 6)
        x = x.mean(dim=(2, 3))           # (B, C) global average pool
        return self.head(x)              # (B, classes) logits


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def penalized_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights that L1 penalizes: conv kernels and the classifier's matrix.

    Biases and the norms' affine parameters (gamma, beta) are left out: shrinking gamma towards 0
    would switch channels off rather than make the filters sparse.
    """
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def l1_penalty(model: nn.Module) -> torch.Tensor:
    """sum(|w|) over :func:`penalized_weights` (multiply by lambda outside)."""
    return sum(w.abs().sum() for w in penalized_weights(model))  # type: ignore[return-value]
