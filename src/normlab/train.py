"""The training engine: a run = one variant, one seed, ``epochs`` epochs, test after each.

Runs that share a schedule (every run of a study) can train *concurrently* as one
:class:`~normlab.model.MultiNet`: member m has its own weights, its own data order and
augmentation (its own seeded generator) and its own penalties, and computes what it would compute
alone up to floating-point rounding. :class:`GroupTrainer` trains such a group one epoch at a
time; :func:`normlab.study.train_group` and :func:`normlab.study.train_run` (the group of one)
drive it in memory.

Defaults (see :class:`normlab.config.Config`): SGD with Nesterov momentum, batch 128, a one-cycle
schedule peaking at lr 0.1 after 25% of the steps and annealing to lr/1000 (cosine), random
rotation (+-15 degrees) and shift (+-2 pixels) of every training batch, weight decay 5e-4
(``--weight-decay``) of the conv kernels and the classifier matrix (not biases, not the norms'
gamma/beta). Regularization per variant, on the same weights:

* L1: ``lambda * sum(|w|)``, added to the cross-entropy loss.
* L2: SGD weight decay, added to the recipe's.

``train_loss`` reports the cross-entropy alone, so variants with and without a penalty compare.

With ``--ema D`` a moving average of the weights, updated after every step, is what is evaluated
and saved, its BatchNorm statistics recomputed (:mod:`normlab.ema`); ``train_loss`` and
``train_acc`` and the diagnostics stay the trained weights'.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from normlab import diagnostics
from normlab.batches import DeviceSplit, augment, batch_bounds, member_inputs, random_transforms
from normlab.config import Config
from normlab.device import resolve_precision
from normlab.ema import WeightAverage
from normlab.errors import RunFolderError, brief
from normlab.model import MultiNet, Net, count_params
from normlab.runfolder import METRIC_COLUMNS, Predictions, RunResult
from normlab.variants import Variant

# A cross-entropy above this has diverged even if it is still finite: a chance guess over 10
# classes scores ln(10) = 2.3, and only logits thousands apart can score 1e4.
DIVERGED_LOSS = 1e4

METRIC_FIELDS = METRIC_COLUMNS[2:] + ("seconds",)  # a run's per-epoch row: metrics.csv's
# columns after variant and seed, and the epoch's seconds (timing.csv)


def build_model(cfg: Config, variant: Variant, seed: int) -> Net:
    """The model of ``variant``, initialized from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Net(cfg.model_config(variant))


def one_cycle(step: int, total: int, cfg: Config) -> tuple[float, float]:
    """Learning rate and momentum at ``step`` (0-based) of ``total``: the one-cycle schedule.

    The lr rises from lr/10 to lr over the first ``warmup`` fraction of the steps and anneals to
    lr/1000 (cosine); momentum moves the opposite way between ``momentum`` and 0.85. A pure
    function of the step, so a resumed run needs to store nothing but the step.
    """
    warm = max(1.0, cfg.warmup * total)
    lo_m, hi_m = min(0.85, cfg.momentum), cfg.momentum
    start, peak, end = cfg.lr / 10.0, cfg.lr, cfg.lr / 1000.0
    if step < warm:
        t = step / warm
        a, b, ma, mb = start, peak, hi_m, lo_m
    else:
        t = min(1.0, (step - warm) / max(1.0, total - 1 - warm))
        a, b, ma, mb = peak, end, lo_m, hi_m
    cos = (1 + math.cos(math.pi * t)) / 2  # 1 -> 0
    return b + (a - b) * cos, mb + (ma - mb) * cos


def _healthy(loss: float) -> bool:
    return math.isfinite(loss) and loss < DIVERGED_LOSS


