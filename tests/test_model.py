"""Tests of normlab.model: the Net, its normalization layers, parameter counts and the L1 penalty."""

from __future__ import annotations

import pytest
from helpers import EPS, generator
import torch
import torch.nn as nn

from normlab.errors import ConfigError
from normlab.norms import NORMS
from normlab.model import (
    ModelConfig,
    Net,
    count_params,
    l1_penalty,
    make_norm,
    penalized_weights,
)


def _randomize_affine(m: nn.Module, g: torch.Generator) -> None:
    """Set a norm layer's gamma and beta to random values (far from the 1/0 init)."""
    with torch.no_grad():
        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 2 + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g))


def _affine(y: torch.Tensor, m: nn.Module) -> torch.Tensor:
    """Apply a per-channel gamma/beta to ``y`` (N, C, H, W)."""
    return y * m.weight.view(1, -1, 1, 1) + m.bias.view(1, -1, 1, 1)


def _expected_params(cfg: ModelConfig) -> int:
    """Parameter count derived by hand from the architecture described in Net's docstring.

    3x3 convolutions of the given widths (``full_res`` of them before the pool; the last of those
    ``stem_kernel`` wide with the stride-2 stem), an optional 1x1
    transition conv after the pool, each with a norm of 2*C parameters (none: no norm). Conv
    biases (C parameters) exist when the ReLU comes before the norm (act_first) or when there is
    no norm; a norm right after the conv makes its bias redundant. Then a linear head.
    """
    w, f = cfg.widths, cfg.full_res
    convs, cin = [], cfg.in_channels
    for i, cout in enumerate(w[:f], start=1):   # the last one may be the strided stem
        k = cfg.stem_kernel if i == f and cfg.stem == "stride" else 3
        convs.append((cin, cout, k))
        cin = cout
    if cfg.transition:
        convs.append((cin, cfg.transition, 1))
        cin = cfg.transition
    for cout in w[f:]:
        convs.append((cin, cout, 3))
        cin = cout
    kernels = sum(ci * co * k * k for ci, co, k in convs)
    per_channel = (0 if cfg.norm == "none" else 2) + (1 if cfg.act_first or cfg.norm == "none" else 0)
    norm_or_bias = per_channel * sum(co for _, co, _ in convs)
    head = w[-1] * cfg.num_classes + cfg.num_classes
    return kernels + norm_or_bias + head


# ----------------------------------------------------------------------------------------------
# Net


@pytest.mark.parametrize("ws", [False, True])
@pytest.mark.parametrize("norm", list(NORMS))
def test_output_shape_and_param_count(norm: str, ws: bool) -> None:
    """Every norm, with and without weight standardization, gives (B, 10) finite logits in train
    and eval mode, with the hand-derived parameter count (WS adds none); the default model stays
    within the brief's budget of 8,000 parameters, and every normalized variant has exactly as
    many as BatchNorm's."""
    torch.manual_seed(0)
    model = Net(norm=norm, ws=ws, ghost_batch=2)
    x = torch.rand(5, 1, 28, 28, generator=generator(1))
    for mode in (model.train, model.eval):
        mode()
        with torch.no_grad():
            out = model(x)
        assert out.shape == (5, 10)
        assert torch.isfinite(out).all()
    n = count_params(model)
    assert n == _expected_params(model.cfg)
    assert n == sum(p.numel() for p in model.parameters())  # all parameters are trainable
    assert n <= 8000
    if NORMS[norm].has_stats:
        assert n == count_params(Net(norm="bn"))


def test_param_count_equal_for_bn_gbn_gn_ln_with_and_without_ws() -> None:
    """bn, gbn, gn and ln models, each with and without +ws, have the same number of parameters
    (each norm adds 2*C per layer, weight standardization none), within the 8,000 budget."""
    from normlab.config import Config

    cfg = Config()
    counts = {spec: count_params(Net(cfg.model_config(spec)))
              for norm in ("bn", "gbn", "gn", "ln") for spec in (norm, f"{norm}+ws")}
    assert len(set(counts.values())) == 1, counts
    assert next(iter(counts.values())) <= 8000


