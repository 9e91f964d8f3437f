"""Datasets on disk: find, verify, download and load the MNIST family's files.

The three datasets normlab knows (described in :mod:`normlab.datasets`) ship as the same four
IDX files (train/test images/labels, read by :mod:`normlab.idx`), usually gzip-compressed. This
module owns where they live and whether they can be trusted:

* finds a local copy: the ``data_dir`` argument, then ``$NORMLAB_DATA``, then the cache folder
  (``~/.cache/normlab/<name>``), each but the cache also as ``<dir>/<name>/`` (:func:`locate`);
* verifies local files by MD5 (of the uncompressed content where known, since local copies of
  MNIST are often recompressed; else of the official .gz), and tells another registered dataset's
  files (the three share file names) from damaged ones where their checksums are known (every
  official .gz; uncompressed MNIST): a folder of those is passed over;
* downloads missing files into the cache, trying each mirror in turn, atomically;
* loads a split as checked tensors (:func:`load_split`).

The names callers know from here (``DATASETS``, ``DatasetSpec``, ``FileSpec``, ``get_spec``,
``read_idx``) are re-exported. torchvision is deliberately not used: it cannot be loaded
everywhere normlab runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch is imported where tensors are made, so finding data needs none
    import torch

import contextlib
import hashlib
import os
import tempfile
import urllib.request
import warnings
import zlib
from http.client import HTTPException
from pathlib import Path
from typing import BinaryIO

from tqdm.auto import tqdm

from normlab.datasets import DATASETS, DatasetSpec, FileSpec, get_spec
from normlab.errors import DataError
from normlab.idx import BAD_FILE_FIX, CHUNK, bad_file, is_gzip, open_content, read_idx

CACHE_ENV = "NORMLAB_DATA"

_TIMEOUT_S = 30.0  # per network operation (connect / each read), not for the whole download
_FIX_MD5 = ("point --data-dir at a folder that holds a good copy of this dataset, or delete the "
            "file to download it again")


def default_cache_dir(name: str) -> Path:
    """The folder downloads go to: ``$XDG_CACHE_HOME/normlab/<name>``, by default under ``~/.cache``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "normlab" / name


# ----------------------------------------------------------------------------------------------
# Checksums


