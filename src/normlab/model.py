"""The network: one small CNN whose normalization layer is chosen by name.

This file holds only the network. Its config (``ModelConfig``) lives in ``config.py``, the norms
(what each one is, how to build it) in ``norms.py``, the training loop in ``train.py``.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from normlab import norms
from normlab.config import ModelConfig
from normlab.errors import ConfigError
from normlab.layers import GhostBatchNorm2d, WSConv2d, standardize_weight


def make_norm(name: str, channels: int, groups: int = 4, layer: str = "norm",
              ghost_batch: int = norms.DEFAULT_GHOST_BATCH) -> nn.Module:
    """Build the normalization layer called ``name`` (see :data:`normlab.norms.NORMS`) for
    ``channels`` channels.

    ``groups`` is --groups (used by ``gn`` only), ``ghost_batch`` --ghost-batch (``gbn`` only).
    ``layer`` names the layer in error messages. Raises ``ConfigError`` (a ``ValueError``) for an
    unknown name, a group count that does not divide ``channels`` or a ghost batch below 2.
    """
    spec = norms.get(name)
    norms.check_groups(name, groups, [(layer, channels)])
    if spec.uses_ghost_batch:
        norms.check_ghost_batch(ghost_batch)
    return spec.build(channels, norms.NormSettings(groups=groups, ghost_batch=ghost_batch))


class ConvNormAct(nn.Module):
    """conv -> ReLU -> [max pool] -> norm (``act_first``), or conv -> norm -> ReLU -> [max pool].

    With ``pool``, the act-first order pools before normalizing: the norm then works on a quarter
    of the elements, which on a CPU is most of the cost of the full-resolution layer. With
    ``cfg.ws`` the conv is a :class:`~normlab.layers.WSConv2d` (weight standardization); its
    state_dict keys are those of nn.Conv2d.
    """

    def __init__(self, cin: int, cout: int, k: int, cfg: ModelConfig, name: str,
                 pool: bool = False, stride: int = 1):
        super().__init__()
        # A norm right after the conv subtracts the mean, which makes a conv bias redundant.
        bias = cfg.act_first or not norms.get(cfg.norm).has_stats
        conv = WSConv2d if cfg.ws else nn.Conv2d
        self.conv = conv(cin, cout, k, stride=stride, bias=bias)
        self.norm = make_norm(cfg.norm, cout, cfg.groups, layer=name, ghost_batch=cfg.ghost_batch)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.act_first = cfg.act_first
        self.relu_before_pool = cfg.relu_before_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_norm_act(self.conv(x), self)


def conv_norm_act(x: torch.Tensor, block) -> torch.Tensor:
    """What follows a block's conv (of a Net or a MultiNet): ReLU, max pool and norm."""
    if not block.act_first:
        return block.pool(F.relu(block.norm(x), inplace=True))
    if block.relu_before_pool:   # normlab 0.1.0's order: the same values, more work
        return block.norm(block.pool(F.relu(x, inplace=True)))
    # Max pool before ReLU gives the same values (ReLU is monotonic), and ReLU then touches a
    # quarter of the elements (measured 20% faster for this block on a CPU).
    return block.norm(F.relu(block.pool(x), inplace=True))


class Net(nn.Module):
    """A compact MNIST CNN (7,950 parameters with a norm, by default) with a selectable
    normalization.

    Default (``8s4-16-16-16-12``): 28x28 -> conv4 stride 2 (13) -> conv3 (11) -> conv3 (9) ->
    conv3 (7) -> conv3 (5) -> global average pool -> linear classifier. With the "pool" stem
    (``8-16-16-16-12``) the first conv is a 3x3 at full resolution (26) and a 2x2 max pool halves
    it (13): the full-resolution layer is where most of the memory traffic of a small CNN goes.
    """

    def __init__(self, cfg: ModelConfig | None = None, **overrides):
        super().__init__()
        if cfg is None:
            cfg = ModelConfig(**overrides)
        elif overrides:
            raise TypeError("pass either a ModelConfig or keyword overrides, not both")
        # An unknown name or a group count that does not divide every layer fails here, before
        # any layer is built, with the message Config's own check gives.
        norms.check_groups(cfg.norm, cfg.groups, cfg.norm_layers())
        if not 1 <= cfg.full_res < len(cfg.widths):
            raise ConfigError("ModelConfig.full_res must be at least 1 and leave a conv after the pool")
        if cfg.stem == "pool" and cfg.stem_kernel != 3:
            # Refused rather than ignored: the pool stem's conv is always 3x3 (stem_kernel sizes
            # the stride-2 conv; left unset it is 3 with the pool stem).
            raise ConfigError(f"ModelConfig(stem='pool') has a 3x3 conv before its pool, but "
                              f"stem_kernel={cfg.stem_kernel}; pass stem_kernel=3")
        self.cfg = cfg
        w, f = cfg.widths, cfg.full_res
        stem, cin = [], cfg.in_channels
        for i, cout in enumerate(w[:f], start=1):     # the last one halves: (B, w[f-1], 13, 13)
            last = i == f
            strided = last and cfg.stem == "stride"
            stem.append(ConvNormAct(cin, cout, cfg.stem_kernel if strided else 3, cfg, f"conv{i}",
                                    pool=last and cfg.stem == "pool", stride=2 if strided else 1))
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