@pytest.mark.parametrize("norm", ["gn", "ln", "in"])
def test_batch_independent_norms(norm: str) -> None:
    """With gn, ln and in (train mode) an image's logits do not depend on the rest of the batch;
    with bn they do."""
    torch.manual_seed(0)
    model = Net(norm=norm).train()
    x = torch.rand(4, 1, 28, 28, generator=generator(2))
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone)

    bn = Net(norm="bn").train()
    with torch.no_grad():
        assert not torch.allclose(bn(x)[:1], bn(x[:1]))


def test_net_rejects_config_and_overrides() -> None:
    """Passing both a ModelConfig and keyword overrides is a TypeError."""
    with pytest.raises(TypeError):
        Net(ModelConfig(), norm="gn")


def test_net_unknown_norm() -> None:
    """An unknown norm in ModelConfig is a ConfigError listing the valid names."""
    with pytest.raises(ConfigError) as e:
        Net(norm="xn")
    assert all(name in str(e.value) for name in NORMS)


# ----------------------------------------------------------------------------------------------
# make_norm


def test_make_norm_unknown_name() -> None:
    """An unknown norm name is a ValueError (ConfigError) naming it and listing every valid name."""
    with pytest.raises(ValueError) as e:
        make_norm("batchnorm", 8)
    assert isinstance(e.value, ConfigError)
    msg = str(e.value)
    assert "'batchnorm'" in msg
    for name in NORMS:
        assert name in msg


@pytest.mark.parametrize(
    ("groups", "widths", "transition", "layer"),
    [
        (3, (8, 16, 16, 16, 16), 0, "conv1"),     # 3 divides none of the widths
        (16, (8, 16, 16, 16, 16), 0, "conv1"),    # divides 16 but not conv1's 8
        (16, (16, 16, 16, 16, 16), 8, "trans"),   # the convs are fine, a 1x1 transition has 8
        (4, (8, 16, 16, 16, 6), 0, "conv5"),      # only the last conv has 6 channels
    ],
)
def test_group_count_must_divide_channels(groups, widths, transition, layer) -> None:
    """A gn group count that does not divide a layer's channels is rejected when Net is built,
    with a ConfigError naming the first such layer and the group count."""
    cfg = ModelConfig(norm="gn", groups=groups, widths=widths, transition=transition)
    with pytest.raises(ConfigError) as e:
        Net(cfg)
    msg = str(e.value)
    assert msg.startswith(f"{layer}:"), msg
    assert str(groups) in msg and "--groups" in msg


@pytest.mark.parametrize(
    ("widths", "full_res", "transition"),
    [((8, 16, 16, 16, 16), 1, 0), ((8, 12, 16), 2, 4), ((16, 8, 16, 16), 1, 12)],
)
def test_model_config_norm_layers_match_the_net(widths, full_res, transition) -> None:
    """ModelConfig.norm_layers (the arithmetic config validation uses) lists the channels of the
    Net's conv + norm blocks in build order, and a group count failing on one of them fails the
    arithmetic check and the Net with one message."""
    from normlab import norms
    from normlab.model import ConvNormAct

    cfg = ModelConfig(norm="gn", groups=1, widths=widths, full_res=full_res, transition=transition)
    blocks = [m for m in Net(cfg).modules() if isinstance(m, ConvNormAct)]
    assert [c for _, c in cfg.norm_layers()] == [b.conv.out_channels for b in blocks]
    for groups in (3, 5, 16):
        bad = ModelConfig(norm="gn", groups=groups, widths=widths, full_res=full_res,
                          transition=transition)
        with pytest.raises(ConfigError) as from_net:
            Net(bad)
        with pytest.raises(ConfigError) as by_arithmetic:
            norms.check_groups("gn", groups, bad.norm_layers())
        assert str(from_net.value) == str(by_arithmetic.value)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_group_counts_dividing_all_widths_are_accepted(groups: int) -> None:
    """Every group count dividing all widths (8, 16, 12) builds a working gn model."""
    model = Net(norm="gn", groups=groups)
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == 5 and all(m.num_groups == groups for m in norms)


