"""``normlab explain``: the normalizations worked out by hand on a tiny tensor.

The norms differ only in *which elements share one mean and one variance*. Each entry of the
registry (:data:`normlab.norms.NORMS`) says so as axes: view x (N, C, H, W) with ``spec.view``
(the GroupNorm family splits C into (G, C/G), Ghost BatchNorm splits N into V virtual batches of
N/V images), then average over ``spec.reduce``. For example

* ``bn``  BatchNorm:          one mean per channel, over (N, H, W)        -> statistics of shape (C,)
* ``gbn`` Ghost BatchNorm:    one mean per virtual batch and channel, over (N/V, H, W) -> (V, C)
* ``gn``  GroupNorm (G):      one mean per image and group, over (C/G, H, W) -> shape (N, G)
* ``ln``  LayerNorm (conv):   one mean per image, over (C, H, W)          -> shape (N,)

Weight standardization (``+ws``) is not a norm of the activations but of the conv kernels:
:func:`standardize_by_hand` computes it and the text compares it with
:class:`normlab.layers.WSConv2d`.

:func:`norm_stats` computes any registered norm from those axes (reshape, then mean and *biased*
variance, as the layers do in training mode); :func:`explain_text` prints the computation on a
seeded example for the norms marked ``explain`` and checks it against each norm's own builder;
:func:`normlab.axes_figure.draw_norm_axes` draws which elements share a statistic. A norm added to the registry is
computed, checked and drawn here without editing this file. Nothing here trains a model.
"""

from __future__ import annotations

from math import prod

import dataclasses

import torch
import torch.nn as nn
import torch.nn.functional as F

from normlab import norms
from normlab.layers import WS_EPS, WSConv2d
from normlab.model import ConvNormAct, ModelConfig, Net, count_params
from normlab.norms import DEFAULT_GHOST_BATCH, NormSpec

EPS = 1e-5  # PyTorch's default eps for nn.BatchNorm2d and nn.GroupNorm
TOLERANCE = 1e-5  # the largest difference from PyTorch's layers that counts as "the same"
EXAMPLE_SHAPE = (2, 4, 2, 2)  # (N, C, H, W) of the printed example
EXAMPLE_GROUPS = 2  # GroupNorm groups in the example (the model itself uses ModelConfig.groups)
INPUT_SIZE = 28  # MNIST images are 28x28


# --------------------------------------------------------------------------- hand computation


def hand_spec(norm: str) -> NormSpec:
    spec = norms.get(norm)  # ConfigError (a ValueError) "unknown norm ..." for an unknown name
    if not spec.has_stats:
        raise ValueError(f"norm {norm!r} ({spec.title}) has no statistics to compute by hand")
    return spec


