"""The training engine: one run = one variant, one seed, ``epochs`` epochs, test after each.

Defaults (see :class:`normlab.config.Config`): SGD with Nesterov momentum, batch 128, a one-cycle
schedule peaking at lr 0.05 after 25% of the steps and annealing to lr/1000 (cosine), random rotation
(+-10 degrees) and shift (+-2 pixels) of every training batch. Regularization per variant:

* L1: ``lambda * sum(|w|)`` over the conv kernels and the classifier matrix (not biases, not the
  norms' gamma/beta), added to the cross-entropy loss.
* L2: SGD weight decay on the same weights.

``train_loss`` reports the cross-entropy alone, so variants with and without a penalty compare.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from normlab.batches import DeviceSplit, augment, batch_bounds
from normlab.config import Config, Variant
from normlab.errors import ConfigError
from normlab.layout import METRIC_COLUMNS
from normlab.model import ModelConfig, Net, count_params, l1_penalty, penalized_weights

# A cross-entropy above this has diverged even if it is still finite: a chance guess over 10
# classes scores ln(10) = 2.3, and only logits thousands apart can score 1e4.
DIVERGED_LOSS = 1e4

METRIC_FIELDS = METRIC_COLUMNS[2:]  # a run's per-epoch metrics: the columns after variant, seed


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu. An explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA "
                          f"devices; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but MPS is not available; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def build_model(cfg: Config, variant: Variant, seed: int) -> Net:
    """The model of ``variant``, initialized from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net(ModelConfig(norm=variant.norm, groups=cfg.groups))


@dataclass
class Predictions:
    """The final model's predictions on the test split (on the CPU)."""

    label: torch.Tensor       # (N,) true class
    pred: torch.Tensor        # (N,) predicted class
    confidence: torch.Tensor  # (N,) softmax probability of the predicted class


@dataclass
class RunResult:
    variant: Variant
    seed: int
    params: int
    status: str = "ok"                       # "ok" or "diverged"
    epochs: list[dict] = field(default_factory=list)
    predictions: Predictions | None = None
    state_dict: dict | None = None
    message: str = ""


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: DeviceSplit, mean: float, std: float,
             batch_size: int) -> tuple[float, float, Predictions]:
    """Mean cross-entropy, accuracy in percent and per-image predictions on ``split``."""
    model.eval()
    loss_sum = torch.zeros((), device=split.images.device)
    preds, confs = [], []
    for start in range(0, len(split), batch_size):
        x = (split.images[start:start + batch_size] - mean) / std       # (B, 1, H, W)
        y = split.labels[start:start + batch_size]
        logits = model(x)                                                  # (B, classes)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        conf, pred = logits.softmax(dim=1).max(dim=1)
        preds.append(pred)
        confs.append(conf)
    pred = torch.cat(preds)
    acc = 100.0 * (pred == split.labels).sum().item() / len(split)
    loss = loss_sum.item() / len(split)
    return loss, acc, Predictions(split.labels.cpu(), pred.cpu(), torch.cat(confs).float().cpu())


def make_optimizer(model: Net, variant: Variant, cfg: Config, total_steps: int):
    """SGD (Nesterov) with weight decay on the penalized weights only, and a one-cycle schedule."""
    decay = {id(p) for p in penalized_weights(model)}
    groups = [
        {"params": [p for p in model.parameters() if id(p) in decay], "weight_decay": variant.l2},
        {"params": [p for p in model.parameters() if id(p) not in decay], "weight_decay": 0.0},
    ]
    nesterov = cfg.momentum > 0
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=nesterov)
    pct_start = cfg.warmup
    if math.isclose(pct_start * total_steps, 1.0):
        # OneCycleLR divides by (warmup steps - 1): a warmup of exactly one step (tiny runs)
        # would divide by zero. Half a step more changes nothing else.
        pct_start = 1.5 / total_steps
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=pct_start,
        anneal_strategy="cos", div_factor=10.0, final_div_factor=100.0,
        cycle_momentum=cfg.momentum > 0, base_momentum=min(0.85, cfg.momentum),
        max_momentum=cfg.momentum,
    )
    return opt, sched


def _healthy(loss: float) -> bool:
    return math.isfinite(loss) and loss < DIVERGED_LOSS


EpochCallback = Callable[[dict], None]


def train_run(cfg: Config, variant: Variant, seed: int, train: DeviceSplit, test: DeviceSplit,
              mean: float, std: float, progress: bool = True,
              on_epoch: EpochCallback | None = None) -> RunResult:
    """Train ``variant`` with ``seed`` for ``cfg.epochs`` epochs, evaluating on ``test`` each epoch.

    ``mean``/``std`` normalize the pixels (computed once from the training split). ``on_epoch``
    receives each epoch's metrics as a dict with :data:`METRIC_FIELDS`.
    A loss that becomes NaN, infinite or larger than :data:`DIVERGED_LOSS` ends the run with
    status ``diverged``.
    """
    device = train.images.device
    model = build_model(cfg, variant, seed).to(device)
    result = RunResult(variant=variant, seed=seed, params=count_params(model))
    n = len(train)
    bounds = batch_bounds(n, cfg.batch_size)
    opt, sched = make_optimizer(model, variant, cfg, total_steps=cfg.epochs * len(bounds))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)

    from tqdm.auto import tqdm  # imported here: the engine works without a terminal too

    bar = tqdm(total=cfg.epochs * len(bounds), desc=f"{variant.name} s{seed}", unit="batch",
               disable=not progress, leave=True, dynamic_ncols=True)
    try:
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            model.train()
            perm = torch.randperm(n, generator=gen, device=device)
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            for step, (start, stop) in enumerate(bounds):
                idx = perm[start:stop]
                x, y = train.images[idx], train.labels[idx]                 # (B, 1, H, W), (B,)
                if cfg.augment:
                    x = augment(x, gen, cfg.rotate, cfg.translate)
                x = (x - mean) / std
                logits = model(x)                                           # (B, classes)
                loss = F.cross_entropy(logits, y)
                total = loss + variant.l1 * l1_penalty(model) if variant.l1 > 0 else loss
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                sched.step()
                loss_sum += loss.detach() * (stop - start)
                correct += (logits.detach().argmax(dim=1) == y).sum()
                if step % 50 == 49 or step == len(bounds) - 1:
                    # A sync point every 50 steps: cheap, and stops a diverged run early.
                    running = loss.item()
                    bar.update(step + 1 - bar.n + (epoch - 1) * len(bounds))
                    bar.set_postfix(epoch=epoch, loss=f"{running:.4f}", refresh=False)
                    if not _healthy(running) or not _healthy(total.item()):
                        result.status = "diverged"
                        result.message = f"loss reached {running:.4g} at epoch {epoch}, step {step + 1}"
                        return result
            train_loss = loss_sum.item() / n
            train_acc = 100.0 * correct.item() / n
            test_loss, test_acc, preds = evaluate(model, test, mean, std, cfg.eval_batch_size)
            if not (_healthy(train_loss) and _healthy(test_loss)):
                result.status = "diverged"
                result.message = f"loss reached {train_loss:.4g} (train) / {test_loss:.4g} (test) at epoch {epoch}"
                return result
            row = {
                "epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                "test_loss": test_loss, "test_acc": test_acc,
                "lr": opt.param_groups[0]["lr"], "seconds": time.perf_counter() - t0,
            }
            result.epochs.append(row)
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.4f}", test_acc=f"{test_acc:.2f}%")
            if on_epoch is not None:
                on_epoch(row)
        result.predictions = preds
        result.state_dict = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return result
    finally:
        bar.close()
