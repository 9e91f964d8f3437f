"""Tests of --ema: the moving average of the weights that is evaluated and saved, its BatchNorm
statistics, and its place in the training state (resume)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from normlab.batches import batch_bounds
from normlab.config import Config
from normlab import ema
from normlab.store import load_checkpoint, save_checkpoint
from normlab.train import GroupTrainer, evaluate_group


def _trainer(random_splits, variants: tuple[str, ...], ema: float, batch_size: int = 64,
             **kw) -> GroupTrainer:
    train, test, mean, std = random_splits(0, n_train=256, n_test=64)
    cfg = Config(epochs=2, batch_size=batch_size, lr=0.05, variants=variants, ema=ema,
                 device="cpu", diagnostics=False, **kw)
    runs = [(v, s) for s, v in enumerate(cfg.parsed_variants())]
    return GroupTrainer(cfg, runs, train, test, mean, std)


@pytest.mark.parametrize("engine", [{}, {"precision": "bf16"}, {"compile": True}],
                         ids=["fp32", "bf16", "compile"])
def test_the_averaged_weights_are_the_moving_average_of_every_step(random_splits, engine) -> None:
    """With --ema D the evaluated weights start as the initial weights and, after the trained
    weights w_t of each optimizer step t = 0, 1, ..., become d_t e + (1 - d_t) w_t with
    d_t = min(D, (1 + t) / (10 + t)) (computed here by hand; with D = 0.5 the first 8 steps are
    in the warm-up, the other 8 at D), for every member of a group. They are what the run
    saves, and they are not the trained weights. The same holds under bf16 autocast (the
    average stays float32, its BatchNorm statistics finite) and with the training forward
    compiled (torch.compile wraps the trained network, not the average)."""
    decay = 0.5
    trainer = _trainer(random_splits, ("gn", "bn+l1"), decay, batch_size=32, **engine)
    assert trainer.precision == engine.get("precision", "fp32")
    assert (trainer.forward is not trainer.multi) == engine.get("compile", False)
    params = dict(trainer.multi.named_parameters())
    manual = {name: p.detach().clone() for name, p in params.items()}
    steps = 0
    step = trainer.opt.step

    def step_and_average(*args, **kwargs):
        nonlocal steps
        out = step(*args, **kwargs)
        d = min(decay, (1 + steps) / (10 + steps))
        for name, p in params.items():
            manual[name] = d * manual[name] + (1 - d) * p.detach()
        steps += 1
        return out

    trainer.opt.step = step_and_average
    for _ in range(2):
        trainer.train_epoch()
    assert steps == trainer.ema.updates == 16
    averaged = dict(trainer.ema.net.named_parameters())
    for name, expected in manual.items():
        torch.testing.assert_close(averaged[name], expected, rtol=1e-5, atol=1e-6, msg=name)
        assert not torch.allclose(averaged[name], params[name]), name
    for i, result in enumerate(trainer.results):
        for key, value in trainer.ema.net.member_state_dict(i).items():
            assert torch.equal(result.state_dict[key], value), key
            assert value.dtype != torch.bfloat16 and torch.isfinite(value.float()).all(), key


def test_the_metrics_and_predictions_are_the_averaged_networks(random_splits) -> None:
    """Each epoch's test loss and accuracy, and the final predictions, are those of the averaged
    network (evaluated again here), which differ from the trained network's."""
    trainer = _trainer(random_splits, ("bn",), 0.9)
    trainer.train_epoch()
    (_, row), = trainer.train_epoch()
    args = (trainer.test_split, trainer.mean, trainer.std, 64)
    (loss, acc, preds), = evaluate_group(trainer.ema.net, *args)
    assert (row["test_loss"], row["test_acc"]) == (loss, acc)
    assert torch.equal(trainer.results[0].predictions.pred, preds.pred)
    (trained_loss, _, _), = evaluate_group(trainer.multi, *args)
    assert trained_loss != loss


