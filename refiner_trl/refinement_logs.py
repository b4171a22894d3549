"""Refine turns in the logs: a few examples of the last batch, turn by turn, at every logging step.

What TRL's GRPO trainer does with `log_completions`, for REFINER's dialogue of hypothesis and feedback: each row is
one turn of one example, with the turn's prompt (turn 0: the dataset prompt; later turns: the refine prompt), the
picked hypothesis, the critic's feedback on it and the gold completion. [`RefinementLog`] keeps the rows of the last
batch, prints them with `rich` when it is installed and logs them as a table to trackio and wandb when they are in
`report_to` and have a run. `rich`, trackio and wandb are optional and imported only when used.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from .chat import Prompt, plain_text

COLUMNS = ("step", "example", "turn", "prompt", "hypothesis", "feedback", "gold")
"""The table's columns, in order."""

NOT_SAMPLED = "(last turn: not sampled)"
"""The hypothesis cell of a last turn that was not explored (see `explore_last_turn`): no turn follows it, but its
prompt and gold completion still went into the loss."""


def refinement_rows(
    turn_prompts: Sequence[Sequence[Prompt]],
    explored: Sequence[tuple[Sequence[str], Sequence[str]]],
    references: Sequence[Prompt],
    num_examples: int,
) -> list[dict[str, Any]]:
    """The table's rows for the first `num_examples` examples of a batch, turn by turn.

    Args:
        turn_prompts (`Sequence[Sequence[Prompt]]`):
            Each turn's prompts (turn 0: the dataset's), as the trainer built them.
        explored (`Sequence[tuple[Sequence[str], Sequence[str]]]`):
            Each explored turn's picked hypotheses and the critic's feedback on them.
        references (`Sequence[Prompt]`):
            The gold completions.
        num_examples (`int`):
            How many examples to keep.

    Example:

    ```python
    >>> turn_prompts = [["2 + 3 ="], ["2 + 3 =\\nPrevious answer: 6\\nFeedback: Wrong.\\nRefined answer:"]]
    >>> rows = refinement_rows(turn_prompts, [(["6"], ["Wrong."])], ["5"], num_examples=1)
    >>> [(row["turn"], row["hypothesis"], row["feedback"]) for row in rows]
    [(0, '6', 'Wrong.'), (1, '(last turn: not sampled)', '')]
    ```
    """
    rows = []
    for example in range(min(num_examples, len(references))):
        for turn, prompts in enumerate(turn_prompts):
            sampled = turn < len(explored)
            rows.append(
                {
                    "example": example,
                    "turn": turn,
                    "prompt": plain_text(prompts[example]),
                    "hypothesis": explored[turn][0][example] if sampled else NOT_SAMPLED,
                    "feedback": explored[turn][1][example] if sampled else "",
                    "gold": plain_text(references[example]),
                }
            )
    return rows


def print_refinements(rows: Sequence[dict[str, Any]], title: str) -> bool:
    """Print the rows as a `rich` table; return `False` (printing nothing) when `rich` is not installed.

    A refine prompt that starts with its example's turn-0 prompt shows only what follows it (`…` and the previous
    answer with its feedback): the tracker tables keep whole prompts.

    Args:
        rows (`Sequence[dict]`):
            What [`refinement_rows`] returned.
        title (`str`):
            The panel's title, e.g. `"Refine turns, step 25 (train)"`.
    """
    try:
        from rich.console import Console
        from rich.panel import Panel
        from rich.table import Table
    except ImportError:
        return False
    table = Table(show_header=True, header_style="bold white", expand=True, show_lines=True)
    table.add_column("Ex.", justify="right")
    table.add_column("Turn", justify="right")
    table.add_column("Prompt", style="bright_yellow", ratio=3)
    table.add_column("Hypothesis", style="bright_green", ratio=2)
    table.add_column("Feedback", style="bold cyan", ratio=2)
    table.add_column("Gold", style="magenta", ratio=2)
    first: dict[int, str] = {}
    for row in rows:
        prompt = row["prompt"]
        start = first.setdefault(row["example"], prompt)
        if row["turn"] > 0 and prompt.startswith(start):
            prompt = "…" + prompt[len(start) :]
        cells = (prompt, row["hypothesis"], row["feedback"], row["gold"])
        table.add_row(str(row["example"]), str(row["turn"]), *cells)
    Console().print(Panel(table, title=title, expand=False))
    return True


def log_to_trackers(rows: Sequence[dict[str, Any]], key: str, report_to: Sequence[str] | str | None) -> list[str]:
    """Log the rows as one table named `key` to trackio and wandb, those of them in `report_to` with an active run.

    Returns the names of the trackers it logged to.

    Args:
        rows (`Sequence[dict]`):
            What [`refinement_rows`] returned.
        key (`str`):
            The table's name: `"refinements"` in training, `"eval_refinements"` in evaluation.
        report_to (`Sequence[str]` or `str`, *optional*):
            `TrainingArguments.report_to`.
    """
    report_to = [report_to] if isinstance(report_to, str) else list(report_to or [])
    logged = []
    for name in ("trackio", "wandb"):
        if name not in report_to and "all" not in report_to:
            continue
        try:
            tracker = importlib.import_module(name)
        except ImportError:
            continue
        active = tracker.context_vars.current_run.get() if name == "trackio" else tracker.run
        if active is None:  # e.g. after training: the Trainer's callback has finished the run
            continue
        import pandas as pd

        tracker.log({key: tracker.Table(dataframe=pd.DataFrame(list(rows), columns=list(COLUMNS)))})
        logged.append(name)
    return logged


class RefinementLog:
    """The refine-turn table of [`RefinerTrainer`]: the last batch's rows per mode, shown at each logging step.

    Args:
        args ([`RefinerConfig`]):
            Reads `log_refinements` (when `False`, `record` and `flush` do nothing), `num_refinements_to_log` and
            `report_to`.
    """

    def __init__(self, args: Any):
        self.enabled = args.log_refinements
        self.num_examples = args.num_refinements_to_log
        self.report_to = args.report_to
        self.rows: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}

    def record(
        self,
        mode: str,
        turn_prompts: Sequence[Sequence[Prompt]],
        explored: Sequence[tuple[Sequence[str], Sequence[str]]],
        references: Sequence[Prompt],
    ) -> None:
        """Keep this batch's rows ([`refinement_rows`]): the last batch of a logging window is the one shown."""
        if self.enabled and explored:
            self.rows[mode] = refinement_rows(turn_prompts, explored, references, self.num_examples)

    def flush(self, mode: str, step: int, key: str, main: bool) -> None:
        """Print and log the kept rows of `mode` (on the main process), then forget them.

        Args:
            mode (`str`):
                `"train"` or `"eval"`.
            step (`int`):
                The global step: the title's and the table's `step` column.
            key (`str`):
                The trackers' table name.
            main (`bool`):
                Whether this is the main process (the others only forget their rows).
        """
        rows, self.rows[mode] = self.rows[mode], []
        if not (self.enabled and rows and main):
            return
        rows = [{"step": step, **row} for row in rows]
        print_refinements(rows, f"Refine turns, step {step} ({mode})")
        log_to_trackers(rows, key, self.report_to)
