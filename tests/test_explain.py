"""Tests of normlab.explain: the hand-computed norms, the printed explanation and the figure.

Nothing here trains a model; the only networks built are normlab's Net for parameter counts and
one forward pass on a dummy image.
"""

from __future__ import annotations

import os
import re
import stat
import struct

import pytest
import torch
import torch.nn as nn

from normlab import explain
from normlab.axes_figure import draw_norm_axes, figure_title, stat_groups
from normlab.explain import example_tensor, explain_text, norm_stats
from normlab.model import ModelConfig, Net, count_params

from helpers import EPS, REPO, generator


def _layer(norm: str, c: int, groups: int) -> nn.Module:
    """PyTorch's reference layer, built here rather than taken from normlab.explain."""
    layer = {"bn": lambda: nn.BatchNorm2d(c, eps=EPS),
             "gn": lambda: nn.GroupNorm(groups, c, eps=EPS),
             "ln": lambda: nn.GroupNorm(1, c, eps=EPS),
             "in": lambda: nn.GroupNorm(c, c, eps=EPS)}[norm]()
    return layer.train()


# (N, C, H, W), GroupNorm groups
SHAPES = [((2, 4, 2, 2), 2), ((3, 6, 5, 7), 3), ((8, 16, 4, 4), 4), ((1, 8, 3, 3), 2),
          ((5, 2, 1, 9), 1)]


@pytest.mark.parametrize("norm", ["bn", "gn", "ln", "in"])
@pytest.mark.parametrize("shape,groups", SHAPES)
def test_norm_stats_equals_pytorch_layers(norm, shape, groups):
    """The hand computation's normalized output equals nn.BatchNorm2d (training mode),
    nn.GroupNorm(G, C), nn.GroupNorm(1, C) and nn.GroupNorm(C, C) at default affine, for several
    shapes and values far from zero mean / unit variance."""
    x = torch.randn(shape, generator=generator(sum(shape) * 31 + groups)) * 3.0 + 1.5
    _, _, y = norm_stats(x, norm, groups=groups)
    with torch.no_grad():
        ref = _layer(norm, shape[1], groups)(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref)


def test_batchnorm_batch_mean_matches_running_mean_update():
    """BatchNorm's hand mean is the batch mean the layer uses: with momentum 0.1 from a zero
    running mean, the layer's running mean after one training step is 0.1 * that mean."""
    x = torch.randn((4, 3, 5, 5), generator=generator(7)) + 2.0
    mean, _, _ = norm_stats(x, "bn")
    layer = _layer("bn", 3, 1)
    with torch.no_grad():
        layer(x)
    torch.testing.assert_close(layer.running_mean, 0.1 * mean)


