"""Tests of the per-epoch diagnostics (normlab.diagnostics, diagnostics.csv, the figure): each
measure against a hand computation on a plain Net, members of a MultiNet measured as alone,
measuring changes nothing, and --no-diagnostics changes no result."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn as nn

import helpers
from normlab import diagnostics
from normlab.config import Config
from normlab.diag_plots import plot_diagnostics
from normlab.model import MultiNet, Net
from normlab.runfolder import DIAGNOSTIC_COLUMNS, load_diagnostics, load_run
from normlab.study import run_study, train_run
from normlab.train import build_model

SYNTHETIC_DATA = {"n_train": 96, "n_test": 60, "seed": 3}


def _trained_pair(norm: str, seed: int, gen: torch.Generator, batch: int = 16, **config):
    """(Net, MultiNet of a copy of it), both after one identical SGD-free forward/backward on the
    same random batch, so that both hold gradients and (bn) moved running statistics."""
    cfg = Config(variants=(norm,), **config)
    net = build_model(cfg, cfg.parsed_variants()[0], seed)
    multi = MultiNet([build_model(cfg, cfg.parsed_variants()[0], seed)])
    x = torch.randn(batch, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (batch,), generator=gen)
    for model in (net, multi):
        model.train()
        out = model(x)
        loss = nn.functional.cross_entropy(out.reshape(batch, -1), y)
        loss.backward()
    return net, multi


def _hand_rows(net: Net, probe: torch.Tensor, chunk: int) -> list[dict]:
    """The diagnostics of ``net`` on ``probe``, computed from their definitions with explicit
    loops: eval-mode norm input/output statistics, units zero for every probe image, kernel and
    gradient norms, and the chunked batch-vs-running mean gap and std ratio per channel."""
    seen = {}
    blocks = [m for m in net.modules() if hasattr(m, "conv") and hasattr(m, "norm")]
    hooks = [b.norm.register_forward_hook(
        lambda mod, inp, out, i=i: seen.__setitem__(i, (inp[0].clone(), out.clone())))
        for i, b in enumerate(blocks)]
    net.eval()
    with torch.no_grad():
        net(probe)
    for h in hooks:
        h.remove()
    rows = []
    for i, block in enumerate(blocks):
        x_in, x_out = seen[i]
        row = {"in_mean": x_in.mean().item(), "in_std": x_in.std().item(),
               "out_mean": x_out.mean().item(), "out_std": x_out.std().item(),
               "weight_norm": block.conv.weight.pow(2).sum().sqrt().item(),
               "grad_norm": block.conv.weight.grad.pow(2).sum().sqrt().item()}
        units = x_in.shape[1] * x_in.shape[2] * x_in.shape[3]
        dead = sum(1 for c in range(x_in.shape[1]) for h in range(x_in.shape[2])
                   for w in range(x_in.shape[3]) if bool((x_in[:, c, h, w] == 0).all()))
        row["dead_frac"] = dead / units
        bn = block.norm
        if isinstance(bn, nn.BatchNorm2d):
            gaps, ratios = [], []
            for start in range(0, probe.shape[0], chunk):
                part = x_in[start:start + chunk]
                for c in range(part.shape[1]):
                    values = part[:, c].reshape(-1)
                    run_std = (bn.running_var[c] + bn.eps).sqrt()
                    mean = values.mean()
                    var = ((values - mean) ** 2).mean()
                    gaps.append(((mean - bn.running_mean[c]).abs() / run_std).item())
                    ratios.append(((var + bn.eps).sqrt() / run_std).item())
            row["bn_mean_gap"] = sum(gaps) / len(gaps)
            row["bn_std_ratio"] = sum(ratios) / len(ratios)
        rows.append(row)
    return rows


@pytest.mark.parametrize("norm, chunk", [("bn", 16), ("gn", 16), ("ln", 16), ("none", 16),
                                         ("gbn", 4)])
def test_measure_matches_a_hand_computation(norm: str, chunk: int, gen: torch.Generator) -> None:
    """Every conv layer's row equals the definitions computed by hand on the plain Net (same
    weights, same gradients); the head row holds the classifier's weight and gradient norms;
    batch-vs-running columns are NaN for norms without running statistics, and Ghost
    BatchNorm's are over its virtual batches (4 images) rather than the training batch (16)."""
    net, multi = _trained_pair(norm, seed=4, gen=gen, ghost_batch=4)
    probe = torch.rand(40, 1, 28, 28, generator=gen)
    rows = diagnostics.measure(multi, probe, 0.0, 1.0, batch_size=16)[0]
    hand = _hand_rows(net, probe, chunk=chunk)
    assert [r["layer"] for r in rows] == [n for n, _ in net.cfg.norm_layers()] + ["head"]
    for got, want in zip(rows, hand):
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=2e-5, atol=1e-6, msg=key)
        if norm not in ("bn", "gbn"):
            assert got["bn_mean_gap"] != got["bn_mean_gap"]   # NaN
    head = rows[-1]
    torch.testing.assert_close(head["weight_norm"], net.head.weight.norm().item(), rtol=2e-5,
                               atol=0)
    torch.testing.assert_close(head["grad_norm"], net.head.weight.grad.norm().item(), rtol=2e-5,
                               atol=1e-7)