def axis_sizes(spec: NormSpec, shape: tuple[int, ...], groups: int,
               ghost_batch: int = DEFAULT_GHOST_BATCH) -> dict[str, int]:
    """Size of each axis name of :data:`normlab.norms.AXES` for x of ``shape`` (N, C, H, W).

    Virtual batches (V, N/V) hold ``ghost_batch`` images each (all N when N <= ghost_batch); the
    view needs equal ones, so N must then be a multiple of ``ghost_batch``."""
    n, c, h, w = shape
    sizes = {"N": n, "C": c, "H": h, "W": w}
    if "G" in spec.view:
        g = spec.stat_groups(c, groups)
        if g is None or g < 1 or c % g != 0:
            raise ValueError(f"{spec.title}: {g} groups do not divide {c} channels")
        sizes |= {"G": g, "C/G": c // g}
    if "V" in spec.view:
        per = min(ghost_batch, n)
        if per < 1 or n % per != 0:
            raise ValueError(f"{spec.title}: virtual batches of {ghost_batch} images do not divide "
                             f"{n} images (the hand computation needs equal virtual batches)")
        sizes |= {"V": n // per, "N/V": per}
    return sizes


def kept_axes(spec: NormSpec) -> tuple[str, ...]:
    """The axes a statistic is indexed by: those of the view that are not averaged over."""
    return tuple(a for a in spec.view if a not in spec.reduce)


def norm_stats(
    x: torch.Tensor, norm: str, groups: int = 2, eps: float = EPS,
    ghost_batch: int = DEFAULT_GHOST_BATCH,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and normalized output of ``x`` (N, C, H, W) for ``norm``, computed by hand
    from the registry's axes: x viewed as ``spec.view``, averaged over ``spec.reduce``.

    The variance is the biased one (divide by the number of elements, not n - 1), as
    ``nn.BatchNorm2d`` (training mode) and ``nn.GroupNorm`` use to normalize. The output is
    ``(x - mean) / sqrt(var + eps)``, i.e. the layer with its default affine gamma=1, beta=0.

    The statistics are indexed by the axes that are not averaged over, e.g.

    * ``"bn"``: mean and var of shape ``(C,)``, each over axes (N, H, W);
    * ``"gn"``: shape ``(N, G)``, each over (C/G, H, W) of one image's group of channels;
    * ``"ln"``: shape ``(N,)``, each over (C, H, W) of one image (GroupNorm with G=1);
    * ``"gbn"``: shape ``(V, C)``, each over (N/V, H, W) of one virtual batch of consecutive images.

    ``groups`` is --groups (used by ``"gn"`` only); the resulting G must divide C. ``ghost_batch``
    is --ghost-batch (``"gbn"`` only; it must divide N or be >= N). Raises ValueError for an
    unknown norm, one without statistics (none), or such a group count or ghost batch.
    """
    if x.dim() != 4:
        raise ValueError(f"expected x of shape (N, C, H, W), got shape {tuple(x.shape)}")
    spec = hand_spec(norm)
    sizes = axis_sizes(spec, tuple(x.shape), groups, ghost_batch)
    xv = x.reshape([sizes[a] for a in spec.view])                 # e.g. (N, G, C/G, H, W)
    dims = tuple(spec.view.index(a) for a in spec.reduce)         # e.g. (2, 3, 4)
    mean = xv.mean(dim=dims, keepdim=True)
    var = ((xv - mean) ** 2).mean(dim=dims, keepdim=True)         # biased
    y = ((xv - mean) / torch.sqrt(var + eps)).reshape(x.shape)    # (N, C, H, W)
    stat_shape = [sizes[a] for a in kept_axes(spec)]                  # e.g. (N, G)
    return mean.reshape(stat_shape), var.reshape(stat_shape), y


def torch_layer(norm: str, channels: int, groups: int = 2, eps: float = EPS,
                ghost_batch: int = DEFAULT_GHOST_BATCH) -> nn.Module:
    """The registry's own layer for ``norm`` (``spec.build``), in training mode with its initial
    affine (gamma=1, beta=0) and ``eps`` where the layer has one."""
    layer = norms.get(norm).build(channels, norms.NormSettings(groups, ghost_batch))
    if hasattr(layer, "eps"):
        layer.eps = eps
    return layer.train()


def example_tensor(seed: int = 0, shape: tuple[int, int, int, int] = EXAMPLE_SHAPE) -> torch.Tensor:
    """A small (N, C, H, W) float32 tensor from a seeded generator, rounded to 1 decimal."""
    gen = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(shape, generator=gen), decimals=1)


def standardize_by_hand(w: torch.Tensor, eps: float = WS_EPS
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weight standardization (Qiao et al. 2019) of a conv kernel ``w`` (C_out, C_in, kH, kW),
    from its definition: per output channel o, the mean and the biased variance of the
    C_in*kH*kW weights of w[o], then ``(w[o] - mean) / sqrt(var + eps)``. Returns (mean, var,
    standardized kernel); mean and var have shape (C_out,)."""
    rows = w.reshape(w.shape[0], -1)                              # (C_out, C_in*kH*kW)
    mean = rows.sum(dim=1) / rows.shape[1]
    var = ((rows - mean[:, None]) ** 2).sum(dim=1) / rows.shape[1]   # biased
    w_hat = (rows - mean[:, None]) / torch.sqrt(var[:, None] + eps)
    return mean, var, w_hat.reshape(w.shape)


# --------------------------------------------------------------------------- parameter counts


def _norm_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """(module name, norm layer, channels) of each conv block's norm; none (Identity) left out.
    Found through the blocks rather than by layer type, so a registered norm of any type counts."""
    return [(f"{name}.norm", m.norm, m.conv.out_channels) for name, m in model.named_modules()
            if isinstance(m, ConvNormAct) and not isinstance(m.norm, nn.Identity)]


def norm_layer_shapes(size: int = INPUT_SIZE, cfg: ModelConfig | None = None
                      ) -> list[tuple[str, tuple[int, int, int]]]:
    """(module name, (C, H, W)) of each norm layer's input in normlab's Net for a size x size image.

    Found with forward hooks on one dummy image, so the shapes are the model's actual ones.
    """
    cfg = cfg or ModelConfig(norm="ln")
    model = Net(cfg).eval()
    layers = _norm_modules(model)
    if not layers:
        raise ValueError(f"norm_layer_shapes needs a model with norm layers, got norm={cfg.norm!r}")
    shapes: list[tuple[str, tuple[int, int, int]]] = []
    handles = [
        m.register_forward_hook(
            lambda mod, inputs, out, name=name: shapes.append((name, tuple(inputs[0].shape[1:])))
        )
        for name, m, _ in layers
    ]
    try:
        with torch.no_grad():
            model(torch.zeros(1, cfg.in_channels, size, size))
    finally:
        for h in handles:
            h.remove()
    return shapes


def param_summary(norm: str, cfg: ModelConfig | None = None) -> tuple[int, int, int]:
    """(total parameters, parameters of the norm layers, channels normalized) of Net(norm), with
    ``cfg``'s other settings (its ``ws`` included)."""
    base = cfg or ModelConfig()
    model = Net(dataclasses.replace(base, norm=norm))
    layers = _norm_modules(model)
    norm_params = sum(count_params(m) for _, m, _ in layers)
    channels = sum(c for _, _, c in layers)
    return count_params(model), norm_params, channels


# --------------------------------------------------------------------------- text


def _num(v: float, digits: int) -> str:
    s = f"{v:.{digits}f}"
    return "0." + "0" * digits if s == "-0." + "0" * digits else s  # no "-0.00"


def _vector(t: torch.Tensor, digits: int) -> str:
    return "[" + ", ".join(_num(v, digits) for v in t.tolist()) + "]"


def _matrix(t: torch.Tensor, digits: int, row: str, indent: str) -> list[str]:
    return [f"{indent}{row}{i}: {_vector(r, digits)}" for i, r in enumerate(t)]


def _nchw_block(t: torch.Tensor, digits: int, indent: str = "    ",
                labels: tuple[str, str] = ("n", "c")) -> list[str]:
    """(N, C, H, W) as text: one block of H lines per image, channels side by side; ``labels``
    name the first two axes ("o", "i" for a kernel's output and input channels)."""
    n, c, h, w = t.shape
    cells = [[[" ".join(f"{_num(v, digits):>{digits + 4}}" for v in t[i, j, r].tolist())
               for r in range(h)] for j in range(c)] for i in range(n)]
    width = max(len(s) for img in cells for ch in img for s in ch) + 2  # "[...]"
    head = (indent + "     " + "  ".join(f"{f'{labels[1]}={j}':^{width}}"
                                          for j in range(c))).rstrip()
    lines = [head]
    for i in range(n):
        for r in range(h):
            label = f"{labels[0]}={i}" if r == 0 else ""
            lines.append(indent + f"{label:<5}" + "  ".join(f"[{cells[i][j][r]}]" for j in range(c)))
    return lines


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|; infinite when a shape differs or anything is NaN (so the check cannot pass)."""
    if a.shape != b.shape:
        return float("inf")
    d = (a - b).abs()
    return float("inf") if torch.isnan(d).any() else float(d.max())


AXIS_WORDS = {"N": "image", "C": "channel", "G": "group", "H": "row", "W": "column",
              "V": "virtual batch"}


def _axes_text(names: tuple[str, ...]) -> str:
    """Axis names as a tuple is written: ("C",) -> "(C,)", ("N", "G") -> "(N, G)"."""
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_word(k: int) -> str:
    return ("one", "two", "three", "four", "five", "six")[k - 1] if 1 <= k <= 6 else str(k)


def _norm_section(spec: NormSpec, x: torch.Tensor, groups: int,
                  ghost_batch: int = DEFAULT_GHOST_BATCH) -> tuple[list[str], float]:
    """explain's text for one norm: the axes it averages over (from the registry), its statistics
    and output on ``x`` by hand, and the largest difference from its builder's layer."""
    n, c, h, w = x.shape
    sizes = axis_sizes(spec, tuple(x.shape), groups, ghost_batch)
    view_shape = tuple(sizes[a] for a in spec.view)
    dims = tuple(spec.view.index(a) for a in spec.reduce)
    each = (f"each over {'*'.join(spec.reduce)} = {prod(sizes[a] for a in spec.reduce)} elements"
            + (f", {spec.note}" if spec.note else ""))
    if spec.view == ("N", "C", "H", "W"):
        axes = [f"averages over axes {_axes_text(spec.reduce)} = dims {dims}: "
                f"one mean per {spec.per},", f"  {each}"]
    else:
        axes = [f"reshape to {_axes_text(spec.view)} = {view_shape}, average over "
                f"{_axes_text(spec.reduce)} = dims {dims}:", f"  one mean per {spec.per}, {each}"]
    layer = spec.layer_text.format(**sizes)
    lines = ["", f"== {spec.title}  ({layer})" if layer else f"== {spec.title}"]
    lines += [f"  {a}" for a in axes]

    mean, var, y = norm_stats(x, spec.name, groups=groups, ghost_batch=ghost_batch)
    with torch.no_grad():
        ref = torch_layer(spec.name, c, groups=groups, ghost_batch=ghost_batch)(x)
    diff = _diff(y, ref)
    kept = kept_axes(spec)
    for label, stat in (("mean", mean), ("var ", var)):
        shape = f"shape {tuple(stat.shape)} = {_axes_text(kept)}"
        if stat.dim() == 1:
            lines.append(f"  {label} {shape}: {_vector(stat, 3)}")
        else:
            columns = ", ".join(AXIS_WORDS.get(a, a) + "s" for a in kept[1:])
            lines.append(f"  {label} {shape}, one row per {AXIS_WORDS.get(kept[0], kept[0])} "
                         f"(columns: {columns}):")
            lines += _matrix(stat.reshape(stat.shape[0], -1), 3, f"{kept[0].lower()}=", "    ")
    lines.append("  normalized y:")
    lines += _nchw_block(y, 2)
    verdict = "OK" if diff <= TOLERANCE else f"MISMATCH (above {TOLERANCE:g})"
    lines.append(f"  max |y - PyTorch| = {diff:.2e}  {verdict}")
    return lines, diff


def _ws_section(x: torch.Tensor, seed: int) -> tuple[list[str], float]:
    """explain's text for weight standardization: a seeded kernel standardized by hand
    (:func:`standardize_by_hand`), against the kernel WSConv2d applies and its output on ``x``."""
    n, c, h, w = x.shape
    kernel = example_tensor(seed + 1, (2, c, h, w))   # (C_out, C_in, kH, kW): one output pixel
    mean, var, w_hat = standardize_by_hand(kernel)
    conv = WSConv2d(c, 2, (h, w), bias=False)
    with torch.no_grad():
        conv.weight.copy_(kernel)
        applied, y = conv.standardized_weight(), conv(x)
    diff = max(_diff(w_hat, applied), _diff(F.conv2d(x, w_hat), y))
    if not torch.equal(conv.weight.detach(), kernel):   # the stored parameter must stay as it is
        diff = float("inf")
    verdict = "OK" if diff <= TOLERANCE else f"MISMATCH (above {TOLERANCE:g})"
    lines = ["", "== Weight Standardization  (+ws with any norm, e.g. gn+ws: "
                 "normlab.layers.WSConv2d)",
             "  before every conv, the kernel of each output channel o of W (C_out, C_in, kH, kW)",
             "  is standardized over (C_in, kH, kW) = dims (1, 2, 3) with the biased variance:",
             f"  W_hat[o] = (W[o] - mean[o]) / sqrt(var[o] + {WS_EPS:g}); the stored W is unchanged,",
             "  and no parameters are added",
             f"  example kernel W, shape {tuple(kernel.shape)} (seed {seed + 1}, rounded to 1 "
             "decimal):"]
    lines += _nchw_block(kernel, 1, labels=("o", "i"))
    lines.append(f"  mean shape {tuple(mean.shape)} = (C_out,): {_vector(mean, 3)}")
    lines.append(f"  var  shape {tuple(var.shape)} = (C_out,): {_vector(var, 3)}")
    lines.append("  standardized W_hat:")
    lines += _nchw_block(w_hat, 2, labels=("o", "i"))
    lines.append(f"  conv of x with W_hat, shape {tuple(y.shape)}, one row per image:")
    lines += _matrix(F.conv2d(x, w_hat).reshape(n, -1), 3, "n=", "    ")
    lines.append(f"  max |W_hat - WSConv2d's kernel| and |conv - WSConv2d(x)| = {diff:.2e}  {verdict}")
    return lines, diff


def explain_text(seed: int = 0) -> tuple[str, float]:
    """The full explanation that ``normlab explain`` prints, and the largest absolute difference
    between the hand computation (:func:`norm_stats`) and the registry's layers over the norms it
    works through (those marked ``explain`` in :data:`normlab.norms.NORMS`: bn, gn, ln), and
    between weight standardization by hand and :class:`normlab.layers.WSConv2d`.

    The caller decides what a difference above :data:`TOLERANCE` means (the CLI exits with 1).
    """
    x = example_tensor(seed)
    n, c, h, w = x.shape
    names = norms.explained()
    specs = [norms.get(name) for name in names]
    out: list[str] = []
    add = out.append

    add(f"How {_and([s.title for s in specs])} normalize: worked by hand, checked against PyTorch")
    add("")
    add(f"Example input x, shape (N, C, H, W) = {tuple(x.shape)}: {n} images, {c} channels, "
        f"{h}x{w} pixels (seed {seed}, rounded to 1 decimal)")
    out += _nchw_block(x, 1)
    add("")
    add("Each norm computes y = (x - mean) / sqrt(var + eps) with eps = 1e-05 and the biased variance")
    add("(mean of squared deviations, divided by the count, not count - 1); they differ only in")
    add("which elements share one mean and one variance. The affine gamma=1, beta=0 (PyTorch's init).")

    worst = 0.0
    for spec in specs:
        lines, diff = _norm_section(spec, x, EXAMPLE_GROUPS)
        out += lines
        worst = max(worst, diff)
    lines, diff = _ws_section(x, seed)
    out += lines
    worst = max(worst, diff)
    # Ghost BatchNorm needs several virtual batches: its own example of 4 images, 2 per batch.
    x4 = example_tensor(seed + 2, (4, c, h, w))
    lines, diff = _norm_section(norms.get("gbn"), x4, EXAMPLE_GROUPS, ghost_batch=2)
    out += lines[:2] + [f"  example x of 4 images (seed {seed + 2}, rounded to 1 decimal), in "
                        "virtual batches of 2 (--ghost-batch 2):"] + _nchw_block(x4, 1) + lines[2:]
    worst = max(worst, diff)

    # ---- what each norm costs in normlab's own model
    cfg = ModelConfig()
    add("")
    transition = (f"a 1x1 transition conv to {cfg.transition} channels" if cfg.transition
                  else "no 1x1 transition conv")
    add(f"== Parameters in normlab's model (Net, default config: widths {cfg.widths}, "
        f"{transition}, GroupNorm groups {cfg.groups})")
    counts = set()
    for key in names:
        total, norm_params, channels = param_summary(key, cfg)
        per = norm_params / channels if channels else 0
        counts.add((total, norm_params))
        add(f"  {key}: {total:,} parameters, of which norm layers {norm_params:,} "
            f"({per:g} per channel over {channels} channels)")
    if len(counts) == 1 and len(names) > 1:
        add(f"  All {_count_word(len(names))} add the same gamma and beta per channel; "
            "only the shared statistics differ.")
    else:
        add("  They differ in their parameters as well as in the shared statistics.")
    with_ws = {param_summary(key, dataclasses.replace(cfg, ws=True))[:2] for key in names}
    same = "the same counts" if with_ws <= counts else "DIFFERENT counts"
    add(f"  With +ws ({', '.join(k + '+ws' for k in names)}): {same}; weight standardization "
        "adds no parameters.")

    shapes = norm_layer_shapes(INPUT_SIZE, ModelConfig(norm="ln"))
    add("")
    add("== Why not per-element nn.LayerNorm([C, H, W])? It learns a gamma and a beta for every")
    add(f"   element, 2*C*H*W per layer, and fixes the input size. For a {INPUT_SIZE}x{INPUT_SIZE} input, "
        "the norm layers see:")
    ln_total = 0
    gn1_total = 0
    for name, (cc, hh, ww) in shapes:
        per_elem = 2 * cc * hh * ww
        ln_total += per_elem
        gn1_total += 2 * cc
        add(f"    {name:<10} (C, H, W) = ({cc:>2}, {hh:>2}, {ww:>2}): "
            f"LayerNorm([C,H,W]) adds {per_elem:>6,}   GroupNorm(1, C) adds {2 * cc:>3}")
    add(f"  total: nn.LayerNorm([C, H, W]) would add {ln_total:,} parameters; "
        f"GroupNorm(1, C) adds {gn1_total:,}")
    add(f"  ({ln_total / gn1_total:.0f}x as many, for a model of "
        f"{param_summary('ln', cfg)[0]:,} parameters in all).")

    add("")
    status = "all match" if worst <= TOLERANCE else "DIFFERENCE ABOVE TOLERANCE"
    add(f"Largest difference from PyTorch over {', '.join(names + ['+ws', 'gbn'])}: {worst:.2e} "
        f"(tolerance {TOLERANCE:g}): {status}")
    return "\n".join(out) + "\n", worst
