"""Property-based tests (hypothesis) of the three readers of untrusted input.

The IDX reader (:func:`normlab.idx.read_idx`), the variant-spec parser
(:func:`normlab.variants.parse_variant` / :func:`~normlab.variants.parse_variants`) and the run-folder
loader (:func:`normlab.runfolder.load_run`, with :func:`~normlab.runfolder.read_predictions`) are fed
random and mutated inputs. Each must either give a correct result or raise normlab's documented
error type for it (DataError, ConfigError, RunFolderError) -- never anything else -- and the IDX
reader must never allocate memory by what a header claims rather than by what the file holds.

Hypothesis does not reset function-scoped fixtures between examples, so files are written under
module-scoped temporary folders (``tmp_path_factory``), one fresh path per example. The pristine
run folder comes from conftest's ``make_run`` (normlab.runfolder's writers); every file of it is
found through :class:`~normlab.runfolder.RunFolder`.
"""

from __future__ import annotations

import csv
import functools
import gzip
import io
import itertools
import json
import math
import re
import shutil
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from normlab.errors import ConfigError, DataError, RunFolderError
from normlab.idx import read_idx
from normlab.norms import NORMS
from normlab.runfolder import (PREDICTION_COLUMNS, RunData, RunFolder, load_run,
                               read_predictions)
from normlab.variants import Variant, parse_variant, parse_variants

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

_ids = itertools.count()


def _fresh(base: Path, suffix: str = "") -> Path:
    return base / f"case{next(_ids)}{suffix}"


# ----------------------------------------------------------------------------------------------
# IDX reader

MIB = 1 << 20
MEMORY_SLACK = 2 * MIB


def _content(data: bytes) -> tuple[bytes, bool]:
    """(IDX bytes the file holds, whether they are all there): decompressed if gzip, as read_idx
    does (magic bytes decide); for a damaged gzip stream, what decompresses before the damage."""
    if data[:2] != b"\x1f\x8b":
        return data, True
    out = bytearray()
    with gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb") as stream:
        try:
            while chunk := stream.read(MIB):
                out += chunk
        except (OSError, EOFError, zlib.error):
            return bytes(out), False
    return bytes(out), True


def _expected(content: bytes, complete: bool) -> tuple[tuple[int, ...], bytes] | None:
    """Reference IDX parser: (dims, payload) if ``content`` is a valid uint8 IDX file, else None."""
    if not complete or len(content) < 4 or content[:3] != b"\x00\x00\x08":
        return None
    ndim = content[3]
    if not 1 <= ndim <= 4 or len(content) < 4 + 4 * ndim:
        return None
    dims = struct.unpack(f">{ndim}I", content[4:4 + 4 * ndim])
    payload = content[4 + 4 * ndim:]
    return (dims, payload) if len(payload) == math.prod(dims) else None


def _check_read_idx(folder: Path, data: bytes) -> torch.Tensor | None:
    """Write ``data`` to a file, read it with read_idx, and check the two IDX properties.

    **Outcome.** read_idx returns a tensor exactly when a reference parser accepts the file: then
    it is uint8, its shape is the header's dims (so numel is their product) and its bytes are the
    payload; otherwise it raises DataError, and nothing else. One exception to exactness: a header
    with a zero dim holds no data whatever the other dims are, and torch cannot represent every
    such shape (strides overflow int64), so for those DataError is also accepted -- unless the
    shape is small enough for torch (product of the non-zero dims below 2**62).

    **Memory.** The peak of Python-level allocations (tracemalloc) during read_idx stays below
    ``2 * C + 2 MiB``, where C is the size of the IDX content the file holds (the file size for a
    raw file, the decompressed size -- up to the damage, if any -- for gzip). Why that bound:

    * tracemalloc sees what matters: read_idx reads into a bytearray (CPython allocator, traced)
      and wraps it with ``torch.frombuffer`` without a copy; torch's own allocator is not traced,
      but torch only allocates for empty shapes (zero bytes).
    * the payload bytearray grows chunk by chunk with CPython's over-allocation (about 1/8) and
      realloc, i.e. ~1.13 * C; the factor 2 leaves room for allocator details, not for a second
      copy of a large file;
    * the 2 MiB cover the read chunk (1 MiB: ``BufferedReader.read(1 MiB)`` allocates the full
      request before shrinking it, even for a 10-byte file -- measured peak ~1.0 MiB) plus gzip's
      buffers and small objects (~60 KiB).

    A reader that sized anything by the header's claim (``bytearray(claimed)``, ``read(claimed)``)
    fails this bound as soon as a header claims more than ~2 MiB beyond what the file holds, which
    the strategies below make common (huge dims, flipped size bytes).
    """
    path = _fresh(folder, ".idx")
    path.write_bytes(data)
    content, complete = _content(data)
    tracemalloc.start()
    try:
        try:
            result: torch.Tensor | None = read_idx(path)
        except DataError:
            result = None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        path.unlink()
    bound = 2 * len(content) + MEMORY_SLACK
    assert peak <= bound, f"read_idx peaked at {peak} bytes for {len(content)} bytes of content"

    expected = _expected(content, complete)
    if expected is None:
        assert result is None, "read_idx accepted a file the reference parser rejects"
        return None
    dims, payload = expected
    if result is None:
        representable = math.prod(d for d in dims if d) < 2**62
        assert math.prod(dims) == 0 and not representable, f"valid IDX file rejected: dims {dims}"
        return None
    assert result.dtype == torch.uint8
    assert tuple(result.shape) == dims and result.numel() == math.prod(dims)
    assert result.reshape(-1).numpy().tobytes() == payload  # flat: numpy refuses some empty shapes
    return result


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("idx")


