"""What a benchmark's numbers were measured on: the machine's CPU, memory, load and library versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, library versions.

    Args:
        threads (`int`, *optional*):
            The torch threads of the run; default: torch's current number.
    """
    import torch
    import transformers
    import trl

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "nproc": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
    except (OSError, subprocess.SubprocessError):
        info["cpu"] = platform.processor()
    try:
        meminfo = Path("/proc/meminfo").read_text().split("\n")[0].split()
        info["ram_gib"] = round(int(meminfo[1]) / 2**20, 1)
    except (OSError, IndexError, ValueError):
        info["ram_gib"] = None
    try:
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        info["load_average_at_start"] = None
    return info


def machine_line(info: dict[str, Any]) -> str:
    """One markdown line describing the machine.

    Args:
        info (`dict`):
            What [`machine_info`] returned.
    """
    device = info.get("cuda") or f"{info.get('cpu') or 'CPU'}, {info.get('nproc')} cores"
    return (
        f"{device}, {info.get('ram_gib')} GiB RAM, torch {info.get('torch')} ({info.get('torch_threads')} threads), "
        f"transformers {info.get('transformers')}, trl {info.get('trl')}; load average at start "
        f"{info.get('load_average_at_start')}"
    )
