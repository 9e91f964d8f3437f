"""benchmarks/bench_step.py: its alternatives change how a step runs, never what it computes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/bench_step.py")


@pytest.mark.parametrize("stride", [1, 2])
def test_im2col_conv_matches_conv2d(bench, gen, stride: int) -> None:
    """The unfold + matmul conv gives nn.Conv2d's output and weight gradient for the same
    weights, at the pool stem's stride 1 and the default stem's stride 2."""
    ref = nn.Conv2d(1, 8, 3, stride=stride)
    alt = bench.Im2colConv(1, 8, 3, stride=stride)
    alt.load_state_dict(ref.state_dict())
    x = torch.randn(4, 1, 28, 28, generator=gen)
    y_ref, y_alt = ref(x), alt(x)
    torch.testing.assert_close(y_alt, y_ref)
    g = torch.randn(y_ref.shape, generator=gen)
    y_ref.backward(g)
    y_alt.backward(g)
    # Each gradient entry sums up to 4 x 26 x 26 products in another order: float32 rounding.
    torch.testing.assert_close(alt.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alt.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("bias", [True, False])
def test_flip_data_conv_matches_conv2d(bench, gen, fmt, bias: bool) -> None:
    """The conv whose input gradient is a forward conv with the flipped kernel gives
    nn.Conv2d's output and all three gradients (input, weight, bias), in either layout."""
    ref = nn.Conv2d(8, 16, 3, bias=bias).to(memory_format=fmt)
    alt = bench.FlipDataConv(8, 16, 3, bias=bias).to(memory_format=fmt)
    alt.load_state_dict(ref.state_dict())
    x = torch.randn(4, 8, 13, 13, generator=gen).contiguous(memory_format=fmt)
    x_ref, x_alt = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ref, y_alt = ref(x_ref), alt(x_alt)
    torch.testing.assert_close(y_alt, y_ref)
    g = torch.randn(y_ref.shape, generator=gen).contiguous(memory_format=fmt)
    y_ref.backward(g)
    y_alt.backward(g)
    torch.testing.assert_close(x_alt.grad, x_ref.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(alt.weight.grad, ref.weight.grad)
    if bias:
        torch.testing.assert_close(alt.bias.grad, ref.bias.grad)


def _time(bench, alternatives: tuple[str, ...], **counts) -> list[dict]:
    """bench.time_one("gn") of each alternative in this process, its torch threads restored
    (time_one sets one)."""
    threads = torch.get_num_threads()
    try:
        return [bench.time_one(a, "gn", **counts) for a in alternatives]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("alternative", ["im2col-stem", "contiguous", "channels-last", "hybrid",
                                         "no-onednn", "flip-data", "sgd-for-loop"])
def test_alternatives_compute_the_engine_step(bench, alternative: str) -> None:
    """Every value-keeping alternative's first training loss equals the engine's (to rounding),
    and a measurement reports positive times."""
    base, got = _time(bench, ("engine", alternative), warmup=0, windows=1, steps=1)
    assert got["first_loss"] == pytest.approx(base["first_loss"], rel=1e-5)
    assert got["ms_per_128"] > 0 and base["profile_pct"]
    assert 0 < got["optimizer_ms"] < got["ms_per_128"]


def test_sgd_for_loop_steps_to_the_engines_bits(bench) -> None:
    """sgd-for-loop changes only how the optimizer runs: after 40 steps its loss is the
    engine's bit for bit (the first loss, before any step, cannot tell them apart)."""
    base, alt = _time(bench, ("engine", "sgd-for-loop"), warmup=20, windows=2, steps=10)
    assert alt["last_loss"] == base["last_loss"] != base["first_loss"]


def test_the_two_gathers_take_the_same_rows(bench) -> None:
    """gather-indexing and gather-index-select time the gather of the same batches: their first
    batches sum alike (bit for bit), and each reports a positive time per batch."""
    a, b = _time(bench, ("gather-indexing", "gather-index-select"), warmup=1, windows=2, steps=3)
    assert a["first_loss"] == b["first_loss"] and a["first_loss"] > 0
    assert a["ms_per_128"] > 0 and b["ms_per_128"] > 0 and len(a["windows_ms"]) == 2


def test_bad_alternative_is_a_one_line_error() -> None:
    """An unknown alternative exits with code 2 and one line naming the valid ones."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--alternatives", "fast"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "keep-memory" in out.stderr


def test_other_arch_times_that_model(bench) -> None:
    """The alternative arch=ARCH (--other-arch) times the step of that model: another first loss
    than the engine's from the same seed, and its parameter count in the record's arch."""
    threads = torch.get_num_threads()
    try:
        base = bench.time_one("engine", "gn", warmup=0, windows=1, steps=1)
        got = bench.time_one("arch=8s-16-16-16-12", "gn", warmup=0, windows=1, steps=1)
    finally:
        torch.set_num_threads(threads)
    assert got["arch"] == "8s-16-16-16-12" and base["arch"] != got["arch"]
    assert got["first_loss"] != pytest.approx(base["first_loss"], rel=1e-5)


def test_bad_other_arch_is_a_one_line_error() -> None:
    """A bad --other-arch exits with code 2 and one line naming --arch."""
    out = subprocess.run([sys.executable, str(SCRIPT), "--other-arch", "8s9-16"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--arch" in out.stderr
