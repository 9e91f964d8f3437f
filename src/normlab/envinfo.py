"""What a result was made with: versions, machine, device, and the code's identity (env.json).

The code's identity is the normlab version and, when normlab runs from a git checkout, the commit
and whether the tree had uncommitted changes, so that a result can be traced to the code that
produced it (airbench saves its code with its results for the same reason).
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

from normlab import __version__


def git_provenance(path: str | Path | None = None) -> dict:
    """``{"git_commit", "git_dirty"}`` of the checkout holding ``path`` (default: this package),
    or ``{}`` when it is not in a git checkout or git is missing."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(where), *args], capture_output=True,
                                  text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    # Only a checkout that holds normlab's own files (an editable install), not a repository
    # that merely contains an installed copy (say, in its ignored .venv).
    if path is None and git("ls-files", "--error-unmatch", "__init__.py") is None:
        return {}
    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit.strip(), "git_dirty": None if status is None else bool(status.strip())}


def environment(device, backend: str = "local") -> dict:
    """env.json: Python, torch and numpy versions, platform, CPU, threads, device, provenance."""
    import numpy
    import torch

    env = {
        "normlab": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "backend": backend,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    env.update(git_provenance())
    return env


def cpu_model() -> str:
    """The CPU's model name (the same study can take twice as long on another CPU)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process so far, in MB (None where unknown)."""
    try:
        import resource
    except ImportError:   # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