@settings(FAST, max_examples=300)
@given(data=st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda b: b"\x1f\x8b" + b),  # gzip magic, garbage after it
    st.binary(max_size=300).map(lambda b: gzip.compress(b, mtime=0)),
    st.binary(max_size=300).map(lambda b: b"\x00\x00\x08" + b),  # IDX magic, garbage after it
))
@example(data=b"")
@example(data=b"\x1f\x8b")
def test_read_idx_random_bytes(idx_dir: Path, data: bytes) -> None:
    """Random bytes (raw, behind gzip or IDX magic, or gzip-compressed): read_idx returns the
    tensor a reference parser predicts or raises DataError, within the memory bound of
    :func:`_check_read_idx`."""
    _check_read_idx(idx_dir, data)


def _mutate(data: bytes, draw) -> bytes:
    """Apply 1-3 random byte mutations (flip, overwrite, insert, delete, truncate, append)."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append"]))
        pos = draw(st.integers(0, len(buf)))
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and pos < len(buf):
            buf[pos] = draw(st.sampled_from([0x00, 0x01, 0x08, 0x7F, 0x80, 0xFF]))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos:pos + draw(st.integers(1, 8))]
        elif op == "truncate":
            del buf[pos:]
        elif op == "append":
            buf += draw(st.binary(min_size=1, max_size=8))
    return bytes(buf)


@settings(FAST, max_examples=500)
@given(shape=st.lists(st.integers(0, 7), min_size=1, max_size=4), seed=st.integers(0, 2**16),
       gz=st.booleans(), mutate=st.booleans(), data=st.data())
def test_read_idx_mutated_valid_files(idx_dir: Path, idx_bytes, seeded, shape: list[int],
                                      seed: int, gz: bool, mutate: bool, data) -> None:
    """Valid IDX files (conftest's idx_bytes of seeded random arrays, raw and gzip), unchanged or
    with bytes flipped, overwritten, inserted, deleted, truncated or appended (before or after
    compression): an unchanged file reads back as its array; any file gives the reference
    parser's tensor or DataError, within the memory bound of :func:`_check_read_idx`."""
    array = torch.randint(0, 256, shape, generator=seeded(seed), dtype=torch.uint8).numpy()
    raw = idx_bytes(array)
    if mutate and data.draw(st.booleans(), label="mutate before compressing"):
        raw = _mutate(raw, data.draw)
    file_bytes = gzip.compress(raw, mtime=0) if gz else raw
    if mutate:
        file_bytes = _mutate(file_bytes, data.draw)
    result = _check_read_idx(idx_dir, file_bytes)
    if not mutate:
        assert result is not None
        torch.testing.assert_close(result, torch.from_numpy(array), rtol=0, atol=0)


dim = st.one_of(st.integers(0, 16), st.integers(0, 2**32 - 1),
                st.sampled_from([0, 1, 2**31, 2**32 - 1, 3 * MIB, 28]))


@settings(FAST, max_examples=500)
@given(dtype_code=st.sampled_from([0x08, 0x08, 0x08, 0x09, 0x0B, 0x0D, 0x0E, 0x00, 0xFF]),
       dims=st.lists(dim, min_size=0, max_size=6),
       payload_len=st.one_of(st.integers(0, 64), st.just(-1)),
       extra=st.sampled_from([0, 0, 1, -1]), gz=st.booleans())
@example(dtype_code=0x08, dims=[0, 2**32 - 1, 2**32 - 1, 2**32 - 1], payload_len=0, extra=0,
         gz=False)
@example(dtype_code=0x08, dims=[2**32 - 1], payload_len=10, extra=0, gz=True)
def test_read_idx_random_headers(idx_dir: Path, dtype_code: int, dims: list[int],
                                 payload_len: int, extra: int, gz: bool) -> None:
    """Headers with random type codes, ranks 0..6 and dims up to 2**32-1 (products up to ~2**128),
    followed by a payload of random length (0..65 bytes) or (``payload_len == -1``) by exactly
    the claimed size when that is small, give the reference parser's tensor or DataError, and
    allocate by what the file holds, never by what the header claims (see _check_read_idx)."""
    claimed = math.prod(dims)
    if payload_len == -1:
        assume(claimed <= 4096)
        payload_len = claimed
    payload_len = max(payload_len + extra, 0)
    payload = bytes((i * 37) % 256 for i in range(payload_len))
    raw = bytes([0, 0, dtype_code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload
    _check_read_idx(idx_dir, gzip.compress(raw, mtime=0) if gz else raw)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_read_idx_memory_bound_is_meaningful(idx_dir: Path, idx_bytes, gen: torch.Generator,
                                             gz: bool) -> None:
    """For a 5 MiB file, tracemalloc does see the payload (peak >= its size: the measurement of
    the property tests is not blind to read_idx's buffers), and the peak stays within the
    ``2 * C + 2 MiB`` bound of :func:`_check_read_idx` at a size where the proportional part,
    not the fixed slack, dominates."""
    array = torch.randint(0, 256, (5, 1024, 1024), generator=gen, dtype=torch.uint8).numpy()
    raw = idx_bytes(array)
    path = _fresh(idx_dir, ".idx")
    path.write_bytes(gzip.compress(raw, compresslevel=1, mtime=0) if gz else raw)
    tracemalloc.start()
    try:
        result = read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        path.unlink()
    torch.testing.assert_close(result, torch.from_numpy(array), rtol=0, atol=0)
    assert array.nbytes <= peak <= 2 * len(raw) + MEMORY_SLACK


# ----------------------------------------------------------------------------------------------
# Variant-spec parser


def _check_variant(v: Variant) -> None:
    """A parsed Variant is well formed and its canonical name re-parses to the same Variant."""
    assert isinstance(v, Variant)
    assert v.norm in NORMS
    for value in (v.l1, v.l2):
        assert isinstance(value, float) and math.isfinite(value) and value >= 0
    assert isinstance(v.ws, bool) and v.name.startswith(v.norm + ("+ws" if v.ws else ""))
    assert parse_variant(v.name) == v, f"{v.name!r} does not re-parse to {v}"


def _parse_or_config_error(fn, *args):
    try:
        return fn(*args)
    except ConfigError:
        return None


@settings(FAST, max_examples=500)
@given(spec=st.text())
@example(spec="")
@example(spec="bn+l1\n")
def test_parse_variant_arbitrary_text(spec: str) -> None:
    """Arbitrary text: parse_variant returns a Variant whose canonical name round-trips, or
    raises ConfigError; parse_variants (which splits on commas) likewise, with distinct names."""
    v = _parse_or_config_error(parse_variant, spec)
    if v is not None:
        _check_variant(v)
    vs = _parse_or_config_error(parse_variants, spec)
    if vs is not None:
        _check_variants(vs)


def _check_variants(vs: tuple[Variant, ...]) -> None:
    assert isinstance(vs, tuple) and vs
    for v in vs:
        _check_variant(v)
    names = [v.name for v in vs]
    assert len(set(names)) == len(names)
    assert parse_variants(",".join(names)) == vs


numbers = st.one_of(
    st.floats().map(repr),
    st.floats().map(lambda x: f"{x:g}"),
    st.floats().map(lambda x: f"{x:.12e}"),
    st.floats(min_value=0, allow_infinity=False).map(repr),
    st.integers().map(str),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-10**6, 10**6), st.integers(-10**4, 10**4)),
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400",
                     "1e-400", "1e999999999999", "-0", "0", "0.0", "1e+06", "1E6", "1_000",
                     "0x10", " 5 ", "", "5e-5", "2e-05", "1000000", "123456789", "1.2345678e-4",
                     "1e16", "١٢"]),
)
term = st.builds(
    lambda kind, eq, num, use_num: kind + (eq + num if use_num else ""),
    st.sampled_from(["l1", "l2", "L1", "L2", "l3", "l", "", "l1l2", " l1", "ws", "WS", "w"]),
    st.sampled_from(["=", "=", "=", "==", ":", " = "]),
    numbers,
    st.booleans(),
)
norm = st.builds(lambda n, upper, pad: pad + (n.upper() if upper else n) + pad,
                 st.sampled_from(list(NORMS) + ["xx", "", "bn1", "b n"]), st.booleans(),
                 st.sampled_from(["", "", " ", "\t", "\n"]))
