"""How well a trained critic names the errors of held-out critic data (rows of `task.build_critic_dataset`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from .critics import ModelCritic
from .data import COMPLETION, PROMPT
from .report import markdown_table, percent
from .tasks.base import NO_ERROR_TYPE, Task, mean, squash


def predict_feedback(critic: ModelCritic, critic_prompts: Sequence[str]) -> list[str]:
    """The critic's feedback on already-rendered critic inputs, greedy, in chunks of the critic's batch size.

    [`ModelCritic.critique`] renders (prompt, hypothesis) itself; critic data rows hold the rendered input already, so
    this calls [`ModelCritic.critique_rendered`].

    Args:
        critic ([`ModelCritic`]):
            The trained critic.
        critic_prompts (`Sequence[str]`):
            Rendered critic inputs, e.g. the `prompt` column of `task.build_critic_dataset(...)`.
    """
    return critic.critique_rendered(critic_prompts)


def score_critic_predictions(
    task: Task, predictions: Sequence[str], critic_rows: Dataset | Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Compare a critic's feedback with the gold feedback of critic data rows.

    Args:
        task ([`Task`]):
            Maps feedback texts to their type (`task.feedback_type`).
        predictions (`Sequence[str]`):
            The critic's feedback, one per row.
        critic_rows (`Dataset` or `Sequence[dict]`):
            Rows with `completion` (the gold feedback) and, optionally, `feedback_type` (else derived from
            `completion`).

    Returns:
        `dict[str, Any]`:
            - `exact_match`: share of rows whose feedback equals the gold one (whitespace collapsed);
            - `no_error_accuracy`: on rows whose gold is "no error", the share the critic said "no error" for;
            - `error_type_accuracy`: on rows with an error, the share whose predicted type is the gold type;
            - `false_alarm_rate`: on "no error" rows, the share the critic named an error for;
            - `type_accuracy`: per gold type, the share predicted with that type;
            - `counts`: rows per gold type; `num_rows`: all rows.
        Shares over no rows are `nan`.
    """
    rows = critic_rows.to_list() if isinstance(critic_rows, Dataset) else list(critic_rows)
    if len(rows) != len(predictions):
        raise ValueError(f"Got {len(predictions)} predictions for {len(rows)} critic rows.")
    golds = [row[COMPLETION] for row in rows]
    gold_types = [row.get("feedback_type") or task.feedback_type(gold) for row, gold in zip(rows, golds)]
    predicted_types = [task.feedback_type(p) for p in predictions]

    counts = Counter(gold_types)
    error_rows = [i for i, kind in enumerate(gold_types) if kind != NO_ERROR_TYPE]
    clean_rows = [i for i, kind in enumerate(gold_types) if kind == NO_ERROR_TYPE]
    return {
        "exact_match": mean([squash(p) == squash(g) for p, g in zip(predictions, golds)]),
        "no_error_accuracy": mean([predicted_types[i] == NO_ERROR_TYPE for i in clean_rows]),
        "error_type_accuracy": mean([predicted_types[i] == gold_types[i] for i in error_rows]),
        "false_alarm_rate": mean([predicted_types[i] != NO_ERROR_TYPE for i in clean_rows]),
        "type_accuracy": {
            kind: mean([predicted_types[i] == kind for i, g in enumerate(gold_types) if g == kind])
            for kind in sorted(counts)
        },
        "counts": dict(sorted(counts.items())),
        "num_rows": len(rows),
    }


def evaluate_critic(
    critic: ModelCritic, task: Task, critic_rows: Dataset | Sequence[dict[str, Any]], return_predictions: bool = False
) -> dict[str, Any]:
    """Run a trained critic on held-out critic data and score its feedback with [`score_critic_predictions`].

    Args:
        critic ([`ModelCritic`]):
            The trained critic (its `max_prompt_length`, `max_new_tokens` and `batch_size` are used).
        task ([`Task`]):
            The task the critic data comes from.
        critic_rows (`Dataset` or `Sequence[dict]`):
            Rows of `task.build_critic_dataset(...)`: `prompt` (the rendered critic input), `completion` (the gold
            feedback), `feedback_type`.
        return_predictions (`bool`, *optional*, defaults to `False`):
            Also return the critic's feedback under `"predictions"`.

    Returns:
        `dict[str, Any]`: see [`score_critic_predictions`].

    Example:

    ```python
    >>> rows = task.build_critic_dataset(task.synthetic(n=64, seed=1), seed=1)
    >>> evaluate_critic(ModelCritic("critic-mwp"), task, rows)["error_type_accuracy"]
    ```
    """
    rows = critic_rows.to_list() if isinstance(critic_rows, Dataset) else list(critic_rows)
    predictions = predict_feedback(critic, [row[PROMPT] for row in rows])
    result = score_critic_predictions(task, predictions, rows)
    if return_predictions:
        result["predictions"] = predictions
    return result


def format_critic_report(result: dict[str, Any]) -> str:
    """A small markdown table of [`evaluate_critic`]'s result: the headline shares, then one row per gold type.

    Args:
        result (`dict[str, Any]`):
            What [`evaluate_critic`] or [`score_critic_predictions`] returned.
    """
    clean, counts = result["counts"].get(NO_ERROR_TYPE, 0), result["counts"]
    rows = [
        ["exact match", percent(result["exact_match"]), result["num_rows"]],
        ["found no error (gold: no error)", percent(result["no_error_accuracy"]), clean],
        ["named the right error (gold: an error)", percent(result["error_type_accuracy"]), result["num_rows"] - clean],
    ]
    rows += [[f"type {kind}", percent(accuracy), counts[kind]] for kind, accuracy in result["type_accuracy"].items()]
    return markdown_table(["measure", "%", "rows"], rows)
