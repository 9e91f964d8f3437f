"""A study's data: the dataset loaded, checked and moved to the training device once, with the
--val images held out of the training split by one fixed, seeded choice.

Every driver of a study (:mod:`normlab.study`, both sweep backends, the experiment reports, the
benchmarks) loads its data here, so that a held-out image is the same one everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from normlab import data
from normlab.batches import DeviceSplit, split_stats, to_device_split
from normlab.config import VAL_SEED, Config
from normlab.errors import ConfigError


@dataclass
class StudyData:
    train: DeviceSplit
    test: DeviceSplit
    mean: float
    std: float
    classes: tuple[str, ...]
    val: DeviceSplit | None = None   # the --val images, held out of train
    folder: Path | None = None       # where the dataset's files were found (or downloaded to)


def split_val(n: int, val: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, val indices) of ``n`` training images: the --val images are the first
    ``val`` of a permutation drawn from a generator seeded with VAL_SEED, the same for every
    variant, seed and machine; both index lists are sorted, so the training images keep their
    order."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(VAL_SEED))
    return perm[val:].sort().values, perm[:val].sort().values


def check_split_sizes(cfg: Config, n_train: int) -> None:
    """ConfigError unless --train-subset and --val fit the ``n_train`` training images."""
    if cfg.train_subset is not None and cfg.train_subset > n_train:
        raise ConfigError(f"--train-subset {cfg.train_subset} exceeds the {n_train} training "
                          "images; use a smaller number")
    n = n_train if cfg.train_subset is None else cfg.train_subset
    if cfg.val and cfg.val >= n:
        raise ConfigError(f"--val {cfg.val} leaves none of the {n} training images to train on; "
                          "hold out fewer")
    cfg.check_training_images(n)


def load_data(cfg: Config, device: torch.device) -> StudyData:
    """Load, verify and move the dataset to ``device``; normalization stats from the train split.

    The folder the files come from is recorded: it is ``cfg.data_dir`` only where that folder
    holds them (data.locate falls back to $NORMLAB_DATA, the cache or a download, and says so)."""
    folder = data.locate(cfg.dataset, cfg.data_dir)
    train_x, train_y = data.load_split(cfg.dataset, train=True, data_dir=folder)
    test_x, test_y = data.load_split(cfg.dataset, train=False, data_dir=folder)
    check_split_sizes(cfg, len(train_y))
    if cfg.train_subset is not None:
        train_x, train_y = train_x[: cfg.train_subset], train_y[: cfg.train_subset]
    val = None
    if cfg.val:
        keep, held = split_val(len(train_y), cfg.val)
        val = to_device_split(train_x[held], train_y[held], device)
        train_x, train_y = train_x[keep], train_y[keep]
    train = to_device_split(train_x, train_y, device)
    test = to_device_split(test_x, test_y, device)
    mean, std = split_stats(train)   # of the images trained on
    return StudyData(train, test, mean, std, data.get_spec(cfg.dataset).classes, val, folder)
