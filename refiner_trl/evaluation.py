"""Paper-style evaluation of refinement: the generator alone, with a trained critic, with the oracle (Tables 2 and 3).

[`evaluate_refinement`] runs [`refine`] once per critic and scores the hypotheses after every turn with the task's
metrics; [`write_report`] writes the table (`results.md`), the numbers (`results.json`) and a plot of the primary
metric after each turn (`metric_by_turn.png`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset
from tqdm.auto import tqdm

from .chat import Prompt, plain_text
from .critics import Critic, is_no_error
from .data import COMPLETION, PROMPT
from .generators import Generator, as_generator, checked_generate
from .refinement import RefinementTrace, refine, refine_metrics
from .report import bootstrap_interval, json_ready, markdown_table, percent, write_json, write_text
from .tasks.base import Task
from .templates import REFINE_FEEDBACK_TEMPLATE, REFINE_TEMPLATE

if TYPE_CHECKING:
    from .script_args import CriticArguments, EvaluationArguments

GENERATOR_ALONE = "generator alone"
LLM_CRITIC = "LLM"
"""The name of an LLM critic in [`standard_critics`]: its row is "+ LLM critic (T=...)"."""


def table_metrics(task: Task, scores: Mapping[str, float] | None = None) -> tuple[str, ...]:
    """The metric columns of a task's table, the primary metric first.

    The task's `metrics` ([`Task.metrics`]) when it declares them, else every key of `scores` (what `task.score`
    returned).

    Args:
        task ([`Task`]):
            The task.
        scores (`Mapping[str, float]`, *optional*):
            One result of `task.score`, for a task that declares no `metrics`.
    """
    if task.metrics:
        return tuple(task.metrics)
    if not scores:
        raise ValueError(f"No table metrics known for task {task.name!r}; pass the scores to read them from.")
    return tuple(scores)


def primary_metric(task: Task, scores: Mapping[str, float] | None = None) -> str:
    """The task's headline metric (MWP `equation_accuracy`, sNLR `inference_rule_accuracy`, MS `norm_rougeL`).

    Args:
        task ([`Task`]):
            The task; the first of its `metrics`.
        scores (`Mapping[str, float]`, *optional*):
            One result of `task.score`, for a task that declares no `metrics`.
    """
    return table_metrics(task, scores)[0]


def hypotheses_at_turn(traces: Sequence[RefinementTrace], turn: int) -> list[str]:
    """Each example's hypothesis after `turn` refine turns: z_turn, or its last one if it stopped earlier.

    Args:
        traces (`Sequence[RefinementTrace]`):
            What [`refine`] returned.
        turn (`int`):
            The turn, `0` for the hypotheses generated from the prompts alone.
    """
    if turn < 0:
        raise ValueError(f"turn must be >= 0, got {turn}")
    return [trace.hypotheses[min(turn, len(trace.hypotheses) - 1)] for trace in traces]


def scores_by_turn(
    score: Callable[[list[str]], dict[str, float]], traces: Sequence[RefinementTrace], max_turns: int
) -> list[dict[str, float]]:
    """Score the hypotheses after each turn 0..`max_turns` (see [`hypotheses_at_turn`]).

    Args:
        score (`Callable[[list[str]], dict[str, float]]`):
            Metrics of one prediction per example, e.g. `lambda p: task.score(p, rows)`.
        traces (`Sequence[RefinementTrace]`):
            What [`refine`] returned.
        max_turns (`int`):
            The last turn to score.

    Returns:
        `list[dict[str, float]]`: `max_turns + 1` results of `score`; the last one scores the final hypotheses.
    """
    return [score(hypotheses_at_turn(traces, turn)) for turn in range(max_turns + 1)]


@dataclass
class CriticRun:
    """The evaluation of one critic (or of the generator alone).

    Args:
        name (`str`):
            The critic's key in the `critics` mapping given to [`evaluate_refinement`].
        label (`str`):
            Its row label: `"generator alone"` or `"+ {name} critic (T={max_turns})"`.
        max_turns (`int`):
            T, the most refine turns (`0` for the generator alone).
        by_turn (`list[dict[str, float]]`):
            The task's metrics after each turn 0..T; `by_turn[-1]` scores the final hypotheses.
        refine (`dict[str, float]`):
            [`refine_metrics`] of the traces: acceptance and number of refinements.
        examples (`list[dict[str, Any]]`):
            A few traces (prompt, hypotheses, feedback, reference) to read.
        interval (`list[float]`, *optional*):
            95% bootstrap interval over the rows of the final primary metric.
        gain (`dict[str, float]`, *optional*):
            The paired difference of the final primary metric from the generator alone's (`mean`, `low`, `high`, in
            the metric's unit), when the evaluation has a generator-alone run.
        critic_quality (`dict[str, float]`, *optional*):
            The critic's verdicts on the turn-0 hypotheses against the oracle's: `recall` (share of the wrong ones
            it flagged), `false_alarm` (share of the right ones it flagged), `num_wrong`, `num_right`.
        rows (`list[dict[str, Any]]`):
            Per row: `row` (its index), `hypotheses` and `feedback` at each turn, and `scores`, the primary metric of
            the row's hypothesis after each turn 0..T. Written to `rows/<name>.jsonl.gz`, not to `results.json`.
    """

    name: str
    label: str
    max_turns: int
    by_turn: list[dict[str, float]]
    refine: dict[str, float] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    interval: list[float] | None = None
    gain: dict[str, float] | None = None
    critic_quality: dict[str, float] | None = None
    rows: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def final(self) -> dict[str, float]:
        """The task's metrics of the final hypotheses."""
        return self.by_turn[-1]