@pytest.mark.parametrize(("n", "ghost"), [(8, 2), (12, 4), (6, 6), (4, 16)])
def test_gbn_hand_computation_equals_its_layer_and_the_definition(n, ghost):
    """gbn's hand computation from the registry's axes (N cut into V = N/ghost virtual batches,
    averaged over (N/V, H, W)) gives statistics of shape (V, C) that are each virtual batch's
    per-channel mean and biased variance, and the output of the registry's GhostBatchNorm2d."""
    c = 3
    x = torch.randn((n, c, 3, 4), generator=generator(n + ghost)) * 2 + 1
    x = x * torch.arange(1, n + 1, dtype=x.dtype).view(n, 1, 1, 1)   # batches differ in scale
    mean, var, y = norm_stats(x, "gbn", ghost_batch=ghost)
    per = min(ghost, n)
    assert tuple(mean.shape) == tuple(var.shape) == (n // per, c)
    for v in range(n // per):
        chunk = x[v * per:(v + 1) * per]
        for ch in range(c):
            values = chunk[:, ch]
            torch.testing.assert_close(mean[v, ch], values.mean())
            torch.testing.assert_close(var[v, ch], ((values - values.mean()) ** 2).mean())
    with torch.no_grad():
        layer = explain.torch_layer("gbn", c, ghost_batch=ghost)
        torch.testing.assert_close(y, layer(x))
    if per == n:   # one virtual batch: BatchNorm
        torch.testing.assert_close(y, norm_stats(x, "bn")[2])


def test_gbn_hand_computation_needs_equal_virtual_batches():
    """The hand computation reshapes N into (V, N/V): a ghost batch that neither divides N nor
    covers it is a ValueError saying so (the layer itself takes a smaller last one)."""
    with pytest.raises(ValueError, match="virtual batches of 4 images do not divide 6 images"):
        norm_stats(torch.zeros(6, 2, 2, 2), "gbn", ghost_batch=4)


def test_statistics_have_the_documented_shapes():
    """Mean and variance have shape (C,) for bn, (N, G) for gn, (N,) for ln, (N, C) for in and
    (V, C) for gbn."""
    n, c, h, w, g = 4, 6, 4, 5, 3
    x = torch.randn((n, c, h, w), generator=generator(1))
    expected = {"bn": (c,), "gn": (n, g), "ln": (n,), "in": (n, c), "gbn": (2, c)}
    for norm, shape in expected.items():
        mean, var, y = norm_stats(x, norm, groups=g, ghost_batch=2)
        assert tuple(mean.shape) == shape, norm
        assert tuple(var.shape) == shape, norm
        assert y.shape == x.shape


def test_statistics_are_over_the_right_axes_with_biased_variance():
    """On a hand-checkable tensor, each statistic is the mean and the biased variance (divide by
    the count) over the documented axes: bn over (N, H, W), gn over (C/G, H, W), ln over (C, H, W)."""
    # x[n, c, 0, :] = [v, v + 2] with v = 10*n + c: every channel of every image has spread 1.
    x = torch.zeros(2, 4, 1, 2)
    for n in range(2):
        for c in range(4):
            x[n, c, 0] = torch.tensor([10.0 * n + c, 10.0 * n + c + 2])
    mean, var, _ = norm_stats(x, "bn")
    torch.testing.assert_close(mean, torch.tensor([6.0, 7.0, 8.0, 9.0]))
    torch.testing.assert_close(var, torch.tensor([26.0, 26.0, 26.0, 26.0]))  # c=0: 0, 2, 10, 12 around 6
    mean, var, _ = norm_stats(x, "gn", groups=2)
    torch.testing.assert_close(mean, torch.tensor([[1.5, 3.5], [11.5, 13.5]]))
    torch.testing.assert_close(var, torch.full((2, 2), 1.25))  # values 0,2,1,3 around 1.5
    mean, var, _ = norm_stats(x, "ln")
    torch.testing.assert_close(mean, torch.tensor([2.5, 12.5]))
    torch.testing.assert_close(var, torch.full((2,), 2.25))  # 0,2,1,3,2,4,3,5: 18 / 8, not 18 / 7


def test_norm_stats_rejects_bad_input():
    """An unknown norm, a norm without statistics (none), a group count that does not divide C,
    or a non-4-D tensor is a ValueError."""
    x = torch.zeros(2, 4, 2, 2)
    with pytest.raises(ValueError, match="unknown norm"):
        norm_stats(x, "xx")
    with pytest.raises(ValueError, match="no statistics"):
        norm_stats(x, "none")
    with pytest.raises(ValueError, match="groups"):
        norm_stats(x, "gn", groups=3)
    with pytest.raises(ValueError, match="N, C, H, W"):
        norm_stats(torch.zeros(2, 4), "bn")


def test_figure_titles_and_legends_come_from_the_registry():
    """Each panel's title and legend are derived from the norm's registry axes: bn one colour per
    channel, gn one per image and group (G from --groups), ln one per image, in one per image and
    channel."""
    assert figure_title("bn") == "BatchNorm: one mean per channel (over N, H, W)"
    assert figure_title("gn", 4, 2) == "GroupNorm (G=2): one mean per image and group"
    assert figure_title("gn", 8, 4) == "GroupNorm (G=4): one mean per image and group"
    assert figure_title("ln") == "LayerNorm: one mean per image (over C, H, W)"
    assert stat_groups("bn", 2, 3, 1) == (
        [[0, 1, 2], [0, 1, 2]], ["channel c=0", "channel c=1", "channel c=2"])
    assert stat_groups("gn", 2, 4, 2) == (
        [[0, 0, 1, 1], [2, 2, 3, 3]], ["n=0, group 0", "n=0, group 1", "n=1, group 0", "n=1, group 1"])
    assert stat_groups("ln", 2, 2, 1) == ([[0, 0], [1, 1]], ["image n=0", "image n=1"])
    assert stat_groups("in", 2, 2, 1) == (
        [[0, 1], [2, 3]], ["n=0, c=0", "n=0, c=1", "n=1, c=0", "n=1, c=1"])
    assert figure_title("gbn") == "Ghost BatchNorm: one mean per virtual batch and channel"
    assert stat_groups("gbn", 4, 2, 1, ghost_batch=2) == (
        [[0, 1], [0, 1], [2, 3], [2, 3]],
        ["virtual batch 0, c=0", "virtual batch 0, c=1", "virtual batch 1, c=0",
         "virtual batch 1, c=1"])


def test_explain_text_works_through_the_registrys_explained_norms():
    """The text's sections, title line and closing line follow the registry's explained norms
    (bn, gn and ln, in registry order), then weight standardization and Ghost BatchNorm on its
    own example; in and none are not worked through."""
    text, _ = explain_text(0)
    assert text.startswith("How BatchNorm, GroupNorm and LayerNorm normalize:")
    assert [line[3:].split("  ")[0] for line in text.splitlines() if line.startswith("== ")][:3] \
        == ["BatchNorm", "GroupNorm", "LayerNorm"]
    assert "InstanceNorm" not in text
    assert [line[3:].split("  ")[0] for line in text.splitlines() if line.startswith("== ")][3:5] \
        == ["Weight Standardization", "Ghost BatchNorm"]
    assert "Largest difference from PyTorch over bn, gn, ln, +ws, gbn:" in text


def test_standardize_by_hand_is_the_definition():
    """explain's hand weight standardization: per output channel, the mean and biased variance
    of its C_in*kH*kW weights, then (w - mean) / sqrt(var + 1e-5); equal to the layer's."""
    from normlab.layers import standardize_weight

    w = torch.randn((3, 2, 3, 3), generator=generator(21), dtype=torch.float64) * 0.5 + 0.2
    mean, var, w_hat = explain.standardize_by_hand(w)
    for o in range(3):
        values = w[o].flatten()
        torch.testing.assert_close(mean[o], values.mean())
        torch.testing.assert_close(var[o], values.var(unbiased=False))
        torch.testing.assert_close(w_hat[o], (w[o] - values.mean())
                                   / torch.sqrt(values.var(unbiased=False) + 1e-5))
    torch.testing.assert_close(w_hat, standardize_weight(w))


def test_explain_text_works_weight_standardization_through():
    """The text has a weight-standardization section after the norms: the definition, the
    seeded kernel, its per-output-channel statistics, the standardized kernel, the check against
    WSConv2d (OK), and the parameter line saying +ws adds none."""
    text, diff = explain_text(0)
    assert diff < 1e-5
    section = text.split("== Weight Standardization", 1)[1].split("\n== ", 1)[0]
    kernel = example_tensor(1, (2, 4, 2, 2))
    mean, var, _ = explain.standardize_by_hand(kernel)
    for needle in ("(C_in, kH, kW) = dims (1, 2, 3)", "biased variance",
                   "sqrt(var[o] + 1e-05)", "shape (2, 4, 2, 2) (seed 1",
                   "mean shape (2,) = (C_out,): [" + ", ".join(f"{v:.3f}" for v in mean.tolist()),
                   "var  shape (2,) = (C_out,): [" + ", ".join(f"{v:.3f}" for v in var.tolist()),
                   "standardized W_hat:", "OK"):
        assert needle in section, needle
    total = count_params(Net(norm="bn"))
    assert count_params(Net(ModelConfig(norm="bn", ws=True))) == total
    assert "With +ws (bn+ws, gn+ws, ln+ws): the same counts" in text


def test_a_wrong_weight_standardization_is_caught(monkeypatch):
    """If the hand standardization used the unbiased variance, explain_text's difference exceeds
    1e-5 and the text says MISMATCH, so the CLI exits with 1."""

    def unbiased(w, eps=1e-5):
        rows = w.reshape(w.shape[0], -1)
        mean, var = rows.mean(dim=1), rows.var(dim=1, unbiased=True)
        return mean, var, ((rows - mean[:, None]) / torch.sqrt(var[:, None] + eps)).reshape(w.shape)

    monkeypatch.setattr(explain, "standardize_by_hand", unbiased)
    text, diff = explain_text(0)
    assert diff > 1e-5 and "MISMATCH" in text


def test_example_tensor_is_seeded_and_rounded():
    """The printed example is (2, 4, 2, 2), the same for one seed, different for another, and
    every value has at most one decimal."""
    a, b, c = example_tensor(0), example_tensor(0), example_tensor(1)
    assert tuple(a.shape) == (2, 4, 2, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a * 10, torch.round(a * 10), rtol=0, atol=1e-4)


def _independent_layernorm_chw_total(size: int = 28) -> int:
    """2*C*H*W summed over the norm layers of the default Net, from the architecture's arithmetic
    (3x3 valid convs shrink by 2; the 2x2 max pool after conv1's ReLU halves, before its norm)."""
    cfg = ModelConfig()
    assert cfg.full_res == 1 and cfg.transition == 0   # the architecture this arithmetic follows
    w, shapes = cfg.widths, []
    s = (size - 2) // 2
    shapes.append((w[0], s))                     # conv1, pooled
    for cout in w[1:]:
        s -= 2
        shapes.append((cout, s))                 # conv3, conv4, ...
    # Count by building the real per-element layers.
    return sum(count_params(nn.LayerNorm([c, s, s])) for c, s in shapes)


def test_norm_layer_shapes_follow_the_architecture():
    """The hooked (C, H, W) of each norm layer match the architecture's size arithmetic."""
    shapes = explain.norm_layer_shapes(28)
    assert [s for _, s in shapes] == [(8, 13, 13), (16, 11, 11), (16, 9, 9), (16, 7, 7),
                                     (12, 5, 5)]
    assert sum(2 * c * h * w for _, (c, h, w) in shapes) == _independent_layernorm_chw_total()


def test_explain_text_matches_pytorch_and_explains_each_norm():
    """explain_text's max difference is below 1e-5, and its text names each norm, the axes each
    averages over, the statistics' shapes, and each norm's parameter counts in the model."""
    text, diff = explain_text(0)
    assert 0 <= diff < 1e-5
    for needle in ("BatchNorm", "GroupNorm", "LayerNorm", "nn.BatchNorm2d(4)", "nn.GroupNorm(2, 4)",
                   "nn.GroupNorm(1, 4)", "(N, H, W)", "(C/G, H, W)", "(C, H, W)",
                   "shape (4,) = (C,)", "shape (2, 2) = (N, G)", "shape (2,) = (N,)",
                   "biased variance", "all match"):
        assert needle in text, needle
    assert "MISMATCH" not in text
    for norm in ("bn", "gn", "ln"):
        model = Net(norm=norm)
        total = count_params(model)
        norm_params = sum(count_params(m) for m in model.modules()
                          if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)))
        assert f"{norm}: {total:,} parameters, of which norm layers {norm_params:,}" in text


