"""Summaries of repeated measurements (median, mean ± std over seeds) and a wall and CPU stopwatch."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Iterable, Sequence


def median(values: Iterable[float]) -> float:
    """The median, `nan` for no values; `None` and NaN are left out.

    Args:
        values (`Iterable[float]`):
            The values.
    """
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(values) if values else float("nan")


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count, ignoring `None` and NaN.

    Args:
        values (`Iterable[float]`):
            The values.
    """
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return float("nan"), float("nan"), 0
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0), len(values)


def pm(values: Iterable[float], scale: float = 100.0, digits: int = 1) -> str:
    """`"mean ± std"` of values scaled (percent by default); `"–"` when there are none.

    Args:
        values (`Iterable[float]`):
            The values ([`mean_std`]).
        scale (`float`, *optional*, defaults to `100.0`):
            The factor applied before writing.
        digits (`int`, *optional*, defaults to `1`):
            Decimals.
    """
    mean, std, count = mean_std(values)
    if count == 0:
        return "–"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}" if count > 1 else f"{scale * mean:.{digits}f}"


def bootstrap_interval(correct: Sequence[float], rounds: int, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `correct` (resampling evaluation rows; for a paired
    difference of two runs, pass the per-row differences).

    Args:
        correct (`Sequence[float]`):
            Each evaluation row's value (its correctness, or a difference of two runs' correctness).
        rounds (`int`):
            Bootstrap resamples.
        seed (`int`, *optional*, defaults to `0`):
            The seed of the resampling.
    """
    rng = random.Random(seed)
    n = len(correct)
    means = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


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
