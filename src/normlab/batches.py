"""The dataset as one tensor on the device, batches from a seeded randperm, batch augmentation.

No DataLoader: MNIST fits in memory many times over, and per-sample Python work would cost more
than the network itself. Everything here runs on whole batches on the training device.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class DeviceSplit:
    """One split, resident on the device. ``images`` are float in [0, 1], ``(N, 1, H, W)``."""

    images: torch.Tensor  # (N, 1, H, W) float32
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.shape[0]


def to_device_split(images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> DeviceSplit:
    """uint8 images ``(N, H, W)`` -> a :class:`DeviceSplit` on ``device``, scaled once to [0, 1]."""
    x = images.to(device).unsqueeze(1).float().div_(255.0)  # (N, 1, H, W)
    return DeviceSplit(x.contiguous(), labels.to(device=device, dtype=torch.long))


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """Start/stop offsets of the batches of an epoch of ``n`` samples.

    A final batch of a single sample is merged into the one before it, so BatchNorm never
    normalizes a batch of one (its variance would be zero and its output meaningless).
    """
    bounds = [(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
        start, _ = bounds.pop(-2)
        bounds[-1] = (start, n)
    return bounds


def random_transforms(b: int, generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """The random numbers :func:`augment` draws for ``b`` images: uniform in [-1, 1], ``(B, 3)``."""
    return torch.rand(b, 3, generator=generator, device=like.device, dtype=like.dtype) * 2 - 1


def augment(x: torch.Tensor, generator: torch.Generator | None, rotate: float, translate: float,
            u: torch.Tensor | None = None) -> torch.Tensor:
    """Random rotation (uniform in +-``rotate`` degrees) and shift (+-``translate`` pixels) per image.

    One ``affine_grid`` + ``grid_sample`` for the whole batch ``(B, C, H, W)``. Pixels shifted in
    from outside are 0, the background of un-normalized MNIST. ``u`` (from
    :func:`random_transforms`) replaces the draws from ``generator``.
    """
    if rotate == 0 and translate == 0:
        return x
    b, _, h, w = x.shape
    if u is None:
        u = random_transforms(b, generator, x)  # (B, 3)
    angle = u[:, 0] * math.radians(rotate)
    cos, sin = angle.cos(), angle.sin()
    # affine_grid works in [-1, 1] coordinates: a shift of p pixels is 2p/W (or 2p/H).
    tx, ty = u[:, 1] * (2 * translate / w), u[:, 2] * (2 * translate / h)
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)  # (B, 2, 3)
    # What F.affine_grid computes, as one (2B, 3) x (3, H*W) matmul: affine_grid does B tiny
    # batched matmuls and costs ~20x more on a CPU, a tenth of a training step.
    grid = (theta.reshape(b * 2, 3) @ _base_grid(h, w, x.device, x.dtype))  # (2B, H*W)
    grid = grid.view(b, 2, h, w).permute(0, 2, 3, 1)                       # (B, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@functools.lru_cache(maxsize=8)
def _base_grid(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Pixel centres in [-1, 1] (align_corners=False) as rows (x, y, 1): ``(3, H*W)``. Cached:
    made once per image size and device, not in every step."""
    xs = (torch.arange(w, device=device, dtype=dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=device, dtype=dtype) * 2 + 1) / h - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones_like(gx).reshape(-1)])


def member_inputs(images: torch.Tensor, mean: float, std: float, net) -> torch.Tensor:
    """The same images ``(B, 1, H, W)``, normalized, as the input of every member of ``net``
    (a :class:`~normlab.model.MultiNet`): ``(B, M, H, W)`` in its memory format. What
    evaluation, the diagnostics' probe and the averaged weights' BatchNorm pass feed it."""
    x = (images - mean) / std                                                  # (B, 1, H, W)
    return x.expand(-1, net.members, -1, -1).contiguous(memory_format=net.memory_format)


STATS_CHUNK = 4096   # images per float64 chunk of split_stats (a few MB on the host at a time)


def split_stats(split: DeviceSplit) -> tuple[float, float]:
    """Mean and (sample) standard deviation of all pixels, used to normalize every split the same
    way, each rounded to float32.

    Summed in float64, chunk by chunk in a fixed order, on the host (MPS has no float64): a
    float32 ``x.mean()`` is a parallel sum whose last bits depend on the number of threads (on
    a small split 1 and 2 threads disagree), so the same data could be normalized differently on
    another machine or with another ``--ray-cpus``. The float64 sums round to the same float32
    value whatever the thread count; for MNIST (all of it, with ``--val 10000``, the experiments'
    first 10,000 images) that value is the float32 result normlab recorded before."""
    x = split.images

    def chunks():
        for i in range(0, len(x), STATS_CHUNK):
            yield x[i:i + STATS_CHUNK].to("cpu", torch.float64)

    n = x.numel()
    mean = math.fsum(float(c.sum()) for c in chunks()) / n
    var = math.fsum(float((c - mean).square().sum()) for c in chunks()) / (n - 1)
    mean32, std32 = torch.tensor([mean, math.sqrt(var)], dtype=torch.float32).tolist()
    return mean32, std32
