"""Writing results: strict JSON written atomically, markdown tables, percentages.

Every report of the library (the recipes' `results.json` and `critic_eval.json`, the trainer's critic state, the
benchmarks' JSON and markdown) goes through these helpers, so that a run cut short never leaves a half-written file
and NaN never reaches a JSON file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def json_ready(value: Any) -> Any:
    """`value` as strict JSON data, recursively: NaN and infinities become `None`, tuples lists, paths strings, keys
    strings.

    Args:
        value (`Any`):
            Dicts, lists, tuples, floats, paths and other JSON data.

    Example:

    ```python
    >>> json_ready({"accuracy": float("nan"), "turns": (1, 2)})
    {'accuracy': None, 'turns': [1, 2]}
    ```
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(key): json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically: into `<path>.partial`, then renamed, so a reader never sees half a file.

    Args:
        path (`str` or `Path`):
            The file; its folder is created if needed.
        text (`str`):
            The contents, written as UTF-8.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return path


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write `data` as strict JSON ([`json_ready`], no NaN), atomically ([`write_text`]).

    Args:
        path (`str` or `Path`):
            The file.
        data (`Any`):
            JSON data.
        indent (`int`, *optional*, defaults to `2`):
            `json.dumps`'s indent; `None` for one line.
    """
    return write_text(path, json.dumps(json_ready(data), indent=indent, allow_nan=False) + "\n")


def markdown_table(header: Sequence[Any], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table, its first column left-aligned and the others right-aligned.

    Args:
        header (`Sequence`):
            The column headings.
        rows (`Sequence[Sequence]`):
            The cells, row by row (written with `str`).

    Example:

    ```python
    >>> print(markdown_table(["critic", "accuracy %"], [["oracle", "20.0"]]))
    | critic | accuracy % |
    |:---|---:|
    | oracle | 20.0 |
    ```
    """
    aligns = [":---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(str(cell) for cell in header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percent(value: float | None, digits: int = 1) -> str:
    """`value` (a share in [0, 1]) in %, with `digits` decimals; `"–"` for `None` or NaN.

    Args:
        value (`float`, *optional*):
            The share.
        digits (`int`, *optional*, defaults to `1`):
            Decimals.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.{digits}f}"


def bootstrap_interval(values: Sequence[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `values`, resampling evaluation rows.

    For a paired difference of two runs on the same rows, pass the per-row differences.

    Args:
        values (`Sequence[float]`):
            One value per evaluation row (its correctness, or a difference of two runs' correctness).
        rounds (`int`, *optional*, defaults to `2000`):
            Bootstrap resamples.
        seed (`int`, *optional*, defaults to `0`):
            The seed of the resampling.

    Example:

    ```python
    >>> bootstrap_interval([1.0] * 10)
    (1.0, 1.0)
    ```
    """
    import numpy as np

    if len(values) == 0:
        return (math.nan, math.nan)
    data = np.asarray(values, dtype=float)
    means = data[np.random.default_rng(seed).integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)