@dataclass
class EvaluationResult:
    """What [`evaluate_refinement`] measured, one [`CriticRun`] per critic in the order given.

    Args:
        task (`str`):
            The task's name.
        metrics (`tuple[str, ...]`):
            The table's metric columns, primary first (see [`table_metrics`]).
        primary_metric (`str`):
            The plotted metric.
        num_examples (`int`):
            How many rows were evaluated.
        runs (`list[CriticRun]`):
            One per critic.
        templates (`dict[str, str]`, *optional*):
            The refine templates the evaluation's refine turns were built with (`refine_template`,
            `refine_feedback_template`).
    """

    task: str
    metrics: tuple[str, ...]
    primary_metric: str
    num_examples: int
    runs: list[CriticRun]
    templates: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN becomes `null`), without the runs' per-row records."""
        data = json_ready(asdict(self))
        for run in data["runs"]:
            run.pop("rows")
        return data


def run_label(name: str, critic: Critic | None, max_turns: int) -> str:
    """The table row of a critic: `"generator alone"` for `None`, else `"+ {name} critic (T={max_turns})"`.

    Args:
        name (`str`):
            The critic's short name, e.g. `"trained"` or `"oracle"`.
        critic ([`Critic`] or `None`):
            The critic; `None` for the generator alone.
        max_turns (`int`):
            T.
    """
    return GENERATOR_ALONE if critic is None else f"+ {name} critic (T={max_turns})"


class _FirstTurnCache:
    """Generate each dataset prompt once, so that every critic refines the same z_0 and z_0 is generated once.

    Refine prompts are not cached: a sampling generator asked the same refine prompt again must be free to answer
    otherwise.
    """

    def __init__(self, generator: Generator, prompts: Sequence[Prompt]):
        self.generator = generator
        self.first_turn = {_key(p) for p in prompts}
        self.cache: dict[str, str] = {}

    def generate(self, prompts: Sequence[Prompt]) -> list[str]:
        prompts = list(prompts)
        keys = [_key(p) for p in prompts]
        if not all(key in self.first_turn for key in keys):
            return checked_generate(self.generator, prompts)
        todo = {key: prompt for key, prompt in zip(keys, prompts) if key not in self.cache}
        if todo:
            self.cache.update(zip(todo, checked_generate(self.generator, list(todo.values()))))
        return [self.cache[key] for key in keys]


def _key(prompt: Prompt) -> str:
    """A hashable key of a string or conversational prompt."""
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def _never_called(prompts: list[str], hypotheses: list[str], references: list[str] | None) -> list[str]:
    raise RuntimeError("the generator-alone run asks no critic")


