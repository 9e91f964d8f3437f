"""Training-throughput benchmark: a typical notebook MNIST loop vs normlab's engine, side by side.

(a) ``reference``: a per-sample ``Dataset`` (PIL rotation in +-7 degrees, normalized tensor), a
    ``DataLoader(batch_size=128, shuffle=True, num_workers=2)``, a ~10.7k-parameter "EVA style"
    conv-ReLU-BN-Dropout CNN, SGD(lr=0.01, momentum=0.9), NLL loss; timed as windows of K
    batches after W warm-up batches (wall clock, data loading included).
(b) ``normlab-<norm>``: one run alone (``normlab.study.train_run``, ``Config()`` defaults, all
    torch threads) on the first N training images for E epochs with a 500-image test split;
    timed by the per-epoch ``seconds`` of the epochs after the first (evaluation included).
(c) Studies the way ``normlab study`` trains them (one worker per core, one torch thread each),
    on all 60,000 training images and the 10,000 test images, for S epochs: ``normlab-study``
    (the default study, diagnostics included), ``normlab-study-nodiag`` (without; its
    ``diagnostics_cost_pct`` is what they add), ``study-0.1.0`` (normlab 0.1.0's model and
    recipe through ModelConfig, trained by worker threads as 0.1.0 trained it: this release's
    speed-up in one run), ``study-pool`` (today's
    widths with the max-pool stem: what the stride-2 stem pays) and ``study-nodecay`` (the
    default study without weight decay or diagnostics: what the decay costs, against
    ``normlab-study-nodiag``) and ``study-threads`` (the default study with its worker threads
    training in this process, as before ``normlab.epoch_process``: what the worker processes
    pay, ``normlab-study``'s ``ratio_vs_threads``). images/s = runs x epochs x
    60,000 / wall time, so seconds per epoch are per model, warm-up included. They run in R
    interleaved rounds (``timed_studies.study_rows``); each row's images/s and ratio to 0.1.0
    are medians over the rounds.
(d) ``group-b<batch>-g<size>``: 3 variants x 2 seeds, 1 epoch of 3,000 images at a small batch,
    with 1 or 3 runs per network (``MultiNet``): what ``--group-size auto`` rests on.

Every number is a MEDIAN: over the timed windows (a, b), over the rounds (c), over the repeats (d).
Nothing here asserts a time.

    NORMLAB_DATA=/path/to/mnist python benchmarks/bench_train.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from normlab import data as nl_data
from normlab.batches import DeviceSplit
from normlab.config import Config
from normlab.errors import ConfigError, DataError
from normlab.model import count_params
from normlab.study_data import load_data
from normlab.device import select_device
from normlab.envinfo import cpu_model, peak_rss_mb
from normlab.store import atomic_write_text
from normlab.study import train_run
from normlab.train import build_model
from timed_studies import bench_grouping, forward_flops, study_rows

EPOCH_IMAGES = 60_000
TEST_IMAGES = 500
MEAN, STD = 0.1307, 0.3081
BATCH = 128


# ----------------------------------------------------------------------------------------------
# The reference: a typical notebook pipeline


class NotebookMNIST(torch.utils.data.Dataset):
    """Per-sample dataset: uint8 -> PIL -> random rotation (+-7 deg) -> float tensor -> normalize."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, degrees: float = 7.0):
        self.images = images.numpy()  # (N, 28, 28) uint8
        self.labels = labels.long()
        self.degrees = degrees

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.images[i])  # 2-D uint8 -> mode "L"
        # torchvision's RandomRotation: uniform angle, nearest-neighbour, fill 0.
        img = img.rotate(random.uniform(-self.degrees, self.degrees))
        x = torch.from_numpy(np.array(img, dtype=np.float32)).div_(255.0).unsqueeze(0)  # (1, 28, 28)
        x = (x - MEAN) / STD
        return x, self.labels[i]


def _block(cin: int, cout: int, dropout: float = 0.1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(cout),
                         nn.Dropout(dropout))