def test_make_norm_bn_matches_hand_computation() -> None:
    """bn in train mode: per channel, mean and biased variance over (N, H, W), then gamma/beta."""
    g = generator(3)
    x = torch.randn(6, 8, 5, 7, generator=g, dtype=torch.float64) * 3 + 1
    m = make_norm("bn", 8).double().train()
    assert isinstance(m, nn.BatchNorm2d)
    _randomize_affine(m, g)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)
    expected = _affine((x - mean) / torch.sqrt(var + EPS), m)
    torch.testing.assert_close(m(x), expected)


@pytest.mark.parametrize("groups", [4, 2])
def test_make_norm_gn_matches_hand_computation(groups: int) -> None:
    """gn: per sample and per group of C/G consecutive channels, mean and biased variance over
    (C/G, H, W), then a per-channel gamma/beta."""
    g = generator(4 + groups)
    n, c, h, w = 3, 8, 5, 6
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64) * 2 - 1
    # Give the groups very different scales so mixing groups up would show.
    x = x * torch.arange(1, c + 1, dtype=torch.float64).view(1, c, 1, 1)
    m = make_norm("gn", c, groups=groups).double()
    _randomize_affine(m, g)
    y = torch.empty_like(x)
    size = c // groups
    for i in range(n):
        for k in range(groups):
            block = x[i, k * size:(k + 1) * size]
            mean = block.mean()
            var = ((block - mean) ** 2).mean()
            y[i, k * size:(k + 1) * size] = (block - mean) / torch.sqrt(var + EPS)
    torch.testing.assert_close(m(x), _affine(y, m))


def test_make_norm_ln_matches_hand_computation() -> None:
    """ln: per sample, mean and biased variance over all of (C, H, W), then a per-channel
    gamma/beta."""
    g = generator(9)
    x = torch.randn(4, 8, 5, 5, generator=g, dtype=torch.float64) * 4 + 2
    m = make_norm("ln", 8).double()
    _randomize_affine(m, g)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(1, 2, 3), keepdim=True)
    expected = _affine((x - mean) / torch.sqrt(var + EPS), m)
    torch.testing.assert_close(m(x), expected)


def test_make_norm_in_matches_hand_computation() -> None:
    """in: per sample and channel, mean and biased variance over (H, W), then gamma/beta."""
    g = generator(10)
    x = torch.randn(3, 8, 6, 4, generator=g, dtype=torch.float64) * 2 + 3
    m = make_norm("in", 8).double()
    _randomize_affine(m, g)
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(m(x), _affine((x - mean) / torch.sqrt(var + EPS), m))


def test_make_norm_gbn_is_ghost_batchnorm_with_its_ghost_batch() -> None:
    """gbn builds a GhostBatchNorm2d (a BatchNorm2d) with the given ghost batch; a ghost batch
    below 2 is the same ConfigError as Config's."""
    from normlab.layers import GhostBatchNorm2d
    from normlab.config import Config

    m = make_norm("gbn", 8, ghost_batch=5)
    assert isinstance(m, GhostBatchNorm2d) and m.ghost_batch == 5 and count_params(m) == 16
    assert all(b.norm.ghost_batch == 3 for b in Net(norm="gbn", ghost_batch=3).modules()
               if hasattr(b, "conv"))
    with pytest.raises(ConfigError) as from_net:
        make_norm("gbn", 8, ghost_batch=1)
    with pytest.raises(ConfigError) as from_config:
        Config(ghost_batch=1)
    assert str(from_net.value) == str(from_config.value)


def test_make_norm_none_is_identity() -> None:
    """none returns its input unchanged and has no parameters."""
    m = make_norm("none", 8)
    x = torch.randn(2, 8, 3, 3, generator=generator(11))
    torch.testing.assert_close(m(x), x)
    assert count_params(m) == 0


def test_ln_has_two_params_per_channel_not_per_element() -> None:
    """The docstring's claim: ln has 2*C parameters per layer, whereas nn.LayerNorm([C, H, W])
    would have 2*C*H*W; and every ln layer in Net has 2*C parameters."""
    c, h, w = 16, 12, 12
    assert count_params(make_norm("ln", c)) == 2 * c
    assert count_params(nn.LayerNorm([c, h, w])) == 2 * c * h * w
    model = Net(norm="ln")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert len(norms) == len(convs) == 5
    for conv, norm in zip(convs, norms):
        assert count_params(norm) == 2 * conv.out_channels


