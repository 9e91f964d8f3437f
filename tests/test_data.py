"""Tests of normlab.data (lookup, verification, download, load_split), normlab.idx (IDX reading
and validation) and normlab.datasets (the specs), mostly through the names normlab.data exports.

Everything except the real-MNIST test runs on tiny made-up files in tmp_path; the network is
never touched (an autouse fixture makes ``data.open_url`` fail unless a test installs a fake).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import struct
import subprocess
import sys
import tracemalloc
import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import MIRRORS, REPO, idx_bytes, install, md5, synthetic_mnist

from normlab import data, datasets, idx
from normlab.data import DatasetSpec, FileSpec
from normlab.errors import ConfigError, DataError


# ----------------------------------------------------------------------------------------------
# Helpers (idx_bytes, md5, install, synthetic_mnist and MIRRORS come from helpers.py)


def write(path: Path, payload: bytes, gz: bool = False) -> Path:
    """Write ``payload`` to ``path``, gzip-compressed (deterministically) if ``gz``."""
    path.write_bytes(gzip.compress(payload, mtime=0) if gz else payload)
    return path


# DatasetSpec's four file fields
FILE_FIELDS = ("train_images", "train_labels", "test_images", "test_labels")


def make_dataset(n_train: int = 6, n_test: int = 4, seed: int = 0, raw_md5: bool = True,
                 name: str = "mnist") -> tuple[DatasetSpec, dict[str, bytes]]:
    """A made-up dataset (helpers.synthetic_mnist): its spec, with correct MD5s (without those of
    the uncompressed files unless ``raw_md5``), and its files' raw IDX bytes by filename."""
    spec, raw, _ = synthetic_mnist(n_train, n_test, seed=seed, name=name)
    if not raw_md5:
        spec = dataclasses.replace(spec, **{key: dataclasses.replace(getattr(spec, key),
                                                                     raw_md5=None)
                                            for key in FILE_FIELDS})
    return spec, raw


class FakeWeb:
    """Stands in for ``data.open_url``: serves ``files`` (by basename); URLs under ``down`` fail."""

    def __init__(self, files: dict[str, bytes], down: tuple[str, ...] = ()) -> None:
        self.files, self.down, self.calls = files, down, []

    def __call__(self, url: str, timeout: float) -> io.BytesIO:
        self.calls.append(url)
        if url.startswith(self.down):
            raise urllib.error.URLError("connection refused")
        return io.BytesIO(self.files[url.rsplit("/", 1)[1]])


def gz_files(raw: dict[str, bytes]) -> dict[str, bytes]:
    return {fn: gzip.compress(b, mtime=0) for fn, b in raw.items()}


@pytest.fixture(autouse=True)
def isolated(no_network: Path) -> Path:
    """conftest's no_network for every test here (private cache folder, no $NORMLAB_DATA, no
    network access); returns the cache folder of "mnist"."""
    return no_network / "normlab" / "mnist"


@pytest.fixture
def fake_mnist(monkeypatch: pytest.MonkeyPatch) -> tuple[DatasetSpec, dict[str, bytes]]:
    """Replace the registered "mnist" spec by a made-up one, so the public API can be tested."""
    spec, raw = make_dataset()
    monkeypatch.setitem(data.DATASETS, "mnist", spec)
    return spec, raw


# ----------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_roundtrip(tmp_path: Path, gz: bool) -> None:
    """A valid IDX file, raw or gzip, reads back as exactly the uint8 array that was written."""
    array = np.random.default_rng(1).integers(0, 256, (5, 28, 28)).astype(np.uint8)
    path = write(tmp_path / "images", idx_bytes(array), gz)
    out = data.read_idx(path)
    assert out.dtype == torch.uint8 and out.shape == (5, 28, 28)
    assert np.array_equal(out.numpy(), array)
    labels = np.arange(10, dtype=np.uint8)
    assert data.read_idx(write(tmp_path / "labels", idx_bytes(labels), gz)).tolist() == list(
        range(10)
    )