separator = st.sampled_from(["+", "+", "+", " + ", "++", "+ ", ",", ""])


@st.composite
def variant_spec(draw) -> str:
    text = draw(norm)
    for t in draw(st.lists(term, max_size=3)):
        text += draw(separator) + t
    return text


@settings(FAST, max_examples=800)
@given(spec=variant_spec())
@example(spec="bn+l2=1000000")     # canonical name was 'bn+l2=1e+06', which does not re-parse
@example(spec="bn+l1=1.2345678e-4")  # canonical name was 'bn+l1=0.000123457' (value lost)
@example(spec="gn+l1=-0")
def test_parse_variant_structured_specs(spec: str) -> None:
    """Specs built from norms and l1/l2/ws terms with random case, padding, separators and numbers
    (nan, inf, negative, huge exponents, many digits, underscores, hex, non-ASCII digits):
    parse_variant returns a Variant whose canonical name re-parses to the same Variant (so the
    name carries the exact lambdas), or raises ConfigError -- nothing else."""
    v = _parse_or_config_error(parse_variant, spec)
    if v is not None:
        _check_variant(v)


@settings(FAST, max_examples=300)
@given(specs=st.lists(variant_spec(), max_size=4), as_text=st.booleans())
def test_parse_variants_lists(specs: list[str], as_text: bool) -> None:
    """Lists of structured specs, as a list or joined with commas: parse_variants returns
    distinct, round-tripping Variants (one per spec), or raises ConfigError -- nothing else."""
    arg = ",".join(specs) if as_text else specs
    vs = _parse_or_config_error(parse_variants, arg)
    if vs is not None:
        _check_variants(vs)
        if not as_text:
            assert len(vs) == len(specs)