# ----------------------------------------------------------------------------------------------
# L1 penalty


@pytest.mark.parametrize("norm", ["bn", "none"])
def test_l1_penalty_sums_conv_and_linear_weights_only(norm: str) -> None:
    """l1_penalty = sum |w| over the conv kernels and the classifier matrix only: biases (conv and
    linear) and norm gamma/beta are excluded, even when they are large."""
    torch.manual_seed(0)
    model = Net(norm=norm)
    g = generator(12)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # biases, gamma, beta: make them dominate if wrongly included
                p.copy_(1000 + torch.rand(p.shape, generator=g))
    # Selected by shape and name, independently of the code's module-type test.
    manual = sum(
        p.detach().abs().sum()
        for name, p in model.named_parameters()
        if p.dim() == 4 or name == "head.weight"
    )
    n_kernels = sum(1 for _, p in model.named_parameters() if p.dim() == 4)
    assert n_kernels == 5
    torch.testing.assert_close(l1_penalty(model).detach(), manual)

    penalized = {id(p) for p in penalized_weights(model)}
    names = {name for name, p in model.named_parameters() if id(p) in penalized}
    assert names == {name for name, p in model.named_parameters()
                     if p.dim() == 4 or name == "head.weight"}


def test_l1_penalty_gradient_is_sign() -> None:
    """The gradient of l1_penalty is sign(w) on penalized weights and zero elsewhere."""
    torch.manual_seed(1)
    model = Net(norm="gn")
    l1_penalty(model).backward()
    penalized = {id(p) for p in penalized_weights(model)}
    for p in model.parameters():
        if id(p) in penalized:
            torch.testing.assert_close(p.grad, torch.sign(p.detach()))
        else:
            assert p.grad is None or torch.count_nonzero(p.grad) == 0


# ----------------------------------------------------------------------------------------------
# MultiNet: several Nets as one network

from normlab.model import MultiNet  # noqa: E402


def _nets(specs: list[str], seed: int = 0, stem: str = "pool", ghost_batch: int = 4) -> list[Net]:
    """Nets of the given variant specs ("gn", "gbn", "gn+ws"), virtual batches of ``ghost_batch``
    images for gbn. ``stem``: "pool", "stride" (3x3) or "stride4" (a 4x4 stride-2 kernel)."""
    from normlab.variants import parse_variant

    torch.manual_seed(seed)
    variants = [parse_variant(s) for s in specs]
    kernel = 4 if stem == "stride4" else 3
    nets = [Net(ModelConfig(norm=v.norm, ws=v.ws, stem=stem.removesuffix("4"), stem_kernel=kernel,
                            ghost_batch=ghost_batch)) for v in variants]
    g = generator(seed + 1)
    for net in nets:  # random gammas/betas, so that a mixed-up member would show
        for m in net.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                _randomize_affine(m, g)
    return nets


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("norms, stem", [(["gn", "ln", "bn"], "pool"),
                                         (["bn", "bn", "gn", "none", "in", "gn"], "pool"),
                                         (["ln"], "pool"), (["gn", "bn", "ln"], "stride"),
                                         (["gn", "bn", "ln", "gbn"], "stride4"),
                                         (["bn", "gbn", "gbn", "gn+ws", "bn+ws", "ln"], "pool"),
                                         (["gn+ws", "gbn+ws", "none+ws"], "stride"),
                                         (["gbn"], "pool")])