def test_members_are_measured_as_if_alone(gen: torch.Generator) -> None:
    """In a MultiNet of bn, gn and bn members (the two bn layers merged into one BatchNorm over
    both channel blocks), each member's rows equal those of a MultiNet holding it alone."""
    seeds_norms = [("bn", 0), ("gn", 1), ("bn", 2)]
    cfgs = {n: Config(variants=(n,)) for n, _ in seeds_norms}
    nets = [build_model(cfgs[n], cfgs[n].parsed_variants()[0], s) for n, s in seeds_norms]
    with torch.no_grad():   # distinct running statistics per member
        for i, net in enumerate(nets):
            for mod in net.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.fill_(0.1 * (i + 1))
                    mod.running_var.fill_(1.0 + i)
    probe = torch.rand(24, 1, 28, 28, generator=gen)
    together = diagnostics.measure(MultiNet(nets), probe, 0.1, 0.3, batch_size=8)
    for i, net in enumerate(nets):
        alone = diagnostics.measure(MultiNet([net]), probe, 0.1, 0.3, batch_size=8)[0]
        for a, b in zip(together[i], alone):
            assert a.keys() == b.keys()
            for key in a:
                if key != "layer":
                    torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6,
                                               equal_nan=True, msg=f"member {i} {key}")


def test_measuring_changes_nothing(gen: torch.Generator) -> None:
    """measure() leaves every parameter, buffer (BatchNorm's running statistics) and gradient of
    the network exactly as it found them."""
    _, multi = _trained_pair("bn", seed=1, gen=gen)
    state = {k: v.clone() for k, v in multi.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in multi.named_parameters()}
    diagnostics.measure(multi, torch.rand(32, 1, 28, 28, generator=gen), 0.0, 1.0, batch_size=4)
    for k, v in multi.state_dict().items():
        assert torch.equal(v, state[k]), k
    for k, p in multi.named_parameters():
        assert torch.equal(p.grad, grads[k]), k


def test_diagnostics_never_change_results(random_splits) -> None:
    """A run with diagnostics and one without give bitwise-equal metrics, predictions and
    weights; with them, each epoch has one row per norm layer and one for the head, without
    them none."""
    train, test, mean, std = random_splits(2, n_train=160, n_test=40)
    cfg = Config(variants=("bn",), epochs=2, batch_size=32, device="cpu")
    v = cfg.parsed_variants()[0]
    on = train_run(cfg, v, 0, train, test, mean, std)
    off = train_run(cfg.replace(diagnostics=False), v, 0, train, test, mean, std)
    strip = [{k: x for k, x in r.items() if k != "seconds"} for r in on.epochs]
    assert strip == [{k: x for k, x in r.items() if k != "seconds"} for r in off.epochs]
    assert torch.equal(on.predictions.pred, off.predictions.pred)
    for k in on.state_dict:
        assert torch.equal(on.state_dict[k], off.state_dict[k]), k
    layers = [n for n, _ in cfg.model_config("bn").norm_layers()] + ["head"]
    assert [(d["epoch"], d["layer"]) for d in on.diagnostics] == [
        (e, n) for e in (1, 2) for n in layers]
    assert set(on.diagnostics[0]) == set(DIAGNOSTIC_COLUMNS[2:])
    assert off.diagnostics == []


