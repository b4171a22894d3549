"""Helpers shared by the benchmark scripts: data, threads, machine description, statistics and output files."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "refiner-paper"
"""The REFINER release's processed data, when the checkout sits next to `../shared` (never required)."""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def quiet() -> None:
    """Silence the progress bars, warnings and info logs of transformers, datasets and accelerate."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("accelerate", "DeepSpeed", "deepspeed", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads (default: torch's own choice) and return the number in use."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def add_common_arguments(parser: argparse.ArgumentParser, default_output: str, default_seeds: Sequence[int]) -> None:
    """The options every benchmark has: `--quick`, `--output-dir`, `--seeds`, `--threads`."""
    parser.add_argument("--quick", action="store_true", help="A tiny run of a few minutes (CI runs it).")
    parser.add_argument("--output-dir", default=default_output, help="Where the JSON, markdown and PNG go.")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help=f"Seeds (default {' '.join(map(str, default_seeds))})."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process (default: torch's choice). On a CPU shared with other jobs, 1 is far "
        "faster than oversubscribed threads.",
    )


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, library versions."""
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
    """One markdown line describing the machine."""
    device = info.get("cuda") or f"{info.get('cpu') or 'CPU'}, {info.get('nproc')} cores"
    return (
        f"{device}, {info.get('ram_gib')} GiB RAM, torch {info.get('torch')} ({info.get('torch_threads')} threads), "
        f"transformers {info.get('transformers')}, trl {info.get('trl')}; load average at start "
        f"{info.get('load_average_at_start')}"
    )


# ------------------------------------------------------------------------------------------------------- data


def task_data(
    task_name: str, data_dir: Path | None, synthetic_train: int, synthetic_eval: int, max_eval: int | None
) -> tuple[Any, Any, Any, str]:
    """The task and its training and evaluation rows: the paper's release when present, else synthetic rows.

    Real data: `train.json` for training and the first `max_eval` rows of `val.json` for evaluation. Synthetic:
    `synthetic_train` rows with seed 0 and `synthetic_eval` rows with seed 1 (a different draw).

    Returns:
        `(task, train_rows, eval_rows, source)`, `source` being `"release"` or `"synthetic"`.
    """
    from refiner_trl.tasks import get_task

    task = get_task(task_name)
    folder = None if data_dir is None else Path(data_dir) / task_name
    if folder is not None and (folder / "train.json").is_file() and (folder / "val.json").is_file():
        train = task.load(path=str(folder / "train.json"))
        evaluation = task.load(path=str(folder / "val.json"))
        source = "release"
    else:
        train = task.synthetic(n=synthetic_train, seed=0)
        evaluation = task.synthetic(n=synthetic_eval, seed=1)
        source = "synthetic"
    if max_eval is not None and len(evaluation) > max_eval:
        evaluation = evaluation.select(range(max_eval))
    return task, train, evaluation, source


# ------------------------------------------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    """The median, `nan` for no values."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count, ignoring `None` and NaN."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan"), 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def pm(values: Iterable[float], scale: float = 100.0, digits: int = 1) -> str:
    """`"mean ± std"` of values scaled (percent by default); `"–"` when there are none."""
    mean, std, count = mean_std(values)
    if count == 0:
        return "–"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}" if count > 1 else f"{scale * mean:.{digits}f}"


# ------------------------------------------------------------------------------------------------------ files


def json_ready(value: Any) -> Any:
    """NaN and infinities become `None`, tuples lists, paths strings: what strict JSON accepts."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: Path, data: Any) -> Path:
    """Write `data` as strict JSON, atomically (a partial run never leaves a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(json_ready(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align_first_left: bool = True) -> str:
    """A markdown table; the first column left-aligned, the others right-aligned."""
    aligns = [":---" if align_first_left and i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


class Stopwatch:
    """`with Stopwatch() as watch: ...`, then `watch.seconds` (wall) and `watch.cpu_seconds` (this process's CPU).

    On a CPU shared with other jobs the wall time depends on them; the CPU time of a one-thread process is close to
    the wall time it would take on a quiet machine, so budgets are extrapolated from it.
    """

    def __enter__(self) -> Stopwatch:
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.seconds = self.cpu_seconds = float("nan")
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
        self.cpu_seconds = time.process_time() - self.cpu_start