def evaluate_refinement(
    task: Task,
    generator: Generator | Callable[[list[str]], list[str]] | tuple[Any, Any],
    rows: Dataset | Sequence[dict[str, Any]],
    critics: Mapping[str, Critic | None],
    max_turns: int | Mapping[str, int],
    progress: bool = True,
    num_examples_kept: int = 5,
    refine_template: str = REFINE_TEMPLATE,
    refine_feedback_template: str = REFINE_FEEDBACK_TEMPLATE,
) -> EvaluationResult:
    """Run [`refine`] with each critic and score the hypotheses after every turn with `task.score`.

    The metric after turn t scores, for each example, its hypothesis z_t, or its last hypothesis when the critic
    accepted an earlier one (see [`hypotheses_at_turn`]). A critic given as `None` is the generator alone (turn 0
    only). The generator writes z_0 once per dataset prompt, so every critic refines the same z_0 and the
    generator-alone row costs nothing more; the references (`completion`) go to the critics (the oracle needs them).
    Conversational rows (TRL's format) give the generator their conversations and the critics their text
    ([`~refiner_trl.chat.plain_text`]).

    Args:
        task ([`Task`]):
            Scores the hypotheses (`task.score`) and names the metrics.
        generator ([`Generator`], `Callable` or `tuple`):
            Anything [`as_generator`] takes, e.g. a [`ModelGenerator`].
        rows (`Dataset` or `Sequence[dict]`):
            Evaluation rows with `prompt`, `completion` and the columns `task.score` needs.
        critics (`Mapping[str, Critic | None]`):
            Short name -> critic, in the table's order, e.g. `{"none": None, "trained": critic, "oracle":
            task.oracle_critic()}` (see [`standard_critics`]).
        max_turns (`int` or `Mapping[str, int]`):
            T for every critic, or per critic name (every critic but `None` ones must have one). Ignored for `None`
            critics.
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar over the critics, and [`refine`]'s bar over the turns.
        num_examples_kept (`int`, *optional*, defaults to `5`):
            How many traces per critic to keep in the result for reading.
        refine_template (`str`, *optional*, defaults to [`~refiner_trl.templates.REFINE_TEMPLATE`]):
            The refine prompt of string prompts: the template the generator was trained with (see
            [`evaluation_templates`]).
        refine_feedback_template (`str`, *optional*, defaults to [`~refiner_trl.templates.REFINE_FEEDBACK_TEMPLATE`]):
            The feedback message of conversational refine turns: the one the generator was trained with.

    Returns:
        [`EvaluationResult`]: one [`CriticRun`] per critic, in the order of `critics`.
    """
    if not isinstance(max_turns, int) and (
        missing := [n for n, c in critics.items() if c is not None and n not in max_turns]
    ):
        raise ValueError(f"max_turns names no T for the critic(s) {missing}")
    rows_list = rows.to_list() if isinstance(rows, Dataset) else list(rows)
    prompts = [row[PROMPT] for row in rows_list]
    references = [plain_text(row[COMPLETION]) for row in rows_list]
    generator = _FirstTurnCache(as_generator(generator), prompts)

    def score(predictions: list[str]) -> dict[str, float]:
        return task.score(predictions, rows_list)

    runs: list[CriticRun] = []
    with tqdm(critics.items(), desc="evaluate", unit="critic", disable=not progress) as bar:
        for name, critic in bar:
            turns = 0 if critic is None else (max_turns if isinstance(max_turns, int) else max_turns[name])
            bar.set_postfix(critic=name, T=turns)
            traces = refine(
                generator,
                _never_called if critic is None else critic,
                prompts,
                references=references,
                max_turns=turns,
                progress=progress,
                refine_template=refine_template,
                refine_feedback_template=refine_feedback_template,
            )
            by_turn = scores_by_turn(score, traces, turns)
            runs.append(
                CriticRun(
                    name=name,
                    label=run_label(name, critic, turns),
                    max_turns=turns,
                    by_turn=by_turn,
                    refine=refine_metrics(traces),
                    examples=[
                        {**asdict(trace), "reference": reference}
                        for trace, reference in zip(traces[:num_examples_kept], references)
                    ],
                    critic_quality=None
                    if critic is None or turns == 0
                    else critic_quality(traces, _oracle_verdicts(task, traces, references)),
                    rows=_row_records(task, traces, rows_list, turns, primary_metric(task, by_turn[-1])),
                )
            )
    _add_intervals(runs)
    first = runs[0].final if runs else None
    return EvaluationResult(
        task=task.name,
        metrics=table_metrics(task, first),
        primary_metric=primary_metric(task, first),
        num_examples=len(rows_list),
        runs=runs,
        templates={"refine_template": refine_template, "refine_feedback_template": refine_feedback_template},
    )