class _Penalties:
    """Per-member L1 and L2 on the penalized weights (conv kernels, classifier matrix), applied to
    the gradients: d/dw (l1*|w| + l2/2*w^2) = l1*sign(w) + l2*w. Biases and the norms' gamma/beta
    are left out: shrinking gamma towards 0 would switch channels off, not sparsify filters.
    ``l2`` is the recipe's ``weight_decay`` plus the variant's own ``+l2``."""

    def __init__(self, multi: MultiNet, variants: list[Variant], device: torch.device,
                 weight_decay: float = 0.0):
        # (weight, per-row coefficient) of each penalty, for the weights it is not 0 on
        self.l1_terms: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        self.l2_terms: list[tuple[torch.nn.Parameter, torch.Tensor]] = []
        l1 = [v.l1 for v in variants]
        l2 = [weight_decay + v.l2 for v in variants]
        self.weights = multi.penalized_parameters()
        for p in self.weights:
            rows = p.shape[0] // multi.members      # rows of the stacked tensor per member
            shape = (-1,) + (1,) * (p.dim() - 1)

            def column(values: list[float]) -> torch.Tensor | None:
                if not any(values):
                    return None
                t = torch.tensor(values, dtype=p.dtype, device=device).repeat_interleave(rows)
                return t.view(shape)

            for terms, c in ((self.l1_terms, column(l1)), (self.l2_terms, column(l2))):
                if c is not None:
                    terms.append((p, c))
        self.l1 = torch.tensor(l1, device=device)
        self.members = multi.members
        self.active = bool(self.l1_terms or self.l2_terms)

    @torch.no_grad()
    def add_to_grads(self) -> None:
        # One multiply-add call per penalty for all weights (torch._foreach_addcmul_) rather
        # than two ops per tensor: a step of this network is short enough for per-op overhead
        # to show.
        l1 = [(p, c) for p, c in self.l1_terms if p.grad is not None]
        if l1:
            torch._foreach_addcmul_([p.grad for p, _ in l1],
                                    torch._foreach_sign([p for p, _ in l1]), [c for _, c in l1])
        l2 = [(p, c) for p, c in self.l2_terms if p.grad is not None]
        if l2:
            torch._foreach_addcmul_([p.grad for p, _ in l2], [p for p, _ in l2],
                                    [c for _, c in l2])

    @torch.no_grad()
    def l1_values(self) -> torch.Tensor:
        """Per member: l1 * sum(|w|) over its penalized weights, shape (M,)."""
        sums = sum(p.detach().abs().reshape(self.members, -1).sum(dim=1) for p in self.weights)
        return self.l1 * sums


@torch.no_grad()
def evaluate_group(multi: MultiNet, split: DeviceSplit, mean: float, std: float,
                   batch_size: int) -> list[tuple[float, float, Predictions]]:
    """Per member: mean cross-entropy, accuracy in percent and predictions on ``split``."""
    multi.eval()
    m = multi.members
    loss_sum = torch.zeros(m, device=split.images.device)
    preds, confs = [], []
    for start in range(0, len(split), batch_size):
        x = member_inputs(split.images[start:start + batch_size], mean, std, multi)  # (B, M, H, W)
        y = split.labels[start:start + batch_size]                       # (B,)
        logits = multi(x).float()                                        # (B, M, classes)
        loss_sum += F.cross_entropy(logits.transpose(1, 2), y[:, None].expand(-1, m),
                                    reduction="none").sum(dim=0)
        conf, pred = logits.softmax(dim=2).max(dim=2)                    # (B, M)
        preds.append(pred)
        confs.append(conf)
    pred, conf = torch.cat(preds), torch.cat(confs).float()              # (N, M)
    correct = (pred == split.labels[:, None]).sum(dim=0).tolist()
    losses = (loss_sum / len(split)).tolist()
    labels = split.labels.cpu()
    return [(losses[i], 100.0 * correct[i] / len(split),
             Predictions(labels, pred[:, i].cpu(), conf[:, i].cpu())) for i in range(m)]


def group_label(runs: list[tuple[Variant, int]]) -> str:
    """A group of runs as messages and the progress bar name it: each variant with its seeds,
    a run of three or more consecutive seeds as a range (``gn s0``, ``gn s0 + ln s0``,
    ``bn s0-2 + gn s0-2``)."""
    seeds: dict[str, list[int]] = {}
    for v, s in runs:
        seeds.setdefault(v.name, []).append(s)
    parts = []
    for name, ss in seeds.items():
        if len(ss) > 2 and ss == list(range(ss[0], ss[0] + len(ss))):
            parts.append(f"{name} s{ss[0]}-{ss[-1]}")
        else:
            parts += [f"{name} s{s}" for s in ss]
    return " + ".join(parts)


