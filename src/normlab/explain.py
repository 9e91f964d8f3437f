"""``normlab explain``: the normalizations worked out by hand on a tiny tensor.

The norms differ only in *which elements share one mean and one variance*. Each entry of the
registry (:data:`normlab.norms.NORMS`) says so as axes: view x (N, C, H, W) with ``spec.view``
(the GroupNorm family splits C into (G, C/G)), then average over ``spec.reduce``. For example

* ``bn``  BatchNorm:          one mean per channel, over (N, H, W)        -> statistics of shape (C,)
* ``gn``  GroupNorm (G):      one mean per image and group, over (C/G, H, W) -> shape (N, G)
* ``ln``  LayerNorm (conv):   one mean per image, over (C, H, W)          -> shape (N,)

:func:`norm_stats` computes any registered norm from those axes (reshape, then mean and *biased*
variance, as the layers do in training mode); :func:`explain_text` prints the computation on a
seeded example for the norms marked ``explain`` and checks it against each norm's own builder;
:func:`normlab.axes_figure.draw_norm_axes` draws which elements share a statistic. A norm added to the registry is
computed, checked and drawn here without editing this file. Nothing here trains a model.
"""

from __future__ import annotations

from math import prod

import torch
import torch.nn as nn

from normlab import norms
from normlab.model import ConvNormAct, ModelConfig, Net, count_params
from normlab.norms import NormSpec

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


