"""Measurements on a run's saved final weights (``checkpoints/<run>.pt``), never the training
loop: what an experiment adds to its sweep.

* **BatchNorm tested two ways**: with its running statistics (as evaluation always does) and
  with the statistics of each test batch, at the batch size it trained with. In training, a
  BatchNorm layer normalizes with the mean and variance of the current batch; at test time with
  running averages of them. The GroupNorm paper (Wu & He 2018) names the gap between the two as
  the reason BatchNorm fails at small batches; testing with batch statistics of the training batch
  size shows the network as it was trained.
* **The loss gradient relative to the weights**: per conv layer, ||dL/dw|| / ||w|| of the
  cross-entropy alone (no penalty) on the probe batch (the first PROBE_SIZE training images,
  unaugmented), in training mode as a step sees it; times the learning rate, the relative size
  of a plain SGD step. Unlike the per-epoch diagnostic (the last step's gradient, penalty
  included), one large fixed batch: a steady measure, comparable across runs.
"""

from __future__ import annotations

import torch

from normlab import norms
from normlab.batches import batch_bounds
from normlab.config import Config
from normlab.diagnostics import probe_images
from normlab.model import Net
from normlab.runfolder import RunFolder, six_digits


@torch.no_grad()
def accuracy(net: Net, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
             batch_size: int, batch_statistics: bool) -> float:
    """Test accuracy in percent of ``net`` on ``images`` (N, 1, H, W) in [0, 1], in batches of
    ``batch_size`` (the last takes a trailing single image, as in training). With
    ``batch_statistics`` every norm runs in training mode: BatchNorm normalizes each batch by
    its own statistics (its running averages move too, so pass a copy you can discard)."""
    net.train(batch_statistics)
    correct = 0
    for start, stop in batch_bounds(len(labels), batch_size):
        x = (images[start:stop] - mean) / std
        correct += int((net(x).argmax(dim=1) == labels[start:stop]).sum())
    net.eval()
    return 100.0 * correct / len(labels)


def loss_gradient_ratio(net: Net, images: torch.Tensor, labels: torch.Tensor, mean: float,
                        std: float) -> float:
    """Mean over ``net``'s conv layers of ||dL/dw|| / ||w||, L the mean cross-entropy of
    ``images`` (N, 1, H, W) in [0, 1] in training mode (BatchNorm: the batch's statistics). Use a
    copy you can discard: its running statistics and gradients move."""
    net.train()
    net.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(net((images - mean) / std), labels)
    loss.backward()
    convs = [m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    ratios = [float(w.grad.norm() / w.detach().norm()) for w in convs]
    net.eval()
    return sum(ratios) / len(ratios)


def final_nets(folder: RunFolder, cfg: Config, batch_stats_only: bool = False):
    """(variant, seed, Net with its final weights) of every finished run of the study ``folder``
    (trained with ``cfg``); with ``batch_stats_only``, of norms with batch statistics only (bn,
    gbn). Runs without saved weights are skipped."""
    for v in cfg.parsed_variants():
        if batch_stats_only and not norms.get(v.norm).batch_stats:
            continue
        for seed in cfg.seed_list():
            saved = folder.read_run_outputs(v, seed)
            if saved is None or saved.status != "ok" or saved.state_dict is None:
                continue
            net = Net(cfg.model_config(v))
            net.load_state_dict(saved.state_dict)
            yield v, seed, net


def gradient_rows(folder: RunFolder, cfg: Config, train_images: torch.Tensor,
                  train_labels: torch.Tensor, mean: float, std: float) -> list[dict]:
    """Per finished run of the study ``folder`` (trained with ``cfg``): ``variant``, ``seed`` and
    ``loss_grad_ratio`` (:func:`loss_gradient_ratio` on the first PROBE_SIZE training images)."""
    images = probe_images(train_images)
    labels = train_labels[:len(images)]
    return [{"variant": v.name, "seed": seed,
             "loss_grad_ratio": six_digits(loss_gradient_ratio(net, images, labels, mean, std))}
            for v, seed, net in final_nets(folder, cfg)]


def evaluate_point(folder: RunFolder, cfg: Config, test_images: torch.Tensor,
                   test_labels: torch.Tensor, mean: float, std: float) -> list[dict]:
    """Per finished run of a norm with batch statistics (bn, gbn) in the study ``folder``
    (trained with ``cfg``): ``variant``, ``seed``, ``acc_running`` and ``acc_batch`` (percent),
    tested on batches of ``cfg.batch_size``."""
    rows = []
    for v, seed, net in final_nets(folder, cfg, batch_stats_only=True):
        # Running statistics do not depend on the batch: large batches, as evaluation uses.
        running = accuracy(net, test_images, test_labels, mean, std, cfg.eval_batch_size, False)
        batch = accuracy(net, test_images, test_labels, mean, std, cfg.batch_size, True)
        rows.append({"variant": v.name, "seed": seed, "acc_running": running,
                     "acc_batch": batch})
    return rows


__all__ = ["accuracy", "evaluate_point", "final_nets", "gradient_rows", "loss_gradient_ratio"]
