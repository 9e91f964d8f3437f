"""Tests of normlab.layers against the papers' definitions, computed by hand here.

Ghost BatchNorm (Hoffer et al. 2017): in training mode, BatchNorm statistics per channel over each
virtual batch of ``ghost_batch`` consecutive images (biased variance to normalize); the running
statistics are updated once per virtual batch, in order, with its mean and unbiased variance; at
eval the running statistics, as BatchNorm. Weight standardization (Qiao et al. 2019): each output
channel's kernel minus its mean over (C_in, kH, kW), divided by sqrt(biased variance + 1e-5).
"""

from __future__ import annotations

import pytest
from helpers import EPS, generator
import torch
import torch.nn as nn
import torch.nn.functional as F

from normlab.layers import WS_EPS, GhostBatchNorm2d, WSConv2d, standardize_weight
from normlab.model import ConvNormAct, ModelConfig, Net, count_params

MOMENTUM = 0.1    # BatchNorm2d's default momentum


def _randomize(m: nn.Module, g: torch.Generator) -> None:
    """gamma, beta and the running statistics far from their initial 1, 0, 0, 1."""
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=m.weight.dtype) * 2 + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
        m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g, dtype=m.bias.dtype))
        m.running_var.copy_(torch.rand(m.running_var.shape, generator=g, dtype=m.bias.dtype) + 0.5)


def _ghost_by_hand(x: torch.Tensor, chunks: list[int], gamma, beta, mean0, var0,
                   momentum: float = MOMENTUM):
    """The paper's definition, written out: each virtual batch (``chunks`` consecutive images)
    normalized per channel with its own mean and biased variance over (images, H, W); the
    running mean and variance updated once per virtual batch, in order, with its mean and
    unbiased variance (BatchNorm's rule per batch). Returns (y, running mean, running var)."""
    ys, rm, rv, start = [], mean0.clone(), var0.clone(), 0
    for size in chunks:
        v = x[start:start + size]
        count = v.shape[0] * v.shape[2] * v.shape[3]
        mean = v.sum(dim=(0, 2, 3)) / count
        sq = ((v - mean.view(1, -1, 1, 1)) ** 2).sum(dim=(0, 2, 3))
        y = (v - mean.view(1, -1, 1, 1)) / torch.sqrt(sq / count + EPS).view(1, -1, 1, 1)
        ys.append(y * gamma.view(1, -1, 1, 1) + beta.view(1, -1, 1, 1))
        rm = (1 - momentum) * rm + momentum * mean
        rv = (1 - momentum) * rv + momentum * sq / (count - 1)
        start += size
    assert start == x.shape[0]
    return torch.cat(ys), rm, rv


# ----------------------------------------------------------------------------------------------
# Ghost BatchNorm


@pytest.mark.parametrize(("n", "ghost", "chunks"), [
    (12, 4, [4, 4, 4]),     # a multiple
    (10, 4, [4, 4, 2]),     # a smaller last virtual batch
    (9, 4, [4, 5]),         # a last one of a single image joins the one before it
    (7, 2, [2, 2, 3]),
])
def test_gbn_training_matches_hand_computation(n, ghost, chunks) -> None:
    """Training mode: each virtual batch is normalized with its own per-channel mean and biased
    variance, then gamma and beta; the running mean and variance follow one BatchNorm update per
    virtual batch (unbiased variance), and num_batches_tracked counts the virtual batches."""
    g = generator(n * 10 + ghost)
    x = torch.randn(n, 3, 4, 5, generator=g, dtype=torch.float64) * 3 + 1
    x = x * torch.arange(1, n + 1, dtype=torch.float64).view(n, 1, 1, 1)   # chunks differ in scale
    m = GhostBatchNorm2d(3, ghost_batch=ghost).double().train()
    _randomize(m, g)
    want_y, want_rm, want_rv = _ghost_by_hand(x, chunks, m.weight.detach(), m.bias.detach(),
                                              m.running_mean.clone(), m.running_var.clone())
    assert m.virtual_batches(n) == [(sum(chunks[:i]), sum(chunks[:i + 1]))
                                    for i in range(len(chunks))]
    torch.testing.assert_close(m(x), want_y)
    torch.testing.assert_close(m.running_mean, want_rm)
    torch.testing.assert_close(m.running_var, want_rv)
    assert int(m.num_batches_tracked) == len(chunks)