class GroupTrainer:
    """Runs that share a schedule, trained concurrently as one network, one epoch per call.

    Member i is the run ``runs[i] = (variant, seed)``: its own weights (from its seed), data order
    and augmentation (a generator seeded with its seed) and penalties; nothing is shared between
    members, so each computes what it would alone, up to floating-point rounding. Between epochs
    the whole training state is :meth:`state`, and ``resume`` continues from such a state.
    A member whose loss becomes NaN, infinite or larger than :data:`DIVERGED_LOSS` ends with
    status ``diverged``; the others go on.
    """

    def __init__(self, cfg: Config, runs: list[tuple[Variant, int]], train: DeviceSplit,
                 test: DeviceSplit, mean: float, std: float, resume: dict | None = None,
                 val: DeviceSplit | None = None):
        self.cfg, self.runs = cfg, list(runs)
        self.train_split, self.test_split, self.mean, self.std = train, test, mean, std
        self.val_split = val   # held-out training images, evaluated like the test set
        self.device = device = train.images.device
        nets = [build_model(cfg, v, s) for v, s in runs]
        self.results = [RunResult(variant=v, seed=s, params=count_params(n))
                        for (v, s), n in zip(runs, nets)]
        self.bounds = batch_bounds(len(train), cfg.batch_size)
        self.total_steps = cfg.epochs * len(self.bounds)
        # --clean-fraction: augmentation stops at this step (0-based), leaving the last
        # round(F * total) steps on the plain images (none with F = 0).
        self.clean_from = self.total_steps - round(cfg.clean_fraction * self.total_steps)
        self.gens = []
        for _, seed in runs:
            g = torch.Generator(device=device)
            g.manual_seed(seed)
            self.gens.append(g)
        self.epoch = 0                         # epochs finished
        saved_ema = None
        if resume is not None:
            try:
                self.epoch = _restore(resume, self.runs, nets, self.gens, self.results)
                saved_ema = _saved_average(cfg, runs, resume) if cfg.ema else None
            except (RuntimeError, KeyError, TypeError, ValueError, IndexError) as e:
                raise RunFolderError(f"the saved training state of {group_label(runs)} cannot be "
                                     f"restored ({type(e).__name__}: {brief(e)}); delete that "
                                     "state from the run folder to retrain those runs") from None
        self.multi = MultiNet(nets)
        self.multi.to(device, memory_format=self.multi.memory_format)
        self.ema = None
        if cfg.ema:   # the saved average goes on, or a new one starts from the initial weights
            net, updates = saved_ema or (self.multi, 0)
            self.ema = WeightAverage(net.to(device, memory_format=self.multi.memory_format),
                                     cfg.ema, updates)
        # foreach on a CPU: the for-loop's per-tensor kernels in fewer calls, the same bits
        self.opt = torch.optim.SGD(self.multi.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.momentum > 0, foreach=device.type == "cpu" or None)
        if resume is not None:
            _restore_momentum(resume, self.multi, self.opt, device)
        self.penalties = _Penalties(self.multi, [v for v, _ in runs], device,
                                    cfg.weight_decay)
        self.alive = [r.status == "ok" for r in self.results]
        self.probe = diagnostics.probe_images(train.images) if cfg.diagnostics else None
        self.precision = resolve_precision(cfg.precision, device)
        # The training forward may be compiled; evaluation uses the plain module (same weights),
        # so switching between train and eval mode causes no recompilation.
        self.forward = torch.compile(self.multi) if cfg.compile else self.multi

    def autocast(self):
        """bf16 autocast when asked for (weights, optimizer and loss stay float32)."""
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def done(self) -> bool:
        return self.epoch >= self.cfg.epochs or not any(self.alive)

    def state(self) -> dict:
        return group_state(self.epoch, self.runs, self.multi, self.opt, self.gens, self.results,
                           self.ema)

    def evaluated(self) -> MultiNet:
        """The network that is evaluated and saved: the trained one, or with ``--ema`` the
        averaged weights with their BatchNorm statistics recomputed."""
        if self.ema is None:
            return self.multi
        return self.ema.evaluated(self.train_split.images, self.mean, self.std,
                                  self.cfg.batch_size, self.autocast)

    def final_outputs(self) -> None:
        """Predictions and final weights of the members that finished (after a resume these
        are not in memory yet)."""
        missing = [i for i, r in enumerate(self.results)
                   if r.status == "ok" and (r.predictions is None or r.state_dict is None)]
        if not missing:
            return
        net = self.evaluated()
        with self.autocast():
            evals = evaluate_group(net, self.test_split, self.mean, self.std,
                                   self.cfg.eval_batch_size)
        for i in missing:
            self.results[i].predictions = evals[i][2]
            self.results[i].state_dict = net.member_state_dict(i)

    def train_epoch(self, on_step: Callable[[int, float], None] | None = None) -> list[tuple[int, dict]]:
        """Train and evaluate one epoch; returns ``(member, metrics row)`` for the members still
        training. ``on_step(steps_done, mean_loss)`` is called at every sync point."""
        cfg, multi, opt, m = self.cfg, self.multi, self.opt, len(self.runs)
        train, results, alive = self.train_split, self.results, self.alive
        epoch = self.epoch + 1
        n, (h, w) = len(train), train.images.shape[-2:]
        device = self.device
        t0 = time.perf_counter()
        multi.train()
        perms = [torch.randperm(n, generator=g, device=device) for g in self.gens]
        loss_sum = torch.zeros(m, device=device)
        correct = torch.zeros(m, device=device, dtype=torch.long)
        lr = cfg.lr
        for step, (start, stop) in enumerate(self.bounds):
            b = stop - start
            idx = torch.cat([p[start:stop] for p in perms])                 # (M*B,)
            x = train.images.index_select(0, idx)   # (M*B, 1, H, W): images[idx], 2x as fast
            y = train.labels.index_select(0, idx).view(m, b).T             # (B, M)
            if cfg.augment and (epoch - 1) * len(self.bounds) + step < self.clean_from:
                x = augment_members(x, self.gens, cfg.rotate, cfg.translate)
            # member-major (M*B, 1, H, W) -> member m's images in channel m: (B, M, H, W)
            x = ((x.view(m, b, h, w) - self.mean) / self.std).permute(1, 0, 2, 3)
            x = x.contiguous(memory_format=multi.memory_format)
            lr, momentum = one_cycle((epoch - 1) * len(self.bounds) + step, self.total_steps, cfg)
            for group in opt.param_groups:
                group["lr"], group["momentum"] = lr, momentum
            with self.autocast():
                logits = self.forward(x).float()                            # (B, M, classes)
            losses = F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(dim=0)  # (M,)
            objective = losses
            if cfg.label_smoothing:   # optimized; metrics keep the plain cross-entropy above
                objective = F.cross_entropy(logits.transpose(1, 2), y, reduction="none",
                                            label_smoothing=cfg.label_smoothing).mean(dim=0)
            opt.zero_grad(set_to_none=True)
            objective.sum().backward()  # members share no weights: each gets its own gradient
            if self.penalties.active:
                self.penalties.add_to_grads()
            opt.step()
            if self.ema is not None:
                self.ema.update(multi)
            loss_sum += losses.detach() * b
            correct += (logits.detach().argmax(dim=2) == y).sum(dim=0)
            if step % 50 == 49 or step == len(self.bounds) - 1:
                # A sync point every 50 steps: cheap, and stops a diverged run early.
                running = losses.tolist()
                totals = (losses.detach() + self.penalties.l1_values()).tolist()
                for i in range(m):
                    if alive[i] and not (_healthy(running[i]) and _healthy(totals[i])):
                        alive[i] = False
                        results[i].status = "diverged"
                        results[i].message = (f"loss reached {running[i]:.4g} at epoch {epoch}, "
                                              f"step {step + 1}")
                if on_step is not None:
                    on_step(step + 1, statistics.fmean(running))
                if not any(alive):
                    self.epoch = epoch
                    return []
        train_loss = (loss_sum / n).tolist()
        train_acc = [100.0 * c / n for c in correct.tolist()]   # no float64 on the device (MPS)
        net = self.evaluated()
        with self.autocast():
            evals = evaluate_group(net, self.test_split, self.mean, self.std,
                                   cfg.eval_batch_size)
            vals = (evaluate_group(net, self.val_split, self.mean, self.std,
                                   cfg.eval_batch_size) if self.val_split is not None
                    else [(None, None, None)] * m)
        # Measured after the epoch's last step, while the gradients of that step are still held.
        probed = (diagnostics.measure(multi, self.probe, self.mean, self.std, cfg.batch_size)
                  if self.probe is not None else [[]] * m)
        seconds = time.perf_counter() - t0
        rows = []
        for i, ((test_loss, test_acc, preds), (val_loss, val_acc, _)) in enumerate(zip(evals, vals)):
            if not alive[i]:
                continue
            if not (_healthy(train_loss[i]) and _healthy(test_loss)
                    and (val_loss is None or _healthy(val_loss))):
                alive[i] = False
                results[i].status = "diverged"
                val = "" if val_loss is None else f" / {val_loss:.4g} (validation)"
                results[i].message = (f"loss reached {train_loss[i]:.4g} (train) / "
                                      f"{test_loss:.4g} (test){val} at epoch {epoch}")
                continue
            row = {"epoch": epoch, "train_loss": train_loss[i], "train_acc": train_acc[i],
                   "val_loss": val_loss, "val_acc": val_acc,
                   "test_loss": test_loss, "test_acc": test_acc, "lr": lr, "seconds": seconds}
            results[i].epochs.append(row)
            results[i].diagnostics.extend({"epoch": epoch, **d} for d in probed[i])
            if epoch == cfg.epochs:
                results[i].predictions = preds
                results[i].state_dict = net.member_state_dict(i)
            rows.append((i, row))
        self.epoch = epoch
        return rows


