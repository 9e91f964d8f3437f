"""BatchNorm tested two ways: with its running statistics (as evaluation always does) and with
the statistics of each test batch, at the batch size it trained with.

In training, a BatchNorm layer normalizes with the mean and variance of the current batch; at
test time with running averages of them. The GroupNorm paper (Wu & He 2018) names the gap
between the two as the reason BatchNorm fails at small batches: the model is trained on noisy
batch statistics and tested on smooth averages. Testing with batch statistics of the training
batch size shows the network as it was trained. Reads the final weights a study saved
(``checkpoints/<run>.pt``), never the training loop.
"""

from __future__ import annotations

import torch

from normlab import norms
from normlab.batches import batch_bounds
from normlab.config import Config
from normlab.model import Net
from normlab.runfolder import RunFolder


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


def evaluate_point(folder: RunFolder, cfg: Config, test_images: torch.Tensor,
                   test_labels: torch.Tensor, mean: float, std: float) -> list[dict]:
    """Per finished run of a norm with batch statistics (bn, gbn) in the study ``folder``
    (trained with ``cfg``): ``variant``, ``seed``, ``acc_running`` and ``acc_batch`` (percent),
    tested on batches of ``cfg.batch_size``. Runs without saved weights are skipped."""
    rows = []
    for v in cfg.parsed_variants():
        if not norms.get(v.norm).batch_stats:
            continue
        for seed in cfg.seed_list():
            saved = folder.read_run_outputs(v, seed)
            if saved is None or saved.status != "ok" or saved.state_dict is None:
                continue
            net = Net(cfg.model_config(v))
            net.load_state_dict(saved.state_dict)
            # Running statistics do not depend on the batch: large batches, as evaluation uses.
            running = accuracy(net, test_images, test_labels, mean, std, cfg.eval_batch_size,
                               False)
            batch = accuracy(net, test_images, test_labels, mean, std, cfg.batch_size, True)
            rows.append({"variant": v.name, "seed": seed, "acc_running": running,
                         "acc_batch": batch})
    return rows


__all__ = ["accuracy", "evaluate_point"]