def test_multinet_members_compute_what_each_net_computes(norms, stem, fmt) -> None:
    """In training mode, member m of a MultiNet (its images in channel block m) gives the logits,
    parameter gradients and BatchNorm running statistics of Net m run alone, whatever mix of
    norms sits side by side (Ghost BatchNorm with virtual batches of 4 of the 16 images, weight
    standardization in some members or all) and in either memory format. The reference is Net m
    in float64; the
    float32 MultiNet must agree with it to float32 rounding (relative 1e-3 of each tensor's
    scale, as BatchNorm's backward sums over B*H*W elements)."""
    import copy

    nets = _nets(norms, stem=stem)
    multi = MultiNet(copy.deepcopy(nets)).to(memory_format=fmt)
    x = torch.randn(16, len(nets), 28, 28, generator=generator(3)).contiguous(memory_format=fmt)
    out = multi(x)                                                   # (B, M, classes)
    assert out.shape == (16, len(nets), 10)
    weights = torch.randn(out.shape, generator=generator(4))
    (out * weights).sum().backward()
    params = dict(multi.named_parameters())

    def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
        want = want.float()
        scale = max(1.0, want.abs().max().item())
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-4 * scale,
                                   msg=lambda s: f"{what}: {s}")

    for m, net in enumerate(nets):
        net = net.double()
        ref = net(x[:, m:m + 1].double())
        close(out[:, m], ref, f"{norms[m]} logits")
        (ref * weights[:, m].double()).sum().backward()
        for key, p in net.named_parameters():
            multi_key, index = multi.where[m][key]
            g = params[multi_key].grad
            close(g if index is None else g[index], p.grad, f"{norms[m]} {key}")
        state = multi.member_state_dict(m)
        assert state.keys() == net.state_dict().keys()
        for key, v in net.state_dict().items():  # includes the updated running statistics
            if v.is_floating_point():
                close(state[key], v, key)
            else:
                assert torch.equal(state[key], v), key


def test_multinet_member_state_dict_loads_into_a_net() -> None:
    """A member's state_dict loads into a fresh Net of its variant, which then computes the
    member's eval-mode logits exactly as the MultiNet does (the MultiNet's own state_dict holds no
    extra tensor for weight standardization)."""
    specs = ["bn", "gn", "gbn", "gn+ws", "bn+ws"]
    nets = _nets(specs, seed=5)
    multi = MultiNet(nets)
    with torch.no_grad():
        multi.train()(torch.randn(12, len(specs), 28, 28, generator=generator(7)))  # move the stats
    multi.eval()
    assert not any("ws_rows" in key for key in multi.state_dict())
    x = torch.randn(8, len(specs), 28, 28, generator=generator(6))
    out = multi(x)
    for m, net in enumerate(nets):
        fresh = Net(net.cfg).eval()
        fresh.load_state_dict(multi.member_state_dict(m))
        torch.testing.assert_close(fresh(x[:, m:m + 1]), out[:, m], rtol=1e-4, atol=1e-5)


def test_multinet_merges_gbn_with_gbn_only() -> None:
    """Neighbouring gbn members with one ghost batch share one GhostBatchNorm2d over their
    channels; a bn neighbour, or a gbn with another ghost batch, keeps a layer of its own. Weight
    standardization marks exactly the rows of its members."""
    from normlab.layers import GhostBatchNorm2d

    nets = _nets(["gbn", "gbn", "bn", "gbn+ws"]) + _nets(["gbn"], ghost_batch=8)
    multi = MultiNet(nets)
    block = multi.stem[0]
    assert block.norm.segments == [(0, 2), (2, 1), (3, 1), (4, 1)]
    kinds = [(type(layer).__name__, getattr(layer, "ghost_batch", None)) for layer in block.norm.layers]
    assert kinds == [("GhostBatchNorm2d", 4), ("BatchNorm2d", None), ("GhostBatchNorm2d", 4),
                     ("GhostBatchNorm2d", 8)]
    assert isinstance(block.norm.layers[0], GhostBatchNorm2d)
    c = nets[0].stem[0].conv.out_channels
    rows = block.ws_rows.view(-1).tolist()
    assert rows == [False] * 3 * c + [True] * c + [False] * c and block.ws == "some"


def test_multinet_rejects_members_of_different_shapes() -> None:
    """Members must share the architecture (widths etc.); they may differ in norm only."""
    with pytest.raises(ValueError, match="share one architecture"):
        MultiNet([Net(ModelConfig(norm="gn")), Net(ModelConfig(norm="gn", widths=(8, 8, 8, 8, 8)))])
    with pytest.raises(ValueError, match="at least one"):
        MultiNet([])


