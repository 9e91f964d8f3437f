"""The datasets normlab knows, described as data: mirrors, file names, MD5 checksums, classes.

Owns :class:`FileSpec`, :class:`DatasetSpec`, the registry :data:`DATASETS` (MNIST,
Fashion-MNIST, KMNIST) and :func:`get_spec`. Nothing here touches files or the network: finding,
verifying and downloading the files is :mod:`normlab.data`'s job, reading them
:mod:`normlab.idx`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from normlab.errors import ConfigError


@dataclass(frozen=True)
class FileSpec:
    """One of a dataset's four files, as published."""

    filename: str  # official name, e.g. "train-images-idx3-ubyte.gz"
    gz_md5: str  # MD5 of the official .gz download
    raw_md5: str | None  # MD5 of the uncompressed content, where known

    @property
    def raw_name(self) -> str:
        """The name of the uncompressed file (``filename`` without ``.gz``)."""
        return self.filename.removesuffix(".gz")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset is published, its four files and its class names."""

    name: str
    mirrors: tuple[str, ...]  # base URLs, tried in order
    train_images: FileSpec
    train_labels: FileSpec
    test_images: FileSpec
    test_labels: FileSpec
    classes: tuple[str, ...]
    title: str = ""   # as printed in reports and figures ("Fashion-MNIST")

    @property
    def files(self) -> tuple[FileSpec, FileSpec, FileSpec, FileSpec]:
        """All four files, train before test, images before labels."""
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def split_files(self, train: bool) -> tuple[FileSpec, FileSpec]:
        """The (images, labels) files of the training or the test split."""
        if train:
            return self.train_images, self.train_labels
        return self.test_images, self.test_labels


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist", title="MNIST",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        train_images=FileSpec(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "6bbc9ace898e44ae57da46a324031adb",
        ),
        train_labels=FileSpec(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "a25bea736e30d166cdddb491f175f624",
        ),
        test_images=FileSpec(
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
            "2646ac647ad5339dbf082846283269ea",
        ),
        test_labels=FileSpec(
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
            "27ae3e4e09519cfbb04c329615203637",
        ),
        classes=tuple(str(d) for d in range(10)),
    ),
    # Mirrors and .gz MD5s as in torchvision/datasets/mnist.py; no uncompressed MD5s are published.
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist", title="Fashion-MNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        train_images=FileSpec(
            "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", None
        ),
        train_labels=FileSpec(
            "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", None
        ),
        test_images=FileSpec("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", None),
        test_labels=FileSpec("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", None),
        classes=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
    ),
    "kmnist": DatasetSpec(
        name="kmnist", title="KMNIST",
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        train_images=FileSpec(
            "train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7", None
        ),
        train_labels=FileSpec(
            "train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344", None
        ),
        test_images=FileSpec("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7", None),
        test_labels=FileSpec("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134", None),
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
    ),
}


def get_spec(name: str) -> DatasetSpec:
    """Return the description of dataset ``name``; ConfigError if normlab does not know it."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(DATASETS))
        raise ConfigError(f"unknown dataset {name!r}; valid: {valid}") from None


__all__ = ["DATASETS", "DatasetSpec", "FileSpec", "get_spec"]