@pytest.mark.parametrize("cap", [None, 100])
@pytest.mark.parametrize("variants", [("bn",), ("bn", "bn+l1"), ("gbn",)])
def test_batchnorm_statistics_are_recomputed_for_the_averaged_weights(random_splits, monkeypatch,
                                                                      variants, cap) -> None:
    """The averaged network's first BatchNorm holds, as running mean and variance, the mean over
    the first min(N, BN_IMAGES) training images' batches (Ghost BatchNorm: virtual batches) of
    their per-channel mean and unbiased variance of ReLU(conv(x)) under the *averaged* conv
    weights (computed here by hand), for one member or two merged into one layer, all 256
    images or a cap of 100 (a last batch of 36); not the trained network's statistics."""
    if cap is not None:
        monkeypatch.setattr(ema, "BN_IMAGES", cap)
    trainer = _trainer(random_splits, variants, 0.9, ghost_batch=16)
    trainer.train_epoch()
    net, members = trainer.ema.net, len(variants)
    block = net.stem[0]
    images = trainer.train_split.images
    x = (images[:min(len(images), ema.BN_IMAGES)] - trainer.mean) / trainer.std  # (N, 1, H, W)
    y = F.relu(F.conv2d(x.expand(-1, members, -1, -1), block.weight.detach(),
                        block.bias.detach(), stride=block.stride, groups=members))
    size = 16 if variants == ("gbn",) else trainer.cfg.batch_size
    means, variances = [], []
    for a, b in batch_bounds(len(x), trainer.cfg.batch_size):
        for c, d in batch_bounds(b - a, size):
            part = y[a + c:a + d]
            means.append(part.mean(dim=(0, 2, 3)))
            variances.append(part.var(dim=(0, 2, 3), correction=1))
    bn, = block.norm.layers
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(bn.running_var, torch.stack(variances).mean(0), rtol=1e-4,
                               atol=1e-5)
    trained, = trainer.multi.stem[0].norm.layers
    assert not torch.allclose(trained.running_mean, bn.running_mean)


def test_a_resumed_run_continues_its_average_bit_for_bit(random_splits, tmp_path) -> None:
    """A group stopped after epoch 1 and resumed from its training state, saved to a file and
    read back, ends with the same averaged weights, BatchNorm statistics, metrics and
    predictions as the group trained without a stop (the state holds each member's averaged
    weights and the update count); so does one resumed after its last epoch, whose outputs are
    made from the saved average."""
    whole = _trainer(random_splits, ("bn", "gn"), 0.9)
    whole.train_epoch()
    save_checkpoint(tmp_path / "state.pt", whole.state())
    whole.train_epoch()
    save_checkpoint(tmp_path / "done.pt", whole.state())
    resumed = GroupTrainer(whole.cfg, whole.runs, whole.train_split, whole.test_split,
                           whole.mean, whole.std, resume=load_checkpoint(tmp_path / "state.pt"))
    assert resumed.ema.updates == len(whole.bounds)
    resumed.train_epoch()
    # A study stopped after its last epoch, before writing its outputs, makes them on resume.
    finished = GroupTrainer(whole.cfg, whole.runs, whole.train_split, whole.test_split,
                            whole.mean, whole.std, resume=load_checkpoint(tmp_path / "done.pt"))
    assert finished.done
    finished.final_outputs()
    for a, b in [*zip(whole.results, resumed.results), *zip(whole.results, finished.results)]:
        assert [{**r, "seconds": 0} for r in a.epochs] == [{**r, "seconds": 0} for r in b.epochs]
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


def test_a_study_with_ema_records_it_and_resumes_from_its_folder(synthetic_data, tmp_path) -> None:
    """`normlab study --ema 0.9` writes ema 0.9 to config.json and says in report.md that its
    numbers come from the averaged weights. A study that stopped after its last epoch's training
    state, before its outputs, makes them again on --resume from the saved average: the same
    final weights and predictions, byte for byte."""
    import shutil

    from normlab.cli import main
    from normlab.runfolder import RunFolder

    whole = tmp_path / "whole"
    assert main(["study", "--data-dir", str(synthetic_data.folder), "--variants", "bn,gn",
                 "--epochs", "2", "--batch-size", "32", "--ema", "0.9", "--device", "cpu", "--quiet",
                 "--out", str(whole)]) == 0
    folder = RunFolder(whole)
    assert '"ema": 0.9' in folder.config.read_text(encoding="utf-8")
    assert "moving average of the weights (decay at most 0.9 per step)" in \
        folder.report.read_text(encoding="utf-8")
    stopped = RunFolder(tmp_path / "stopped")
    shutil.copytree(whole, stopped.path)
    for v in ("bn", "gn"):
        stopped.checkpoint(v, 0).unlink()
        stopped.predictions(v, 0).unlink()
    stopped.summary.unlink()
    assert main(["study", "--resume", str(stopped.path), "--quiet"]) == 0
    for v in ("bn", "gn"):
        assert stopped.predictions(v, 0).read_bytes() == folder.predictions(v, 0).read_bytes(), v
        a = torch.load(folder.checkpoint(v, 0), weights_only=True)["model"]
        b = torch.load(stopped.checkpoint(v, 0), weights_only=True)["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), v