@pytest.mark.parametrize(("n", "ghost"), [(8, 8), (8, 9), (8, 128), (2, 16)])
def test_gbn_with_one_virtual_batch_is_batchnorm(n, ghost) -> None:
    """With ghost_batch >= the batch size there is one virtual batch, and GhostBatchNorm2d gives
    nn.BatchNorm2d's outputs, gradients and running statistics over two training steps, then its
    eval outputs."""
    g = generator(n + ghost)
    bn = nn.BatchNorm2d(4)
    _randomize(bn, g)
    gbn = GhostBatchNorm2d(4, ghost_batch=ghost)
    gbn.load_state_dict(bn.state_dict())
    for step in range(2):
        x = torch.randn(n, 4, 3, 3, generator=g) * 2 - 1
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = bn.train()(xa), gbn.train()(xb)
        torch.testing.assert_close(yb, ya)
        w = torch.randn(ya.shape, generator=g)
        (ya * w).sum().backward()
        (yb * w).sum().backward()
        torch.testing.assert_close(xb.grad, xa.grad)
        torch.testing.assert_close(gbn.weight.grad, bn.weight.grad)
        for key, value in bn.state_dict().items():
            torch.testing.assert_close(gbn.state_dict()[key], value, msg=f"step {step}: {key}")
    x = torch.randn(n, 4, 3, 3, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(gbn.eval()(x), bn.eval()(x))


def test_gbn_eval_uses_the_running_statistics() -> None:
    """Eval mode: (x - running_mean) / sqrt(running_var + eps) * gamma + beta for any batch,
    whatever the ghost batch, and no running statistic changes."""
    g = generator(5)
    m = GhostBatchNorm2d(3, ghost_batch=2).double()
    _randomize(m, g)
    m.eval()
    x = torch.randn(7, 3, 2, 4, generator=g, dtype=torch.float64) * 4
    before = {k: v.clone() for k, v in m.state_dict().items()}
    view = (1, -1, 1, 1)
    want = ((x - m.running_mean.view(view)) / torch.sqrt(m.running_var.view(view) + EPS)
            * m.weight.view(view) + m.bias.view(view))
    torch.testing.assert_close(m(x), want)
    for key, value in m.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_gbn_momentum_none_averages_over_virtual_batches() -> None:
    """With momentum=None (BatchNorm's cumulative average), the running mean after one training
    batch is the plain average of its virtual batches' means, and the running variance that of
    their unbiased variances."""
    g = generator(6)
    x = torch.randn(12, 2, 3, 3, generator=g, dtype=torch.float64) * 2 + 3
    m = GhostBatchNorm2d(2, ghost_batch=4, momentum=None).double().train()
    m(x)
    chunks = x.view(3, 4, 2, 3, 3)
    means = chunks.mean(dim=(1, 3, 4))                                  # (V, C)
    variances = chunks.transpose(1, 2).reshape(3, 2, -1).var(dim=2)     # unbiased, (V, C)
    torch.testing.assert_close(m.running_mean, means.mean(dim=0))
    torch.testing.assert_close(m.running_var, variances.mean(dim=0))


def test_gbn_image_depends_only_on_its_virtual_batch() -> None:
    """In training mode an image's output depends on the images of its own virtual batch only:
    changing the second virtual batch leaves the first one's outputs as they were."""
    g = generator(7)
    m = GhostBatchNorm2d(3, ghost_batch=4).train()
    x = torch.randn(8, 3, 3, 3, generator=g)
    y = torch.randn(8, 3, 3, 3, generator=g)
    y[:4] = x[:4]
    with torch.no_grad():
        a, b = m(x), m(y)
    torch.testing.assert_close(a[:4], b[:4])
    assert not torch.allclose(a[4:], b[4:])


def test_gbn_has_batchnorms_parameters_and_state() -> None:
    """GhostBatchNorm2d has BatchNorm2d's 2*C parameters and state_dict keys (so checkpoints and
    MultiNet's bookkeeping treat it as BatchNorm), and rejects a ghost batch below 1."""
    gbn, bn = GhostBatchNorm2d(6, ghost_batch=3), nn.BatchNorm2d(6)
    assert count_params(gbn) == count_params(bn) == 12
    assert gbn.state_dict().keys() == bn.state_dict().keys()
    assert "ghost_batch=3" in repr(gbn)
    with pytest.raises(ValueError, match="ghost_batch"):
        GhostBatchNorm2d(6, ghost_batch=0)


# ----------------------------------------------------------------------------------------------
# Weight standardization


def _standardize_by_loop(w: torch.Tensor) -> torch.Tensor:
    """Qiao et al.'s definition, one output channel at a time: mean and biased variance of its
    C_in*kH*kW weights, then (w - mean) / sqrt(var + 1e-5)."""
    out = torch.empty_like(w)
    for o in range(w.shape[0]):
        k = w[o]
        mean = k.sum() / k.numel()
        var = ((k - mean) ** 2).sum() / k.numel()
        out[o] = (k - mean) / torch.sqrt(var + 1e-5)
    return out


def test_standardize_weight_matches_the_definition() -> None:
    """standardize_weight equals the per-output-channel definition, eps 1e-5 inside the square
    root, and leaves each output channel's kernel with mean 0 and biased variance var/(var+eps)."""
    assert WS_EPS == 1e-5
    w = torch.randn(5, 3, 3, 3, generator=generator(8), dtype=torch.float64) * 0.3 + 0.1
    got = standardize_weight(w)
    torch.testing.assert_close(got, _standardize_by_loop(w))
    rows = got.reshape(5, -1)
    var = w.reshape(5, -1).var(dim=1, unbiased=False)
    torch.testing.assert_close(rows.mean(dim=1), torch.zeros(5, dtype=torch.float64))
    torch.testing.assert_close(rows.var(dim=1, unbiased=False), var / (var + 1e-5))


@pytest.mark.parametrize(("stride", "bias"), [(1, True), (2, False)])
def test_ws_conv_convolves_with_the_standardized_kernel(stride, bias) -> None:
    """WSConv2d's output is the convolution with the hand-standardized kernel (plus its bias);
    its gradients are those of that formula; the stored weight is never changed."""
    g = generator(9 + stride)
    conv = WSConv2d(3, 4, 3, stride=stride, bias=bias).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64) * 2 + 1)
    stored = conv.weight.detach().clone()
    x = torch.randn(2, 3, 9, 9, generator=g, dtype=torch.float64)
    w = stored.clone().requires_grad_()
    want = F.conv2d(x, _standardize_by_loop(w), conv.bias, stride=stride)
    got = conv(x)
    torch.testing.assert_close(got, want)
    weights = torch.randn(got.shape, generator=g, dtype=torch.float64)
    (got * weights).sum().backward()
    (want * weights).sum().backward()
    torch.testing.assert_close(conv.weight.grad, w.grad)
    assert torch.equal(conv.weight.detach(), stored)


