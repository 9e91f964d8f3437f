"""Datasets: find, verify, download and read MNIST-style IDX files.

The three datasets normlab knows (MNIST, Fashion-MNIST, KMNIST) ship as the same four IDX files
(train/test images/labels), usually gzip-compressed. This module

* reads IDX files (gzip or raw, told apart by magic bytes) with full validation, never trusting
  the header with memory before the payload has been seen to be that long;
* finds a local copy: the ``data_dir`` argument, then ``$NORMLAB_DATA``, then the cache folder
  (``~/.cache/normlab/<name>``), each also as ``<dir>/<name>/``;
* verifies local files by MD5 (of the uncompressed content where known, since local copies of
  MNIST are often recompressed; else of the official .gz);
* downloads missing files into the cache, trying each mirror in turn, atomically.

torchvision is deliberately not used: it cannot be loaded everywhere normlab runs.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.request
import warnings
import zlib
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO

import torch
from tqdm.auto import tqdm

from normlab.errors import ConfigError, DataError

CACHE_ENV = "NORMLAB_DATA"

_CHUNK = 1 << 20  # bytes per read when decompressing, hashing and downloading
_TIMEOUT_S = 30.0  # per network operation (connect / each read), not for the whole download
_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08  # IDX type code for unsigned byte, the only one the MNIST family uses
_MAX_NDIM = 4

_FIX = "delete it and re-run to download it again, or point --data-dir at a good copy"
_FIX_MD5 = "delete it to download again, or point --data-dir at a good copy"


# ----------------------------------------------------------------------------------------------
# Dataset descriptions


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
        name="mnist",
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
        name="fashion-mnist",
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
        name="kmnist",
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


def default_cache_dir(name: str) -> Path:
    """The folder downloads go to: ``$XDG_CACHE_HOME/normlab/<name>``, by default under ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "normlab" / name


# ----------------------------------------------------------------------------------------------
# Reading IDX files


