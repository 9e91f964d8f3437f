"""The two layers normlab adds to PyTorch's: Ghost BatchNorm and weight-standardized convolution.

* :class:`GhostBatchNorm2d` (Hoffer, Hubara and Soudry 2017, "Train longer, generalize better",
  Algorithm 1): in training mode the batch is cut into *virtual batches* of ``ghost_batch``
  consecutive images, and each is normalized with its own per-channel mean and biased variance
  over (images of the virtual batch, H, W). Each virtual batch goes through ``nn.BatchNorm2d``'s
  own forward in turn, so the running mean and variance are updated **once per virtual batch, in
  order**, with that virtual batch's mean and *unbiased* variance, exactly as ``nn.BatchNorm2d``
  updates them once per batch: ``r <- (1 - momentum) * r + momentum * s`` per virtual batch
  (``num_batches_tracked`` counts virtual batches, so ``momentum=None`` averages over them). The
  paper folds every virtual batch's statistics into the running averages; this is BatchNorm's own
  rule applied once per virtual batch. At eval it is ``nn.BatchNorm2d``: the running statistics. The cut follows the training batches' rule
  (:func:`normlab.batches.batch_bounds`): a last virtual batch may be smaller, and one of a single
  image is merged into the one before it, so no virtual batch is one image.
  With ``ghost_batch`` >= the batch size there is one virtual batch and the layer *is*
  ``nn.BatchNorm2d``. Its parameters and buffers are BatchNorm2d's (2*C parameters).

* :func:`standardize_weight` and :class:`WSConv2d`, weight standardization (Qiao et al. 2019,
  "Micro-Batch Training with Batch-Channel Normalization and Weight Standardization"):
  before every convolution each output channel's kernel is standardized over (C_in, kH, kW),
  ``W_hat = (W - mean) / sqrt(var + eps)`` with the biased variance and ``eps`` inside the square
  root. The stored parameter stays as it is; no parameters are added.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from normlab.batches import batch_bounds

WS_EPS = 1e-5   # inside the square root, as in the paper's definition of the standard deviation


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics come from virtual batches of ``ghost_batch`` images
    (see the module docstring for the running-statistics rule)."""

    def __init__(self, num_features: int, ghost_batch: int, **kwargs):
        super().__init__(num_features, **kwargs)
        if isinstance(ghost_batch, bool) or not isinstance(ghost_batch, int) or ghost_batch < 1:
            raise ValueError(f"ghost_batch must be a whole number >= 1, got {ghost_batch!r}")
        self.ghost_batch = ghost_batch

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, ghost_batch={self.ghost_batch}"

    def virtual_batches(self, n: int) -> list[tuple[int, int]]:
        """Start/stop rows of the virtual batches of a training batch of ``n`` images."""
        return batch_bounds(n, self.ghost_batch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bounds = self.virtual_batches(x.shape[0]) if self.training else []
        if len(bounds) <= 1:   # eval, or one virtual batch: exactly nn.BatchNorm2d
            return super().forward(x)
        # Each virtual batch through BatchNorm2d's forward in turn: its own statistics, and one
        # update of the running ones per virtual batch (the order is the batch's row order).
        chunks = x.split([stop - start for start, stop in bounds])
        return torch.cat([super(GhostBatchNorm2d, self).forward(c) for c in chunks])


def standardize_weight(weight: torch.Tensor, eps: float = WS_EPS) -> torch.Tensor:
    """``weight`` (C_out, C_in, kH, kW) with each output channel's kernel standardized over
    (C_in, kH, kW): minus its mean, divided by sqrt(biased variance + eps). For a grouped conv's
    stacked weight (MultiNet) this is each member's own standardization, row by row."""
    dims = tuple(range(1, weight.dim()))
    var, mean = torch.var_mean(weight, dim=dims, keepdim=True, correction=0)
    return (weight - mean) / torch.sqrt(var + eps)


class WSConv2d(nn.Conv2d):
    """nn.Conv2d that convolves with :func:`standardize_weight` of its weight in every forward
    pass; the parameter itself (what the optimizer, L1 and checkpoints see) is not changed."""

    def standardized_weight(self) -> torch.Tensor:
        """The kernel this conv applies: its weight, standardized per output channel."""
        return standardize_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode != "zeros":   # normlab's convs never pad; keep the plain path only
            raise NotImplementedError("WSConv2d supports padding_mode='zeros' only")
        return F.conv2d(x, self.standardized_weight(), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


__all__ = ["GhostBatchNorm2d", "WSConv2d", "WS_EPS", "standardize_weight"]