def _md5_of_stream(stream: BinaryIO) -> str:
    h = hashlib.md5()
    while chunk := stream.read(CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _file_md5(path: Path) -> str:
    """MD5 of the file's bytes as stored."""
    with open(path, "rb") as f:
        return _md5_of_stream(f)


def _content_md5(path: Path) -> str:
    """MD5 of the file's uncompressed content (decompressing if it is gzip)."""
    if not is_gzip(path):
        return _file_md5(path)
    try:
        with open_content(path, gz=True) as f:
            return _md5_of_stream(f)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt gzip stream ({e}); {_FIX_MD5}") from None


# (resolved path, size, mtime_ns, expected md5 or None where none is known) of files that passed
# verification in this process.
_VERIFIED: set[tuple[str, int, int, str | None]] = set()


class _OtherDataset(DataError):
    """A local file is, by its MD5, another registered dataset's file: the wrong data, not damage."""

    def __init__(self, path: Path, owner: str, dataset: str) -> None:
        super().__init__(f"{path} is {owner}'s file (by its MD5), not {dataset}'s; move it out of "
                         f"{path.parent}, to a folder of {owner}")
        self.owner = owner


def _owner(path: Path, found: str, dataset: str) -> str | None:
    """The registered dataset other than ``dataset`` that ``path`` is a file of, judged by the MD5
    of the file as stored or of its uncompressed content (``found`` is one of them), or None."""
    known = {md5: other.name for other in DATASETS.values() if other.name != dataset
             for f in other.files for md5 in (f.gz_md5, f.raw_md5) if md5}
    if found in known:
        return known[found]
    for compute in (_file_md5, _content_md5) if is_gzip(path) else ():
        with contextlib.suppress(DataError):  # a damaged stream is no other dataset's file
            if (md5 := compute(path)) in known:
                return known[md5]
    return None


def _verify(path: Path, fspec: FileSpec, dataset: str) -> None:
    """Check a local file against the published MD5; DataError on mismatch, _OtherDataset when
    the file is another registered dataset's.

    The uncompressed MD5 is used where known, so recompressed copies pass; otherwise the .gz MD5
    (for gzip files only: an uncompressed file with no known MD5 cannot be checked, and is only
    compared with the other datasets' files).
    """
    try:
        _check_md5(path, fspec, dataset)
    except (OSError, EOFError, zlib.error) as e:  # unreadable, or a gzip stream that is cut short
        raise bad_file(path, f"cannot be read to verify it "
                             f"({getattr(e, 'strerror', None) or e})") from None


def _check_md5(path: Path, fspec: FileSpec, dataset: str) -> None:
    gz = is_gzip(path)
    if fspec.raw_md5 is not None:
        expected, kind, compute = fspec.raw_md5, "uncompressed content", _content_md5
    elif gz:
        expected, kind, compute = fspec.gz_md5, "gzip file", _file_md5
    else:  # none to check it by, but it may still be another dataset's file
        expected, kind, compute = None, "content", _file_md5
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    if key in _VERIFIED:
        return
    found = compute(path)
    if found != expected and (owner := _owner(path, found, dataset)) is not None:
        raise _OtherDataset(path, owner, dataset)
    if found != expected and expected is not None:
        raise DataError(
            f"{path}: checksum mismatch for {dataset} {fspec.filename if gz else fspec.raw_name}: "
            f"MD5 of its {kind} is {found}, expected {expected}; the file is damaged (cut short, "
            f"for instance) or from another dataset; {_FIX_MD5}"
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


def _verify_all(found: dict[str, Path], spec: DatasetSpec) -> None:
    """:func:`_verify` each of the spec's files in ``found`` (as :func:`_match_files` returns)."""
    for f in spec.files:
        _verify(found[f.filename], f, spec.name)


def _other_owner(found: dict[str, Path], spec: DatasetSpec) -> str | None:
    """:func:`_verify_all`, but a folder of another registered dataset's files is no error: the
    name of that dataset, or None when the files are the spec's own."""
    try:
        _verify_all(found, spec)
    except _OtherDataset as e:
        return e.owner
    return None


def _needed_files(spec: DatasetSpec) -> str:
    return ", ".join(spec_file.filename for spec_file in spec.files) + " (.gz or uncompressed)"


def _how_to_point(spec: DatasetSpec) -> str:
    return (
        f"to use a local copy, put {_needed_files(spec)} in a folder and pass --data-dir DIR "
        f"or set {CACHE_ENV}=DIR"
    )


# The fallbacks already reported by this process. A study looks for its data for training and
# again for its report, and Python's once-per-place filter forgets what it showed whenever any
# library changes the warning filters in between; so each fallback is said once here.
_REPORTED: set[str] = set()


def _warn_passed_over(spec: DatasetSpec, places: list[str], outcome: str) -> None:
    """Warn (once per process) that folders the user pointed to lacked the data (or held another
    dataset's), and what was done instead."""
    message = f"{spec.name} not found where pointed to ({'; '.join(places)}); {outcome}"
    if message not in _REPORTED:
        _REPORTED.add(message)
        warnings.warn(message)


def _find(
    spec: DatasetSpec, data_dir: str | Path | None, download: bool
) -> tuple[Path, dict[str, Path]]:
    """:func:`locate` for any spec (tests pass made-up ones), also returning the files it found."""
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
        foreign: list[tuple[Path, str]] = []  # (folder, owner) of those holding another's files
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
                # The cache is normlab's own: another dataset's files there are an error (below).
                owner = None if missing or origin == "cache" else _other_owner(found, spec)
                if not missing and owner is None:
                    passed_over = [text for o, text in pointed if o != origin]
                    if passed_over:
                        # An explicitly given folder lacked the data: say so rather than
                        # silently using another copy.
                        _warn_passed_over(spec, passed_over,
                                          f"using the copy in {folder} ({origin})")
                    _verify_all(found, spec)
                    return folder, found
                if owner is None:
                    problem = f"missing {', '.join(missing)}"
                else:  # the same file names, another dataset: passed over like a folder without
                    problem = f"holds {owner}'s files, not {spec.name}'s"
                    foreign.append((folder, owner))
            looked.append(f"{folder} ({origin}): {problem}")
            if origin != "cache":
                pointed.append((origin, looked[-1]))
            if not exists:
                break  # a missing folder has no subfolder either
        if foreign and origin == "--data-dir":
            # Named for this run, so most likely a mistake (of folder or of --dataset): say so
            # rather than download another copy.
            folder, owner = foreign[0]
            raise DataError(f"--data-dir {folder} holds {owner}'s files, not {spec.name}'s; point "
                            f"--data-dir at a folder of {spec.name}, or leave it out to download it")

    if not download:
        raise DataError(
            f"{spec.name} data not found and downloading is off; looked in: {'; '.join(looked)}; "
            f"{_how_to_point(spec)}"
        )
    _download_missing(spec, cache, looked)
    if pointed:
        # Said after the download, so that a failed one ends in a single error that already
        # lists every place looked at.
        _warn_passed_over(spec, [t for _, t in pointed], f"downloaded it to {cache}")
    found, _ = _match_files(cache, spec)
    _verify_all(found, spec)
    return cache, found


def locate(name: str, data_dir: str | Path | None = None, download: bool = True) -> Path:
    """Return the folder holding dataset ``name``'s four files, verified by MD5.

    Looks in ``data_dir``, then ``$NORMLAB_DATA``, then the cache folder (the first two also in a
    ``<dir>/<name>/`` subfolder). If none has all four files and ``download`` is true, downloads
    the missing ones into the cache folder. Raises DataError listing every place looked at when
    the data can be neither found nor downloaded, and on a checksum mismatch.
    """
    return _find(get_spec(name), data_dir, download)[0]


# ----------------------------------------------------------------------------------------------
# Downloading


def open_url(url: str, timeout: float) -> BinaryIO:
    """Open ``url`` for reading: the one network call normlab makes, public so that a caller
    (or a test, which has no network) can replace it."""
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
        with os.fdopen(fd, "wb") as out, open_url(url, _TIMEOUT_S) as response:
            bar = tqdm(
                total=_content_length(response),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                leave=False,
            )
            with bar:
                while chunk := response.read(CHUNK):
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
    _, found = _find(spec, data_dir, download)
    image_spec, label_spec = spec.split_files(train)
    image_path, label_path = found[image_spec.filename], found[label_spec.filename]
    images, labels = read_idx(image_path), read_idx(label_path)

    if images.dim() != 3:
        raise bad_file(image_path, f"expected images of shape (N, H, W), found shape "
                                   f"{tuple(images.shape)}")
    if labels.dim() != 1:
        raise bad_file(label_path, f"expected labels of shape (N,), found shape "
                                   f"{tuple(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels; "
            f"one of them is damaged or from another dataset; {BAD_FILE_FIX}"
        )
    if len(images) == 0:
        raise DataError(f"{image_path} holds no images; {BAD_FILE_FIX}")
    n_classes = len(spec.classes)
    bad = (labels >= n_classes).nonzero()
    if len(bad):
        i = int(bad[0, 0])
        raise bad_file(label_path, f"label {int(labels[i])} at index {i} is outside "
                                   f"0..{n_classes - 1}")
    return images, labels.long()


def load_split(
    name: str, train: bool, data_dir: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load the training (``train=True``) or test split of dataset ``name``.

    Returns ``(images, labels)``: images uint8 of shape (N, H, W) (28x28 for the MNIST family),
    labels int64 of shape (N,) in ``0..9``. Finds (or downloads) the data as :func:`locate` does.
    """
    return _load_split(get_spec(name), train, data_dir, download)


__all__ = [
    "CACHE_ENV", "DATASETS", "DatasetSpec", "FileSpec", "default_cache_dir", "get_spec",
    "load_split", "locate", "open_url", "read_idx",
]
