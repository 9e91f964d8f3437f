"""Tests of normlab.norms: the registry that defines each normalization in one place.

The last tests register a new norm and find it everywhere the names are used (CLI help, variant
parsing, config validation, the model, MultiNet, `normlab explain`, display names) without any
other code knowing it.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import subprocess
import sys

import pytest
from helpers import EPS, generator
import torch
import torch.nn as nn

from normlab import axes_figure, explain, norms
from normlab.config import Config
from normlab.errors import ConfigError
from normlab.model import MultiNet, Net, count_params
from normlab.norms import NORMS, NormSpec
from normlab.variants import Variant, parse_variant


# ----------------------------------------------------------------------------------------------
# The registry as shipped


def test_registry_names_and_titles() -> None:
    """The registry holds bn, gbn, gn, ln, in and none, in that order, with the display names the
    reports use."""
    assert {name: spec.title for name, spec in NORMS.items()} == {
        "bn": "BatchNorm", "gbn": "Ghost BatchNorm", "gn": "GroupNorm", "ln": "LayerNorm",
        "in": "InstanceNorm", "none": "no norm"}
    assert list(NORMS) == ["bn", "gbn", "gn", "ln", "in", "none"]
    assert all(spec.name == name for name, spec in NORMS.items())
    assert all(spec.description and "\n" not in spec.description for spec in NORMS.values())
    assert norms.explained() == ["bn", "gn", "ln"]


def test_norms_imports_without_torch() -> None:
    """normlab.norms imports, looks names up and checks group counts in a fresh interpreter
    without loading torch (only building a layer needs it)."""
    code = ("import sys, normlab.norms as n; n.get('gn'); "
            "n.check_groups('gn', 4, [('conv1', 8)]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_get_unknown_name_lists_the_valid_ones() -> None:
    """An unknown name is a ConfigError with today's message: the name and every valid norm."""
    with pytest.raises(ConfigError) as e:
        norms.get("batchnorm")
    assert str(e.value) == "unknown norm 'batchnorm'; valid norms: bn, gbn, gn, ln, in, none"


def test_display_name() -> None:
    """display_name gives a registered norm's title and shows any other value as it is."""
    assert norms.display_name("gn") == "GroupNorm"
    assert norms.display_name("none") == "no norm"
    assert norms.display_name("xx") == "xx"
    assert norms.display_name(None) == "None"


@pytest.mark.parametrize(
    ("norm", "channels", "groups", "expected"),
    [("bn", 8, 4, None), ("gbn", 8, 4, None), ("gn", 8, 4, 4), ("gn", 16, 2, 2), ("ln", 16, 4, 1),
     ("in", 16, 4, 16), ("none", 8, 4, None)],
)
def test_stat_groups(norm, channels, groups, expected) -> None:
    """Statistics per image: gn its group count, ln one, in one per channel; None for the batch
    statistics of bn and gbn (per virtual batch) and for none."""
    assert NORMS[norm].stat_groups(channels, groups) == expected


def test_uses_groups() -> None:
    """Only gn depends on --groups (reports show the group count for it alone)."""
    assert [name for name, spec in NORMS.items() if spec.uses_groups] == ["gn"]


def test_uses_ghost_batch_and_batch_stats() -> None:
    """Only gbn depends on --ghost-batch; bn and gbn (per virtual batch) are the norms whose
    statistics span several images, so both need a batch of 2 or more."""
    assert [name for name, spec in NORMS.items() if spec.uses_ghost_batch] == ["gbn"]
    assert [name for name, spec in NORMS.items() if spec.batch_stats] == ["bn", "gbn"]


def test_gbn_entry_axes() -> None:
    """gbn's hand computation cuts N into V virtual batches of N/V images and averages over
    (N/V, H, W): one statistic per virtual batch and channel."""
    spec = NORMS["gbn"]
    assert spec.view == ("V", "N/V", "C", "H", "W") and spec.reduce == ("N/V", "H", "W")
    assert explain.kept_axes(spec) == ("V", "C")
    assert spec.merge == "batch" and not spec.explain


