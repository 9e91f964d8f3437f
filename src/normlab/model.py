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
import torch.nn.functional as F

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
    # Output channels of the 3x3 convolutions.
    widths: tuple[int, ...] = (8, 16, 16, 16, 16)
    full_res: int = 1     # how many of the convs run at full resolution, before the max pool
    transition: int = 0   # >0: a 1x1 conv after the pool narrows the features to this many channels
    # conv -> ReLU -> norm. With the norm before the ReLU, LayerNorm (one mean for all channels)
    # can push a whole channel below zero, and the ReLU then kills it for every image.
    act_first: bool = True
    num_classes: int = 10
    in_channels: int = 1


class ConvNormAct(nn.Module):
    """conv -> ReLU -> [max pool] -> norm (``act_first``), or conv -> norm -> ReLU -> [max pool].

    With ``pool``, the act-first order pools before normalizing: the norm then works on a quarter
    of the elements, which on a CPU is most of the cost of the full-resolution layer.
    """

    def __init__(self, cin: int, cout: int, k: int, cfg: ModelConfig, name: str,
                 pool: bool = False):
        super().__init__()
        # A norm right after the conv subtracts the mean, which makes a conv bias redundant.
        bias = cfg.act_first or cfg.norm == "none"
        self.conv = nn.Conv2d(cin, cout, k, bias=bias)
        self.norm = make_norm(cfg.norm, cout, cfg.groups, layer=name)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.act_first = cfg.act_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.act_first:
            return self.norm(self.pool(F.relu(x, inplace=True)))
        return self.pool(F.relu(self.norm(x), inplace=True))


class Net(nn.Module):
    """A compact MNIST CNN (8,522 parameters with a norm) with a selectable normalization.

    28x28 -> conv3 (26) -> maxpool (13) -> conv3 (11) -> conv3 (9) -> conv3 (7) -> conv3 (5)
    -> global average pool -> linear classifier. Only the first conv runs at full resolution:
    it is where almost all of the memory traffic of a small CNN goes.
    """

    def __init__(self, cfg: ModelConfig | None = None, **overrides):
        super().__init__()
        if cfg is None:
            cfg = ModelConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a ModelConfig or keyword overrides, not both")
        if cfg.norm not in NORMS:
            raise ConfigError(f"unknown norm {cfg.norm!r}; valid norms: {', '.join(NORMS)}")
        if not 1 <= cfg.full_res < len(cfg.widths):
            raise ConfigError("ModelConfig.full_res must be at least 1 and leave a conv after the pool")
        self.cfg = cfg
        w, f = cfg.widths, cfg.full_res
        stem, cin = [], cfg.in_channels
        for i, cout in enumerate(w[:f], start=1):     # the last one pools: (B, w[f-1], 13, 13)
            stem.append(ConvNormAct(cin, cout, 3, cfg, f"conv{i}", pool=i == f))
            cin = cout
        self.stem = nn.Sequential(*stem)
        if cfg.transition:
            self.trans = ConvNormAct(cin, cfg.transition, 1, cfg, "trans")
            cin = cfg.transition
        else:
            self.trans = nn.Identity()
        layers = []
        for i, cout in enumerate(w[f:], start=f + 1):
            layers.append(ConvNormAct(cin, cout, 3, cfg, f"conv{i}"))     # spatial -2 each
            cin = cout
        self.body = nn.Sequential(*layers)                         # (B, w[-1], 5, 5)
        self.head = nn.Linear(cin, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trans(self.stem(x))     # (B, C, 13, 13)
        x = self.body(x)                 # (B, C, 5, 5)
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


# -- Several models as one network ---------------------------------------------------------------
# Small models leave most of a GPU (and much of a CPU's vector units) idle. A MultiNet holds M
# independent copies of Net, each with its own weights, norm and input batch, and runs them as one
# network: the convolutions become grouped convolutions (group m = model m), the norms work on
# each model's channel block, the classifier is a batched matmul. Nothing mixes across models, so
# member m computes what Net m alone would, up to floating-point rounding.

class _MultiNorm(nn.Module):
    """The norms of M members on the channel blocks of ``(B, M*C, H, W)``.

    Runs of neighbouring members with the same norm are merged into one layer: M BatchNorms over
    C channels are one BatchNorm over M*C channels, M GroupNorms with G groups are one GroupNorm
    with M*G groups (groups are contiguous channel blocks, so none straddles two members).
    """

    def __init__(self, norms: list[nn.Module], channels: int):
        super().__init__()
        self.channels = channels
        self.segments: list[tuple[int, int]] = []   # (first member, member count) per merged layer
        layers = []
        start = 0
        while start < len(norms):
            stop = start + 1
            while stop < len(norms) and _norm_key(norms[stop]) == _norm_key(norms[start]):
                stop += 1
            layers.append(_merge_norms(norms[start:stop]))
            self.segments.append((start, stop - start))
            start = stop
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, M*C, H, W)
        if len(self.layers) == 1:
            return self.layers[0](x)
        # torch.split (not slicing): its backward concatenates the gradients instead of filling a
        # zero tensor per block. Each block is made dense first: the CPU kernels for a strided
        # channel block are slower and, for BatchNorm, less accurate than for a dense tensor.
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        blocks = x.split([count * self.channels for _, count in self.segments], dim=1)
        parts = [layer(block.contiguous(memory_format=fmt))
                 for layer, block in zip(self.layers, blocks)]
        return torch.cat(parts, dim=1)