def memory_format(cfgs: list[ModelConfig]) -> torch.memory_format:
    """The memory layout the network of ``cfgs`` (one Net, or the members of a MultiNet) trains
    in: its weights, inputs and activations.

    Contiguous (NCHW) for one Net with the stride-2 stem and a norm whose kernel is faster on it
    (``NormSpec.layout``, GroupNorm's); channels-last otherwise: the max-pool stem's
    full-resolution conv and pool, BatchNorm and the grouped convolutions of several members are
    faster in it. Measured per step by ``benchmarks/bench_step.py`` (``contiguous`` and
    ``channels-last``). The layouts compute the same values up to floating-point rounding, and
    the choice depends on the network only, never on the device, so a config rounds alike on
    every machine.
    """
    if len(cfgs) == 1 and cfgs[0].stem == "stride" and norms.get(cfgs[0].norm).layout == "nchw":
        return torch.contiguous_format
    return torch.channels_last


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

    Runs of neighbouring members whose layers can be merged (same ``merge`` kind in the norms
    registry, same hyperparameters) become one layer: M BatchNorms over C channels are one
    BatchNorm over M*C channels, M GroupNorms with G groups are one GroupNorm with M*G groups
    (groups are contiguous channel blocks, so none straddles two members). A norm that cannot be
    merged keeps each member's own layer on its own channel block.
    """

    def __init__(self, layers: list[nn.Module], names: list[str], channels: int):
        super().__init__()
        self.channels = channels
        self.segments: list[tuple[int, int]] = []   # (first member, member count) per merged layer
        kinds = [norms.get(name).merge for name in names]
        keys = [_merge_key(kind, layer) for kind, layer in zip(kinds, layers)]
        merged = []
        start = 0
        while start < len(layers):
            stop = start + 1
            while stop < len(layers) and keys[stop] == keys[start]:
                stop += 1
            kind = kinds[start]
            # A copy, as the merged layers are: the MultiNet shares no tensor with the Nets.
            merged.append(_MERGERS[kind](layers[start:stop]) if kind
                          else copy.deepcopy(layers[start]))
            self.segments.append((start, stop - start))
            start = stop
        self.layers = nn.ModuleList(merged)

    def member_layer(self, m: int) -> tuple[nn.Module, int]:
        """The layer that normalizes member ``m``'s channels, and the offset of its block in
        that layer's channels (for reading per-member statistics such as running means)."""
        for layer, (first, count) in zip(self.layers, self.segments):
            if first <= m < first + count:
                return layer, (m - first) * self.channels
        raise IndexError(f"member {m} out of range")

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


def _merge_key(kind: str | None, layer: nn.Module) -> tuple:
    """Neighbours with equal keys are merged into one layer; a layer that cannot be merged gets a
    key of its own."""
    if kind == "batch":   # a BatchNorm2d and a GhostBatchNorm2d (or two ghost sizes) stay apart
        return (kind, type(layer), layer.eps, layer.momentum, getattr(layer, "ghost_batch", None))
    if kind == "group":
        return (kind, layer.num_groups, layer.eps)
    if kind == "identity":
        return (kind,)
    return ("alone", id(layer))


@torch.no_grad()
def _merge_batch(layers: list[nn.Module]) -> nn.Module:
    first, m = layers[0], len(layers)
    # Ghost BatchNorm merges like BatchNorm: a virtual batch is the same rows of the batch for
    # every member, and the statistics are per channel.
    extra = {"ghost_batch": first.ghost_batch} if isinstance(first, GhostBatchNorm2d) else {}
    merged = type(first)(first.num_features * m, eps=first.eps, momentum=first.momentum, **extra)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(merged, name).copy_(torch.cat([getattr(n, name) for n in layers]))
    merged.num_batches_tracked.copy_(first.num_batches_tracked)
    return merged