def augment_members(x: torch.Tensor, gens: list[torch.Generator], rotate: float,
                    translate: float) -> torch.Tensor:
    """:func:`augment` of M member-major blocks of ``x`` ``(M*B, 1, H, W)``, block m drawing its
    random transforms from ``gens[m]`` (exactly the draws it makes when trained alone)."""
    if rotate == 0 and translate == 0:
        return x   # augment() draws nothing then either; a member's data order must not shift
    if len(gens) == 1:
        return augment(x, gens[0], rotate, translate)
    b = x.shape[0] // len(gens)
    u = torch.cat([random_transforms(b, g, x) for g in gens])
    return augment(x, None, rotate, translate, u=u)


# -- Training state: what a checkpoint holds --------------------------------------------------


def group_state(epoch: int, runs: list[tuple[Variant, int]], multi: MultiNet,
                opt: torch.optim.Optimizer, gens: list[torch.Generator],
                results: list[RunResult], ema: WeightAverage | None = None) -> dict:
    """Everything needed to continue the group after ``epoch``: per member its weights,
    momentum buffers, generator state (data order and augmentation), metrics so far and, with
    ``--ema``, its averaged weights. Plain tensors, numbers and strings only, so
    ``torch.load(weights_only=True)`` reads it."""
    bufs = {name: opt.state[p]["momentum_buffer"] for name, p in multi.named_parameters()
            if opt.state.get(p, {}).get("momentum_buffer") is not None}
    members = []
    for i, ((variant, seed), r) in enumerate(zip(runs, results)):
        momentum = {k: v.detach().cpu().clone() for k, v in multi.member_tensors(i, bufs).items()}
        members.append({
            "variant": variant.as_dict(), "seed": seed, "status": r.status, "message": r.message,
            "model": multi.member_state_dict(i), "momentum": momentum,
            "generator": gens[i].get_state().clone(), "epochs": [dict(e) for e in r.epochs],
            "diagnostics": [dict(d) for d in r.diagnostics],
        })
        if ema is not None:
            members[-1]["ema"] = ema.net.member_state_dict(i)
    state = {"epoch": epoch, "members": members}
    if ema is not None:
        state["ema_updates"] = ema.updates
    return state