def _oracle_verdicts(task: Task, traces: Sequence[RefinementTrace], references: list[str]) -> list[bool]:
    first = hypotheses_at_turn(traces, 0)
    feedback = task.oracle_critic().critique([plain_text(t.prompt) for t in traces], first, references)
    return [not is_no_error(text) for text in feedback]


def critic_quality(traces: Sequence[RefinementTrace], wrong: Sequence[bool]) -> dict[str, float]:
    """How well a critic judged the turn-0 hypotheses, against the oracle's verdicts.

    Args:
        traces (`Sequence[RefinementTrace]`):
            What [`refine`] returned with the critic; `feedback[0]` is its verdict on z_0.
        wrong (`Sequence[bool]`):
            The oracle's verdict on each z_0: whether it is wrong.

    Returns:
        `dict[str, float]`: `recall` (wrong hypotheses flagged / wrong ones), `false_alarm` (right hypotheses flagged
        / right ones; NaN when a class is empty), `num_wrong` and `num_right`.
    """
    flagged = [not is_no_error(trace.feedback[0]) for trace in traces]
    num_wrong = sum(wrong)
    num_right = len(wrong) - num_wrong
    hits = sum(f and w for f, w in zip(flagged, wrong))
    alarms = sum(f and not w for f, w in zip(flagged, wrong))
    return {
        "recall": hits / num_wrong if num_wrong else math.nan,
        "false_alarm": alarms / num_right if num_right else math.nan,
        "num_wrong": num_wrong,
        "num_right": num_right,
    }


def _row_records(
    task: Task, traces: Sequence[RefinementTrace], rows: list[dict[str, Any]], turns: int, metric: str
) -> list[dict[str, Any]]:
    by_turn = [task.row_scores(hypotheses_at_turn(traces, t), rows, metric) for t in range(turns + 1)]
    return [
        {"row": i, "hypotheses": trace.hypotheses, "feedback": trace.feedback, "scores": [s[i] for s in by_turn]}
        for i, trace in enumerate(traces)
    ]


def _add_intervals(runs: list[CriticRun]) -> None:
    """Each run's bootstrap interval, and its paired gain over the generator alone (when there is such a run)."""
    finals = {run.name: [row["scores"][-1] for row in run.rows] for run in runs}
    alone = next((finals[run.name] for run in runs if run.max_turns == 0), None)
    for run in runs:
        values = finals[run.name]
        run.interval = list(bootstrap_interval(values))
        if alone is not None and run.max_turns > 0:
            difference = [a - b for a, b in zip(values, alone)]
            low, high = bootstrap_interval(difference)
            run.gain = {"mean": sum(difference) / len(difference), "low": low, "high": high}


def standard_critics(
    task: Task,
    trained_critic: Critic | None = None,
    llm_critic: Critic | None = None,
    more: Mapping[str, Critic] | None = None,
) -> dict[str, Critic | None]:
    """The paper's rows: the generator alone, the trained critic (when given), an LLM critic (when given), any more
    critics, the oracle critic.

    Args:
        task ([`Task`]):
            Gives the oracle critic.
        trained_critic ([`Critic`], *optional*):
            E.g. a [`ModelCritic`] loaded from `recipes/train_critic.py`'s output.
        llm_critic ([`Critic`], *optional*):
            E.g. an [`LLMCritic`] on a chat model behind an API; its row is "+ LLM critic".
        more (`Mapping[str, Critic]`, *optional*):
            More rows by name, before the oracle's (e.g. `eval_critics`).

    Returns:
        `dict[str, Critic | None]`: `{"none": None, "trained": trained_critic, "LLM": llm_critic, "oracle":
        task.oracle_critic()}`, without `"trained"` or `"LLM"` when that critic is `None`.
    """
    critics: dict[str, Critic | None] = {"none": None}
    if trained_critic is not None:
        critics["trained"] = trained_critic
    if llm_critic is not None:
        critics[LLM_CRITIC] = llm_critic
    critics.update(more or {})
    critics["oracle"] = task.oracle_critic()
    return critics


