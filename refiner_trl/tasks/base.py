"""The [`Task`] base class: what every REFINER task provides, and the parts all tasks share.

A task turns a data source into TRL prompt-completion rows (`prompt` = the input x, `completion` = the gold
intermediate representation z*), judges hypotheses against references ([`Task.diagnose`], wrapped as an oracle
critic), perturbs gold completions into automatic negatives with the feedback that names their error, and scores
predictions with the task's metrics. It knows nothing of the trainer.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from ..chat import is_conversation, plain_text
from ..critics.base import NO_ERROR, CallableCritic, Critic, is_no_error
from ..data import COMPLETION, PROMPT, load_records
from ..templates import REFINE_TEMPLATE, render_critic_input, render_refine_prompt

_PERTURB_ATTEMPTS = 8

DECISION_ONLY_FEEDBACK = "There is an error."
"""What the decision-only oracle ([`Task.oracle_critic`] with `decision_only=True`) says of every wrong hypothesis."""

NO_ERROR_TYPE = "no_error"
"""The feedback type of [`NO_ERROR`], as [`Task.feedback_type`] names it."""


class Task(ABC):
    """A REFINER task: data, oracle critic, automatic critic data, metrics and a synthetic generator.

    Subclasses set the class attributes and implement the abstract methods; the base class builds the oracle critic
    from [`Task.diagnose`], draws perturbations from `_propose`, builds critic data and maps feedback to its type.

    Class attributes:
        name (`str`): The name [`get_task`] knows the task by.
        hub_id (`str` or `None`): The Hub dataset `load(path=None)` reads; `None` when the task has none.
        hub_subset (`str` or `None`): The configuration of `hub_id` to read.
        perturbation_types (`tuple[str, ...]`): The names of the errors [`Task.perturb`] can make.
        feedback_patterns (`tuple[tuple[str, str], ...]`): `(type, regex)` pairs that recognise the feedback types
            (the perturbation types and any oracle-only ones), searched case-insensitively.
        critique_template (`str` or `None`): The task's own critique prompt for an [`LLMCritic`] (placeholders as in
            [`LLM_CRITIC_TEMPLATE`]); `None` uses that default.
        metrics (`tuple[str, ...]`): The metrics of the paper's tables, the primary one (plotted, the headline) first;
            keys of what [`Task.score`] returns.
    """

    name: str = ""
    hub_id: str | None = None
    hub_subset: str | None = None
    perturbation_types: tuple[str, ...] = ()
    feedback_patterns: tuple[tuple[str, str], ...] = ()
    critique_template: str | None = None
    metrics: tuple[str, ...] = ()

    # ----------------------------------------------------------------------------------------------- data
    def load(self, split: str = "train", path: str | None = None) -> Dataset:
        """Load a split as prompt-completion rows.

        Args:
            split (`str`, *optional*, defaults to `"train"`):
                The Hub split to read; ignored for local files.
            path (`str`, *optional*):
                A local `.json` / `.jsonl` file (or a folder saved with `save_to_disk`) or a Hub dataset id. `None`
                reads the task's Hub default, `hub_id`; tasks without one raise `ValueError`.

        Returns:
            `datasets.Dataset`: with string columns `prompt` and `completion`, plus the columns `score` needs.

        Raises:
            [`DataError`]: naming the field and row when a needed field is missing or empty.
        """
        source = path if path is not None else self.hub_id
        if source is None:
            raise ValueError(
                f"The {self.name!r} task has no Hub default: pass path= to a local .json or .jsonl file in the "
                f"format its docstring describes, or use synthetic() for generated data."
            )
        subset = self.hub_subset if source == self.hub_id else None
        return self.from_records(load_records(str(source), split=split, subset=subset), source=str(source))

    @abstractmethod
    def from_records(self, records: Dataset | Sequence[dict[str, Any]], source: str = "records") -> Dataset:
        """Turn raw rows in one of the task's source formats into prompt-completion rows.

        Args:
            records (`Dataset` or `Sequence[dict]`):
                The raw rows.
            source (`str`, *optional*, defaults to `"records"`):
                Where the rows came from, for error messages.
        """

    def synthetic(self, n: int = 500, seed: int = 0) -> Dataset:
        """Generate `n` varied, solvable examples in the format of [`Task.load`]; the same seed gives the same rows.

        Args:
            n (`int`, *optional*, defaults to `500`):
                How many rows.
            seed (`int`, *optional*, defaults to `0`):
                The random seed.
        """
        rng = random.Random(seed)
        return self.from_records([self._synthetic_record(rng) for _ in range(n)], source="synthetic")

    @abstractmethod
    def _synthetic_record(self, rng: random.Random) -> dict[str, Any]:
        """One raw row in a source format of [`Task.from_records`], drawn with `rng`."""

    # ------------------------------------------------------------------------------------------- feedback
    @abstractmethod
    def diagnose(self, hypothesis: str, reference: str) -> str:
        """The oracle's feedback on one hypothesis: [`NO_ERROR`], or a short text naming what is wrong.

        Args:
            hypothesis (`str`):
                A generated intermediate representation.
            reference (`str`):
                The gold one.
        """

    def oracle_critic(self, decision_only: bool = False) -> Critic:
        """A [`Critic`] that compares each hypothesis with its reference through [`Task.diagnose`].

        Its `critique` raises `ValueError` when `references` is `None` or of the wrong length.

        Args:
            decision_only (`bool`, *optional*, defaults to `False`):
                Keep the oracle's decision (error or [`NO_ERROR`]) but say only [`DECISION_ONLY_FEEDBACK`] for every
                error, never *what* is wrong: the control that separates using the feedback from being told to try
                again.
        """

        def critique(prompts: list[str], hypotheses: list[str], references: list[str] | None) -> list[str]:
            if references is None:
                raise ValueError(f"The {self.name} oracle critic compares hypotheses with references; none given.")
            if len(references) != len(hypotheses):
                raise ValueError(f"Got {len(hypotheses)} hypotheses but {len(references)} references.")
            feedback = [self.diagnose(h, r) for h, r in zip(hypotheses, references)]
            return [f if not decision_only or is_no_error(f) else DECISION_ONLY_FEEDBACK for f in feedback]

        return CallableCritic(critique)

    def feedback_type(self, feedback: str) -> str:
        """Map a feedback text back to its type: [`NO_ERROR_TYPE`], one of the task's types, or `"unknown"`.

        When a text names several errors, the type of the first one named is returned.

        Args:
            feedback (`str`):
                A feedback text, from the oracle, a perturbation or a trained critic.
        """
        if is_no_error(feedback):
            return NO_ERROR_TYPE
        found = [
            (match.start(), kind)
            for kind, pattern in self.feedback_patterns
            if (match := re.search(pattern, feedback, flags=re.IGNORECASE))
        ]
        return min(found)[1] if found else "unknown"

    # ---------------------------------------------------------------------------------------- perturbation
    @abstractmethod
    def _propose(self, kind: str, gold: str, rng: random.Random, others: Sequence[str] | None) -> str | None:
        """Propose one bad completion with an error of type `kind`, or `None` when `gold` admits no such error."""

    def perturb(
        self, gold: str, rng: random.Random, kind: str | None = None, others: Sequence[str] | None = None
    ) -> tuple[str, str]:
        """Make one automatic negative from a gold completion, and the feedback that names its error.

        The feedback is what [`Task.diagnose`] says of the negative against `gold`, and its type is the perturbation's
        type: candidates that the oracle would describe otherwise are drawn again.

        Args:
            gold (`str`):
                The gold completion z*.
            rng (`random.Random`):
                The source of randomness.
            kind (`str`, *optional*):
                One of `perturbation_types`; by default a random type that applies to `gold`.
            others (`Sequence[str]`, *optional*):
                Other gold completions of the same data set, which a task may borrow wrong content from (Moral
                Stories: another story's norm); tasks that need none ignore them.

        Raises:
            `ValueError`: when `kind` is unknown, or no perturbation (of type `kind`) applies to `gold`.
        """
        result = self._try_perturb(gold, rng, kind, others)
        if result is None:
            wanted = f"of type {kind!r} " if kind else ""
            raise ValueError(f"No {self.name} perturbation {wanted}applies to {gold!r}")
        return result

    def _try_perturb(
        self, gold: str, rng: random.Random, kind: str | None, others: Sequence[str] | None
    ) -> tuple[str, str] | None:
        if kind is not None and kind not in self.perturbation_types:
            raise ValueError(f"Unknown {self.name} perturbation {kind!r}; known: {', '.join(self.perturbation_types)}")
        kinds = [kind] if kind is not None else rng.sample(self.perturbation_types, len(self.perturbation_types))
        for candidate_kind in kinds:
            for _ in range(_PERTURB_ATTEMPTS):
                bad = self._propose(candidate_kind, gold, rng, others)
                if bad is None:
                    break
                feedback = self.diagnose(bad, gold)
                if self.feedback_type(feedback) == candidate_kind:
                    return bad, feedback
        return None

    def build_critic_dataset(
        self,
        dataset: Dataset,
        seed: int = 0,
        negatives_per_example: int = 1,
        generator_samples: Sequence[Sequence[str]] | None = None,
    ) -> Dataset:
        """Build the critic's training data from prompt-completion rows, with no human in the loop.

        Each row gives one gold example (`completion` = [`NO_ERROR`]) and up to `negatives_per_example` perturbed
        ones (`completion` = the feedback naming the error); rows whose gold admits no perturbation give only the gold
        example. The critic's input is [`render_critic_input`] of the row's prompt and the (perturbed) completion.

        Args:
            dataset (`Dataset`):
                Rows with `prompt` and `completion`, as from [`Task.load`] or [`Task.synthetic`] (or in TRL's
                conversational format: the critic reads their text, [`~refiner_trl.chat.plain_text`]).
            seed (`int`, *optional*, defaults to `0`):
                The random seed; the same seed gives the same data.
            negatives_per_example (`int`, *optional*, defaults to `1`):
                How many distinct negatives to try to make per row.
            generator_samples (`Sequence[Sequence[str]]`, *optional*):
                For each row, hypotheses a generator wrote for its prompt (e.g. a warm-started generator sampled on
                the training prompts). Each one that is not yet among the row's examples is added with the feedback
                of the task's oracle critic, so that the critic also learns the errors a generator really makes, not
                only perturbations of gold.

        Returns:
            `datasets.Dataset`: columns `prompt`, `completion`, `feedback_type` ([`NO_ERROR_TYPE`] or the perturbation)
            and `source` (`"gold"`, `"perturbation"` or `"generator"`).
        """
        if generator_samples is not None and len(generator_samples) != len(dataset):
            raise ValueError(f"generator_samples has {len(generator_samples)} lists for {len(dataset)} rows")
        rng = random.Random(seed)
        golds = [plain_text(gold) for gold in dataset[COMPLETION]]
        samples = generator_samples or [[] for _ in golds]
        oracle = self.oracle_critic()
        columns: dict[str, list[str]] = {PROMPT: [], COMPLETION: [], "feedback_type": [], "source": []}

        def add(prompt: str, hypothesis: str, feedback: str, source: str) -> None:
            columns[PROMPT].append(render_critic_input(prompt, hypothesis))
            columns[COMPLETION].append(feedback)
            columns["feedback_type"].append(self.feedback_type(feedback))
            columns["source"].append(source)

        for prompt, gold, row_samples in zip(map(plain_text, dataset[PROMPT]), golds, samples):
            add(prompt, gold, NO_ERROR, "gold")
            seen = {gold}
            for _ in range(negatives_per_example):
                result = self._try_perturb(gold, rng, None, golds)
                if result is None or result[0] in seen:
                    continue
                seen.add(result[0])
                add(prompt, result[0], result[1], "perturbation")
            new = [sample for sample in dict.fromkeys(row_samples) if sample not in seen]
            for sample, feedback in zip(new, oracle.critique([prompt] * len(new), new, [gold] * len(new))):
                add(prompt, sample, feedback, "generator")
        return Dataset.from_dict(columns)

    # --------------------------------------------------------------------------------------------- metrics
    def tokenizer_texts(self, rows: Dataset, refine_template: str = REFINE_TEMPLATE) -> list[str]:
        """The texts a tiny model's tokenizer is trained on: prompts, completions, and refine prompts with feedback.

        Args:
            rows (`Dataset`):
                Prompt-completion rows (standard, not conversational).
            refine_template (`str`, *optional*, defaults to [`REFINE_TEMPLATE`]):
                The refine prompt the generator will read.
        """
        feedback = sorted(set(self.build_critic_dataset(rows, seed=0)[COMPLETION]) | {NO_ERROR})
        texts = [f"{p} {c}" for p, c in zip(rows[PROMPT], rows[COMPLETION])]
        # Repeated so that the template's words and every feedback text become tokens of their own.
        return texts + [render_refine_prompt("", "", f, refine_template) for f in feedback] * 20

    @abstractmethod
    def score(self, predictions: Sequence[str], rows: Dataset | Sequence[dict[str, Any]]) -> dict[str, float]:
        """The task's metrics for one prediction per row.

        Args:
            predictions (`Sequence[str]`):
                Generated completions, one per row.
            rows (`Dataset` or `Sequence[dict]`):
                The rows they were generated for, as from [`Task.load`] or [`Task.synthetic`].
        """

    def row_scores(self, predictions: Sequence[str], rows: Sequence[dict[str, Any]], metric: str) -> list[float]:
        """One metric of each prediction on its own row ([`Task.score`] of that row alone): what a bootstrap over the
        evaluation rows resamples, and what the per-row outputs of an evaluation hold.

        Args:
            predictions (`Sequence[str]`):
                Generated completions, one per row.
            rows (`Sequence[dict]`):
                The rows they were generated for.
            metric (`str`):
                A key of what [`Task.score`] returns.
        """
        return [self.score([prediction], [row])[metric] for prediction, row in zip(predictions, rows)]


def column(rows: Dataset | Sequence[dict[str, Any]], name: str, predictions: Sequence[str]) -> list[Any]:
    """Read one column from a `Dataset` or a list of dicts, checking it has one value per prediction.

    Conversational values (TRL's format, e.g. the `completion` of [`~refiner_trl.chat.to_conversational`] rows) are
    read as their text ([`~refiner_trl.chat.plain_text`]), so that tasks score conversational rows as standard ones.

    Args:
        rows (`Dataset` or `Sequence[dict]`):
            The rows.
        name (`str`):
            The column.
        predictions (`Sequence[str]`):
            The predictions the rows are scored against.
    """
    if isinstance(rows, Dataset):
        if name not in rows.column_names:
            raise ValueError(f"rows have no {name!r} column (columns: {rows.column_names})")
        values = list(rows[name])
    else:
        values = [row[name] for row in rows]
    if len(values) != len(predictions):
        raise ValueError(f"Got {len(predictions)} predictions for {len(values)} rows.")
    return [plain_text(value) if is_conversation(value) else value for value in values]


def rows_of(records: Dataset | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Raw rows as a list of dicts, so that a field missing from the first row is reported with its row.

    Args:
        records (`Dataset` or `Sequence[dict]`):
            The rows.
    """
    return records.to_list() if isinstance(records, Dataset) else list(records)


def mean(values: Sequence[float]) -> float:
    """The mean of `values`, or `nan` when there are none.

    Args:
        values (`Sequence[float]`):
            The values (booleans count as 0 and 1).
    """
    return sum(values) / len(values) if values else float("nan")


def squash(text: str) -> str:
    """Collapse runs of whitespace into single spaces and strip the ends.

    Args:
        text (`str`):
            The text.
    """
    return " ".join(str(text).split())