# ----------------------------------------------------------------------------------------------
# Run-folder loader

# The files a mutation may damage: RunFolder attributes, and RUN_PREDICTIONS (the predictions
# file of one finished run, RunFolder.predictions(variant, seed)).
RUN_PREDICTIONS = "one run's preds"
RUN_FILES = ("config", "env", "summary", "metrics", RUN_PREDICTIONS)
JSON_FILES = ("config", "env", "summary")


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory, make_run) -> tuple[Path, Path]:
    """(a pristine run folder as ``normlab study`` writes it, a folder for mutated copies)."""
    pristine = make_run(tmp_path_factory.mktemp("pristine") / "run").path
    assert isinstance(load_run(pristine), RunData)
    return pristine, tmp_path_factory.mktemp("mutated")


@functools.lru_cache(maxsize=None)
def _finished_runs(run: Path) -> list[tuple[str, int]]:
    """(variant, seed) of every finished run of a run folder: those with a predictions file."""
    data = load_run(run)
    return [(v, s) for v in data.variants for s in data.ok_seeds(v)]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)
# JSON texts that json.dumps cannot make from hypothesis values but a damaged file can hold;
# the first two (over Python's int digit limit, over its recursion limit) made json.load raise
# ValueError and RecursionError, which load_run let through before it caught them.
HOSTILE_JSON = ("1" * 5000, "[" * 100_000 + "]" * 100_000)
raw_json = st.one_of(
    st.sampled_from(HOSTILE_JSON),
    st.sampled_from(["-Infinity", "NaN", "1e999", '"\\ud800"', "{}", "[]", '""', "0", "-1",
                     "3.0", "true", '{"variants": {}}']),
)
PLACEHOLDER = "\u0000normlab-placeholder\u0000"


def _json_paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _set_path(obj, path, value, delete=False):
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return obj


def _mutate_json(text: str, draw) -> str:
    doc = json.loads(text)
    paths = list(_json_paths(doc))
    path = paths[draw(st.integers(0, len(paths) - 1), label="json path")]
    how = draw(st.sampled_from(["value", "value", "raw", "delete"]))
    if how == "delete" and path:
        return json.dumps(_set_path(doc, path, None, delete=True))
    if how == "raw":
        fragment = draw(raw_json)
        return json.dumps(_set_path(doc, path, PLACEHOLDER)).replace(
            json.dumps(PLACEHOLDER), fragment, 1)
    return json.dumps(_set_path(doc, path, draw(json_values)))


