"""``--ema``: the exponential moving average of a network's weights that a run evaluates and
saves in place of the trained weights, and the BatchNorm statistics of that average.

After the trained network's update t (0, 1, 2, ...) the average moves towards it,
``e <- d_t * e + (1 - d_t) * w`` with ``d_t = min(D, (1 + t) / (10 + t))``, starting from the
initial weights: the rule of TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``, so
the first epochs' average follows the fast-changing weights instead of carrying the initial ones.
D is a cap, reached at update (10 D - 1) / (1 - D): 8,990 for D = 0.999 (a default 20-epoch run
has 9,380 steps), 89,990 for 0.9999. Hand-written rather than
``torch.optim.swa_utils.AveragedModel`` because that keeps its update count in a tensor and reads
it at every step, which on a GPU makes the host wait for the step; here an update is one
``torch._foreach_lerp_`` over all parameters and the count is a Python int.

BatchNorm's running statistics belong to the weights that produced them, so they are not
averaged: before each evaluation :meth:`WeightAverage.evaluated` recomputes them for the
averaged weights with torch's ``update_bn`` (a plain average over batches) from the first
:data:`BN_IMAGES` training images, not augmented.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch.optim.swa_utils import update_bn

from normlab.batches import batch_bounds, member_inputs
from normlab.model import MultiNet

BN_IMAGES = 4096   # training images whose statistics become the average's BatchNorm statistics


class WeightAverage:
    """The moving average (decay ``decay``) of a :class:`MultiNet`'s weights: every member's,
    each from its own trained weights. ``net`` is a copy of the trained network holding the
    average; ``updates`` counts the updates so far (saved with the training state)."""

    def __init__(self, net: MultiNet, decay: float, updates: int = 0):
        self.net = copy.deepcopy(net)
        self.net.requires_grad_(False)
        self.decay, self.updates = decay, updates
        self.params = list(self.net.parameters())

    def decay_at(self, t: int) -> float:
        """The decay of update ``t`` (0-based): D, lower during the warm-up."""
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, trained: MultiNet) -> None:
        """Move the average towards ``trained``'s weights (call after every optimizer step)."""
        weight = 1.0 - self.decay_at(self.updates)
        torch._foreach_lerp_(self.params, list(trained.parameters()), weight)   # under no_grad
        self.updates += 1

    def evaluated(self, images: torch.Tensor, mean: float, std: float, batch_size: int,
                  autocast=contextlib.nullcontext) -> MultiNet:
        """The averaged network with its BatchNorm statistics recomputed from the first
        :data:`BN_IMAGES` of ``images`` ``(N, 1, H, W)`` (each member on the same images), in
        batches of ``batch_size`` as in training."""
        net = self.net
        bounds = batch_bounds(min(len(images), BN_IMAGES), batch_size)
        batches = (member_inputs(images[a:b], mean, std, net) for a, b in bounds)  # (B, M, H, W)
        with torch.no_grad(), autocast():
            update_bn(batches, net)
        return net