def test_ws_conv_ignores_the_kernels_scale_and_offset() -> None:
    """The paper's point: scaling an output channel's kernel by a positive number or shifting it
    by a constant does not change the output (up to eps, negligible for these weights)."""
    g = generator(11)
    conv = WSConv2d(2, 3, 3, bias=False).double()
    x = torch.randn(2, 2, 6, 6, generator=g, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=torch.float64) * 10)
        before = conv(x)
        conv.weight.mul_(torch.tensor([3.0, 0.5, 7.0], dtype=torch.float64).view(3, 1, 1, 1))
        conv.weight.add_(torch.tensor([1.0, -2.0, 0.3], dtype=torch.float64).view(3, 1, 1, 1))
        torch.testing.assert_close(conv(x), before, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("norm", ["gn", "bn", "none"])
def test_net_with_ws_is_the_net_with_standardized_kernels(norm) -> None:
    """Net with ws: every conv block's conv is a WSConv2d, the state_dict keys and parameter count
    are those without ws, and the logits equal those of the plain Net whose conv kernels are
    replaced by their hand-standardized versions."""
    torch.manual_seed(0)
    ws = Net(ModelConfig(norm=norm, ws=True))
    plain = Net(ModelConfig(norm=norm))
    assert ws.state_dict().keys() == plain.state_dict().keys()
    assert count_params(ws) == count_params(plain)
    blocks = [m for m in ws.modules() if isinstance(m, ConvNormAct)]
    assert blocks and all(isinstance(b.conv, WSConv2d) for b in blocks)
    state = ws.state_dict()
    for key in state:
        if key.endswith("conv.weight"):
            state[key] = _standardize_by_loop(state[key])
    plain.load_state_dict(state)
    x = torch.randn(6, 1, 28, 28, generator=generator(12))
    for mode in ("train", "eval"):
        with torch.no_grad():
            torch.testing.assert_close(getattr(ws, mode)()(x), getattr(plain, mode)()(x),
                                       rtol=1e-4, atol=1e-5, msg=lambda s: f"{mode}: {s}")
