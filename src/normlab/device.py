"""Which device and which arithmetic a study runs on.

* :func:`select_device`: ``--device`` (auto, cpu, cuda, cuda:N, mps) to a :class:`torch.device`.
* :func:`resolve_precision`: ``--precision auto`` to bf16 or fp32 for that device.
"""

from __future__ import annotations

import torch

from normlab.errors import ConfigError

# The device types the rest of normlab is written and tested for (autocast, timing, GPU names).
SUPPORTED_TYPES = ("cpu", "cuda", "mps")


def _auto_device() -> torch.device:
    """The machine's accelerator if normlab supports its type, else the CPU."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None:
        if accelerator.is_available():
            found = accelerator.current_accelerator()
            # Only the type: "cuda", not "cuda:0", as config.json has always recorded it.
            # An accelerator normlab does not support (xpu, ...) is skipped, as --device rejects it.
            if found is not None and found.type in SUPPORTED_TYPES:
                return torch.device(found.type)
        return torch.device("cpu")
    # Older torch without torch.accelerator: probe the backends ourselves.
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks the accelerator (cuda or mps), else cpu. An explicit device that is absent
    is a ConfigError."""
    if name == "auto":
        return _auto_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} asked for, but no CUDA GPU is available; use --device cpu")
    if device.type == "cuda" and device.index is not None \
            and device.index >= torch.cuda.device_count():
        raise ConfigError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA "
                          f"devices; use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but MPS is not available; use --device cpu")
    if device.type not in SUPPORTED_TYPES:
        raise ConfigError(f"unsupported device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 on a CUDA GPU with bf16 tensor cores (compute capability 8.0 or newer;
    the float32 weights keep SGD exact) and fp32 elsewhere (CPUs and older GPUs emulate bf16,
    which is slower, not faster). An explicit precision is returned as given."""
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
            return "bf16"
        return "fp32"
    return precision
