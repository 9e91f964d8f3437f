"""Tests of --ema: the moving average of the weights that is evaluated and saved, its BatchNorm
statistics, and its place in the training state (resume)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from normlab.batches import batch_bounds
from normlab.config import Config
from normlab.train import EMA_BN_IMAGES, GroupTrainer


def _trainer(random_splits, variants: tuple[str, ...], ema: float, **kw) -> GroupTrainer:
    train, test, mean, std = random_splits(0, n_train=256, n_test=64)
    cfg = Config(epochs=2, batch_size=64, lr=0.05, variants=variants, ema=ema, device="cpu",
                 diagnostics=False, **kw)
    runs = [(v, s) for s, v in enumerate(cfg.parsed_variants())]
    return GroupTrainer(cfg, runs, train, test, mean, std)


def test_the_averaged_weights_are_the_moving_average_of_every_step(random_splits) -> None:
    """With --ema D the evaluated weights are e_1 = w_1, e_t = D e_(t-1) + (1 - D) w_t over the
    trained weights w_t after each optimizer step (computed here by hand), for every member of
    a group; they are what the run saves, and they are not the trained weights."""
    decay = 0.8
    trainer = _trainer(random_splits, ("gn", "bn+l1"), decay)
    params = dict(trainer.multi.named_parameters())
    manual: dict[str, torch.Tensor] = {}
    step = trainer.opt.step

    def step_and_average(*args, **kwargs):
        out = step(*args, **kwargs)
        for name, p in params.items():
            w = p.detach().clone()
            manual[name] = w if name not in manual else decay * manual[name] + (1 - decay) * w
        return out

    trainer.opt.step = step_and_average
    for _ in range(2):
        trainer.train_epoch()
    assert int(trainer.ema.n_averaged) == 2 * len(trainer.bounds)
    averaged = dict(trainer.ema.module.named_parameters())
    for name, expected in manual.items():
        torch.testing.assert_close(averaged[name], expected, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.allclose(averaged[name], params[name]), name
    for i, result in enumerate(trainer.results):
        saved = result.state_dict
        for key, value in trainer.ema.module.member_state_dict(i).items():
            assert torch.equal(saved[key], value), key


def test_batchnorm_statistics_are_recomputed_for_the_averaged_weights(random_splits) -> None:
    """The averaged network's first BatchNorm holds, as running mean and variance, the mean over
    the first min(N, EMA_BN_IMAGES) training images' batches of their per-channel mean and
    unbiased variance of ReLU(conv(x)) under the *averaged* conv weights (computed here by
    hand), not the trained network's running statistics."""
    trainer = _trainer(random_splits, ("bn",), 0.9)
    trainer.train_epoch()
    net = trainer.ema.module
    block = net.stem[0]
    images = trainer.train_split.images
    x = (images[:min(len(images), EMA_BN_IMAGES)] - trainer.mean) / trainer.std  # (N, 1, H, W)
    y = F.relu(F.conv2d(x, block.weight.detach(), block.bias.detach(), stride=block.stride))
    means, variances = [], []
    for a, b in batch_bounds(len(x), trainer.cfg.batch_size):
        means.append(y[a:b].mean(dim=(0, 2, 3)))
        variances.append(y[a:b].var(dim=(0, 2, 3), correction=1))
    bn = block.norm.layers[0]
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0), rtol=1e-4,
                               atol=1e-5)
    trained = trainer.multi.stem[0].norm.layers[0]
    assert not torch.allclose(trained.running_mean, bn.running_mean)


def test_a_resumed_run_continues_its_average_bit_for_bit(random_splits) -> None:
    """A group stopped after epoch 1 and resumed from its training state ends with the same
    averaged weights, BatchNorm statistics, metrics and predictions as the group trained
    without a stop (the state holds each member's averaged weights and the update count)."""
    whole = _trainer(random_splits, ("bn", "gn"), 0.9)
    whole.train_epoch()
    state = whole.state()
    whole.train_epoch()
    train, test = whole.train_split, whole.test_split
    resumed = GroupTrainer(whole.cfg, whole.runs, train, test, whole.mean, whole.std,
                           resume=state)
    assert int(resumed.ema.n_averaged) == len(whole.bounds)
    resumed.train_epoch()
    for a, b in zip(whole.results, resumed.results):
        assert a.epochs == [{**row, "seconds": a.epochs[i]["seconds"]}
                            for i, row in enumerate(b.epochs)]
        assert torch.equal(a.predictions.pred, b.predictions.pred)
        assert a.state_dict.keys() == b.state_dict.keys()
        for key in a.state_dict:
            assert torch.equal(a.state_dict[key], b.state_dict[key]), key


def test_without_ema_the_trained_weights_are_evaluated(random_splits) -> None:
    """--ema 0 (the default) keeps no average: the saved weights are the trained network's."""
    trainer = _trainer(random_splits, ("bn",), 0.0)
    trainer.train_epoch()
    trainer.train_epoch()
    assert trainer.ema is None and "ema_updates" not in trainer.state()
    for key, value in trainer.multi.member_state_dict(0).items():
        assert torch.equal(trainer.results[0].state_dict[key], value), key