def evaluation_critics(
    task: Task,
    critic_args: CriticArguments,
    eval_args: EvaluationArguments,
    trust_remote_code: bool = False,
    device: Any = None,
) -> dict[str, Critic | None]:
    """The critics of a recipe's evaluation table ([`standard_critics`]): none, the trained critic (`eval_critic`,
    else `critic` when it is a folder), the LLM critic (`llm_critic`, else `critic` when it is `openai:<model>`), the
    oracle (unless `eval_oracle` is off), each loaded by [`~refiner_trl.critics.load_critic`].

    Args:
        task ([`Task`]):
            The task.
        critic_args ([`~refiner_trl.script_args.CriticArguments`]):
            The critics and their settings.
        eval_args ([`~refiner_trl.script_args.EvaluationArguments`]):
            Whether the table has the oracle's row.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Run the trained critic's repository code when loading it.
        device (`str` or `torch.device`, *optional*):
            Where the trained critic runs.
    """
    from .critics.loading import critic_kind, load_critic

    kind = critic_kind(critic_args.critic)
    trained = critic_args.eval_critic or (critic_args.critic if kind == "model" else None)
    llm = critic_args.llm_critic or (critic_args.critic if kind == "openai" else None)
    if llm is not None and critic_kind(llm) != "openai":
        raise ValueError(f"llm_critic: {llm!r} must be openai:<model>")
    more = {
        name.strip(): load_critic(spec.strip(), task, critic_args, trust_remote_code, device)
        for name, _, spec in (entry.partition("=") for entry in critic_args.eval_critics or [])
    }
    critics = standard_critics(
        task,
        None if trained is None else load_critic(trained, task, critic_args, trust_remote_code, device),
        None if llm is None else load_critic(llm, task, critic_args),
        more,
    )
    if not eval_args.eval_oracle:
        critics.pop("oracle")
    return critics


