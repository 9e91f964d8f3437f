"""Per-epoch diagnostics: what each norm does to the activations, measured on a probe batch.

After every epoch, each run of a :class:`~normlab.train.GroupTrainer` is measured on one fixed
*probe batch* (the first :data:`PROBE_SIZE` training images, unaugmented: the same images for
every variant and seed). One row per run, epoch and layer (the columns are
:data:`normlab.runfolder.DIAGNOSTIC_COLUMNS`, the file ``diagnostics.csv`` of the run folder):

* ``in_mean``, ``in_std`` / ``out_mean``, ``out_std``: mean and standard deviation of the norm
  layer's input and output over all probe elements (eval mode: BatchNorm uses its running
  statistics, as at test time);
* ``dead_frac``: the fraction of ReLU units (channel x position) that are zero for *every* probe
  image: units that pass no signal and no gradient;
* ``weight_norm``, ``grad_norm``: L2 norms of the layer's kernel and of its gradient at the last
  training step of the epoch (loss plus penalties, before that step's update; that step's batch
  may be smaller than the others, so the gradient norm is one noisy sample). Their ratio times
  the learning rate is the relative size of one step, the *effective step*;
* ``bn_mean_gap``, ``bn_std_ratio`` (layers with running statistics only): the probe split into
  chunks of the training batch size (Ghost BatchNorm: of its virtual batch, if smaller), as a
  training step sees them; per chunk and channel the
  distance of the chunk mean from the running mean in running standard deviations, and the
  chunk's standard deviation over the running one, averaged over chunks and channels. At small
  batches the statistics a BatchNorm trains with are far from those it tests with.

A final row per run and epoch, layer ``head``, holds the classifier's weight and gradient norms.
They always measure the trained weights: with ``--ema`` (:mod:`normlab.ema`) the network that is
tested is their moving average, and these rows do not describe it.

Measuring changes nothing: no gradient, no running statistic, no random generator is touched, so
a run gives the same results with or without diagnostics (``--no-diagnostics``). The cost is one
forward pass of the probe batch per epoch.
"""

from __future__ import annotations

import math

import torch

from normlab.batches import member_inputs
from normlab.model import MultiNet
# PROBE_SIZE images: enough for stable statistics, far below an epoch's cost.
from normlab.runfolder import PROBE_SIZE, six_digits


def probe_images(train_images: torch.Tensor) -> torch.Tensor:
    """The probe batch: the first PROBE_SIZE training images (raw, as stored)."""
    return train_images[:PROBE_SIZE]


def _f(x) -> float:
    """A measure (a number or a one-element tensor) as stored."""
    return six_digits(float(x))


def _norm(t: torch.Tensor | None) -> float:
    return _f(t.detach().float().norm()) if t is not None else math.nan


def _bn_gap(x: torch.Tensor, layer: torch.nn.Module, offset: int, chunk: int
            ) -> tuple[float, float]:
    """(mean gap, std ratio) of one member's norm input ``x`` (B, C, H, W) against ``layer``'s
    running statistics of its channels; NaN for a layer without running statistics."""
    running_mean = getattr(layer, "running_mean", None)
    if running_mean is None:
        return math.nan, math.nan
    c = x.shape[1]
    rm = running_mean[offset:offset + c].float()
    rs = (layer.running_var[offset:offset + c].float() + layer.eps).sqrt()
    gaps, ratios = [], []
    for part in x.float().split(max(2, chunk)):
        if part.shape[0] < 2:
            continue
        mean = part.mean(dim=(0, 2, 3))
        std = (part.var(dim=(0, 2, 3), unbiased=False) + layer.eps).sqrt()
        gaps.append(((mean - rm).abs() / rs).mean())
        ratios.append((std / rs).mean())
    if not gaps:
        return math.nan, math.nan
    return float(torch.stack(gaps).mean()), float(torch.stack(ratios).mean())


@torch.no_grad()
def measure(multi: MultiNet, probe: torch.Tensor, mean: float, std: float,
            batch_size: int) -> list[list[dict]]:
    """Per member of ``multi``: its diagnostic rows (without variant, seed and epoch) on the
    raw ``probe`` images ``(P, 1, H, W)``. ``batch_size``: the training batch size (the chunk
    of :func:`_bn_gap`). Leaves ``multi`` in eval mode."""
    multi.eval()
    m = multi.members
    blocks = multi.blocks()
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def hook(name: str):
        def store(module, inputs, output):
            # A copy of the output: with the norm before the ReLU, an in-place ReLU follows.
            seen[name] = (inputs[0], output.clone())
        return store

    handles = [block.norm.register_forward_hook(hook(name)) for name, block in blocks]
    try:
        multi(member_inputs(probe, mean, std, multi))                      # (P, M, H, W)
    finally:
        for h in handles:
            h.remove()
    rows: list[list[dict]] = [[] for _ in range(m)]
    for name, block in blocks:
        x_in, x_out = seen[name]                                             # (P, M*C, h, w)
        c = block.norm.channels
        # The ReLU's output: the norm's input when the ReLU comes first, else after the norm.
        relu = x_in if block.act_first else torch.relu(x_out)
        grad = block.weight.grad
        for i in range(m):
            own = slice(i * c, (i + 1) * c)
            a, b = x_in[:, own].float(), x_out[:, own].float()               # (P, C, h, w)
            layer, offset = block.norm.member_layer(i)
            # Ghost BatchNorm trains on virtual batches: those are the chunks it normalizes.
            chunk = getattr(layer, "ghost_batch", None) or batch_size
            gap, ratio = _bn_gap(x_in[:, own], layer, offset, min(chunk, batch_size))
            rows[i].append({
                "layer": name,
                "in_mean": _f(a.mean()), "in_std": _f(a.std()),
                "out_mean": _f(b.mean()), "out_std": _f(b.std()),
                "dead_frac": _f((relu[:, own] <= 0).all(dim=0).float().mean()),
                "weight_norm": _norm(block.weight[own]),
                "grad_norm": _norm(grad[own] if grad is not None else None),
                "bn_mean_gap": gap, "bn_std_ratio": ratio,
            })
    head_grad = multi.head_weight.grad
    for i in range(m):
        rows[i].append({"layer": "head", "weight_norm": _norm(multi.head_weight[i]),
                        "grad_norm": _norm(head_grad[i] if head_grad is not None else None)})
    return rows


__all__ = ["PROBE_SIZE", "measure", "probe_images"]