class EvaNet(nn.Module):
    """The classic "EVA" MNIST model: conv(3x3, no bias)-ReLU-BN-Dropout blocks, a max-pool and
    1x1 transition, global average pooling and a 1x1 classifier, ending in log_softmax."""

    def __init__(self):
        super().__init__()
        self.conv1 = _block(1, 8)                                   # 26
        self.conv2 = _block(8, 16)                                  # 24
        self.conv3 = _block(16, 20)                                 # 22
        self.pool = nn.MaxPool2d(2, 2)                              # 11
        self.trans = nn.Conv2d(20, 10, 1, bias=False)               # 11
        self.conv4 = _block(10, 16)                                 # 9
        self.conv5 = _block(16, 16)                                 # 7
        self.conv6 = _block(16, 16)                                 # 5
        self.gap = nn.AdaptiveAvgPool2d(1)                          # 1
        self.head = nn.Conv2d(16, 10, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3(self.conv2(self.conv1(x)))
        x = self.trans(self.pool(x))
        x = self.conv6(self.conv5(self.conv4(x)))
        x = self.head(self.gap(x))
        return F.log_softmax(x.view(-1, 10), dim=-1)


def bench_reference(images: torch.Tensor, labels: torch.Tensor, warmup: int, windows: int,
                    window_batches: int, workers: int, seed: int) -> tuple[dict, list[float]]:
    torch.manual_seed(seed)
    random.seed(seed)
    model = EvaNet()
    loader = torch.utils.data.DataLoader(NotebookMNIST(images, labels), batch_size=BATCH,
                                         shuffle=True, num_workers=workers)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def batches():
        while True:  # restart the loader (a new epoch) if the windows need more than one
            yield from loader

    it = batches()

    def step() -> int:
        x, y = next(it)
        opt.zero_grad()
        loss = F.nll_loss(model(x), y)
        loss.backward()
        opt.step()
        return len(y)

    for _ in range(warmup):
        step()
    times, counts = [], []
    for _ in range(windows):
        t0 = time.perf_counter()
        n = sum(step() for _ in range(window_batches))
        times.append(time.perf_counter() - t0)
        counts.append(n)
    it.close()
    rates = [n / t for n, t in zip(counts, times)]
    info = {"params": count_params(model), "flops_per_image_fwd": forward_flops(model),
            "images_per_s": statistics.median(rates),
            "warmup_batches": warmup, "window_batches": window_batches, "batch_size": BATCH,
            "num_workers": workers}
    return info, times


def bench_normlab(norm: str, study, base: Config, seed: int) -> tuple[dict, list[float]]:
    cfg = base.replace(variants=(norm,))
    variant = cfg.parsed_variants()[0]
    seconds: list[float] = []
    result = train_run(cfg, variant, seed, study.train, study.test, study.mean, study.std,
                       progress=False, on_epoch=lambda row: seconds.append(row["seconds"]))
    timed = seconds[1:] if len(seconds) > 1 else seconds
    n = len(study.train)
    model = build_model(cfg, variant, seed)
    info = {"params": result.params, "flops_per_image_fwd": forward_flops(model),
            "images_per_s": statistics.median(n / s for s in timed),
            "train_images": n, "test_images": len(study.test), "epochs": cfg.epochs,
            "first_epoch_seconds": seconds[0] if seconds else None,
            "status": result.status,
            "final_test_acc": result.epochs[-1]["test_acc"] if result.epochs else None,
            "note": f"epoch seconds include evaluating {len(study.test)} test images"}
    return info, timed


# ----------------------------------------------------------------------------------------------


def record(name: str, info: dict, windows: list[float], ref_epoch_s: float | None) -> dict:
    ips = info.pop("images_per_s")
    epoch_s = EPOCH_IMAGES / ips
    fwd = info.pop("flops_per_image_fwd")
    rec = {
        "name": name,
        "images_per_s": round(ips, 1),
        "epoch_seconds": round(epoch_s, 2),
        "ratio_vs_reference": (1.0 if name == "reference" else
                               round(ref_epoch_s / epoch_s, 3) if ref_epoch_s else None),
        "flops_per_image_fwd": fwd,
        "flops_per_image_train": 3 * fwd,
        "gflops_achieved": round(3 * fwd * ips / 1e9, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "windows": [round(w, 4) for w in windows],
        "threads": info.pop("threads_per_worker", torch.get_num_threads()),
        "cpu": cpu_model(),   # the same study takes twice as long on some CPUs as on others
    }
    rec.update(info)
    return rec


def table(records: list[dict]) -> str:
    head = ("name", "params", "images/s", "s/epoch(60k)", "ratio", "vs 0.1.0", "MFLOP/img fwd",
            "GFLOP/s", "peak RSS MB", "windows")
    rows = [head]
    for r in records:
        old = r.get("ratio_vs_0.1.0")
        rows.append((r["name"], str(r["params"]), f"{r['images_per_s']:.0f}",
                     f"{r['epoch_seconds']:.1f}", "-" if r["ratio_vs_reference"] is None else f"{r['ratio_vs_reference']:.2f}x",
                     "-" if old is None else f"{old:.3f}x",
                     f"{r['flops_per_image_fwd'] / 1e6:.2f}", f"{r['gflops_achieved']:.2f}",
                     f"{r['peak_rss_mb']:.0f}", str(len(r["windows"]))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small sizes (under a minute on 2 cores)")
    p.add_argument("--data-dir", default=None,
                   help="MNIST folder (default: $NORMLAB_DATA, then normlab's usual lookup)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads(N)")
    p.add_argument("--norms", default="bn,gn,ln", help="normlab norms to time (default bn,gn,ln)")
    p.add_argument("--out", default=None, help="also write the JSON lines to this file (atomically)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-warmup", type=int, default=None, help="reference warm-up batches")
    p.add_argument("--ref-windows", type=int, default=None, help="reference timed windows")
    p.add_argument("--ref-window-batches", type=int, default=None, help="batches per window")
    p.add_argument("--ref-workers", type=int, default=2, help="reference DataLoader workers")
    p.add_argument("--epochs", type=int, default=None, help="normlab epochs (first is warm-up)")
    p.add_argument("--subset", type=int, default=None, help="normlab training images")
    p.add_argument("--no-reference", action="store_true", help="skip the reference loop")
    p.add_argument("--study-epochs", type=int, default=None,
                   help="epochs of each study row on all 60,000 images "
                        "(default: 2, --quick: 1; 0 skips them)")
    p.add_argument("--study-rounds", type=int, default=None,
                   help="rounds of the study rows, each row once per round in a rotating order; "
                        "medians over rounds are reported (default: 3, --quick: 1)")
    p.add_argument("--grouping-batches", default="4,16",
                   help="batch sizes at which grouped and separate runs are compared "
                        "(3 variants x 2 seeds, 1 epoch of --grouping-images; '' skips it)")
    p.add_argument("--grouping-images", type=int, default=3000,
                   help="training images of the grouping rows")
    p.add_argument("--grouping-repeats", type=int, default=None,
                   help="timed repetitions of each grouping row, the median counts "
                        "(default: 3, --quick: 1)")
    args = p.parse_args(argv)

    # --quick: reference 3 windows x 10 batches after 5; normlab 3 epochs on 3,000 images.
    # default: reference 5 windows x 30 batches after 5; normlab 4 epochs on 10,000 images.
    q = args.quick
    warmup = args.ref_warmup if args.ref_warmup is not None else 5
    windows = args.ref_windows or (3 if q else 5)
    window_batches = args.ref_window_batches or (10 if q else 30)
    epochs = args.epochs or (3 if q else 4)
    study_epochs = args.study_epochs if args.study_epochs is not None else (1 if q else 2)
    subset = args.subset or (3000 if q else 10000)
    norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.study_rounds is not None and args.study_rounds < 1:
        p.error("--study-rounds must be >= 1")
    if epochs < 2:
        print("note: with --epochs 1 the only (first) epoch is timed, warm-up included",
              file=sys.stderr)

    env = {"torch": torch.__version__, "python": platform.python_version(),
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "threads": torch.get_num_threads(), "mode": "quick" if q else "default"}
    print(f"# env: {json.dumps(env)}", file=sys.stderr)

    try:
        device = select_device("auto")
        base = Config(epochs=epochs, train_subset=subset, data_dir=args.data_dir,
                      variants=tuple(norms) or ("bn",))
        records: list[dict] = []
        ref_epoch_s = None
        if not args.no_reference:
            images, labels = nl_data.load_split("mnist", train=True, data_dir=args.data_dir)
            print(f"# reference: {warmup} warm-up batches, {windows} windows of "
                  f"{window_batches} batches", file=sys.stderr)
            info, times = bench_reference(images, labels, warmup, windows, window_batches,
                                          args.ref_workers, args.seed)
            info["device"] = "cpu"
            rec = record("reference", info, times, None)
            ref_epoch_s = rec["epoch_seconds"]
            records.append(rec)
            print(json.dumps(rec), flush=True)
            del images, labels
        if norms:
            study = load_data(base, device)
            study.test = DeviceSplit(study.test.images[:TEST_IMAGES],
                                     study.test.labels[:TEST_IMAGES])
            for norm in norms:
                print(f"# normlab {norm}: {epochs} epochs on {subset} images (+{TEST_IMAGES} test)",
                      file=sys.stderr)
                info, times = bench_normlab(norm, study, base, args.seed)
                info["device"] = str(device)
                rec = record(f"normlab-{norm}", info, times, ref_epoch_s)
                records.append(rec)
                print(json.dumps(rec), flush=True)
            del study
        if study_epochs > 0:
            rounds = args.study_rounds or (1 if q else 3)
            for name, info, times in study_rows(base, device, study_epochs, rounds,
                                                log=lambda m: print(m, file=sys.stderr)):
                info["device"] = str(device)
                rec = record(name, info, times, ref_epoch_s)
                records.append(rec)
                print(json.dumps(rec), flush=True)
        for batch in [int(b) for b in args.grouping_batches.split(",") if b.strip()]:
            for size in (1, 3):
                print(f"# grouping: batch {batch}, {size} run(s) per group", file=sys.stderr)
                info, times = bench_grouping(base, device, batch, size, args.grouping_images,
                                             args.grouping_repeats or (1 if q else 3))
                info["device"] = str(device)
                rec = record(f"group-b{batch}-g{size}", info, times, ref_epoch_s)
                records.append(rec)
                print(json.dumps(rec), flush=True)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    if args.out:
        atomic_write_text(Path(args.out), "".join(json.dumps(r) + "\n" for r in records))
    print(f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} "
          f"CPUs, device {device}; medians over timed windows, rounds or repeats; "
          "s/epoch = 60,000 / images/s")
    print(table(records))
    print("notes: ratio = reference s/epoch / this s/epoch (higher = faster than the reference); "
          f"normlab epoch times include evaluating {TEST_IMAGES} test images; study rows: "
          "s/epoch per model = wall / (runs x epochs), medians over rounds; vs 0.1.0 = median over "
          "rounds of the row's speed / study-0.1.0's in the same round; training FLOPs = 3 x "
          "forward; peak RSS is "
          "this process's peak so far (DataLoader workers not included).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
