"""How much a critic's refinement gains over the generator alone, per evaluation row, with a paired bootstrap interval.

The evaluation table gives each row's mean; the gain of a critic row is the mean of the per-row differences
(critic's final hypothesis minus the generator's turn-0 hypothesis, on the same row), and its 95% interval resamples
the rows ([`~refiner_trl.report.bootstrap_interval`] over the differences), so an interval that excludes 0 says the
critic's feedback changed the score beyond what the choice of rows explains.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from datasets import Dataset

from .critics import Critic
from .evaluation import EvaluationResult, evaluate_refinement, write_report
from .report import bootstrap_interval, markdown_table, write_text
from .tasks.base import Task


def paired_gain(
    alone: Sequence[float], refined: Sequence[float], rounds: int = 2000, seed: int = 0
) -> dict[str, float]:
    """The mean per-row difference `refined - alone` and its 95% paired bootstrap interval.

    Args:
        alone (`Sequence[float]`):
            Each row's score without a critic.
        refined (`Sequence[float]`):
            The same rows' scores after refinement, in the same order.
        rounds (`int`, *optional*, defaults to `2000`):
            Bootstrap resamples.
        seed (`int`, *optional*, defaults to `0`):
            The resampling's seed.

    Returns:
        `dict[str, float]`: `mean`, `low`, `high` (in the scores' unit) and `rows`.

    Example:

    ```python
    >>> paired_gain([0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0])["mean"]
    0.5
    ```
    """
    if len(alone) != len(refined):
        raise ValueError(f"{len(alone)} scores without a critic but {len(refined)} with one: they must be paired")
    differences = [r - a for a, r in zip(alone, refined)]
    low, high = bootstrap_interval(differences, rounds=rounds, seed=seed)
    mean = sum(differences) / len(differences) if differences else float("nan")
    return {"mean": mean, "low": low, "high": high, "rows": len(differences)}


def final_row_scores(
    task: Task, examples: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]], metric: str
):
    """Each row's `metric` of its final hypothesis (`task.score` of that row alone).

    Args:
        task ([`Task`]):
            Scores the hypotheses.
        examples (`Sequence[Mapping]`):
            One trace per row (a [`CriticRun`]'s `examples`), with `final`.
        rows (`Sequence[Mapping]`):
            The evaluation rows, in the same order.
        metric (`str`):
            A key of what `task.score` returns.
    """
    return [task.score([example["final"]], [row])[metric] for example, row in zip(examples, rows)]


def format_gains(task: Task, result: EvaluationResult, rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of each critic's paired gain over the generator alone, in points of the primary metric.

    Args:
        task ([`Task`]):
            Scores the hypotheses.
        result ([`EvaluationResult`]):
            An evaluation that kept every row's trace (`num_examples_kept` = the number of rows) and has a
            generator-alone run.
        rows (`Sequence[Mapping]`):
            The evaluation rows.
    """
    metric = result.primary_metric
    alone_run = next(run for run in result.runs if run.max_turns == 0)
    alone = final_row_scores(task, alone_run.examples, rows, metric)
    table = []
    for run in result.runs:
        if run.max_turns == 0:
            continue
        gain = paired_gain(alone, final_row_scores(task, run.examples, rows, metric))
        interval = f"[{100 * gain['low']:+.1f}, {100 * gain['high']:+.1f}]"
        table.append([f"{run.label} − {alone_run.label}", f"{100 * gain['mean']:+.1f}", interval, gain["rows"]])
    return markdown_table(["", f"gain ({metric}, points)", "95% paired bootstrap interval", "rows"], table)


def evaluate_report_and_gain(
    task: Task,
    generator: Any,
    rows: Dataset,
    critics: Mapping[str, Critic | None],
    output_dir: str | Path,
    title: str,
    max_turns: int | Mapping[str, int] = 3,
) -> EvaluationResult:
    """[`~refiner_trl.evaluation.evaluate_and_report`] with every row's trace kept and the gains of [`format_gains`]
    added to `results.md` and printed after the table.

    Args:
        task ([`Task`]):
            The task.
        generator:
            The generator to evaluate.
        rows (`Dataset`):
            The evaluation rows.
        critics (`Mapping[str, Critic | None]`):
            Short name -> critic, the generator alone (`None`) first.
        output_dir (`str` or `Path`):
            Where the report is written.
        title (`str`):
            The report's heading.
        max_turns (`int` or `Mapping[str, int]`, *optional*, defaults to `3`):
            T for every critic, or per critic name.
    """
    rows_list = rows.to_list() if isinstance(rows, Dataset) else list(rows)
    result = evaluate_refinement(task, generator, rows_list, critics, max_turns=max_turns, num_examples_kept=len(rows))
    paths = write_report(result, output_dir, title)
    gains = f"\n## Gain over the generator alone, per row\n\n{format_gains(task, result, rows_list)}\n"
    markdown = paths["markdown"].read_text(encoding="utf-8") + gains
    write_text(paths["markdown"], markdown)
    print(f"\n{markdown}\nReport written to {output_dir}", flush=True)
    return result