def _is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes (the suffix is not trusted)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _read_upto(stream: BinaryIO, n: int) -> bytearray:
    """Read at most ``n`` bytes, in chunks, stopping early at end of stream.

    Reading in bounded chunks (rather than ``stream.read(n)``) means memory grows with what the
    stream really holds, never with ``n``: a header that lies about the size costs nothing.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(_CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def _parse_idx(stream: BinaryIO, path: Path, what: str) -> torch.Tensor:
    """Parse an IDX stream (already decompressed); ``what`` names the payload in messages."""
    header = _read_upto(stream, 4)
    if len(header) < 4:
        raise DataError(
            f"{path}: {what} is {len(header)} bytes, too short to hold an IDX header (4 bytes); {_FIX}"
        )
    if header[0] != 0 or header[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (magic bytes {bytes(header).hex()}, expected 0000 then type and "
            f"rank); {_FIX}"
        )
    dtype_code, ndim = header[2], header[3]
    if dtype_code != _UBYTE:
        raise DataError(
            f"{path}: unsupported IDX data type code 0x{dtype_code:02x} (normlab reads only 0x08, "
            f"unsigned byte, as used by MNIST-style datasets); {_FIX}"
        )
    if not 1 <= ndim <= _MAX_NDIM:
        raise DataError(
            f"{path}: IDX header declares {ndim} dimensions (expected 1 to {_MAX_NDIM}); {_FIX}"
        )

    dim_bytes = _read_upto(stream, 4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise DataError(
            f"{path}: IDX header declares {ndim} dimensions but {what} ends after "
            f"{4 + len(dim_bytes)} bytes, before all {ndim} sizes; the file is truncated; {_FIX}"
        )
    dims = struct.unpack(f">{ndim}I", dim_bytes)
    claimed = math.prod(dims)

    # Read one byte more than claimed so trailing data shows up; memory stays bounded by
    # min(claimed, actual) + 1 (see _read_upto). Nothing is sized by the header before this.
    payload = _read_upto(stream, claimed + 1)
    if len(payload) < claimed:
        raise DataError(
            f"{path}: truncated: header says shape {dims} ({claimed} bytes of data) but {what} holds "
            f"only {len(payload)} bytes after the header; {_FIX}"
        )
    if len(payload) > claimed:
        raise DataError(
            f"{path}: file longer than its header says: shape {dims} needs {claimed} bytes of data "
            f"but {what} has more after them; {_FIX}"
        )
    if claimed == 0:  # torch.frombuffer refuses empty buffers
        try:
            return torch.empty(dims, dtype=torch.uint8)
        except RuntimeError as e:  # e.g. (0, 2**32-1, 2**32-1, 2**32-1): strides overflow int64
            raise DataError(
                f"{path}: IDX header declares shape {dims}, too large to represent ({e}); {_FIX}"
            ) from None
    # frombuffer shares memory with the bytearray (no copy); the tensor keeps it alive.
    return torch.frombuffer(payload, dtype=torch.uint8).reshape(dims)


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzip-compressed or not) into a uint8 tensor.

    The shape comes from the header. Every problem (missing file, bad magic, unsupported type,
    bad rank, truncated or overlong data, corrupt gzip stream) raises DataError naming the file.
    """
    path = Path(path)
    try:
        gz = _is_gzip(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; point --data-dir at a folder holding it") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None

    try:
        with open(path, "rb") as raw:
            if not gz:
                return _parse_idx(raw, path, "the file")
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _parse_idx(stream, path, "the decompressed data")
    except (OSError, EOFError, zlib.error) as e:
        # gzip reports damage as BadGzipFile (an OSError), EOFError (stream cut short) or
        # zlib.error (bad deflate data); all mean the same thing to the user.
        problem = f"corrupt gzip stream ({e})" if gz else f"cannot read ({e})"
        raise DataError(f"{path}: {problem}; {_FIX}") from None


# ----------------------------------------------------------------------------------------------
# Checksums


def _md5_of_stream(stream: BinaryIO) -> str:
    h = hashlib.md5()
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _file_md5(path: Path) -> str:
    """MD5 of the file's bytes as stored."""
    with open(path, "rb") as f:
        return _md5_of_stream(f)


def _content_md5(path: Path) -> str:
    """MD5 of the file's uncompressed content (decompressing if it is gzip)."""
    if not _is_gzip(path):
        return _file_md5(path)
    try:
        with gzip.open(path, "rb") as f:
            return _md5_of_stream(f)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e}); {_FIX_MD5}") from None


# (resolved path, size, mtime_ns, expected md5) of files that passed verification in this process.
_VERIFIED: set[tuple[str, int, int, str]] = set()


def _verify(path: Path, fspec: FileSpec, dataset: str) -> None:
    """Check a local file against the published MD5; DataError on mismatch.

    The uncompressed MD5 is used where known, so recompressed copies pass; otherwise the .gz MD5
    (for gzip files only: an uncompressed file with no known MD5 cannot be checked, and is not).
    """
    try:
        _check_md5(path, fspec, dataset)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a gzip stream that is cut short
        raise DataError(f"{path}: cannot be read to verify it ({getattr(e, 'strerror', None) or e}); "
                        f"{_FIX}") from None


def _check_md5(path: Path, fspec: FileSpec, dataset: str) -> None:
    gz = _is_gzip(path)
    if fspec.raw_md5 is not None:
        expected, kind, compute = fspec.raw_md5, "uncompressed content", _content_md5
    elif gz:
        expected, kind, compute = fspec.gz_md5, "gzip file", _file_md5
    else:
        return
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    found = compute(path)
    if found != expected:
        raise DataError(
            f"{path}: checksum mismatch for {dataset} {fspec.filename}: MD5 of its {kind} is "
            f"{found}, expected {expected}; the file is damaged or from another dataset; {_FIX_MD5}"
        )
    _VERIFIED.add(key)


# ----------------------------------------------------------------------------------------------
# Finding local copies