@pytest.mark.parametrize("value", [2, 16, 1000])
def test_check_ghost_batch_accepts(value) -> None:
    """Whole numbers >= 2 are valid ghost batch sizes."""
    norms.check_ghost_batch(value)


@pytest.mark.parametrize("value", [1, 0, -4, 2.5, True, "16", None])
def test_check_ghost_batch_rejects(value) -> None:
    """Anything but a whole number >= 2 is one line of ConfigError naming --ghost-batch, the value
    and the fix."""
    with pytest.raises(ConfigError) as e:
        norms.check_ghost_batch(value)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("--ghost-batch must be a whole number >= 2")
    assert repr(value) in msg and msg.endswith("use e.g. --ghost-batch 16")


def test_check_groups() -> None:
    """check_groups rejects, by arithmetic, the first layer whose channels the group count does not
    divide, with one line naming the layer, the count and the counts that divide every layer (so
    that following the advice cannot fail on another layer); norms whose groups do not depend on
    --groups never fail."""
    layers = [("conv1", 8), ("conv2", 12), ("conv3", 16)]
    norms.check_groups("gn", 4, layers)
    with pytest.raises(ConfigError) as e:
        norms.check_groups("gn", 8, layers)
    assert str(e.value) == ("conv2: GroupNorm with 8 groups does not divide its 12 channels; "
                            "use --groups with one of [1, 2, 4] (they divide every layer's channels)")
    for fit in (1, 2, 4):
        norms.check_groups("gn", fit, layers)
    with pytest.raises(ConfigError) as e:   # one layer (make_norm's check): no claim on others
        norms.check_groups("gn", 3, layers[:1])
    assert str(e.value).endswith("use --groups with one of [1, 2, 4, 8]")
    with pytest.raises(ConfigError, match="conv1: GroupNorm with 0 groups"):
        norms.check_groups("gn", 0, layers)
    for norm in ("bn", "gbn", "ln", "in", "none"):
        norms.check_groups(norm, 5, layers)
    with pytest.raises(ConfigError, match="unknown norm"):
        norms.check_groups("xx", 4, layers)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [({"name": "x+l1"}, "lower-case"), ({"merge": "sum"}, "merge"),
     ({"reduce": ("C", "Q")}, "axes"), ({"view": ("N", "G", "H", "W")}, "view"),
     ({"view": ("V", "C", "H", "W")}, "view"), ({"view": ("N", "V", "N/V", "C", "H", "W")}, "view")],
)
def test_a_malformed_entry_is_rejected(changes, fragment) -> None:
    """A spec with a name that would break variant specs, an unknown merge kind or axes that do
    not describe x (N, C, H, W) (e.g. V without N/V, or N beside its virtual batches) is a
    ValueError when it is made, not mid-study."""
    fields = dict(name="xx", title="X", description="x", build=lambda c, g: nn.Identity(),
                  stat_groups=lambda c, g: None, reduce=("C", "H", "W"))
    with pytest.raises(ValueError, match=fragment):
        NormSpec(**{**fields, **changes})


def _check_entry(spec: NormSpec, channels: int = 8, groups: int = 2) -> None:
    """What every registry entry must satisfy (shared by the shipped and the registered norms)."""
    layer = explain.torch_layer(spec.name, channels, groups)
    n_params = count_params(layer)
    assert n_params in (0, 2 * channels), spec.name       # gamma and beta per channel, or none
    assert spec.has_stats == (n_params > 0), spec.name
    if isinstance(layer, nn.GroupNorm):
        assert spec.merge == "group"
        assert layer.num_groups == spec.stat_groups(channels, groups), spec.name
    if isinstance(layer, nn.BatchNorm2d):
        assert spec.merge == "batch" and spec.batch_stats
        assert spec.stat_groups(channels, groups) is None
    x = torch.randn(3, channels, 5, 4, generator=generator(channels)) * 2 + 1
    with torch.no_grad():
        ref = layer(x)
    if not spec.has_stats:
        torch.testing.assert_close(ref, x)
        return
    mean, var, y = explain.norm_stats(x, spec.name, groups=groups)
    torch.testing.assert_close(y, ref)
    stat_groups = spec.stat_groups(channels, groups)
    if stat_groups is not None:   # per-image statistics: (N, statistic groups) of them
        assert mean.numel() == var.numel() == x.shape[0] * stat_groups, spec.name


