"""Atomic file writes and safe reads: a temporary file in the same folder, then rename.

Generic I/O only; which files a run folder holds is :mod:`normlab.runfolder`'s business.

A reader (or an interrupted writer) therefore sees either the old complete file or the new one,
never half of one.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from normlab.errors import ConfigError, RunFolderError, brief


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); give it the usual 0666 - umask instead.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def print_and_save(text: str, out: str | Path | None) -> None:
    """A script's report: ``text`` on stdout and, with ``out`` (its --out), also in that file,
    written atomically."""
    print(text, end="")
    if out:
        atomic_write_text(out, text)


def _jsonable(value: Any) -> Any:
    # NaN/inf are not JSON; a diverged run stores them as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_format_cell(v) for v in row])
    atomic_write_text(path, buf.getvalue())


def _format_cell(v: Any) -> Any:
    # repr-precision floats so that the CSV round-trips exactly.
    if isinstance(v, float):
        return repr(v)
    return v


def read_json_object(path: str | Path, fix: str) -> dict:
    """A JSON file that must hold an object; RunFolderError naming the file, what is wrong and
    ``fix`` when it is missing, unreadable, not JSON, nested too deeply or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; {fix}") from None
    except (ValueError, RecursionError) as e:
        # ValueError: JSONDecodeError, UnicodeDecodeError, and integers over Python's digit limit
        # (int_max_str_digits); RecursionError: arrays/objects nested too deeply.
        raise RunFolderError(f"{path} is damaged, not valid JSON ({e}); {fix}") from None
    except OSError as e:
        raise RunFolderError(f"{path} cannot be read ({e.strerror or e}); {fix}") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path} does not hold a JSON object; {fix}")
    return obj


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Save tensors and plain data only, so it loads with ``torch.load(..., weights_only=True)``."""
    import torch  # here, so that reading run folders does not need torch

    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | Path) -> Any:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors and plain data only.

    A file that holds other pickled objects is refused (unpickling them could run arbitrary code),
    as is a damaged one; both raise :class:`RunFolderError` naming the file.
    """
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        import zipfile

        if not zipfile.is_zipfile(path) or "weights only load failed" not in str(e).lower():
            # Not a torch.save archive at all: damaged rather than hostile. torch's message is
            # not quoted: it suggests loading with weights_only=False, the unsafe way.
            raise RunFolderError(f"{path} is damaged (not a torch.save archive); "
                                 "delete it and let normlab write it anew") from None
        raise RunFolderError(
            f"{path} was refused: it holds objects other than tensors and plain data, which "
            "could run code when loaded (torch.load with weights_only=True rejects them); "
            "delete it and let normlab write it anew"
        ) from None
    except FileNotFoundError:
        raise RunFolderError(f"{path} is missing; delete the run folder's checkpoints/ to "
                             "retrain, or start a new study") from None
    except (OSError, RuntimeError, EOFError, ValueError, KeyError, IndexError) as e:
        raise RunFolderError(f"{path} is damaged ({type(e).__name__}: {brief(e)}); "
                             "delete it and let normlab write it anew") from None


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed process left in ``folder``."""
    removed = []
    for path in Path(folder).rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def ensure_writable(folder: str | Path) -> Path:
    """Create ``folder`` if needed and prove it is writable, before any long work starts."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"output folder {str(folder)!r} is not writable ({e.strerror or e}); "
            "choose another with --out"
        ) from None
    return folder


def new_timestamped_folder(parent: str | Path, stem: str) -> Path:
    """A new, empty folder ``parent/stem-YYYYmmdd-HHMMSS`` (the default --out), claimed with an
    atomic mkdir: two commands started in the same second get ``...-HHMMSS`` and
    ``...-HHMMSS-2`` instead of one folder (and one of them refused as in use)."""
    base = Path(parent) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        Path(parent).mkdir(parents=True, exist_ok=True)
        for n in itertools.count(1):
            path = base if n == 1 else base.with_name(f"{base.name}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            return path
    except OSError as e:   # e.g. a file named like the parent, a read-only working folder
        raise ConfigError(f"cannot create the default output folder under {str(parent)!r} "
                          f"({e.strerror or e}); give --out a writable folder") from None
    raise AssertionError("unreachable")   # pragma: no cover


def not_a_folder(path: Path) -> str:
    """What is wrong with ``path`` where a folder was asked for: "does not exist", "is a broken
    link" (a symbolic link to nothing), or "is a file, not a folder"."""
    if path.is_symlink() and not path.exists():
        return "is a broken link"
    return "does not exist" if not path.exists() else "is a file, not a folder"