def _norm_key(norm: nn.Module) -> tuple:
    if isinstance(norm, nn.BatchNorm2d):
        return ("bn", norm.eps, norm.momentum)
    if isinstance(norm, nn.GroupNorm):
        return ("gn", norm.num_groups, norm.eps)
    return (type(norm).__name__,)


@torch.no_grad()
def _merge_norms(norms: list[nn.Module]) -> nn.Module:
    first, m = norms[0], len(norms)
    if isinstance(first, nn.BatchNorm2d):
        merged = nn.BatchNorm2d(first.num_features * m, eps=first.eps, momentum=first.momentum)
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(merged, name).copy_(torch.cat([getattr(n, name) for n in norms]))
        merged.num_batches_tracked.copy_(first.num_batches_tracked)
        return merged
    if isinstance(first, nn.GroupNorm):
        merged = nn.GroupNorm(first.num_groups * m, first.num_channels * m, eps=first.eps)
        merged.weight.copy_(torch.cat([n.weight for n in norms]))
        merged.bias.copy_(torch.cat([n.bias for n in norms]))
        return merged
    if isinstance(first, nn.Identity):
        return nn.Identity()
    raise TypeError(f"cannot merge {type(first).__name__} layers")


class _MultiConvNormAct(nn.Module):
    def __init__(self, blocks: list[ConvNormAct]):
        super().__init__()
        convs = [b.conv for b in blocks]
        c0 = convs[0]
        self.groups = len(blocks)
        self.weight = nn.Parameter(torch.cat([c.weight.detach() for c in convs]))  # (M*Cout, Cin, k, k)
        self.bias = (nn.Parameter(torch.cat([c.bias.detach() for c in convs]))
                     if c0.bias is not None else None)
        self.norm = _MultiNorm([b.norm for b in blocks], c0.out_channels)
        self.pool = blocks[0].pool
        self.act_first = blocks[0].act_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, M*Cin, H, W)
        x = F.conv2d(x, self.weight, self.bias, groups=self.groups)
        if self.act_first:
            return self.norm(self.pool(F.relu(x, inplace=True)))
        return self.pool(F.relu(self.norm(x), inplace=True))