def test_read_idx_detects_gzip_by_magic_not_suffix(tmp_path: Path) -> None:
    """Compression is recognised by content: gzip data without .gz and raw data named .gz both read."""
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert (
        data.read_idx(write(tmp_path / "plain-name", idx_bytes(array), gz=True)).tolist()
        == array.tolist()
    )
    assert (
        data.read_idx(write(tmp_path / "raw.gz", idx_bytes(array), gz=False)).tolist()
        == array.tolist()
    )


def test_read_idx_missing_file(tmp_path: Path) -> None:
    """A missing file is a DataError naming it, not a bare FileNotFoundError."""
    with pytest.raises(DataError, match="nope"):
        data.read_idx(tmp_path / "nope")


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_wrong_magic(tmp_path: Path, gz: bool) -> None:
    """A file not starting with two zero bytes is rejected as not IDX, naming the file and fix."""
    path = write(tmp_path / "bad", b"\x12\x34\x08\x01" + struct.pack(">I", 3) + b"abc", gz)
    with pytest.raises(DataError, match="not an IDX file") as e:
        data.read_idx(path)
    assert str(path) in str(e.value) and "--data-dir" in str(e.value)


def test_read_idx_unsupported_dtype(tmp_path: Path) -> None:
    """Only type code 0x08 (unsigned byte) is accepted; the error names the code found."""
    path = write(tmp_path / "floats", idx_bytes(np.zeros(4), dtype_code=0x0D))
    with pytest.raises(DataError, match="0x0d"):
        data.read_idx(path)


