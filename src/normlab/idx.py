"""Reading IDX files (the MNIST family's format), gzip-compressed or not, with full validation.

Owns :func:`read_idx` and its one-line DataErrors (each names the file and the fix, see
:func:`bad_file`), and the gzip-or-raw handling shared with :mod:`normlab.data`'s checksums:
:func:`is_gzip` (by magic bytes, never by suffix) and :func:`open_content`. The header is never
trusted with memory before the payload has been seen to be that long. Knows nothing of datasets,
folders or downloads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:   # torch is imported where tensors are made, so finding data needs none
    import torch

import contextlib
import gzip
import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


from normlab.errors import DataError

CHUNK = 1 << 20  # bytes per read when decompressing, hashing and downloading
BAD_FILE_FIX = "delete it and re-run to download it again, or point --data-dir at a good copy"

_GZIP_MAGIC = b"\x1f\x8b"
_UBYTE = 0x08  # IDX type code for unsigned byte, the only one the MNIST family uses
_MAX_NDIM = 4


def is_gzip(path: Path) -> bool:
    """Whether the file starts with the gzip magic bytes (the suffix is not trusted)."""
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


@contextlib.contextmanager
def open_content(path: Path, gz: bool) -> Iterator[BinaryIO]:
    """Open ``path`` to read its uncompressed content: through gzip if ``gz`` (see :func:`is_gzip`).

    Damage to a gzip stream shows up while reading, as OSError (BadGzipFile), EOFError (stream
    cut short) or zlib.error (bad deflate data).
    """
    with open(path, "rb") as raw:
        if not gz:
            yield raw
            return
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream


def _read_upto(stream: BinaryIO, n: int) -> bytearray:
    """Read at most ``n`` bytes, in chunks, stopping early at end of stream.

    Reading in bounded chunks (rather than ``stream.read(n)``) means memory grows with what the
    stream really holds, never with ``n``: a header that lies about the size costs nothing.
    """
    buf = bytearray()
    while len(buf) < n:
        chunk = stream.read(min(CHUNK, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return buf


def bad_file(path: Path, problem: str) -> DataError:
    """The DataError for a damaged data file: ``<path>: <problem>; <how to fix it>``."""
    return DataError(f"{path}: {problem}; {BAD_FILE_FIX}")


def _parse_idx(stream: BinaryIO, path: Path, what: str) -> torch.Tensor:
    """Parse an IDX stream (already decompressed); ``what`` names the payload in messages."""
    header = _read_upto(stream, 4)
    if len(header) < 4:
        raise bad_file(path, f"{what} is {len(header)} bytes, too short to hold an IDX header "
                             f"(4 bytes)")
    if header[0] != 0 or header[1] != 0:
        raise bad_file(path, f"not an IDX file (magic bytes {bytes(header).hex()}, expected 0000 "
                             f"then type and rank)")
    dtype_code, ndim = header[2], header[3]
    if dtype_code != _UBYTE:
        raise bad_file(path, f"unsupported IDX data type code 0x{dtype_code:02x} (normlab reads "
                             f"only 0x08, unsigned byte, as used by MNIST-style datasets)")
    if not 1 <= ndim <= _MAX_NDIM:
        raise bad_file(path, f"IDX header declares {ndim} dimensions (expected 1 to {_MAX_NDIM})")

    dim_bytes = _read_upto(stream, 4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise bad_file(path, f"IDX header declares {ndim} dimensions but {what} ends after "
                             f"{4 + len(dim_bytes)} bytes, before all {ndim} sizes; the file is "
                             f"truncated")
    dims = struct.unpack(f">{ndim}I", dim_bytes)
    claimed = math.prod(dims)

    # Read one byte more than claimed so trailing data shows up; memory stays bounded by
    # min(claimed, actual) + 1 (see _read_upto). Nothing is sized by the header before this.
    payload = _read_upto(stream, claimed + 1)
    if len(payload) < claimed:
        raise bad_file(path, f"truncated: header says shape {dims} ({claimed} bytes of data) but "
                             f"{what} holds only {len(payload)} bytes after the header")
    if len(payload) > claimed:
        raise bad_file(path, f"file longer than its header says: shape {dims} needs {claimed} "
                             f"bytes of data but {what} has more after them")
    import torch

    if claimed == 0:  # torch.frombuffer refuses empty buffers
        try:
            return torch.empty(dims, dtype=torch.uint8)
        except RuntimeError as e:  # e.g. (0, 2**32-1, 2**32-1, 2**32-1): strides overflow int64
            raise bad_file(path, f"IDX header declares shape {dims}, too large to represent "
                                 f"({e})") from None
    # frombuffer shares memory with the bytearray (no copy); the tensor keeps it alive.
    return torch.frombuffer(payload, dtype=torch.uint8).reshape(dims)


def read_idx(path: str | Path) -> torch.Tensor:
    """Read an IDX file of unsigned bytes (gzip-compressed or not) into a uint8 tensor.

    The shape comes from the header. Every problem (missing file, bad magic, unsupported type,
    bad rank, truncated or overlong data, corrupt gzip stream) raises DataError naming the file.
    """
    path = Path(path)
    try:
        gz = is_gzip(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; point --data-dir at a folder holding it") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from None

    try:
        with open_content(path, gz) as stream:
            return _parse_idx(stream, path, "the decompressed data" if gz else "the file")
    except (OSError, EOFError, zlib.error) as e:
        # gzip reports damage as BadGzipFile (an OSError), EOFError (stream cut short) or
        # zlib.error (bad deflate data); all mean the same thing to the user.
        problem = f"corrupt gzip stream ({e})" if gz else f"cannot read ({e})"
        raise bad_file(path, problem) from None


__all__ = ["BAD_FILE_FIX", "CHUNK", "bad_file", "is_gzip", "open_content", "read_idx"]
