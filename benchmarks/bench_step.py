"""One training step, timed for engine alternatives that keep its values.

Each *alternative* changes one thing about how a step of the default model runs, never what it
computes (the values agree up to floating-point rounding; the first step's loss is printed to
show it):

* ``engine``: the step as ``normlab study`` runs it on a CPU at batch 128 (one run per network,
  in the memory layout of ``normlab.model.memory_format``; oneDNN convolutions, glibc's
  allocator as configured by default).
* ``im2col-stem``: the first conv (one input channel) as ``unfold`` + matmul instead of oneDNN.
* ``contiguous`` / ``channels-last``: every tensor in that memory layout (one of the two is the
  engine's own).
* ``hybrid``: channels-last for the first block, contiguous after it (GroupNorm's kernel is
  faster on contiguous maps, BatchNorm's on channels-last ones).
* ``no-onednn``: ``torch.backends.mkldnn`` off (PyTorch's own im2col + GEMM convolutions).
* ``keep-memory``: ``mallopt`` keeps freed memory in the process (no trim, 32 MiB mmap
  threshold), so a step's fresh buffers are not page-faulted in again.
* ``batch-256``: the default step at twice the batch (its time is reported per 128 images).
* ``flip-data``: every stride-1 conv computes the gradient of its input as a *forward* conv of
  the output gradient, padded by k-1, with the kernel flipped and its channels swapped (the
  same sums in another order, run by oneDNN's forward kernels instead of its backward-data
  ones), and only its weight and bias gradients through oneDNN's backward.
* ``arch=ARCH`` (``--other-arch``): the engine's step of another model, e.g. a candidate
  default, to weigh its cost in time against its accuracy.
* ``sgd-for-loop``: SGD's for-loop implementation (one Python iteration per parameter) instead
  of its foreach implementation, which the engine uses; each line also records its optimizer
  step alone (``optimizer_ms``, the median over steps and rounds).
* ``gather-indexing`` / ``gather-index-select``: not a step, but the gather of a training batch
  of 128 images from the 60,000 of MNIST (``images[idx]``, and ``images.index_select(0, idx)``
  as the engine gathers it; the same rows, ``first_loss`` is their sum), timed alone, so that
  its share of the engine's step is measured.

Every alternative runs in its own fresh process (allocator settings are process-wide), one torch
thread (as each study worker has), and the rounds interleave the alternatives so that a slow
spell of a shared machine hits them all. Each process times R windows of K steps after W
warm-up steps; the reported number is the median over rounds of each process's median window,
in ms per 128 images, with its ratio to ``engine`` measured in the same run; the ``engine`` line
also carries its first round's profile (percent of self CPU time per operator). Nothing asserts a
time.

    .venv/bin/python benchmarks/bench_step.py --out benchmarks/results-step-cpu.jsonl
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from normlab.config import DEFAULT_ARCH, Config
from normlab.envinfo import cpu_model
from normlab.errors import ConfigError
from normlab.model import Net, memory_format
from normlab.store import atomic_write_text

ALTERNATIVES = ("engine", "im2col-stem", "contiguous", "channels-last", "hybrid", "no-onednn",
                "keep-memory", "batch-256", "flip-data", "sgd-for-loop", "gather-indexing",
                "gather-index-select")
GATHER_IMAGES = 60_000   # the MNIST training set the gather alternatives draw batches from
NORMS = ("gn", "ln", "bn")


class Im2colConv(nn.Conv2d):
    """A square conv with one input channel as unfold + matmul (same weights, same values)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:   # (B, 1, H, W)
        b, _, h, w = x.shape
        k, s = self.kernel_size[0], self.stride[0]
        cols = F.unfold(x, k, stride=s)                                # (B, k*k, L)
        out = self.weight.view(self.out_channels, k * k) @ cols        # (B, Cout, L)
        if self.bias is not None:
            out = out + self.bias.view(-1, 1)
        return out.view(b, self.out_channels, (h - k) // s + 1, (w - k) // s + 1)


class _FlipDataConv(torch.autograd.Function):
    """A stride-1, unpadded conv whose input gradient is a forward conv (see ``flip-data``)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias)

    @staticmethod
    def backward(ctx, grad_out):   # (B, Cout, H-k+1, W-k+1)
        x, weight = ctx.saved_tensors
        k = weight.shape[-1]
        grad_x = None
        if ctx.needs_input_grad[0]:
            fmt = (torch.contiguous_format if grad_out.is_contiguous()
                   else torch.channels_last)
            flipped = weight.flip(2, 3).transpose(0, 1).contiguous(memory_format=fmt)
            grad_x = F.conv2d(grad_out, flipped, padding=k - 1)           # (B, Cin, H, W)
        bias_sizes = [weight.shape[0]] if ctx.has_bias else None
        _, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad_out, x, weight, bias_sizes, [1, 1], [0, 0], [1, 1], False, [0, 0], 1,
            [False, True, ctx.has_bias])
        return grad_x, grad_w, grad_b


class FlipDataConv(nn.Conv2d):
    """nn.Conv2d (stride 1, no padding) with :class:`_FlipDataConv`'s backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FlipDataConv.apply(x, self.weight, self.bias)


class Contiguous(nn.Module):
    """Runs ``inner`` on a contiguous (NCHW) copy of its input."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner.to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.contiguous())


def keep_freed_memory() -> None:
    """glibc only: keep freed memory in the process instead of returning it to the OS."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)


def time_gather(alternative: str, warmup: int, windows: int, steps: int) -> dict:
    """ms per batch of 128 images gathered from GATHER_IMAGES by seeded random indices, with
    indexing or ``index_select`` (see the module docstring); ``first_loss`` is the sum of the
    first batch, the same for both."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(GATHER_IMAGES, 1, 28, 28, generator=g)     # (N, 1, H, W), as the engine's
    batches = torch.randperm(GATHER_IMAGES, generator=g)[:128 * (warmup + windows * steps + 1)]
    gather = ((lambda idx: images[idx]) if alternative == "gather-indexing"
              else (lambda idx: images.index_select(0, idx)))
    batches = batches.view(-1, 128)
    first = gather(batches[0]).sum().item()
    for i in range(warmup):
        gather(batches[1 + i])
    times, i = [], 1 + warmup
    for _ in range(windows):
        t = time.perf_counter()
        for _ in range(steps):
            gather(batches[i])
            i += 1
        times.append((time.perf_counter() - t) / steps * 1e3)
    return {"ms_per_128": statistics.median(times), "windows_ms": [round(t, 4) for t in times],
            "first_loss": first}


def time_one(alternative: str, norm: str, warmup: int, windows: int, steps: int,
             arch: str = DEFAULT_ARCH) -> dict:
    """ms per 128 images of one training step of the ``arch`` model, in this process (see the
    module docstring)."""
    torch.set_num_threads(1)
    if alternative.startswith("gather-"):
        return {"alternative": alternative, "norm": norm, "arch": arch,
                **time_gather(alternative, warmup, windows, steps)}
    if alternative == "keep-memory":
        keep_freed_memory()
    torch.manual_seed(0)
    if alternative.startswith("arch="):
        arch = alternative[len("arch="):]
    net = Net(Config(arch=arch).model_config(norm))
    fmt = {"contiguous": torch.contiguous_format, "channels-last": torch.channels_last,
           "hybrid": torch.channels_last}.get(alternative, memory_format([net.cfg]))
    if alternative == "im2col-stem":
        old = net.stem[0].conv
        new = Im2colConv(old.in_channels, old.out_channels, old.kernel_size, stride=old.stride,
                         bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        net.stem[0].conv = new
    if alternative == "flip-data":
        for m in net.modules():
            if type(m) is nn.Conv2d and m.stride == (1, 1) and m.padding == (0, 0):
                m.__class__ = FlipDataConv   # same parameters and state_dict
    net = net.to(memory_format=fmt)
    if alternative == "hybrid":
        net.body = Contiguous(net.body)
    batch = 256 if alternative == "batch-256" else 128
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 1, 28, 28, generator=g).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), generator=g)
    # The engine's optimizer (normlab.train): SGD's foreach implementation
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          foreach=alternative != "sgd-for-loop")
    opt_ms: list[float] = []   # each step's optimizer step alone

    def step() -> float:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t = time.perf_counter()
        opt.step()
        opt_ms.append((time.perf_counter() - t) * 1e3)
        return loss.item()

    onednn = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = alternative != "no-onednn"
    try:
        first_loss = step()
        for _ in range(warmup):
            step()
        times = []
        del opt_ms[:]
        for _ in range(windows):
            t = time.perf_counter()
            for _ in range(steps):
                last_loss = step()
            times.append((time.perf_counter() - t) / steps * 1e3 * 128 / batch)
    finally:
        torch.backends.mkldnn.enabled = onednn
    rec = {"alternative": alternative, "norm": norm, "arch": arch,
           "ms_per_128": statistics.median(times),
           "windows_ms": [round(t, 4) for t in times], "first_loss": first_loss,
           "last_loss": last_loss, "optimizer_ms": statistics.median(opt_ms)}
    if alternative == "engine":   # where its time goes
        rec["profile_pct"] = profile_shares(step, steps)
    return rec


def profile_shares(step, steps: int, top: int = 10) -> dict[str, float]:
    """Percent of the CPU time of ``steps`` steps per operator (self time), the ``top`` largest."""
    from torch.profiler import profile
    with profile() as prof:
        for _ in range(steps):
            step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    ranked = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {e.key: round(100 * e.self_cpu_time_total / total, 1) for e in ranked}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--alternatives", default=",".join(ALTERNATIVES),
                   help=f"comma-separated, from {', '.join(ALTERNATIVES)}")
    p.add_argument("--norms", default=",".join(NORMS), help="comma-separated norm names")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="the model's --arch")
    p.add_argument("--other-arch", default=None, metavar="ARCH",
                   help="also time the engine's step of this --arch (alternative arch=ARCH)")
    p.add_argument("--rounds", type=int, default=3, help="fresh processes per alternative")
    p.add_argument("--warmup", type=int, default=15, help="untimed steps per process")
    p.add_argument("--windows", type=int, default=5, help="timed windows per process")
    p.add_argument("--steps", type=int, default=30, help="steps per window")
    p.add_argument("--out", default=None, help="also write the JSON lines to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:   # one measurement, in this fresh process
        alternative, norm = args.child.split(":")
        print(json.dumps(time_one(alternative, norm, args.warmup, args.windows, args.steps,
                                  args.arch)))
        return 0
    alternatives = args.alternatives.split(",")
    if args.other_arch:
        alternatives.append(f"arch={args.other_arch}")
    norms = args.norms.split(",")
    try:
        unknown = [a for a in alternatives if a not in ALTERNATIVES and not a.startswith("arch=")]
        if unknown:
            raise ConfigError(f"unknown alternative {unknown[0]!r}; choose from "
                              f"{', '.join(ALTERNATIVES)}")
        for norm in norms:
            for arch in (args.arch, args.other_arch or args.arch):
                Config(arch=arch).model_config(norm)
        if min(args.rounds, args.windows, args.steps) < 1 or args.warmup < 0:
            raise ConfigError("--rounds, --windows and --steps must be >= 1, --warmup >= 0")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    found: dict[tuple[str, str], list[dict]] = {}
    for r in range(args.rounds):
        for norm in norms:
            for alt in alternatives:
                print(f"round {r + 1}/{args.rounds}: {norm} {alt}", file=sys.stderr)
                out = subprocess.run(
                    [sys.executable, __file__, "--child", f"{alt}:{norm}", "--arch", args.arch,
                     "--warmup",
                     str(args.warmup), "--windows", str(args.windows), "--steps", str(args.steps)],
                    check=True, capture_output=True, text=True).stdout
                found.setdefault((norm, alt), []).append(json.loads(out.splitlines()[-1]))
    lines, rows = [], []
    width = max(len(a) for a in ("alternative", *alternatives))
    for norm in norms:
        base = statistics.median(m["ms_per_128"] for m in found[(norm, "engine")]) \
            if (norm, "engine") in found else None
        for alt in alternatives:
            ms = statistics.median(m["ms_per_128"] for m in found[(norm, alt)])
            rec = {"norm": norm, "alternative": alt, "arch": found[(norm, alt)][0]["arch"],
                   "ms_per_128": round(ms, 3),
                   "ratio_vs_engine": round(base / ms, 3) if base else None,
                   "rounds_ms": [round(m["ms_per_128"], 3) for m in found[(norm, alt)]],
                   "first_loss": found[(norm, alt)][0]["first_loss"],
                   **({"optimizer_ms": round(statistics.median(
                       m["optimizer_ms"] for m in found[(norm, alt)]), 4)}
                      if "optimizer_ms" in found[(norm, alt)][0] else {}),
                   **({"profile_pct": found[(norm, alt)][0]["profile_pct"]}
                      if alt == "engine" else {}),
                   "torch": torch.__version__, "cpu": cpu_model()}
            lines.append(json.dumps(rec))
            rows.append(f"{norm:4s}  {alt:{width}s}  {ms:10.2f}  {rec['ratio_vs_engine'] or '':>6}")
    print("\n".join(lines))
    print(f"\nnorm  {'alternative':{width}s}  ms/128 img  speed vs engine (higher: faster)")
    print("\n".join(rows))
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