def _match_files(folder: Path, spec: DatasetSpec) -> tuple[dict[str, Path], list[str]]:
    """Which of the spec's files ``folder`` holds (keyed by official filename), and which it lacks.

    Each file may be the official ``.gz`` or its uncompressed form; the uncompressed one is
    preferred since it reads faster.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for f in spec.files:
        for candidate in (folder / f.raw_name, folder / f.filename):
            if candidate.is_file():
                found[f.filename] = candidate
                break
        else:
            missing.append(f.filename)
    return found, missing


def _needed_files(spec: DatasetSpec) -> str:
    return ", ".join(spec_file.filename for spec_file in spec.files) + " (.gz or uncompressed)"


def _how_to_point(spec: DatasetSpec) -> str:
    return (
        f"to use a local copy, put {_needed_files(spec)} in a folder and pass --data-dir DIR "
        f"or set {CACHE_ENV}=DIR"
    )


def _locate(spec: DatasetSpec, data_dir: str | Path | None, download: bool) -> Path:
    """:func:`locate` for any spec (tests pass made-up ones)."""
    roots: list[tuple[Path, str]] = []
    if data_dir is not None:
        given = Path(data_dir).expanduser()
        if not given.is_dir():
            # A typo, not a request to look elsewhere: say so rather than use another copy.
            what = "is a file" if given.exists() else "does not exist"
            raise DataError(f"--data-dir {str(data_dir)!r} {what}; give the folder that holds "
                            f"{_needed_files(spec)}")
        roots.append((given, "--data-dir"))
    env = os.environ.get(CACHE_ENV)
    if env:
        roots.append((Path(env).expanduser(), f"${CACHE_ENV}"))
    cache = default_cache_dir(spec.name)
    roots.append((cache, "cache"))

    looked: list[str] = []  # one entry per folder examined, for messages
    pointed: list[tuple[str, str]] = []  # (origin, entry) of those from --data-dir / $NORMLAB_DATA
    seen: set[Path] = set()
    for root, origin in roots:
        # People often point at a parent folder holding one subfolder per dataset. The cache
        # folder is already per-dataset, so it has no such subfolder.
        folders = [root] if origin == "cache" else [root, root / spec.name]
        for folder in folders:
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            exists = folder.is_dir()
            if not exists:
                problem = "no such folder"
            else:
                found, missing = _match_files(folder, spec)
                if not missing:
                    passed_over = [text for o, text in pointed if o != origin]
                    if passed_over:
                        # An explicitly given folder lacked the data: say so rather than
                        # silently using another copy.
                        warnings.warn(
                            f"{spec.name} not found where pointed to ({'; '.join(passed_over)}); "
                            f"using the copy in {folder} ({origin})"
                        )
                    for f in spec.files:
                        _verify(found[f.filename], f, spec.name)
                    return folder
                problem = f"missing {', '.join(missing)}"
            looked.append(f"{folder} ({origin}): {problem}")
            if origin != "cache":
                pointed.append((origin, looked[-1]))
            if not exists:
                break  # a missing folder has no subfolder either

    if not download:
        raise DataError(
            f"{spec.name} data not found and downloading is off; looked in: {'; '.join(looked)}; "
            f"{_how_to_point(spec)}"
        )
    _download_missing(spec, cache, looked)
    if pointed:
        # Said after the download, so that a failed one ends in a single error that already
        # lists every place looked at.
        warnings.warn(
            f"{spec.name} not found where pointed to ({'; '.join(t for _, t in pointed)}); "
            f"downloaded it to {cache}"
        )
    found, _ = _match_files(cache, spec)
    for f in spec.files:
        _verify(found[f.filename], f, spec.name)
    return cache


def locate(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Return the folder holding dataset ``name``'s four files, verified by MD5.

    Looks in ``data_dir``, then ``$NORMLAB_DATA``, then the cache folder (the first two also in a
    ``<dir>/<name>/`` subfolder). If none has all four files and ``download`` is true, downloads
    the missing ones into the cache folder. Raises DataError listing every place looked at when
    the data can be neither found nor downloaded, and on a checksum mismatch.
    """
    return _locate(get_spec(name), data_dir, download)


# ----------------------------------------------------------------------------------------------
# Downloading