def axis_sizes(spec: NormSpec, shape: tuple[int, ...], groups: int) -> dict[str, int]:
    """Size of each axis name of :data:`normlab.norms.AXES` for x of ``shape`` (N, C, H, W)."""
    n, c, h, w = shape
    sizes = {"N": n, "C": c, "H": h, "W": w}
    if "G" in spec.view:
        g = spec.stat_groups(c, groups)
        if g is None or g < 1 or c % g != 0:
            raise ValueError(f"{spec.title}: {g} groups do not divide {c} channels")
        sizes |= {"G": g, "C/G": c // g}
    return sizes


def kept_axes(spec: NormSpec) -> tuple[str, ...]:
    """The axes a statistic is indexed by: those of the view that are not averaged over."""
    return tuple(a for a in spec.view if a not in spec.reduce)


def norm_stats(
    x: torch.Tensor, norm: str, groups: int = 2, eps: float = EPS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, variance and normalized output of ``x`` (N, C, H, W) for ``norm``, computed by hand
    from the registry's axes: x viewed as ``spec.view``, averaged over ``spec.reduce``.

    The variance is the biased one (divide by the number of elements, not n - 1), as
    ``nn.BatchNorm2d`` (training mode) and ``nn.GroupNorm`` use to normalize. The output is
    ``(x - mean) / sqrt(var + eps)``, i.e. the layer with its default affine gamma=1, beta=0.

    The statistics are indexed by the axes that are not averaged over, e.g.

    * ``"bn"``: mean and var of shape ``(C,)``, each over axes (N, H, W);
    * ``"gn"``: shape ``(N, G)``, each over (C/G, H, W) of one image's group of channels;
    * ``"ln"``: shape ``(N,)``, each over (C, H, W) of one image (GroupNorm with G=1).

    ``groups`` is --groups (used by ``"gn"`` only); the resulting G must divide C. Raises
    ValueError for an unknown norm, one without statistics (none) or such a group count.
    """
    if x.dim() != 4:
        raise ValueError(f"expected x of shape (N, C, H, W), got shape {tuple(x.shape)}")
    spec = hand_spec(norm)
    sizes = axis_sizes(spec, tuple(x.shape), groups)
    xv = x.reshape([sizes[a] for a in spec.view])                 # e.g. (N, G, C/G, H, W)
    dims = tuple(spec.view.index(a) for a in spec.reduce)         # e.g. (2, 3, 4)
    mean = xv.mean(dim=dims, keepdim=True)
    var = ((xv - mean) ** 2).mean(dim=dims, keepdim=True)         # biased
    y = ((xv - mean) / torch.sqrt(var + eps)).reshape(x.shape)    # (N, C, H, W)
    stat_shape = [sizes[a] for a in kept_axes(spec)]                  # e.g. (N, G)
    return mean.reshape(stat_shape), var.reshape(stat_shape), y


def torch_layer(norm: str, channels: int, groups: int = 2, eps: float = EPS) -> nn.Module:
    """The registry's own layer for ``norm`` (``spec.build``), in training mode with its initial
    affine (gamma=1, beta=0) and ``eps`` where the layer has one."""
    layer = norms.get(norm).build(channels, groups)
    if hasattr(layer, "eps"):
        layer.eps = eps
    return layer.train()


def example_tensor(seed: int = 0, shape: tuple[int, int, int, int] = EXAMPLE_SHAPE) -> torch.Tensor:
    """A small (N, C, H, W) float32 tensor from a seeded generator, rounded to 1 decimal."""
    gen = torch.Generator().manual_seed(seed)
    return torch.round(torch.randn(shape, generator=gen), decimals=1)


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
    """(total parameters, parameters of the norm layers, channels normalized) of Net(norm)."""
    base = cfg or ModelConfig()
    model = Net(ModelConfig(**{**base.__dict__, "norm": norm}))
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


def _nchw_block(t: torch.Tensor, digits: int, indent: str = "    ") -> list[str]:
    """(N, C, H, W) as text: one block of H lines per image, channels side by side."""
    n, c, h, w = t.shape
    cells = [[[" ".join(f"{_num(v, digits):>{digits + 4}}" for v in t[i, j, r].tolist())
               for r in range(h)] for j in range(c)] for i in range(n)]
    width = max(len(s) for img in cells for ch in img for s in ch) + 2  # "[...]"
    head = (indent + "     " + "  ".join(f"{f'c={j}':^{width}}" for j in range(c))).rstrip()
    lines = [head]
    for i in range(n):
        for r in range(h):
            label = f"n={i}" if r == 0 else ""
            lines.append(indent + f"{label:<5}" + "  ".join(f"[{cells[i][j][r]}]" for j in range(c)))
    return lines


def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b|; infinite when a shape differs or anything is NaN (so the check cannot pass)."""
    if a.shape != b.shape:
        return float("inf")
    d = (a - b).abs()
    return float("inf") if torch.isnan(d).any() else float(d.max())


AXIS_WORDS = {"N": "image", "C": "channel", "G": "group", "H": "row", "W": "column"}


def _axes_text(names: tuple[str, ...]) -> str:
    """Axis names as a tuple is written: ("C",) -> "(C,)", ("N", "G") -> "(N, G)"."""
    return "(" + ", ".join(names) + ("," if len(names) == 1 else "") + ")"


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count_word(k: int) -> str:
    return ("one", "two", "three", "four", "five", "six")[k - 1] if 1 <= k <= 6 else str(k)


def _norm_section(spec: NormSpec, x: torch.Tensor, groups: int) -> tuple[list[str], float]:
    """explain's text for one norm: the axes it averages over (from the registry), its statistics
    and output on ``x`` by hand, and the largest difference from its builder's layer."""
    n, c, h, w = x.shape
    sizes = axis_sizes(spec, tuple(x.shape), groups)
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

    mean, var, y = norm_stats(x, spec.name, groups=groups)
    with torch.no_grad():
        ref = torch_layer(spec.name, c, groups=groups)(x)
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


def explain_text(seed: int = 0) -> tuple[str, float]:
    """The full explanation that ``normlab explain`` prints, and the largest absolute difference
    between the hand computation (:func:`norm_stats`) and the registry's layers over the norms it
    works through (those marked ``explain`` in :data:`normlab.norms.NORMS`: bn, gn, ln).

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

    # ---- what each norm costs in normlab's own model
    cfg = ModelConfig()
    add("")
    add(f"== Parameters in normlab's model (Net, default config: widths {cfg.widths}, "
        f"transition {cfg.transition}, GroupNorm groups {cfg.groups})")
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
    add(f"Largest difference from PyTorch over {', '.join(names)}: {worst:.2e} "
        f"(tolerance {TOLERANCE:g}): {status}")
    return "\n".join(out) + "\n", worst