def test_study_writes_reads_and_plots_diagnostics(synthetic_data, tmp_path) -> None:
    """A study writes diagnostics.csv (one row per run, epoch and layer, read back with the
    same values), `normlab report` draws its figure and links it; with --no-diagnostics there
    is neither file nor figure. The figure's text prints at 7 pt or more at 7 inches wide."""
    cfg = Config(variants=("bn", "gn"), seeds=2, epochs=2, batch_size=16, device="cpu",
                 data_dir=str(synthetic_data.folder))
    out = run_study(cfg, tmp_path / "on", progress=False, log=lambda *_: None)
    rows = load_diagnostics(out)
    layers = len(cfg.model_config("bn").norm_layers()) + 1
    assert len(rows) == 2 * 2 * 2 * layers
    assert {(r["variant"], r["seed"]) for r in rows} == {("bn", 0), ("bn", 1), ("gn", 0),
                                                         ("gn", 1)}
    assert all(r["bn_mean_gap"] is None for r in rows if r["variant"] == "gn")
    assert all(r["bn_mean_gap"] >= 0 for r in rows if r["variant"] == "bn" and r["layer"] != "head")
    run = load_run(out)
    assert run.folder.diagnostics_figure().is_file()
    svg = run.folder.diagnostics_figure().with_suffix(".svg").read_text(encoding="utf-8")
    assert helpers.smallest_printed_pt(svg) >= 7.0   # readable in a two-column paper
    assert "mean over 2 seeds; band: lowest to highest seed" in svg   # what the band is, of N
    link = run.folder.diagnostics_figure().relative_to(out).as_posix()
    assert link in run.folder.report.read_text()
    off = run_study(dataclasses.replace(cfg, diagnostics=False), tmp_path / "off",
                    progress=False, log=lambda *_: None)
    assert load_diagnostics(off) == []
    assert not load_run(off).folder.diagnostics.exists()
    assert plot_diagnostics(load_run(off)) is None
    assert link not in load_run(off).folder.report.read_text()
    assert run.folder.metrics.read_bytes() == load_run(off).folder.metrics.read_bytes()


@pytest.mark.parametrize("spread, scale", [(1.2, "linear"), (30.0, "log")])
def test_gradient_panel_is_logarithmic_only_over_a_decade(run, monkeypatch, spread: float,
                                                          scale: str) -> None:
    """The gradient-to-weight panel has a log axis (its title says so) when its values span a
    decade or more, and a linear one within a decade, where a log axis may hold no power of ten
    to label (a short run's values, e.g. 0.15 to 0.18)."""
    from normlab import diag_plots

    data = load_run(run.path)
    rows = [{"variant": v, "seed": s, "epoch": e, "layer": "conv1", "dead_frac": 0.01,
             "weight_norm": 1.0, "grad_norm": 0.15 * spread ** ((3 - e) / 2),
             "bn_mean_gap": None}
            for v in data.variants for s in data.ok_seeds(v) for e in (1, 2, 3)]
    figures = []
    monkeypatch.setattr(diag_plots, "load_diagnostics", lambda _: rows)
    monkeypatch.setattr(diag_plots, "save_figure", lambda fig, *_: figures.append(fig))
    plot_diagnostics(data)
    (fig,) = figures
    panel = next(ax for ax in fig.axes if ax.get_title().startswith("Gradient / weight norm"))
    assert panel.get_yscale() == scale
    assert panel.get_title() == ("Gradient / weight norm, log scale" if scale == "log"
                                 else "Gradient / weight norm")
    assert all(ax.get_yscale() == "linear" for ax in fig.axes if ax is not panel)


def test_diagnostics_figure_says_how_many_seeds_each_line_holds(tmp_path, make_run,
                                                                monkeypatch) -> None:
    """Where a variant lost seeds to divergence, the diagnostics figure's legend names how many
    of its seeds its line holds and the title does not claim one count for every variant; with
    every seed finished, the title gives the count and the legend the plain names."""
    from normlab import diag_plots

    def draw(run) -> tuple[str, list[str]]:
        data = load_run(run.path)
        rows = [{"variant": v, "seed": s, "epoch": e, "layer": "conv1", "dead_frac": 0.01,
                 "weight_norm": 1.0, "grad_norm": 0.1, "bn_mean_gap": None}
                for v in data.variants for s in data.ok_seeds(v) for e in (1, 2)]
        figures = []
        monkeypatch.setattr(diag_plots, "load_diagnostics", lambda _: rows)
        monkeypatch.setattr(diag_plots, "save_figure", lambda fig, *_: figures.append(fig))
        plot_diagnostics(data)
        (fig,) = figures
        return fig._suptitle.get_text(), [t.get_text() for t in fig.legends[0].get_texts()]

    some = make_run(tmp_path / "some", variants=("gn", "bn"), seeds=3, epochs=2,
                    diverged={"gn": [1, 2]})
    title, labels = draw(some)
    assert labels == ["gn (1 of 3 seeds)", "bn"]
    assert "each variant's finished seeds" in title and "mean over 3 seeds" not in title
    every = make_run(tmp_path / "every", variants=("gn", "bn"), seeds=3, epochs=2)
    title, labels = draw(every)
    assert labels == ["gn", "bn"] and "mean over 3 seeds" in title