@torch.no_grad()
def _merge_group(layers: list[nn.Module]) -> nn.Module:
    first, m = layers[0], len(layers)
    merged = nn.GroupNorm(first.num_groups * m, first.num_channels * m, eps=first.eps)
    merged.weight.copy_(torch.cat([n.weight for n in layers]))
    merged.bias.copy_(torch.cat([n.bias for n in layers]))
    return merged


# One merge per kind in norms.MERGE_KINDS (the registry says which kind a norm's layer is).
_MERGERS = {"batch": _merge_batch, "group": _merge_group, "identity": lambda layers: nn.Identity()}


class _MultiConvNormAct(nn.Module):
    """The members' ConvNormAct blocks as one: a grouped conv (group m = member m), then each
    member's norm on its channel block (:class:`_MultiNorm`).

    Weight standardization is per output channel, i.e. per row of the stacked weight, so
    standardizing a member's rows is that member's own WS. Members that use it (``ws``) have
    their rows standardized, the others not: ``ws_rows`` marks the rows (a buffer that follows
    the module to its device, left out of the state_dict: it is fixed by the members' configs).
    """

    def __init__(self, blocks: list[ConvNormAct], norm_names: list[str], ws: list[bool]):
        super().__init__()
        convs = [b.conv for b in blocks]
        c0 = convs[0]
        self.groups = len(blocks)
        self.weight = nn.Parameter(torch.cat([c.weight.detach() for c in convs]))  # (M*Cout, Cin, k, k)
        self.ws = "all" if all(ws) else "some" if any(ws) else "none"
        rows = torch.tensor(ws).repeat_interleave(c0.out_channels).view(-1, 1, 1, 1)
        self.register_buffer("ws_rows", rows, persistent=False)
        self.bias = (nn.Parameter(torch.cat([c.bias.detach() for c in convs]))
                     if c0.bias is not None else None)
        self.norm = _MultiNorm([b.norm for b in blocks], norm_names, c0.out_channels)
        self.pool = blocks[0].pool
        self.stride = c0.stride
        self.act_first = blocks[0].act_first
        self.relu_before_pool = blocks[0].relu_before_pool

    def kernel(self) -> torch.Tensor:
        """The stacked kernel the grouped conv applies: WS members' rows standardized."""
        if self.ws == "none":
            return self.weight
        if self.ws == "all":
            return standardize_weight(self.weight)
        # The other rows are standardized too but not used: torch.where passes no gradient to
        # them (and eps keeps them finite, so no NaN can leak through).
        return torch.where(self.ws_rows, standardize_weight(self.weight), self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, M*Cin, H, W)
        x = F.conv2d(x, self.kernel(), self.bias, stride=self.stride, groups=self.groups)
        return conv_norm_act(x, self)


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
        self.memory_format = memory_format(self.cfgs)   # of its inputs; .to() sets the weights'

        def stack(path: str) -> nn.Module:
            mods = [n.get_submodule(path) for n in nets]
            if isinstance(mods[0], nn.Identity):
                return nn.Identity()
            if isinstance(mods[0], ConvNormAct):
                return _MultiConvNormAct(mods, [n.cfg.norm for n in nets],  # type: ignore[arg-type]
                                         [n.cfg.ws for n in nets])
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

    def blocks(self) -> list[tuple[str, nn.Module]]:
        """(layer name as in ``ModelConfig.norm_layers``, block) of every conv + norm block, in
        forward order. A block has ``weight`` (the stacked kernels, member m's rows
        ``m*C:(m+1)*C``), ``norm`` (with ``channels`` and :meth:`_MultiNorm.member_layer`) and
        ``act_first``."""
        mods = [mod for mod in self.modules() if isinstance(mod, _MultiConvNormAct)]
        return [(name, mod) for (name, _), mod in zip(self.cfgs[0].norm_layers(), mods)]

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
    """``cfg`` with the norm-specific fields (norm, groups, ghost batch, weight standardization)
    blanked: what members of a MultiNet must share."""
    from dataclasses import replace
    return replace(cfg, norm="", groups=0, ghost_batch=0, ws=False)
