"""Plain test helpers (no fixtures): synthetic MNIST-format IDX files, a matching DatasetSpec, and
environments for subprocesses.

The fixtures built on these live in ``conftest.py``; test modules should ask for those
(``synthetic_dataset``, ``synthetic_data``, ``offline_subprocess_env``, ``synthetic_subprocess``,
``real_mnist``, ...).
The functions stay importable here (``from helpers import ...``; pytest puts ``tests/`` on
``sys.path``, as the folder has no ``__init__.py``) because a subprocess's ``sitecustomize.py``
imports :func:`synthetic_mnist` from this file, where no fixture can reach. Nothing here touches
the network or the real data.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import re
import os
import struct
from pathlib import Path

import numpy as np

from normlab.datasets import DatasetSpec, FileSpec

REPO = Path(__file__).resolve().parents[1]

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
# PyTorch's default eps of BatchNorm2d, GroupNorm and LayerNorm, which normlab's norms (and
# GhostBatchNorm2d) keep: the tests' hand-written references use it too.
EPS = 1e-5
MIRRORS = ("https://mirror-one.invalid/data/", "https://mirror-two.invalid/data/")


def idx_bytes(array: np.ndarray, dtype_code: int = 0x08, dims: tuple[int, ...] | None = None) -> bytes:
    """IDX bytes of ``array`` (as uint8); ``dims`` overrides the sizes written in the header."""
    dims = array.shape if dims is None else dims
    header = bytes([0, 0, dtype_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


def synthetic_mnist(n_train: int = 300, n_test: int = 100, seed: int = 0,
                    name: str = "mnist") -> tuple[DatasetSpec, dict[str, bytes], dict[str, np.ndarray]]:
    """A made-up MNIST-format dataset.

    Returns ``(spec, raw, arrays)``: the DatasetSpec whose FileSpecs carry the MD5s of these files
    (``gz_md5`` of the deterministic gzip, ``raw_md5`` of the uncompressed IDX bytes), the raw IDX
    bytes by official filename, and the arrays themselves (``train_x``, ``train_y``, ``test_x``,
    ``test_y``). Labels cycle through 0..9 in a shuffled order so every class occurs.
    """
    rng = np.random.default_rng(seed)
    arrays = {
        "train_x": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_y": rng.permutation(np.arange(n_train) % 10).astype(np.uint8),
        "test_x": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_y": rng.permutation(np.arange(n_test) % 10).astype(np.uint8),
    }
    raw = {
        fn: idx_bytes(arrays[key])
        for fn, key in zip(MNIST_FILES, ("train_x", "train_y", "test_x", "test_y"))
    }
    files = [FileSpec(fn, md5(gzip.compress(b, mtime=0)), md5(b)) for fn, b in raw.items()]
    spec = DatasetSpec(name, MIRRORS, *files, classes=tuple(str(d) for d in range(10)))
    return spec, raw, arrays


def install(folder: Path, raw: dict[str, bytes], gz: bool = True) -> Path:
    """Write a dataset's files into ``folder`` as official .gz files (or uncompressed ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    for filename, payload in raw.items():
        target = folder / (filename if gz else filename.removesuffix(".gz"))
        target.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return folder


def holds_dataset(folder: Path, spec: DatasetSpec) -> bool:
    """``folder`` holds each of the spec's four files, as the official ``.gz`` or uncompressed
    (where :func:`normlab.data.locate` would find them; nothing is read or verified here)."""
    return all((folder / f.filename).is_file() or (folder / f.raw_name).is_file()
               for f in spec.files)


def real_mnist_dir() -> Path | None:
    """The folder of real MNIST ($NORMLAB_DATA or ../shared/data/mnist, or their ``mnist``
    subfolder), or None if absent."""
    from normlab import data

    spec = data.DATASETS["mnist"]
    for candidate in (os.environ.get(data.CACHE_ENV), REPO.parent / "shared" / "data" / "mnist"):
        if not candidate:
            continue
        for folder in (Path(candidate), Path(candidate) / "mnist"):
            if folder.is_dir() and holds_dataset(folder, spec):
                return folder
    return None


SITECUSTOMIZE = """
import os, sys
sys.path.insert(0, {tests!r})
try:
    from helpers import synthetic_mnist
    from normlab import data
    data.DATASETS["mnist"] = synthetic_mnist({n_train}, {n_test}, seed=0)[0]
{extra}
except Exception:  # a process without normlab (e.g. one of Ray's own) needs none of this
    pass
"""


def offline_env(root: Path, pythonpath: tuple[Path, ...] = ()) -> dict[str, str]:
    """Environment for a subprocess that must not reach the network or any data: an unreachable
    proxy (a download fails at once), a private cache under ``root``, no $NORMLAB_DATA, and
    normlab's ``src`` (after ``pythonpath``) on PYTHONPATH."""
    environ = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    environ.update(PYTHONPATH=os.pathsep.join([*map(str, pythonpath), str(REPO / "src")]),
                   XDG_CACHE_HOME=str(root / "cache"), https_proxy="http://127.0.0.1:9",
                   http_proxy="http://127.0.0.1:9", RAY_USAGE_STATS_ENABLED="0")
    environ.pop("NORMLAB_DATA", None)
    return environ


def synthetic_subprocess_env(root: Path, n_train: int, n_test: int,
                             extra: str = "") -> tuple[Path, dict[str, str]]:
    """(data folder, environment) for subprocesses on synthetic data: the data is installed in
    ``root/mnist``, and a ``sitecustomize.py`` on PYTHONPATH registers its spec as 'mnist' in every
    Python process started with the environment (``python -m normlab``, Ray's workers), with
    ``extra`` (code indented by 4 spaces) run after it. No network: see :func:`offline_env`.
    (The sitecustomize imports normlab.data in every process.)"""
    _, raw, _ = synthetic_mnist(n_train, n_test, seed=0)
    folder = install(root / "mnist", raw)
    site = root / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(
        tests=str(REPO / "tests"), n_train=n_train, n_test=n_test, extra=extra))
    return folder, offline_env(root, pythonpath=(site,))


def smallest_printed_pt(svg: str, width_in: float = 7.0) -> float:
    """The smallest font size of an SVG figure (matplotlib writes ``font-size: Npx`` in points
    of its own width) when the figure is printed ``width_in`` inches wide, in points."""
    width_pt = float(re.search(r'<svg [^>]*width="([\d.]+)pt"', svg).group(1))
    sizes = [float(x) for x in re.findall(r"font-size: ([\d.]+)px", svg)]
    assert sizes, "no text in the SVG"
    return min(sizes) * width_in * 72 / width_pt


def csv_rows(path: Path) -> list[dict]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def exit_code(argv: list[str]) -> int:
    """``normlab.cli.main(argv)``'s exit status: its return value, or the code of the SystemExit
    that argparse raises for input it rejects (what the console script's exit code becomes)."""
    from normlab.cli import main

    try:
        return main(argv)
    except SystemExit as e:
        return e.code


def generator(seed: int):
    """A new CPU ``torch.Generator`` seeded with ``seed`` (for parametrized tests, where no
    fixture reaches; tests otherwise ask conftest's ``seeded``)."""
    import torch

    return torch.Generator().manual_seed(seed)


def study_figures(run, variants) -> list[Path]:
    """Where a study's curve figures and the misclassified grids of ``variants`` go (the run
    folder ``run`` names them), in the order the study draws them."""
    from normlab.runfolder import FIGURES

    return [run.figure(k) for k in FIGURES] + [run.misclassified_figure(v) for v in variants]
