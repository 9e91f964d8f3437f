"""device.py: which device ``--device`` gives and which precision ``--precision`` resolves to.

Accelerators are faked with monkeypatch; no test touches a real GPU.
"""

from __future__ import annotations

import pytest
import torch

from normlab.device import resolve_precision, select_device
from normlab.errors import ConfigError

needs_accelerator_api = pytest.mark.skipif(not hasattr(torch, "accelerator"),
                                           reason="this torch has no torch.accelerator")


def _fake_accelerator(monkeypatch: pytest.MonkeyPatch, device: torch.device | None) -> None:
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: device is not None)
    monkeypatch.setattr(torch.accelerator, "current_accelerator",
                        lambda *args, **kwargs: device)


@pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                    reason="an accelerator is present")
def test_auto_is_cpu_without_accelerator() -> None:
    """On a machine without an accelerator, 'auto' and 'cpu' both give the CPU."""
    assert select_device("auto") == torch.device("cpu")
    assert select_device() == torch.device("cpu")
    assert select_device("cpu") == torch.device("cpu")


@needs_accelerator_api
@pytest.mark.parametrize("kind", ["cuda", "mps"])
def test_auto_picks_the_reported_accelerator(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """When torch.accelerator reports a cuda or mps device, 'auto' returns that device type,
    without an index (as config.json records it)."""
    _fake_accelerator(monkeypatch, torch.device(kind, 0))
    assert select_device("auto") == torch.device(kind)


@needs_accelerator_api
def test_auto_skips_unsupported_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    """An accelerator type normlab does not support (here xpu) is not chosen: 'auto' gives cpu,
    consistent with '--device xpu' being rejected."""
    _fake_accelerator(monkeypatch, torch.device("xpu"))
    assert select_device("auto") == torch.device("cpu")


@needs_accelerator_api
def test_auto_is_cpu_when_accelerator_api_reports_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.accelerator reporting nothing gives the CPU, even if a backend probe would differ."""
    _fake_accelerator(monkeypatch, None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cpu")


def test_auto_without_accelerator_api_probes_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an older torch lacking torch.accelerator, 'auto' picks cuda, then mps, then cpu."""
    monkeypatch.delattr(torch, "accelerator", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto") == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert select_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")


@pytest.mark.parametrize("name", ["tpu", "gpu", "cuda:x", "", "meta", "xpu"])
def test_bad_names_are_one_line_config_errors(name: str) -> None:
    """An unknown or unsupported device name is a one-line ConfigError naming the valid choices."""
    with pytest.raises(ConfigError) as e:
        select_device(name)
    message = str(e.value)
    assert "\n" not in message and "auto, cpu, cuda, cuda:N or mps" in message


def test_absent_cuda_and_mps_are_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asking for cuda (any index) or mps when it is absent is a one-line ConfigError that names
    the device asked for and suggests --device cpu."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    for name in ("cuda", "cuda:7", "mps"):
        with pytest.raises(ConfigError, match=f"^--device {name} asked for, .*use --device cpu$"):
            select_device(name)


def test_cuda_index_out_of_range(monkeypatch: pytest.MonkeyPatch) -> None:
    """cuda:N beyond the GPUs present is a ConfigError listing the valid indices; an index in
    range is returned as asked."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"only 2 CUDA devices; use cuda:0 \.\. cuda:1"):
        select_device("cuda:2")
    assert select_device("cuda:1") == torch.device("cuda", 1)


@pytest.mark.parametrize("capability, expected", [((8, 0), "bf16"), ((9, 0), "bf16"),
                                                  ((7, 5), "fp32")])
def test_auto_precision_on_cuda(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                                expected: str) -> None:
    """'auto' is bf16 on CUDA GPUs of compute capability 8.0 or newer, fp32 on older ones."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_auto_precision_elsewhere_is_fp32(device: str) -> None:
    """'auto' is fp32 off CUDA (CPUs and MPS emulate bf16, which is slower)."""
    assert resolve_precision("auto", torch.device(device)) == "fp32"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_explicit_precision_is_kept(precision: str) -> None:
    """An explicit precision is returned unchanged, whatever the device."""
    assert resolve_precision(precision, torch.device("cpu")) == precision
    assert resolve_precision(precision, torch.device("cuda")) == precision