@pytest.mark.parametrize("name", list(NORMS))
def test_every_entry_is_consistent(name: str) -> None:
    """Each shipped entry's layer has 2*C parameters (none: 0), its statistic-group count matches
    the layer it builds, and its hand computation from the registry's axes equals that layer."""
    _check_entry(NORMS[name])


# ----------------------------------------------------------------------------------------------
# A new norm, registered in one place, found everywhere

def _pair_norm(channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(2, channels)


PAIR = NormSpec(
    "xn", "PairNorm", "per image and half of the channels over (C/2, H, W)",
    build=_pair_norm, stat_groups=lambda c, g: 2, merge="group",
    view=("N", "G", "C/G", "H", "W"), reduce=("C/G", "H", "W"), per="image and half",
    layer_text="nn.GroupNorm(2, {C}), two halves of C/G = {C/G} channels", explain=True)


@pytest.fixture
def pair(monkeypatch) -> NormSpec:
    monkeypatch.setitem(NORMS, "xn", PAIR)
    return PAIR


def test_registered_norm_is_a_consistent_entry(pair) -> None:
    """The new entry passes the checks every shipped entry passes."""
    _check_entry(pair)
    _check_entry(pair, channels=6, groups=3)


def test_registered_norm_in_cli_and_config(pair) -> None:
    """The CLI's --variants help lists the new norm, it parses as a variant, a Config with it
    validates (by arithmetic), and its display name is its title."""
    from normlab.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("study", "train", "sweep"):
        help_text = " ".join(subparsers.choices[command].format_help().split())
        assert "(bn, gbn, gn, ln, in, none, xn)" in help_text, command
    assert parse_variant("xn") == Variant("xn", "xn")
    assert parse_variant("XN+l1=1e-4").name == "xn+l1=0.0001"
    assert parse_variant("xn+l1=1e-4+ws") == Variant("xn+ws+l1=0.0001", "xn", 1e-4, 0.0, True)
    assert Config(variants=("xn", "gn"), batch_size=1).parsed_variants()[0].norm == "xn"
    assert norms.get("xn").title == norms.display_name("xn") == "PairNorm"
    assert not norms.get("xn").uses_groups   # two groups whatever --groups says


def test_registered_norm_group_count_is_checked(monkeypatch) -> None:
    """A registered norm whose statistic groups do not divide a layer's channels is rejected by
    Config (arithmetic) and Net alike, naming the layer."""
    odd = NormSpec("tn", "TripleNorm", "per image and third of the channels",
                   build=lambda c, g: nn.GroupNorm(3, c), stat_groups=lambda c, g: 3,
                   merge="group", view=("N", "G", "C/G", "H", "W"), reduce=("C/G", "H", "W"))
    monkeypatch.setitem(NORMS, "tn", odd)
    with pytest.raises(ConfigError, match="^conv1: TripleNorm with 3 groups") as from_config:
        Config(variants=("tn",))
    assert str(from_config.value).endswith("tn does not fit this model; choose another norm")
    with pytest.raises(ConfigError) as from_net:
        Net(norm="tn")
    assert str(from_config.value) == str(from_net.value)


def test_registered_norm_in_the_model(pair) -> None:
    """Net builds the new norm in every conv block, with the parameter count of the other
    normalized variants (with weight standardization too), and gives finite (B, 10) logits."""
    model = Net(norm="xn")
    assert count_params(model) == count_params(Net(norm="gn")) <= 8000
    assert count_params(Net(Config(variants=("xn+ws",)).model_config("xn+ws"))) == count_params(model)
    layers = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(layers) == 5 and all(m.num_groups == 2 for m in layers)
    out = model(torch.rand(4, 1, 28, 28, generator=generator(1)))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("merge", ["group", None])
def test_registered_norm_in_a_multinet(monkeypatch, merge) -> None:
    """In a MultiNet, members with the new norm compute what their Nets compute, whether the
    registry lets neighbouring members' layers merge (one GroupNorm with 2*M groups) or not (one
    layer per member, a copy that shares no tensor with the Net); the member state_dict loads
    into a fresh Net."""
    monkeypatch.setitem(NORMS, "xn", dataclasses.replace(PAIR, merge=merge))
    names = ["xn", "xn", "gn"]
    torch.manual_seed(0)
    nets = [Net(norm=n) for n in names]
    multi = MultiNet(copy.deepcopy(nets)).train()
    segments = multi.stem[0].norm.segments
    assert segments == ([(0, 2), (2, 1)] if merge else [(0, 1), (1, 1), (2, 1)])
    x = torch.randn(8, len(nets), 28, 28, generator=generator(2))
    with torch.no_grad():
        out = multi(x)
        for m, net in enumerate(nets):
            torch.testing.assert_close(out[:, m], net.train()(x[:, m:m + 1]), rtol=1e-4, atol=1e-5)
        out = multi.eval()(x)
        for m, name in enumerate(names):
            fresh = Net(norm=name).eval()
            fresh.load_state_dict(multi.member_state_dict(m))
            torch.testing.assert_close(fresh(x[:, m:m + 1]), out[:, m], rtol=1e-4, atol=1e-5)
    own = {p.data_ptr() for net in nets for p in net.parameters()}
    assert not own & {p.data_ptr() for p in multi.parameters()}


def test_registered_norm_in_explain(pair, tmp_path) -> None:
    """explain computes the new norm by hand equal to its builder's layer, works it through in
    the printed text (its section, the title line, the parameter counts, the closing line) and
    draws a fourth panel."""
    x = torch.randn(3, 6, 4, 5, generator=generator(3)) * 3 - 1
    mean, var, y = explain.norm_stats(x, "xn")
    with torch.no_grad():
        torch.testing.assert_close(y, nn.GroupNorm(2, 6, eps=EPS)(x))
        torch.testing.assert_close(y, pair.build(6, 4)(x))
    assert tuple(mean.shape) == tuple(var.shape) == (3, 2)
    text, diff = explain.explain_text(0)
    assert diff < 1e-5 and "MISMATCH" not in text
    assert text.startswith("How BatchNorm, GroupNorm, LayerNorm and PairNorm normalize:")
    assert "== PairNorm  (nn.GroupNorm(2, 4), two halves of C/G = 2 channels)" in text
    assert "one mean per image and half, each over C/G*H*W = 8 elements" in text
    assert f"xn: {count_params(Net(norm='gn')):,} parameters" in text
    assert "All four add the same gamma and beta" in text
    assert "Largest difference from PyTorch over bn, gn, ln, xn, +ws, gbn:" in text
    assert axes_figure.figure_title("xn") == "PairNorm (G=2): one mean per image and half"
    path = axes_figure.draw_norm_axes(tmp_path / "axes.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_nchw_layout_is_claimed_by_exactly_the_groupnorm_kernels() -> None:
    """NormSpec.layout is "nchw" for the entries built as nn.GroupNorm (gn, ln, in: the kernel
    that is faster on contiguous maps) and "channels_last" for every other; an unknown layout is
    refused when the entry is made."""
    for name, spec in NORMS.items():
        layer = spec.build(8, norms.NormSettings(groups=4))
        assert (spec.layout == "nchw") == isinstance(layer, torch.nn.GroupNorm), name
    with pytest.raises(ValueError, match="layout"):
        dataclasses.replace(NORMS["gn"], layout="nhwc")