def _mutate_csv(text: str, draw) -> str:
    rows = list(csv.reader(io.StringIO(text)))
    how = draw(st.sampled_from(["cell", "cell", "delete column", "delete row", "duplicate row"]))
    r = draw(st.integers(0, len(rows) - 1), label="row")
    c = draw(st.integers(0, len(rows[r]) - 1), label="column")
    if how == "cell":
        rows[r][c] = draw(st.one_of(st.text(max_size=12), st.sampled_from(
            ["", "nan", "inf", "-1", "1e999", "1" * 5000, "3.5", " 2 ", "\x00", "a,b", '"'])))
    elif how == "delete column":
        rows = [row[:c] + row[c + 1:] for row in rows]
    elif how == "delete row":
        del rows[r]
    else:
        rows.insert(r, list(rows[r]))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


@st.composite
def run_mutation(draw) -> tuple[str, str]:
    """(file of the run folder to damage, as a RUN_FILES name, kind of damage)."""
    target = draw(st.sampled_from(RUN_FILES))
    structured = "json" if target in JSON_FILES else "csv"
    kinds = [structured, structured, "random bytes", "truncate", "bytes", "delete"]
    return target, draw(st.sampled_from(kinds))


@settings(FAST, max_examples=500)
@given(mutation=run_mutation(), data=st.data())
def test_load_run_mutated_folders(run_dirs: tuple[Path, Path], mutation: tuple[str, str],
                                  data) -> None:
    """A valid run folder with one file damaged -- replaced by random bytes, truncated, with bytes
    flipped or inserted, deleted, a JSON value (any depth, the whole document included) replaced
    by random JSON or by hostile JSON text (5000-digit integer, 100000-deep nesting, NaN, lone
    surrogate) or removed, a CSV cell replaced by random text, a column or row deleted or a row
    duplicated: load_run either returns RunData or raises RunFolderError; and read_predictions
    on a damaged predictions file returns rows or raises RunFolderError -- nothing else."""
    pristine, base = run_dirs
    run = _fresh(base)
    shutil.copytree(pristine, run)
    try:
        target, kind = mutation
        if target == RUN_PREDICTIONS:
            runs = _finished_runs(pristine)
            variant, seed = runs[data.draw(st.integers(0, len(runs) - 1), label="predictions file")]
            path = RunFolder(run).predictions(variant, seed)
        else:
            path = getattr(RunFolder(run), target)
        original = path.read_bytes()
        if kind == "delete":
            path.unlink()
        elif kind == "random bytes":
            path.write_bytes(data.draw(st.binary(max_size=200), label="bytes"))
        elif kind == "truncate":
            path.write_bytes(original[:data.draw(st.integers(0, len(original)), label="cut")])
        elif kind == "bytes":
            path.write_bytes(_mutate(original, data.draw))
        elif kind == "json":
            path.write_text(_mutate_json(original.decode(), data.draw), encoding="utf-8")
        else:
            path.write_text(_mutate_csv(original.decode(), data.draw), encoding="utf-8")

        try:
            assert isinstance(load_run(run), RunData)
        except RunFolderError:
            pass
        if target == RUN_PREDICTIONS:
            try:
                rows = read_predictions(path)
                assert all(set(r) == set(PREDICTION_COLUMNS) for r in rows)
            except RunFolderError:
                pass
    finally:
        shutil.rmtree(run)


@pytest.mark.parametrize("fragment", HOSTILE_JSON, ids=["5000-digit-int", "deep-nesting"])
@pytest.mark.parametrize("target", JSON_FILES)
def test_load_run_hostile_json(run_dirs: tuple[Path, Path], target: str, fragment: str) -> None:
    """A JSON file of the run folder holding a 5000-digit integer or 100000-deep nesting (valid
    JSON syntax that json.load refuses with ValueError / RecursionError): RunFolderError naming
    the file."""
    pristine, base = run_dirs
    run = _fresh(base)
    shutil.copytree(pristine, run)
    try:
        path = getattr(RunFolder(run), target)
        path.write_text(fragment, encoding="utf-8")
        with pytest.raises(RunFolderError, match=re.escape(path.name)):
            load_run(run)
    finally:
        shutil.rmtree(run)
