"""Shared fixtures of normlab's tests.

Test modules get everything they share from here, never from each other:

* ``seeded`` / ``gen``: explicit, seeded :class:`torch.Generator` objects (the global RNG is
  never used for test data); ``global_rng_restored`` (automatic): a test that seeds the global
  RNG to initialize a model's weights leaves it as it found it;
* ``idx_bytes``: the IDX encoder; ``synthetic_dataset``: made-up MNIST-format IDX datasets
  installed in a temporary folder;
  ``synthetic_data``: one registered as 'mnist' for a whole test module, with the network off
  (a module may set its sizes with a module-level ``SYNTHETIC_DATA`` dict);
* ``no_network``: in-process, downloads fail, $NORMLAB_DATA is unset and the cache is private;
* ``make_run``: synthetic run folders written by :mod:`normlab.runfolder`'s own writers (through
  :mod:`normlab.study`'s ``start`` and ``finish``), so that tests never write the format themselves;
* ``offline_subprocess_env``, ``run_python``: an environment and a runner for ``python -c ...``
  subprocesses; ``synthetic_subprocess``: the one runner of ``python -m normlab ...`` processes
  (:class:`NormlabSubprocess`), in an environment of synthetic data and no network;
* ``random_splits``: random in-memory train/test splits for the engine's tests;
* ``real_mnist``: the real MNIST folder, or the test is skipped.

Plain functions that need no pytest (IDX bytes, the synthetic spec, the subprocess environments)
are in ``helpers.py``; a subprocess's ``sitecustomize.py`` imports them from there.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, ClassVar, NamedTuple, Sequence

import numpy as np
import pytest
import torch

import helpers
from normlab import data, study
from normlab.config import Config
from normlab.runfolder import Predictions, RunFolder, RunResult
from normlab.train import build_model
from normlab.model import count_params

N_TEST = 60   # test images of the synthetic run folders and (default) of synthetic_data


# ----------------------------------------------------------------------------------------------
# Seeded generators


@pytest.fixture(scope="session")
def seeded() -> Callable[[int], torch.Generator]:
    """A factory: ``seeded(s)`` is a new CPU torch.Generator seeded with ``s``
    (:func:`helpers.generator`)."""
    return helpers.generator


@pytest.fixture()
def gen(seeded) -> torch.Generator:
    """A fresh CPU torch.Generator seeded with 0."""
    return seeded(0)


@pytest.fixture(autouse=True)
def global_rng_restored():
    """Every test leaves torch's global CPU generator as it found it. Tests that build a model
    seed that generator (a module's weight init takes no generator); restoring it keeps every
    test's outcome independent of which tests ran before it."""
    with torch.random.fork_rng(devices=[]):
        yield


# ----------------------------------------------------------------------------------------------
# Data: synthetic IDX files, the real MNIST, no network


def _fail_download(url, timeout):
    raise urllib.error.URLError("network disabled in tests")


def _go_offline(mp: pytest.MonkeyPatch, cache: Path) -> None:
    mp.setattr(data, "open_url", _fail_download)
    mp.delenv(data.CACHE_ENV, raising=False)
    mp.setenv("XDG_CACHE_HOME", str(cache))


@pytest.fixture()
def no_network(monkeypatch, tmp_path) -> Path:
    """In this process: every download fails (``data.open_url`` raises URLError), $NORMLAB_DATA is
    unset and the cache folder is a new, empty one. Gives the cache root ($XDG_CACHE_HOME)."""
    cache = tmp_path / "xdg-cache"
    _go_offline(monkeypatch, cache)
    return cache


@pytest.fixture(scope="session")
def idx_bytes() -> Callable[..., bytes]:
    """The IDX encoder: ``idx_bytes(array, dtype_code=0x08, dims=None)`` is the bytes of an IDX
    file holding ``array`` as uint8 (``dims`` overrides the sizes written in the header)."""
    return helpers.idx_bytes


class SyntheticDataset(NamedTuple):
    folder: Path                 # the four official .gz files (or uncompressed IDX files)
    spec: data.DatasetSpec       # FileSpecs with these files' MD5s
    raw: dict[str, bytes]        # IDX bytes by official file name
    arrays: dict[str, np.ndarray]  # train_x, train_y, test_x, test_y


@pytest.fixture()
def synthetic_dataset(tmp_path_factory) -> Callable[..., SyntheticDataset]:
    """A factory: ``synthetic_dataset(n_train=300, n_test=100, seed=0, name="mnist", gz=True)``
    makes a made-up MNIST-format dataset (helpers.synthetic_mnist) and installs it in a new
    temporary folder. It is not registered: pass ``.spec`` where a spec is wanted."""

    def make(n_train: int = 300, n_test: int = 100, seed: int = 0, name: str = "mnist",
             gz: bool = True) -> SyntheticDataset:
        spec, raw, arrays = helpers.synthetic_mnist(n_train, n_test, seed=seed, name=name)
        folder = helpers.install(tmp_path_factory.mktemp("dataset") / name, raw, gz=gz)
        return SyntheticDataset(folder, spec, raw, arrays)

    return make


class SyntheticData(NamedTuple):
    folder: Path        # where the dataset's files are
    labels: list[int]   # its test labels, in order
    spec: data.DatasetSpec
    arrays: dict[str, np.ndarray]   # train_x, train_y, test_x, test_y (helpers.synthetic_mnist)


# synthetic_data's dataset unless a test module sets its own (see there)
SYNTHETIC_DATA_DEFAULTS = {"n_train": 10, "n_test": N_TEST, "seed": 1}


@pytest.fixture(scope="module")
def synthetic_data(request, tmp_path_factory) -> SyntheticData:
    """For a whole test module: a synthetic MNIST-format dataset registered as 'mnist'
    (helpers.synthetic_mnist, installed as official .gz files), with the network off and no
    $NORMLAB_DATA, as :func:`no_network` does it.

    10 training and N_TEST test images, seed 1, unless the module sets a module-level
    ``SYNTHETIC_DATA = {"n_train": ..., "n_test": ..., "seed": ...}`` (keys it leaves out keep
    these defaults)."""
    options = {**SYNTHETIC_DATA_DEFAULTS, **getattr(request.module, "SYNTHETIC_DATA", {})}
    unknown = set(options) - set(SYNTHETIC_DATA_DEFAULTS)
    assert not unknown, f"SYNTHETIC_DATA: unknown keys {sorted(unknown)}"
    spec, raw, arrays = helpers.synthetic_mnist(**options)
    folder = helpers.install(tmp_path_factory.mktemp("data") / "mnist", raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(data.DATASETS, "mnist", spec)
        _go_offline(mp, tmp_path_factory.mktemp("xdg"))
        yield SyntheticData(folder, arrays["test_y"].tolist(), spec, arrays)


@pytest.fixture(scope="session")
def random_splits(seeded) -> Callable[..., tuple]:
    """A factory: ``random_splits(seed, n_train=256, n_test=64) -> (train, test, mean, std)``:
    random uint8 images and labels drawn from ``seeded(seed)``, as CPU DeviceSplits with the
    training split's pixel mean and std (noise to train on when no dataset is needed)."""
    from normlab.batches import split_stats, to_device_split

    def make(seed: int, n_train: int = 256, n_test: int = 64) -> tuple:
        g, cpu = seeded(seed), torch.device("cpu")
        train = to_device_split(torch.randint(0, 256, (n_train, 28, 28), generator=g,
                                              dtype=torch.uint8),
                                torch.randint(0, 10, (n_train,), generator=g), cpu)
        test = to_device_split(torch.randint(0, 256, (n_test, 28, 28), generator=g,
                                             dtype=torch.uint8),
                               torch.randint(0, 10, (n_test,), generator=g), cpu)
        mean, std = split_stats(train)
        return train, test, mean, std

    return make


@pytest.fixture(scope="session")
def real_mnist() -> Path:
    """The folder of the real MNIST files ($NORMLAB_DATA or ../shared/data/mnist); skips the
    test when there is none."""
    folder = helpers.real_mnist_dir()
    if folder is None:
        pytest.skip("real MNIST not found (set $NORMLAB_DATA or provide ../shared/data/mnist)")
    return folder


# ----------------------------------------------------------------------------------------------
# Synthetic run folders, written by normlab.runfolder


def _build_run(path: str | Path, *, variants=("gn", "bn+l1=2e-05"), seeds: int = 2,
               epochs: int = 3, final: dict | None = None, gap: dict | None = None,
               labels=None, wrong: dict | None = None, diverged: dict | None = None,
               data_dir=None, dataset: str = "mnist", wall: bool = True, augment: bool = True,
               train_seconds: float = 122.6, workers: int = 2) -> RunFolder:
    """A finished run folder as ``normlab study --no-diagnostics`` leaves it (without its report
    and figures), with made-up results and nothing trained.

    Written by the study's own steps: :func:`normlab.study.start` (the saved config and
    environment), :meth:`RunFolder.write_run_outputs` (each run's predictions and checkpoint), and
    :func:`normlab.study.finish` with ``report=False`` (the metrics and timing tables, the summary,
    and the timing record, whose ``train_seconds`` is ``train_seconds`` plus the few
    milliseconds the call takes; ``workers`` worker threads of 1 torch thread). ``wall=False``
    removes the timing record (``RunFolder.timing_json``) afterwards.

    ``final``: per variant, the final test accuracy of each seed (default: 98 + small offsets).
    Test accuracy rises linearly to it over the epochs; train accuracy is test accuracy +
    ``gap[variant]`` (default -0.5). ``labels``: the test labels (default ``i % 10`` for N_TEST
    images); ``wrong``: per variant, how many test images each finished seed gets wrong (default
    15, drawn with a seeded torch.Generator). ``diverged``: per variant, the seeds that diverge
    after epoch 1 (metrics rows for epoch 1 only, no predictions). The parameter count of each
    variant is that of normlab's model for it.
    """
    final, gap, wrong, diverged = final or {}, gap or {}, wrong or {}, diverged or {}
    labels = list(range(N_TEST)) if labels is None else [int(x) % 10 for x in labels]
    cfg = Config(variants=tuple(variants), seeds=seeds, epochs=epochs, dataset=dataset,
                 data_dir=None if data_dir is None else str(data_dir), augment=augment,
                 diagnostics=False)   # nothing trained, so nothing measured: no diagnostics.csv
    device = torch.device("cpu")
    plan = study.make_plan(cfg, device, workers=workers, threads=1)
    fake_data = SimpleNamespace(train=range(300), test=range(len(labels)), mean=0.13, std=0.31,
                                classes=data.get_spec(dataset).classes, val=None,
                                folder=None)
    folder = RunFolder(path).create()
    study.start(folder, plan, fake_data)

    results = []
    for i, v in enumerate(cfg.parsed_variants()):
        params = count_params(build_model(cfg, v, 0))
        finals = final.get(v.name) or [98.0 + 0.1 * i + 0.01 * s for s in cfg.seed_list()]
        for seed, fin in zip(cfg.seed_list(), finals):
            bad = seed in diverged.get(v.name, ())
            rows = []
            for e in range(1, (1 if bad else epochs) + 1):
                test_acc = fin - 3.0 * (epochs - e) / epochs
                rows.append({"epoch": e, "train_loss": 0.05 + (100 - test_acc) / 90,
                             "train_acc": test_acc + gap.get(v.name, -0.5),
                             "val_loss": None, "val_acc": None,
                             "test_loss": 0.03 + (100 - test_acc) / 100, "test_acc": test_acc,
                             "lr": 0.01, "seconds": 1.5})
            r = RunResult(variant=v, seed=seed, params=params, epochs=rows,
                          status="diverged" if bad else "ok",
                          message="loss blew up" if bad else "")
            if not bad:
                g = torch.Generator().manual_seed(1000 * i + seed)
                label = torch.tensor(labels)
                mistakes = torch.randperm(len(labels), generator=g)[:wrong.get(v.name, 15)]
                pred = label.clone()
                pred[mistakes] = (label[mistakes] + 1) % 10
                confidence = 0.2 + 0.799 * torch.rand(len(labels), generator=g,
                                                      dtype=torch.float64)
                r.predictions = Predictions(label=label, pred=pred, confidence=confidence)
            folder.write_run_outputs(r)
            results.append(r)
    study.finish(folder, plan, results, time.perf_counter() - train_seconds, report=False,
                 log=lambda *_: None)
    if not wall:
        folder.timing_json.unlink()
    return folder


@pytest.fixture(scope="session")
def make_run() -> Callable[..., RunFolder]:
    """The builder of synthetic run folders: ``make_run(path, **options) -> RunFolder`` (see
    :func:`_build_run` for the options). Session-scoped, so module-scoped fixtures can use it."""
    return _build_run


@pytest.fixture()
def run(tmp_path, make_run) -> RunFolder:
    """A default synthetic run folder: variants gn and bn+l1=2e-05, 2 seeds, 3 epochs, N_TEST test
    images labelled ``i % 10``, a timing record with 2 workers."""
    return make_run(tmp_path / "run")


@pytest.fixture(scope="session")
def n_test() -> int:
    """The number of test images of ``make_run``'s folders and of ``synthetic_data`` (unless a
    module sets its own ``SYNTHETIC_DATA``)."""
    return N_TEST


# ----------------------------------------------------------------------------------------------
# Subprocesses


def _run_process(command: Sequence[str], env: dict[str, str], timeout: float,
                 cwd: str | Path | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` to its end: the CompletedProcess with text stdout and stderr."""
    return subprocess.run(list(command), env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture()
def offline_subprocess_env(tmp_path) -> dict[str, str]:
    """Environment for a subprocess without network or data: an unreachable proxy, a private
    cache, no $NORMLAB_DATA, normlab's src on PYTHONPATH (helpers.offline_env). Nothing is
    imported into the subprocess beforehand (so it starts without torch)."""
    return helpers.offline_env(tmp_path / "offline")


@dataclasses.dataclass(frozen=True)
class NormlabSubprocess:
    """``python -m normlab ...`` as real processes, in ``env``: an environment whose Python
    processes all see a synthetic dataset, installed in ``data``, registered as 'mnist', and in
    which a download fails at once (helpers.synthetic_subprocess_env)."""

    data: Path                  # the synthetic dataset's folder (give it as --data-dir)
    env: dict[str, str]
    timeout: float = 300        # default limit of run(), seconds

    command: ClassVar[tuple[str, ...]] = (sys.executable, "-m", "normlab")

    def with_env(self, **changes: str) -> "NormlabSubprocess":
        """The same, with these environment variables added or changed."""
        return dataclasses.replace(self, env={**self.env, **changes})

    def run(self, args: Sequence[str], timeout: float | None = None,
            cwd: str | Path | None = None,
            command: Sequence[str] | None = None) -> subprocess.CompletedProcess:
        """Run ``normlab args`` to its end and return the CompletedProcess (text stdout and
        stderr). ``command`` replaces ``python -m normlab`` (e.g. the installed console
        script)."""
        return _run_process([*(command or self.command), *args], self.env,
                            self.timeout if timeout is None else timeout, cwd)

    def start(self, args: Sequence[str], cwd: str | Path | None = None) -> subprocess.Popen:
        """Start ``normlab args`` and return the Popen at once (text stdout and stderr piped)."""
        return subprocess.Popen([*self.command, *args], env=self.env, cwd=cwd, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.fixture(scope="session")
def synthetic_subprocess(tmp_path_factory) -> Callable[..., NormlabSubprocess]:
    """A factory: ``synthetic_subprocess(n_train, n_test, extra="", timeout=300)`` is a
    :class:`NormlabSubprocess` whose processes see a new synthetic dataset (``n_train`` training,
    ``n_test`` test images, seed 0) in a new temporary folder; ``extra`` is code (indented by 4
    spaces) that every Python process of the environment runs at startup
    (helpers.synthetic_subprocess_env). Session-scoped, so module-scoped fixtures can use it."""

    def make(n_train: int, n_test: int, extra: str = "", timeout: float = 300) -> NormlabSubprocess:
        folder, env = helpers.synthetic_subprocess_env(tmp_path_factory.mktemp("subprocess"),
                                                       n_train, n_test, extra)
        return NormlabSubprocess(folder, env, timeout)

    return make


@pytest.fixture(scope="session")
def run_python() -> Callable[..., subprocess.CompletedProcess]:
    """A runner: ``run_python(args, env, timeout=300, cwd=None)`` runs this Python with ``args``
    (a list, e.g. ``["-m", "normlab", "report", dir]``; a str is code for ``-c``) and returns the
    CompletedProcess with text stdout and stderr."""

    def run(args: list[str] | str, env: dict[str, str], timeout: float = 300,
            cwd: str | Path | None = None) -> subprocess.CompletedProcess:
        argv = ["-c", args] if isinstance(args, str) else list(args)
        return _run_process([sys.executable, *argv], env, timeout, cwd)

    return run


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], object]:
    """``load_script("benchmarks/bench_step.py")``: a script of the repository as a module (the
    scripts are not a package)."""
    root = Path(__file__).resolve().parents[1]

    def load(relative: str):
        path = root / relative
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load