def test_explain_text_reports_the_layernorm_chw_parameter_total():
    """The text states what per-element nn.LayerNorm([C, H, W]) would add to normlab's model for a
    28x28 input, and that number equals a count made independently here."""
    text, _ = explain_text(0)
    total = _independent_layernorm_chw_total()
    assert total > 10_000  # tens of thousands, against 144 for GroupNorm(1, C)
    assert f"nn.LayerNorm([C, H, W]) would add {total:,} parameters" in text


def test_explain_text_is_deterministic_for_a_seed():
    """The same seed gives the same text; another seed gives another example."""
    assert explain_text(3)[0] == explain_text(3)[0]
    assert explain_text(3)[0] != explain_text(4)[0]


def test_a_wrong_hand_computation_is_caught(monkeypatch):
    """If norm_stats used the unbiased variance (n - 1), explain_text's returned max difference
    exceeds 1e-5 and the text says MISMATCH, so the CLI's exit-code check can fail."""

    def unbiased(x, norm, groups=2, eps=EPS, ghost_batch=16):
        n, c, h, w = x.shape
        if norm == "bn":
            xs, dims, shape = x, (0, 2, 3), x.shape
        elif norm == "gn":
            xs, dims, shape = x.reshape(n, groups, c // groups, h, w), (2, 3, 4), x.shape
        else:
            xs, dims, shape = x, (1, 2, 3), x.shape
        mean = xs.mean(dim=dims, keepdim=True)
        var = xs.var(dim=dims, keepdim=True, unbiased=True)
        y = ((xs - mean) / torch.sqrt(var + eps)).reshape(shape)
        return mean.squeeze(), var.squeeze(), y

    monkeypatch.setattr(explain, "norm_stats", unbiased)
    text, diff = explain_text(0)
    assert diff > 1e-5
    assert "MISMATCH" in text and "DIFFERENCE ABOVE TOLERANCE" in text


def test_a_nan_hand_computation_is_caught(monkeypatch):
    """A hand computation that yields NaN (e.g. dividing by a zero variance) counts as an infinite
    difference, never as a match."""
    real = explain.norm_stats

    def with_nan(x, norm, groups=2, eps=EPS, ghost_batch=16):
        mean, var, y = real(x, norm, groups=groups, eps=eps, ghost_batch=ghost_batch)
        return mean, var, y * float("nan")

    monkeypatch.setattr(explain, "norm_stats", with_nan)
    text, diff = explain_text(0)
    assert diff == float("inf")
    assert "MISMATCH" in text


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_draw_norm_axes_writes_a_png(tmp_path):
    """draw_norm_axes writes a PNG (magic bytes) of sensible pixel and byte size and, next to it,
    its SVG (the default formats); creates missing folders, replaces existing files, leaves no
    temporary file behind and gives ordinary file permissions."""
    path = tmp_path / "sub" / "norms.png"
    out = draw_norm_axes(path)
    assert out == path and path.exists()
    data = path.read_bytes()
    width, height = _png_size(data)
    assert 800 <= width <= 4000 and 300 <= height <= 3000
    assert width > height  # three panels side by side
    assert 10_000 < len(data) < 5_000_000
    draw_norm_axes(path)  # overwrite in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["norms.png", "norms.svg"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not mkstemp's private 0600


def test_draw_norm_axes_leaves_no_file_when_saving_fails(tmp_path, monkeypatch):
    """If rendering fails half-way, neither the target nor a temporary file is left behind."""
    import matplotlib.figure

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        draw_norm_axes(tmp_path / "norms.png")
    assert list(tmp_path.iterdir()) == []


def test_explain_text_works_ghost_batchnorm_through():
    """`normlab explain` computes Ghost BatchNorm by hand on its own 4-image example in virtual
    batches of 2: one mean per virtual batch and channel, shape (V, C) = (2, 4), equal to the
    layer's output; the closing line names gbn among the norms checked."""
    text, worst = explain_text(seed=0)
    section = text.split("== Ghost BatchNorm", 1)[1].split("\n== ", 1)[0]
    assert "virtual batches of 2" in section
    assert "mean shape (2, 4) = (V, C)" in section
    assert "OK" in section and "MISMATCH" not in section
    assert worst <= explain.TOLERANCE
    assert "+ws, gbn" in text.strip().splitlines()[-1]


def _without_rounding_errors(text: str) -> str:
    """``text`` with the measured differences from PyTorch blanked: they depend on the CPU's
    kernels (a few e-07 here), everything else in the explanation does not."""
    return re.sub(r"= \d\.\d\de-\d\d|: \d\.\d\de-\d\d", "= <diff>", text)


def test_committed_explain_txt_is_what_explain_prints_now():
    """results/explain.txt, which README quotes as the full output, is what ``normlab explain``
    prints for the default model today (parameter counts, shapes, statistics), up to the
    floating-point differences it measures."""
    committed = (REPO / "results" / "explain.txt").read_text()
    text, _ = explain_text(0)
    assert _without_rounding_errors(committed) == _without_rounding_errors(text)


def test_the_parameter_line_names_the_transition_conv(monkeypatch) -> None:
    """The heading of explain's parameter section describes the model's 1x1 transition conv:
    "no 1x1 transition conv" for the default, its width otherwise, the rest of the line kept."""
    from normlab.config import ModelConfig

    text, _ = explain.explain_text(0)
    assert ("== Parameters in normlab's model (Net, default config: widths (8, 16, 16, 16, 12), "
            "no 1x1 transition conv, GroupNorm groups 4)") in text
    monkeypatch.setattr(explain, "ModelConfig", lambda **kw: ModelConfig(**{"transition": 8, **kw}))
    text, _ = explain.explain_text(0)
    assert ("== Parameters in normlab's model (Net, default config: widths (8, 16, 16, 16, 12), "
            "a 1x1 transition conv to 8 channels, GroupNorm groups 4)") in text