def _urlopen(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading. Module-level so tests can replace it (no network in tests)."""
    # Some mirrors refuse urllib's default User-Agent.
    request = urllib.request.Request(url, headers={"User-Agent": "normlab"})
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (fixed https/http URLs)


class _ChecksumMismatch(Exception):
    """A downloaded file's MD5 differs from the published one (try the next mirror)."""


def _content_length(response: object) -> int | None:
    headers = getattr(response, "headers", None)
    try:
        return int(headers.get("Content-Length")) if headers is not None else None
    except (TypeError, ValueError):
        return None


def _fetch(url: str, dest: Path, md5: str) -> None:
    """Download ``url`` to ``dest``, checking its MD5; atomic: ``dest`` appears only if all is well.

    The data goes to a temporary file in the same folder (so ``os.replace`` is a rename on one
    file system) which is removed on any failure, including Ctrl-C.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, _urlopen(url, _TIMEOUT_S) as response:
            bar = tqdm(
                total=_content_length(response),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                leave=False,
            )
            with bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
        if h.hexdigest() != md5:
            raise _ChecksumMismatch(f"MD5 of the download is {h.hexdigest()}, expected {md5}")
        os.replace(tmp_name, dest)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def _download_missing(spec: DatasetSpec, cache: Path, looked: list[str]) -> None:
    """Download into ``cache`` each of the spec's files it lacks, trying mirrors in order."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot create the cache folder {cache} to download {spec.name} ({e}); "
            f"looked in: {'; '.join(looked)}; {_how_to_point(spec)}"
        ) from None

    present, _ = _match_files(cache, spec)
    for f in spec.files:
        if f.filename in present:
            continue
        reasons: list[str] = []
        for mirror in spec.mirrors:
            url = mirror.rstrip("/") + "/" + f.filename
            try:
                _fetch(url, cache / f.filename, f.gz_md5)
                break
            except (OSError, HTTPException, ValueError, _ChecksumMismatch) as e:
                # OSError covers URLError/HTTPError, timeouts and local write errors.
                reasons.append(f"{url}: {e or type(e).__name__}")
        else:
            raise DataError(
                f"could not download {spec.name} {f.filename}: every mirror failed "
                f"({'; '.join(reasons)}); looked locally in: {'; '.join(looked)}; "
                f"{_how_to_point(spec)}"
            )


# ----------------------------------------------------------------------------------------------
# Loading a split


def _load_split(
    spec: DatasetSpec, train: bool, data_dir: str | Path | None, download: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`load_split` for any spec (tests pass made-up ones)."""
    folder = _locate(spec, data_dir, download)
    found, _ = _match_files(folder, spec)
    image_spec, label_spec = spec.split_files(train)
    image_path, label_path = found[image_spec.filename], found[label_spec.filename]
    images, labels = read_idx(image_path), read_idx(label_path)

    if images.dim() != 3:
        raise DataError(
            f"{image_path}: expected images of shape (N, H, W), found shape {tuple(images.shape)}; "
            f"{_FIX}"
        )
    if labels.dim() != 1:
        raise DataError(
            f"{label_path}: expected labels of shape (N,), found shape {tuple(labels.shape)}; {_FIX}"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            f"one of them is damaged or from another dataset; {_FIX}"
        )
    if len(images) == 0:
        raise DataError(f"{image_path} holds no images; {_FIX}")
    n_classes = len(spec.classes)
    bad = (labels >= n_classes).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise DataError(
            f"{label_path}: label {int(labels[i])} at index {i} is outside 0..{n_classes - 1}; "
            f"{_FIX}"
        )
    return images, labels.long()


def load_split(
    name: str, train: bool, data_dir: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the training (``train=True``) or test split of dataset ``name``.

    Returns ``(images, labels)``: images uint8 of shape (N, H, W) (28x28 for the MNIST family),
    labels int64 of shape (N,) in ``0..9``. Finds (or downloads) the data as :func:`locate` does.
    """
    return _load_split(get_spec(name), train, data_dir, download)