def test_multinet_penalized_parameters_match_nets() -> None:
    """The stacked penalized parameters hold exactly the members' penalized weights, so a
    per-member L1 sum over them equals l1_penalty of each Net."""
    nets = _nets(["gn", "bn", "none"], seed=7)
    multi = MultiNet(nets)
    m = multi.members
    sums = sum(p.detach().abs().reshape(m, -1).sum(dim=1) for p in multi.penalized_parameters())
    for i, net in enumerate(nets):
        torch.testing.assert_close(sums[i], l1_penalty(net).detach(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("norm", ["bn", "gn", "ln"])
def test_pool_before_relu_computes_the_same_as_relu_before_pool(norm: str) -> None:
    """In the max-pool stem (``stem="pool"``) the pool now comes before the ReLU (a quarter of
    the elements for the ReLU); 0.1.0's order (relu_before_pool) gives the same logits and the
    same gradients, since ReLU is monotonic and both pass the gradient to the same maximum."""
    torch.manual_seed(0)
    new = Net(ModelConfig(norm=norm, stem="pool", stem_kernel=3))
    old = Net(ModelConfig(norm=norm, stem="pool", stem_kernel=3, relu_before_pool=True))
    assert isinstance(new.stem[0].pool, nn.MaxPool2d)   # the order is there to be tested
    old.load_state_dict(new.state_dict())
    x = torch.randn(8, 1, 28, 28, generator=generator(5))
    a, b = new(x), old(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    a.square().sum().backward()
    b.square().sum().backward()
    for (name, p), q in zip(new.named_parameters(), old.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-7, msg=name)


def test_stride_stem_has_the_pool_stems_parameters_and_shape() -> None:
    """The stride-2 stem ("8s-..." in --arch) replaces conv + max pool by a stride-2 conv: the
    same parameters, the same (B, C, 13, 13) map after the stem, no MaxPool2d left."""
    pool = Net(ModelConfig(norm="gn", stem="pool", stem_kernel=3))
    stride = Net(ModelConfig(norm="gn", stem="stride", stem_kernel=3))
    assert count_params(pool) == count_params(stride)
    x = torch.zeros(2, 1, 28, 28)
    assert pool.stem(x).shape == stride.stem(x).shape == (2, 8, 13, 13)
    assert not any(isinstance(m, nn.MaxPool2d) for m in stride.modules())
    assert any(isinstance(m, nn.MaxPool2d) for m in pool.modules())
    assert stride.stem[0].conv.stride == (2, 2)


def test_the_stem_kernel_follows_the_stem_and_the_pool_stem_refuses_another() -> None:
    """Without a stem_kernel, the pool stem's first conv is 3x3 and the stride-2 stem's 4x4 (the
    default arch's); the pool stem given another kernel is a ConfigError naming the fix, not a
    silently different model."""
    assert ModelConfig(stem="pool") == ModelConfig(stem="pool", stem_kernel=3)
    assert ModelConfig().stem_kernel == ModelConfig(stem="stride").stem_kernel == 4
    assert Net(ModelConfig(norm="gn", stem="pool")).stem[0].conv.kernel_size == (3, 3)
    assert Net(ModelConfig(norm="gn", stem="stride")).stem[0].conv.kernel_size == (4, 4)
    with pytest.raises(ConfigError, match="pass stem_kernel=3"):
        Net(ModelConfig(norm="gn", stem="pool", stem_kernel=4))


def test_stride_stem_kernel_4_keeps_the_map_and_adds_7_weights_per_channel() -> None:
    """A 4x4 stride-2 first conv ("8s4-..."): the same (B, C, 13, 13) map after the stem (28 - 4
    is even), 16 - 9 more weights per output channel than the 3x3, and a MultiNet of such Nets
    computes what each Net computes."""
    three, four = (Net(ModelConfig(norm="gn", stem="stride", stem_kernel=k)) for k in (3, 4))
    assert count_params(four) - count_params(three) == 7 * 8
    assert four.stem[0].conv.kernel_size == (4, 4)
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert four.stem(x).shape == (3, 8, 13, 13)
    nets = [Net(ModelConfig(norm=n, stem="stride", stem_kernel=4)).eval() for n in ("gn", "bn")]
    multi = MultiNet(nets).eval()
    out = multi(x.repeat(1, 2, 1, 1))                       # (B, M, K)
    for m, net in enumerate(nets):
        torch.testing.assert_close(out[:, m], net(x), rtol=1e-5, atol=1e-5)