class MultiNet(nn.Module):
    """M Nets trained as one network. Input ``(B, M*in_channels, H, W)``: member m's images in
    channel block m. Output ``(B, M, classes)``."""

    def __init__(self, nets: list[Net]):
        super().__init__()
        if not nets:
            raise ValueError("MultiNet needs at least one Net")
        shape = {dataclass_replace_norm(n.cfg) for n in nets}
        if len(shape) != 1:
            raise ValueError("MultiNet members must share one architecture (they may differ in norm)")
        self.cfgs = [n.cfg for n in nets]
        self.members = len(nets)

        def stack(path: str) -> nn.Module:
            mods = [n.get_submodule(path) for n in nets]
            if isinstance(mods[0], nn.Identity):
                return nn.Identity()
            if isinstance(mods[0], ConvNormAct):
                return _MultiConvNormAct(mods)  # type: ignore[arg-type]
            return nn.Sequential(*[stack(f"{path}.{i}") for i in range(len(mods[0]))])

        self.stem, self.trans, self.body = stack("stem"), stack("trans"), stack("body")
        self.head_weight = nn.Parameter(torch.stack([n.head.weight.detach() for n in nets]))  # (M, K, C)
        self.head_bias = nn.Parameter(torch.stack([n.head.bias.detach() for n in nets]))      # (M, K)
        # Where each member's tensors live, per member: {Net key: (MultiNet key, the member's row
        # slice of that tensor, its index in a stacked tensor, or None for the whole tensor)}.
        self.where: list[dict[str, tuple[str, slice | int | None]]] = [
            self._locate(n, m) for m, n in enumerate(nets)]
        for m, n in enumerate(nets):   # every tensor of every member is accounted for
            assert set(self.where[m]) == set(n.state_dict()), "MultiNet layout out of sync with Net"

    def _locate(self, net: Net, m: int) -> dict[str, tuple[str, slice | int | None]]:
        where: dict[str, tuple[str, slice | int | None]] = {
            "head.weight": ("head_weight", m), "head.bias": ("head_bias", m)}
        for path, mod in net.named_modules():
            if not isinstance(mod, ConvNormAct):
                continue
            multi = self.get_submodule(path)
            c = mod.conv.out_channels
            rows = slice(m * c, (m + 1) * c)
            where[f"{path}.conv.weight"] = (f"{path}.weight", rows)
            if mod.conv.bias is not None:
                where[f"{path}.conv.bias"] = (f"{path}.bias", rows)
            for s, (first, count) in enumerate(multi.norm.segments):
                if first <= m < first + count:
                    own = slice((m - first) * c, (m - first + 1) * c)
                    for key in mod.norm.state_dict():
                        where[f"{path}.norm.{key}"] = (
                            f"{path}.norm.layers.{s}.{key}",
                            None if key == "num_batches_tracked" else own)
        return where

    def penalized_parameters(self) -> list[nn.Parameter]:
        """The stacked conv kernels and classifier matrices (see :func:`penalized_weights`)."""
        convs = [mod.weight for mod in self.modules() if isinstance(mod, _MultiConvNormAct)]
        return convs + [self.head_weight]

    def member_tensors(self, m: int, source: dict[str, torch.Tensor] | None = None
                       ) -> dict[str, torch.Tensor]:
        """Member ``m``'s views of the tensors in ``source`` (keyed by MultiNet name; default:
        the parameters and buffers, e.g. also an optimizer's per-parameter buffers), keyed as in
        its Net's state_dict. Names missing from ``source`` are left out."""
        if source is None:
            source = dict(self.named_parameters()) | dict(self.named_buffers())
        out = {}
        for key, (multi_key, index) in self.where[m].items():
            if multi_key in source:
                t = source[multi_key]
                out[key] = t if index is None else t[index]
        return out

    def member_state_dict(self, m: int) -> dict[str, torch.Tensor]:
        """Member ``m`` as a Net state_dict (detached copies on the CPU)."""
        return {k: v.detach().cpu().clone() for k, v in self.member_tensors(m).items()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(self.trans(self.stem(x)))                  # (B, M*C, h, w)
        b = x.shape[0]
        x = x.mean(dim=(2, 3)).view(b, self.members, -1)         # (B, M, C)
        return torch.einsum("bmc,mkc->bmk", x, self.head_weight) + self.head_bias  # (B, M, K)


def dataclass_replace_norm(cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with the norm-specific fields blanked: what members of a MultiNet must share."""
    from dataclasses import replace
    return replace(cfg, norm="", groups=0)