def evaluation_templates(eval_args: EvaluationArguments, trained: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The templates a recipe evaluates with: `refine_template`, `refine_feedback_template` (for
    [`evaluate_and_report`]) and `chat_template_kwargs` (for the generator).

    Each is `eval_args`' `eval_refine_template` / `eval_refine_feedback_template` when set, else the one the model was
    trained with (`trained`: the training recipe's [`~refiner_trl.templates.run_templates`], or the model folder's
    [`~refiner_trl.templates.load_run_templates`], which [`RefinerTrainer`] writes when it saves a model), else the
    default ([`~refiner_trl.templates.REFINE_TEMPLATE`], [`~refiner_trl.templates.REFINE_FEEDBACK_TEMPLATE`], no
    keyword arguments).

    Args:
        eval_args ([`~refiner_trl.script_args.EvaluationArguments`]):
            The templates given explicitly, if any.
        trained (`Mapping[str, Any]`, *optional*):
            The templates the model was trained with.
    """
    templates = {
        "refine_template": REFINE_TEMPLATE,
        "refine_feedback_template": REFINE_FEEDBACK_TEMPLATE,
        "chat_template_kwargs": {},
        **{key: value for key, value in (trained or {}).items() if value is not None},
    }
    if eval_args.eval_refine_template is not None:
        templates["refine_template"] = eval_args.eval_refine_template
    if eval_args.eval_refine_feedback_template is not None:
        templates["refine_feedback_template"] = eval_args.eval_refine_feedback_template
    return templates


def turns_by_critic(eval_args: EvaluationArguments, critics: Mapping[str, Critic | None]) -> dict[str, int]:
    """T of each critic of [`evaluation_critics`]: `eval_oracle_max_turns` for the oracle, else `eval_max_turns`.

    Args:
        eval_args ([`~refiner_trl.script_args.EvaluationArguments`]):
            The evaluation's settings.
        critics (`Mapping[str, Critic | None]`):
            What [`evaluation_critics`] returned.
    """
    return {
        name: eval_args.eval_oracle_max_turns if name == "oracle" else eval_args.eval_max_turns for name in critics
    }


def format_table(result: EvaluationResult) -> str:
    """The paper-style markdown table: one row per critic, one column per metric (in %, of the final hypotheses), and
    the mean number of refine turns an example took.

    Args:
        result ([`EvaluationResult`]):
            What [`evaluate_refinement`] returned.
    """
    rows = [
        [
            run.label,
            *(percent(run.final.get(m)) for m in result.metrics),
            _interval(run.interval),
            "–"
            if run.gain is None
            else f"{100 * run.gain['mean']:+.1f} {_interval([run.gain['low'], run.gain['high']], '+')}",
            "–" if run.max_turns == 0 else f"{run.refine.get('mean_refinements', 0.0):.2f}",
        ]
        for run in result.runs
    ]
    header = ["", *result.metrics, "95% interval", "gain vs alone", "refinements / example"]
    return markdown_table(header, rows)


def _interval(interval: Sequence[float] | None, sign: str = "") -> str:
    if interval is None or any(math.isnan(v) for v in interval):
        return "–"
    return f"[{100 * interval[0]:{sign}.1f}, {100 * interval[1]:{sign}.1f}]"


def format_critic_quality(result: EvaluationResult) -> str:
    """A markdown table of each critic's recall and false alarms on the turn-0 hypotheses, against the oracle.

    Args:
        result ([`EvaluationResult`]):
            What [`evaluate_refinement`] returned.
    """
    rows = [
        [run.label, percent(q["recall"]), percent(q["false_alarm"]), q["num_wrong"], q["num_right"]]
        for run in result.runs
        if (q := run.critic_quality) is not None
    ]
    return markdown_table(["", "recall %", "false alarms %", "wrong z_0", "right z_0"], rows)


def format_turn_table(result: EvaluationResult) -> str:
    """A markdown table of the primary metric (in %) after each turn, one row per critic.

    Args:
        result ([`EvaluationResult`]):
            What [`evaluate_refinement`] returned.
    """
    width = max((run.max_turns for run in result.runs), default=0) + 1
    rows = [
        [
            run.label,
            *(
                percent(run.by_turn[t].get(result.primary_metric)) if t < len(run.by_turn) else ""
                for t in range(width)
            ),
        ]
        for run in result.runs
    ]
    return markdown_table(["", *(f"turn {t}" for t in range(width))], rows)


def plot_metric_by_turn(result: EvaluationResult, path: str | Path, title: str | None = None) -> Path:
    """Save a PNG of the primary metric (in %) after each turn, one line per critic.

    The generator alone, which has turn 0 only, is drawn as a dashed horizontal line across the turns.

    Args:
        result ([`EvaluationResult`]):
            What [`evaluate_refinement`] returned.
        path (`str` or `Path`):
            Where to write the PNG.
        title (`str`, *optional*):
            The plot's title; defaults to the task and metric.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = max((run.max_turns for run in result.runs), default=0)
    figure, axes = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    plotted: list[float] = []
    for run in result.runs:
        values = [100 * scores.get(result.primary_metric, float("nan")) for scores in run.by_turn]
        plotted.extend(v for v in values if not math.isnan(v))
        if run.max_turns == 0:
            axes.plot([0, max(last, 1)], [values[0]] * 2, "--", color="black", label=run.label, zorder=3)
        else:
            axes.plot(range(len(values)), values, marker="o", label=run.label)
    axes.set_xlabel("refinement turn (0 = before any feedback)")
    axes.set_ylabel(f"{result.primary_metric} (%)")
    axes.set_xticks(range(max(last, 1) + 1))
    if plotted:  # at least 10 points of range, so that a small difference does not fill the plot
        low, high = min(plotted), max(plotted)
        pad = max(5.0, (10.0 - (high - low)) / 2)
        axes.set_ylim(max(0.0, low - pad), min(100.0, high + pad))
    axes.set_title(title or f"{result.task}: {result.primary_metric} after each turn (n={result.num_examples})")
    axes.grid(alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(result: EvaluationResult, output_dir: str | Path, title: str | None = None) -> dict[str, Path]:
    """Write `results.md` (the paper-style table and the per-turn table), `results.json` and `metric_by_turn.png`.

    Args:
        result ([`EvaluationResult`]):
            What [`evaluate_refinement`] returned.
        output_dir (`str` or `Path`):
            The folder to write to (created if needed).
        title (`str`, *optional*):
            The report's heading and the plot's title; defaults to the task's name.

    Returns:
        `dict[str, Path]`: the paths under the keys `"markdown"`, `"json"` and `"plot"`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    title = title or f"REFINER evaluation: {result.task}"
    markdown = write_text(
        output_dir / "results.md",
        f"# {title}\n\n{result.num_examples} examples; metrics in %, of the final hypotheses; 95% bootstrap "
        f"intervals of {result.primary_metric} over the rows (the gain: paired, against the generator alone).\n\n"
        f"{format_table(result)}\n\n## {result.primary_metric} after each turn\n\n{format_turn_table(result)}\n"
        f"\n## Each critic on the generator's turn-0 hypotheses, against the oracle\n\n"
        f"{format_critic_quality(result)}\n",
    )
    data = write_json(output_dir / "results.json", {"title": title, **result.to_dict()})
    plot = plot_metric_by_turn(result, output_dir / "metric_by_turn.png", title=title)
    for run in result.runs:
        write_rows(run.rows, output_dir / "rows" / f"{run.name}.jsonl.gz")
    return {"markdown": markdown, "json": data, "plot": plot, "rows": output_dir / "rows"}


def write_rows(records: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write per-row records as gzip-compressed JSON lines, atomically (`<path>.partial`, then renamed).

    Args:
        records (`Sequence[dict]`):
            E.g. a [`CriticRun`]'s `rows`.
        path (`str` or `Path`):
            The `.jsonl.gz` file; its folder is created.
    """
    import gzip
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # mtime=0: the same rows give the same bytes, so committed files change only when their rows do.
    with gzip.GzipFile(partial, "wb", mtime=0) as handle:
        handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
    os.replace(partial, path)
    return path


def evaluate_and_report(
    task: Task,
    generator: Generator | Any,
    rows: Dataset,
    critics: Mapping[str, Critic | None],
    output_dir: str | Path,
    title: str,
    max_turns: int | Mapping[str, int],
    progress: bool = True,
    templates: Mapping[str, Any] | None = None,
) -> EvaluationResult:
    """The evaluation of every recipe: [`evaluate_refinement`], then [`write_report`], then the table printed.

    Args:
        task ([`Task`]):
            The task: metrics and scoring.
        generator ([`Generator`] or what [`as_generator`] takes):
            The generator to evaluate.
        rows (`Dataset`):
            The evaluation rows.
        critics (`Mapping[str, Critic | None]`):
            Short name -> critic, in the table's order (e.g. [`evaluation_critics`]).
        output_dir (`str` or `Path`):
            Where `results.md`, `results.json`, `metric_by_turn.png` and `rows/<critic>.jsonl.gz` are written.
        title (`str`):
            The report's heading and the plot's title.
        max_turns (`int` or `Mapping[str, int]`):
            T for every critic, or per critic name (e.g. [`turns_by_critic`]).
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar over the critics.
        templates (`Mapping[str, Any]`, *optional*):
            The refine templates the generator was trained with ([`evaluation_templates`]): `refine_template` and
            `refine_feedback_template` go to [`evaluate_refinement`]; unset keys keep the defaults.

    Returns:
        [`EvaluationResult`]: what [`evaluate_refinement`] returned.
    """
    templates = {k: v for k, v in (templates or {}).items() if k in ("refine_template", "refine_feedback_template")}
    result = evaluate_refinement(task, generator, rows, critics, max_turns=max_turns, progress=progress, **templates)
    paths = write_report(result, output_dir, title)
    print(f"\n{paths['markdown'].read_text(encoding='utf-8')}\nReport written to {output_dir}", flush=True)
    return result