@pytest.mark.parametrize("ndim", [0, 5, 255])
def test_read_idx_bad_ndim(tmp_path: Path, ndim: int) -> None:
    """A header declaring 0 or more than 4 dimensions is rejected."""
    path = write(tmp_path / "x", bytes([0, 0, 8, ndim]) + b"\x00" * 64)
    with pytest.raises(DataError, match=f"declares {ndim} dimensions"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_truncated_payload(tmp_path: Path, gz: bool) -> None:
    """Fewer data bytes than the header's sizes multiply to is reported as truncated."""
    full = idx_bytes(np.zeros((3, 28, 28)))
    path = write(tmp_path / "short", full[:-100], gz)
    with pytest.raises(DataError, match="truncated") as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00\x00", b"\x00\x00\x08\x03" + struct.pack(">I", 5)],
    ids=["empty", "2-bytes", "1-of-3-dims"],
)
def test_read_idx_header_too_short(tmp_path: Path, content: bytes) -> None:
    """A file that ends inside the header (before the magic or before all declared sizes) is rejected."""
    path = write(tmp_path / "stub", content)
    with pytest.raises(DataError, match="too short|truncated"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_trailing_bytes(tmp_path: Path, gz: bool) -> None:
    """Data beyond what the header declares is an error, not silently ignored."""
    path = write(tmp_path / "long", idx_bytes(np.zeros((2, 3))) + b"\x07", gz)
    with pytest.raises(DataError, match="longer than its header says"):
        data.read_idx(path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_huge_header_tiny_file_does_not_allocate(tmp_path: Path, gz: bool) -> None:
    """A header claiming 4 GB in a 100-byte file is rejected while peak Python allocation stays small.

    A reader that allocated (or read) by the header's size first would show a ~4 GB peak here.
    """
    dims = (1000, 2000, 2000)  # 4e9 bytes claimed
    path = write(
        tmp_path / "liar", bytes([0, 0, 8, 3]) + struct.pack(">3I", *dims) + b"\x01" * 84, gz
    )
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="truncated"):
            data.read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak allocation {peak} bytes"


def test_read_idx_gzip_bomb_is_not_fully_decompressed(tmp_path: Path) -> None:
    """A small header followed by 64 MB of compressed zeros is rejected without decompressing it all."""
    payload = bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(64 * 2**20)
    path = write(tmp_path / "bomb.gz", payload, gz=True)
    del payload
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="longer than its header says"):
            data.read_idx(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak allocation {peak} bytes"


@pytest.mark.parametrize("damage", ["cut", "flip", "garbage"])
def test_read_idx_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    """A gzip stream cut short, with a flipped byte, or invalid after the magic is a DataError."""
    good = gzip.compress(
        idx_bytes(np.random.default_rng(2).integers(0, 256, (20, 28, 28))), mtime=0
    )
    if damage == "cut":
        bad = good[: len(good) // 2]
    elif damage == "flip":
        mid = len(good) // 2
        bad = good[:mid] + bytes([good[mid] ^ 0xFF]) + good[mid + 1 :]
    else:
        bad = b"\x1f\x8b" + b"not really gzip" * 10
    path = write(tmp_path / "broken.gz", bad)
    with pytest.raises(DataError) as e:
        data.read_idx(path)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------------------------
# load_split checks


def test_load_split_roundtrip(tmp_path: Path, fake_mnist) -> None:
    """load_split returns uint8 (N, 28, 28) images and int64 (N,) labels equal to the files' data."""
    spec, raw = fake_mnist
    folder = install(tmp_path / "d", raw)
    images, labels = data.load_split("mnist", train=True, data_dir=folder, download=False)
    assert images.dtype == torch.uint8 and images.shape == (6, 28, 28)
    assert labels.dtype == torch.int64 and labels.shape == (6,)
    assert labels.tolist() == list(raw["train-labels-idx1-ubyte.gz"][8:])
    images, labels = data.load_split("mnist", train=False, data_dir=folder, download=False)
    assert images.shape == (4, 28, 28) and labels.shape == (4,)


def _with_labels(
    monkeypatch: pytest.MonkeyPatch, labels: np.ndarray
) -> tuple[DatasetSpec, dict[str, bytes]]:
    """Fake mnist whose training labels are ``labels`` (MD5s kept consistent)."""
    _, raw = make_dataset()
    raw["train-labels-idx1-ubyte.gz"] = idx_bytes(labels)
    files = [FileSpec(fn, md5(gzip.compress(b, mtime=0)), md5(b)) for fn, b in raw.items()]
    spec = DatasetSpec("mnist", MIRRORS, *files, classes=tuple(str(d) for d in range(10)))
    monkeypatch.setitem(data.DATASETS, "mnist", spec)
    return spec, raw


def test_load_split_count_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """6 images with 5 labels is an error naming both files."""
    _, raw = _with_labels(monkeypatch, np.arange(5))
    folder = install(tmp_path / "d", raw)
    with pytest.raises(DataError, match="6 images but .* 5 labels") as e:
        data.load_split("mnist", True, data_dir=folder, download=False)
    assert "train-images" in str(e.value) and "train-labels" in str(e.value)


def test_load_split_label_out_of_range(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A label of 10 or more is an error naming the first bad value, its index and the file."""
    _, raw = _with_labels(monkeypatch, np.array([1, 2, 3, 12, 200, 4]))
    folder = install(tmp_path / "d", raw)
    with pytest.raises(DataError, match=r"label 12 at index 3 .*0\.\.9") as e:
        data.load_split("mnist", True, data_dir=folder, download=False)
    assert "train-labels" in str(e.value)


def test_load_split_labels_not_1d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A labels file holding a 2-D array is rejected."""
    _, raw = _with_labels(monkeypatch, np.zeros((6, 2)))
    folder = install(tmp_path / "d", raw)
    with pytest.raises(DataError, match=r"shape \(N,\)"):
        data.load_split("mnist", True, data_dir=folder, download=False)


# ----------------------------------------------------------------------------------------------
# Specs


def test_specs() -> None:
    """The three datasets are registered with four distinct files and ten classes each."""
    assert set(data.DATASETS) == {"mnist", "fashion-mnist", "kmnist"}
    for name, spec in data.DATASETS.items():
        assert data.get_spec(name) is spec and spec.name == name
        assert len(spec.classes) == 10 and spec.mirrors
        assert len({f.filename for f in spec.files}) == 4
        assert all(len(f.gz_md5) == 32 for f in spec.files)
    assert all(f.raw_md5 for f in data.DATASETS["mnist"].files)
    assert data.DATASETS["kmnist"].classes[0] == "o"
    assert data.DATASETS["fashion-mnist"].classes[0] == "T-shirt/top"


def test_get_spec_unknown() -> None:
    """An unknown name is a ConfigError listing the valid names."""
    with pytest.raises(
        ConfigError, match="unknown dataset 'x'; valid: fashion-mnist, kmnist, mnist"
    ):
        data.get_spec("x")


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The cache is $XDG_CACHE_HOME/normlab/<name>, or ~/.cache/normlab/<name> without it."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.default_cache_dir("kmnist") == tmp_path / "normlab" / "kmnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.default_cache_dir("mnist") == Path.home() / ".cache" / "normlab" / "mnist"


# ----------------------------------------------------------------------------------------------
# Verification


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_checksum_mismatch_by_raw_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gz: bool
) -> None:
    """A file whose content MD5 differs from the spec's is an error.

    The message names the file as it is (the .gz name for a gzip file, the name without .gz for
    an uncompressed one), the expected and the found MD5, and the fix.
    """
    spec, raw = make_dataset()
    wrong = "0" * 32
    bad = FileSpec(spec.test_labels.filename, spec.test_labels.gz_md5, wrong)
    monkeypatch.setitem(
        data.DATASETS, "mnist", DatasetSpec("mnist", MIRRORS, *spec.files[:3], bad, spec.classes)
    )
    folder = install(tmp_path / "d", raw, gz=gz)
    with pytest.raises(DataError) as e:
        data.locate("mnist", folder, download=False)
    msg = str(e.value)
    name = "t10k-labels-idx1-ubyte.gz" if gz else "t10k-labels-idx1-ubyte:"
    assert f"checksum mismatch for mnist {name}" in msg and wrong in msg
    assert md5(raw["t10k-labels-idx1-ubyte.gz"]) in msg and "--data-dir" in msg


def test_recompressed_copy_passes_by_raw_md5(tmp_path: Path, fake_mnist) -> None:
    """Local .gz files compressed differently from the official ones still pass (content MD5 used)."""
    _, raw = fake_mnist
    folder = tmp_path / "d"
    folder.mkdir()
    for fn, b in raw.items():
        (folder / fn).write_bytes(gzip.compress(b, compresslevel=1, mtime=12345))
    assert data.locate("mnist", folder, download=False) == folder


def test_checksum_by_gz_md5_when_no_raw_md5(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a raw MD5, .gz files are checked by the official .gz MD5; uncompressed ones are not."""
    spec, raw = make_dataset(raw_md5=False)
    monkeypatch.setitem(data.DATASETS, "mnist", spec)
    folder = install(tmp_path / "gz", raw)
    assert data.locate("mnist", folder, download=False) == folder
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(raw["train-images-idx3-ubyte.gz"], mtime=7)
    )
    with pytest.raises(DataError, match=spec.train_images.gz_md5):
        data.locate("mnist", folder, download=False)
    raw["train-images-idx3-ubyte.gz"] = idx_bytes(
        np.zeros((6, 28, 28))
    )  # different content: not checkable
    plain = install(tmp_path / "plain", raw, gz=False)
    assert data.locate("mnist", plain, download=False) == plain


def test_verification_is_memoised(
    tmp_path: Path, fake_mnist, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file verified once is not hashed again while its size and mtime are unchanged: bytes
    damaged behind the verifier's back, with size and mtime restored, still pass; once the
    mtime differs the file is hashed again and the damage is found."""
    _, raw = fake_mnist
    folder = install(tmp_path / "d", raw)
    data.locate("mnist", folder, download=False)
    path = folder / "train-images-idx3-ubyte.gz"
    st = path.stat()
    damaged = bytearray(path.read_bytes())
    damaged[-12] ^= 0xFF                                  # inside the compressed stream
    path.write_bytes(bytes(damaged))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))   # same size, same mtime
    data.locate("mnist", folder, download=False)          # memoised: not hashed again
    os.utime(path, ns=(1, 1))                             # changed mtime: must hash again
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*(checksum mismatch|corrupt "
                                         "gzip stream)"):
        data.locate("mnist", folder, download=False)


# ----------------------------------------------------------------------------------------------
# Lookup


def test_lookup_order(
    tmp_path: Path, fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The data_dir argument beats $NORMLAB_DATA, which beats the cache folder."""
    _, raw = fake_mnist
    arg, env = install(tmp_path / "arg", raw), install(tmp_path / "env", raw, gz=False)
    cache = install(isolated, raw)
    monkeypatch.setenv(data.CACHE_ENV, str(env))
    assert data.locate("mnist", arg, download=False) == arg
    assert data.locate("mnist", download=False) == env
    monkeypatch.delenv(data.CACHE_ENV)
    assert data.locate("mnist", download=False) == cache


def test_lookup_accepts_dataset_subfolder(tmp_path: Path, fake_mnist) -> None:
    """Pointing at a parent folder works when the files are in <dir>/mnist/."""
    _, raw = fake_mnist
    sub = install(tmp_path / "datasets" / "mnist", raw, gz=False)
    assert data.locate("mnist", tmp_path / "datasets", download=False) == sub
    images, _ = data.load_split("mnist", False, tmp_path / "datasets", download=False)
    assert images.shape == (4, 28, 28)


def test_explicit_dir_without_data_falls_back_to_cache_with_warning(
    tmp_path: Path, fake_mnist, isolated: Path
) -> None:
    """A data_dir lacking files falls back to the cache, but says so with a warning naming the dir."""
    _, raw = fake_mnist
    cache = install(isolated, raw)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.warns(UserWarning, match="empty"):
        assert data.locate("mnist", empty, download=False) == cache


def test_a_fallback_is_reported_once_per_process(tmp_path: Path, fake_mnist,
                                                 isolated: Path) -> None:
    """Looking for the data again (a study does, for training and for its report) repeats no
    warning, even when the warning filters were changed in between (which resets Python's own
    once-per-place memory); another folder that lacks the data is reported again."""
    _, raw = fake_mnist
    install(isolated, raw)
    empty, other = tmp_path / "empty", tmp_path / "other"
    empty.mkdir()
    other.mkdir()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        data.locate("mnist", empty, download=False)
        warnings.resetwarnings()
        warnings.simplefilter("default")
        data.locate("mnist", empty, download=False)
        data.locate("mnist", other, download=False)
    messages = [str(w.message) for w in seen]
    assert len(messages) == 2, messages
    assert str(empty) in messages[0] and str(other) in messages[1]


def test_partial_folder_is_not_a_match(tmp_path: Path, fake_mnist) -> None:
    """A folder with only three of the four files does not count; the error names the missing one."""
    _, raw = fake_mnist
    folder = install(tmp_path / "d", raw)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte.gz"):
        data.locate("mnist", folder, download=False)


def test_missing_data_without_download_lists_places(
    tmp_path: Path, fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With download=False and no data anywhere, one error lists every place looked and how to fix it."""
    monkeypatch.setenv(data.CACHE_ENV, str(tmp_path / "envdir"))
    (tmp_path / "argdir").mkdir()
    with pytest.raises(DataError) as e:
        data.locate("mnist", tmp_path / "argdir", download=False)
    msg = str(e.value)
    for place in ("argdir", "envdir", str(isolated)):
        assert place in msg
    assert (
        "--data-dir DIR" in msg and "NORMLAB_DATA=DIR" in msg and "train-images-idx3-ubyte" in msg
    )


def test_failed_download_lists_mirrors_and_places(
    tmp_path: Path, fake_mnist, isolated: Path
) -> None:
    """When every mirror fails, one error lists each mirror and why, the places looked, and the fix."""
    (tmp_path / "argdir").mkdir()
    with pytest.raises(DataError) as e, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.locate("mnist", tmp_path / "argdir")
    msg = str(e.value)
    assert all(m + "train-images-idx3-ubyte.gz" in msg for m in MIRRORS)
    assert "network disabled" in msg and "argdir" in msg and str(isolated) in msg
    assert "--data-dir DIR" in msg and "NORMLAB_DATA=DIR" in msg


# ----------------------------------------------------------------------------------------------
# Another dataset's files (the three share file names)


@pytest.fixture
def two_datasets(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[DatasetSpec, dict[str, bytes]]]:
    """Made-up "mnist" (with uncompressed MD5s) and "fashion-mnist" (.gz MD5s only, as the real
    one is published) registered in place of the real ones: spec and raw files by name."""
    made = {"mnist": make_dataset(seed=0), "fashion-mnist": make_dataset(
        seed=1, raw_md5=False, name="fashion-mnist")}
    for name, (spec, _) in made.items():
        monkeypatch.setitem(data.DATASETS, name, spec)
    return made


def _mnist_copy(folder: Path, raw: dict[str, bytes], form: str) -> Path:
    """MNIST's files in ``folder`` as the official .gz, recompressed .gz, or uncompressed."""
    if form != "recompressed":
        return install(folder, raw, gz=form == "gz")
    folder.mkdir(parents=True)
    for fn, b in raw.items():
        (folder / fn).write_bytes(gzip.compress(b, compresslevel=1, mtime=99))
    return folder


@pytest.mark.parametrize("form", ["gz", "recompressed", "raw"])
def test_env_folder_of_another_dataset_is_passed_over(
    tmp_path: Path, two_datasets, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """$NORMLAB_DATA holding MNIST's genuine files (official .gz, recompressed or uncompressed),
    asked for fashion-mnist: not a checksum error and not used as fashion-mnist, but passed over
    with a warning that it holds mnist's files; fashion-mnist is downloaded to the cache. Without
    download, the one error says so too. Neither message suggests deleting MNIST's files."""
    env = _mnist_copy(tmp_path / "mnist", two_datasets["mnist"][1], form)
    monkeypatch.setenv(data.CACHE_ENV, str(env))
    with pytest.raises(DataError) as e:
        data.locate("fashion-mnist", download=False)
    assert "holds mnist's files, not fashion-mnist's" in str(e.value) and str(env) in str(e.value)
    assert "delete" not in str(e.value) and "checksum mismatch" not in str(e.value)

    fashion = two_datasets["fashion-mnist"][1]
    monkeypatch.setattr(data, "open_url", FakeWeb(gz_files(fashion)))
    with pytest.warns(UserWarning, match="holds mnist's files, not fashion-mnist's") as seen:
        folder = data.locate("fashion-mnist")
    assert folder == data.default_cache_dir("fashion-mnist")
    assert all("delete" not in str(w.message) for w in seen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a second lookup: "using the copy in <cache>"
        _, labels = data.load_split("fashion-mnist", True)
    assert labels.tolist() == list(fashion["train-labels-idx1-ubyte.gz"][8:])
    assert sorted(p.name for p in env.iterdir()) == sorted(  # MNIST's files left alone
        fn if form != "raw" else fn.removesuffix(".gz") for fn in two_datasets["mnist"][1])


def test_folder_of_fashion_files_is_passed_over_for_mnist(
    tmp_path: Path, two_datasets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other way round: official Fashion-MNIST .gz files (known by their .gz MD5 only) in
    $NORMLAB_DATA, asked for mnist (checked by content MD5), are recognised as fashion-mnist's and
    passed over for the mnist copy in the cache."""
    env = install(tmp_path / "fashion", two_datasets["fashion-mnist"][1])
    cache = install(data.default_cache_dir("mnist"), two_datasets["mnist"][1])
    monkeypatch.setenv(data.CACHE_ENV, str(env))
    with pytest.warns(UserWarning, match="holds fashion-mnist's files, not mnist's"):
        assert data.locate("mnist", download=False) == cache


def test_data_dir_of_another_dataset_is_an_error(tmp_path: Path, two_datasets) -> None:
    """An explicit data_dir holding MNIST's files, asked for fashion-mnist, is a one-line error
    saying so and how to fix it (even though the cache holds fashion-mnist), not a checksum
    mismatch advising to delete them; a <data_dir>/fashion-mnist subfolder is still used."""
    given = install(tmp_path / "d", two_datasets["mnist"][1])
    install(data.default_cache_dir("fashion-mnist"), two_datasets["fashion-mnist"][1])
    with pytest.raises(DataError) as e:
        data.locate("fashion-mnist", given)
    msg = str(e.value)
    assert msg == (f"--data-dir {given} holds mnist's files, not fashion-mnist's; point --data-dir "
                   f"at a folder of fashion-mnist, or leave it out to download it")
    sub = install(given / "fashion-mnist", two_datasets["fashion-mnist"][1])
    assert data.locate("fashion-mnist", given, download=False) == sub


def test_cache_holding_another_dataset_is_an_error(two_datasets) -> None:
    """MNIST's files in fashion-mnist's cache folder are an error naming the file and saying to
    move it, not a checksum mismatch advising to delete it."""
    install(data.default_cache_dir("fashion-mnist"), two_datasets["mnist"][1])
    with pytest.raises(DataError, match="is mnist's file .*not fashion-mnist's; move it") as e:
        data.locate("fashion-mnist")
    assert "delete" not in str(e.value) and "\n" not in str(e.value)


def test_damaged_file_is_still_a_checksum_mismatch(
    tmp_path: Path, two_datasets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file matching no registered dataset's file (here a fashion-mnist .gz with one label
    changed) is not passed over as another dataset's: it stays a checksum mismatch that names the
    file and offers to delete it, even in $NORMLAB_DATA."""
    raw = dict(two_datasets["fashion-mnist"][1])
    raw["train-labels-idx1-ubyte.gz"] = raw["train-labels-idx1-ubyte.gz"][:-1] + b"\x09"
    env = install(tmp_path / "fashion", raw)
    monkeypatch.setenv(data.CACHE_ENV, str(env))
    with pytest.raises(DataError, match="checksum mismatch for fashion-mnist "
                                        "train-labels-idx1-ubyte.gz") as e:
        data.locate("fashion-mnist", download=False)
    assert "delete the file to download it again" in str(e.value)


# ----------------------------------------------------------------------------------------------
# Download


def test_download(fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Missing data is downloaded from the first mirror into the cache, verified, and then loads."""
    _, raw = fake_mnist
    web = FakeWeb(gz_files(raw))
    monkeypatch.setattr(data, "open_url", web)
    assert data.locate("mnist") == isolated
    assert sorted(p.name for p in isolated.iterdir()) == sorted(raw)  # no temp files left
    assert web.calls == [MIRRORS[0] + fn for fn in raw]
    images, labels = data.load_split("mnist", True)
    assert images.shape == (6, 28, 28) and labels.shape == (6,)
    assert len(web.calls) == 4  # nothing downloaded twice


def test_download_only_missing_files(
    fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache holding some of the files gets only the missing ones downloaded."""
    _, raw = fake_mnist
    install(isolated, raw)
    (isolated / "t10k-images-idx3-ubyte.gz").unlink()
    web = FakeWeb(gz_files(raw))
    monkeypatch.setattr(data, "open_url", web)
    assert data.locate("mnist") == isolated
    assert web.calls == [MIRRORS[0] + "t10k-images-idx3-ubyte.gz"]


def test_download_wrong_md5_leaves_nothing(
    fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A download whose MD5 is wrong from every mirror is an error, and no file or temp file remains."""
    _, raw = fake_mnist
    served = gz_files(raw)
    served["train-images-idx3-ubyte.gz"] = b"\x1f\x8b tampered"
    monkeypatch.setattr(data, "open_url", FakeWeb(served))
    with pytest.raises(DataError, match="MD5 of the download is") as e:
        data.locate("mnist")
    assert all(m in str(e.value) for m in MIRRORS)
    assert list(isolated.iterdir()) == []


def test_download_interrupted_leaves_no_temp_file(
    fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection dropping mid-transfer leaves no partial or temporary file behind."""

    class Dropping(io.BytesIO):
        def read(self, n: int = -1) -> bytes:
            raise ConnectionResetError("reset by peer")

    monkeypatch.setattr(data, "open_url", lambda url, timeout: Dropping(b""))
    with pytest.raises(DataError, match="reset by peer"):
        data.locate("mnist")
    assert list(isolated.iterdir()) == []


def test_download_uses_second_mirror(
    fake_mnist, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the first mirror fails, each file comes from the second."""
    _, raw = fake_mnist
    web = FakeWeb(gz_files(raw), down=(MIRRORS[0],))
    monkeypatch.setattr(data, "open_url", web)
    assert data.locate("mnist") == isolated
    assert web.calls[:2] == [
        MIRRORS[0] + "train-images-idx3-ubyte.gz",
        MIRRORS[1] + "train-images-idx3-ubyte.gz",
    ]
    assert sorted(p.name for p in isolated.iterdir()) == sorted(raw)


# ----------------------------------------------------------------------------------------------
# Real data


def test_real_mnist(real_mnist: Path) -> None:
    """Real MNIST passes MD5 verification and loads with the right shapes, dtypes and labels.

    Train (60000, 28, 28), test (10000, 28, 28), uint8 images; int64 labels covering 0..9.
    """
    folder = real_mnist
    assert data.locate("mnist", folder, download=False) == folder
    for train, n in ((True, 60000), (False, 10000)):
        images, labels = data.load_split("mnist", train, folder, download=False)
        assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
        assert labels.shape == (n,) and labels.dtype == torch.int64
        assert int(labels.min()) == 0 and int(labels.max()) == 9
        assert len(labels.unique()) == 10


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_data_dir_that_is_not_a_folder_is_an_error(tmp_path: Path, fake_mnist, isolated: Path,
                                                   kind: str) -> None:
    """An explicit data_dir that does not exist or is a file is a DataError naming it, even when
    another copy (here in the cache) would be found: a typo must not silently use other data."""
    target = tmp_path / "typo"
    if kind == "file":
        target.write_bytes(b"x")
    with pytest.raises(DataError) as e:
        data.locate("mnist", target, download=False)
    assert "typo" in str(e.value)
    assert ("is a file" if kind == "file" else "does not exist") in str(e.value)


def test_unreadable_file_is_a_data_error(tmp_path: Path, fake_mnist, isolated: Path) -> None:
    """A data file that cannot be read for verification (here: a gzip stream cut short) is a
    DataError naming the file, not a raw OSError or EOFError."""
    _, raw = fake_mnist
    folder = install(tmp_path / "d", raw)
    victim = folder / "train-images-idx3-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:40])
    with pytest.raises(DataError) as e:
        data.locate("mnist", folder, download=False)
    assert victim.name in str(e.value)


# ----------------------------------------------------------------------------------------------
# Module layout


def test_data_reexports_the_specs_and_the_reader() -> None:
    """normlab.data's spec and reader names are the very objects of normlab.datasets and
    normlab.idx, so patching ``data.DATASETS`` (as tests and sitecustomize do) reaches get_spec."""
    assert data.DATASETS is datasets.DATASETS
    assert (data.DatasetSpec, data.FileSpec) == (datasets.DatasetSpec, datasets.FileSpec)
    assert data.get_spec is datasets.get_spec and data.read_idx is idx.read_idx
    for name in data.__all__:
        assert hasattr(data, name), name


def test_replacing_a_spec_through_data_reaches_get_spec(fake_mnist) -> None:
    """The fake_mnist fixture patches ``data.DATASETS``; ``datasets.get_spec`` sees it."""
    spec, _ = fake_mnist
    assert datasets.get_spec("mnist") is spec


def test_specs_and_reader_import_without_the_loader() -> None:
    """normlab.datasets needs neither torch nor normlab.data; normlab.idx does not need normlab.data
    (so neither can take part in an import cycle with it)."""
    code = (
        "import sys, normlab.datasets\n"
        "assert 'torch' not in sys.modules and 'normlab.data' not in sys.modules, sys.modules\n"
        "import normlab.idx\n"
        "assert 'normlab.data' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