def _restore(state: dict, runs: list[tuple[Variant, int]], nets: list[Net],
             gens: list[torch.Generator], results: list[RunResult]) -> int:
    members = state["members"]   # checked to be these runs by RunFolder.read_group_state
    for net, g, r, saved in zip(nets, gens, results, members):
        net.load_state_dict(saved["model"])
        g.set_state(saved["generator"])
        r.epochs = [dict(e) for e in saved["epochs"]]
        r.diagnostics = [dict(d) for d in saved.get("diagnostics", [])]
        r.status, r.message = saved["status"], saved["message"]
    return int(state["epoch"])


def _saved_average(cfg: Config, runs: list[tuple[Variant, int]],
                   state: dict) -> tuple[MultiNet, int]:
    """The averaged weights saved in a training state, and how many updates they average."""
    nets = [build_model(cfg, v, s) for v, s in runs]
    for net, saved in zip(nets, state["members"]):
        net.load_state_dict(saved["ema"])
    return MultiNet(nets), int(state["ema_updates"])


def _restore_momentum(state: dict, multi: MultiNet, opt: torch.optim.Optimizer,
                      device: torch.device) -> None:
    params = dict(multi.named_parameters())
    bufs: dict[str, torch.Tensor] = {}
    for i, saved in enumerate(state["members"]):
        for net_key, buf in saved["momentum"].items():
            multi_key, index = multi.where[i][net_key]
            full = bufs.setdefault(multi_key, torch.zeros_like(params[multi_key]))
            if index is None:
                full.copy_(buf)
            else:
                full[index] = buf.to(device)
    for key, full in bufs.items():
        opt.state[params[key]]["momentum_buffer"] = full
