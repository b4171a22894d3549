"""Moral Stories: x = situation + intention + immoral action, z = the norm, y = the moral action.

Two source layouts are read: the Hub dataset `demelin/moral_stories` (columns `situation`, `intention`,
`immoral_action`, `norm`, `moral_action`, ...) and the REFINER release's actor format (`actor_input` =
`<|SIT|> situation <|INT|> intention <|I_ACT|> immoral action <|NRM|>`, `actor_output` = `norm <|M_ACT|> moral
action`). The completion is the norm; the moral action is kept in the `moral_action` column for scoring.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from ..critics.base import NO_ERROR, is_no_error
from ..data import COMPLETION, PROMPT, DataError, require_fields
from .base import Task, column, mean, rows_of, squash
from .moral_norms import concept_overlap, flip_judgment, normalize_norm, parse_norm, reverses_concept
from .moral_stories_synthetic import generate_story, scenario_norms

HUB_FIELDS = ("situation", "intention", "immoral_action", "norm")
ACTOR_FIELDS = ("actor_input", "actor_output")
ACTION_MARKER = "<|M_ACT|>"
_INPUT_MARKERS = ("<|SIT|>", "<|INT|>", "<|I_ACT|>")

CONTRADICTION = "Contradiction: the norm's judgment is reversed."
SEMANTIC_MISALIGNMENT = "Semantic misalignment: the norm is about the wrong concept."

SAME_CONCEPT = 0.5
"""Least content-word F1 at which two norms are about the same concept."""


def make_prompt(situation: str, intention: str, immoral_action: str) -> str:
    """The generator's prompt: the story's context and immoral action, then `Norm:`.

    Args:
        situation (`str`):
            The story's situation.
        intention (`str`):
            The actor's intention.
        immoral_action (`str`):
            The action that breaks the norm.
    """
    context = f"Situation: {squash(situation)}\nIntention: {squash(intention)}"
    return f"{context}\nImmoral action: {squash(immoral_action)}\nNorm:"


def split_actor_input(text: str) -> tuple[str, str, str]:
    """Read (situation, intention, immoral action) from `<|SIT|> ... <|INT|> ... <|I_ACT|> ... <|NRM|>`.

    Args:
        text (`str`):
            An `actor_input` field.

    Raises:
        `ValueError`: when a marker is missing.
    """
    missing = [marker for marker in _INPUT_MARKERS if marker not in text]
    if missing:
        raise ValueError(f"no {missing[0]} marker")
    _, rest = text.split("<|SIT|>", 1)
    situation, rest = rest.split("<|INT|>", 1)
    intention, rest = rest.split("<|I_ACT|>", 1)
    return situation.strip(), intention.strip(), rest.split("<|NRM|>", 1)[0].strip()


class MoralStoriesTask(Task):
    """Moral Stories; feedback names a contradiction (reversed judgment) or a semantic misalignment (wrong concept).

    `load(split, path=None)` reads the Hub dataset `demelin/moral_stories` (configuration
    `gen-norm$actions+context-norm_distance`, splits `train` / `validation` / `test`), which needs network access; pass
    `path` to a local `.json` / `.jsonl` file in either layout. Rows have the columns `prompt`, `completion` (the norm)
    and `moral_action` (empty when the source has none).

    The oracle ([`parse_norm`]) reads each norm as a judgment and a concept: a concept whose content words overlap the
    reference's by less than [`SAME_CONCEPT`] (F1) is a semantic misalignment; the same concept with the opposite
    judgment (or the same judgment of an antonym, `careful` / `careless`) is a contradiction; anything else, a
    paraphrase included, is no error.
    """

    name = "moral_stories"
    hub_id = "demelin/moral_stories"
    hub_subset = "gen-norm$actions+context-norm_distance"
    perturbation_types = ("contradiction", "semantic_misalignment")
    metrics = ("norm_rougeL", "norm_bleu")
    feedback_patterns = (
        ("contradiction", r"\bcontradict"),
        ("semantic_misalignment", r"\bsemantic misalignment|\bwrong concept"),
    )

    def from_records(self, records: Dataset | Sequence[dict[str, Any]], source: str = "records") -> Dataset:
        rows = rows_of(records)
        actor = bool(rows) and ("actor_input" in rows[0] or "actor_output" in rows[0])
        require_fields(rows, ACTOR_FIELDS if actor else HUB_FIELDS, source)
        prompts, norms, actions = [], [], []
        for index, row in enumerate(rows):
            if actor:
                try:
                    situation, intention, immoral_action = split_actor_input(str(row["actor_input"]))
                except ValueError as error:
                    raise DataError(f"{source}, row {index}: field 'actor_input' has {error}") from None
                norm, _, moral_action = str(row["actor_output"]).partition(ACTION_MARKER)
            else:
                situation, intention, immoral_action = row["situation"], row["intention"], row["immoral_action"]
                norm, moral_action = row["norm"], row.get("moral_action") or ""
            prompts.append(make_prompt(situation, intention, immoral_action))
            norms.append(squash(norm))
            actions.append(squash(moral_action))
        return Dataset.from_dict({PROMPT: prompts, COMPLETION: norms, "moral_action": actions})

    def _synthetic_record(self, rng: random.Random) -> dict[str, Any]:
        return generate_story(rng)

    def diagnose(self, hypothesis: str, reference: str) -> str:
        hypothesis = hypothesis.partition(ACTION_MARKER)[0]
        if normalize_norm(hypothesis) == normalize_norm(reference):
            return NO_ERROR
        hyp_polarity, hyp_concept = parse_norm(hypothesis)
        ref_polarity, ref_concept = parse_norm(reference)
        if concept_overlap(hyp_concept, ref_concept) < SAME_CONCEPT:
            return SEMANTIC_MISALIGNMENT
        if hyp_polarity is not None and reverses_concept(hyp_concept, ref_concept):
            hyp_polarity = -hyp_polarity
        if hyp_polarity is not None and ref_polarity is not None and hyp_polarity != ref_polarity:
            return CONTRADICTION
        return NO_ERROR

    def _propose(self, kind: str, gold: str, rng: random.Random, others: Sequence[str] | None) -> str | None:
        if kind == "contradiction":
            return flip_judgment(gold, rng)
        pool = others if others else scenario_norms()
        return rng.choice(pool)

    def score(self, predictions: Sequence[str], rows: Dataset | Sequence[dict[str, Any]]) -> dict[str, float]:
        """Norm ROUGE-L (F1, `rouge-score` with stemming) and BLEU (`sacrebleu` corpus BLEU / 100), all in [0, 1],
        and the share of norms the oracle finds no error in.

        A prediction `norm <|M_ACT|> moral action` (the actor format) is scored on its norm part; when any prediction
        carries an action, `action_rougeL` and `action_bleu` score the actions against the rows' `moral_action`.

        Args:
            predictions (`Sequence[str]`):
                Generated norms, one per row.
            rows (`Dataset` or `Sequence[dict]`):
                Rows with `completion` (and `moral_action` for the action metrics).
        """
        golds = column(rows, COMPLETION, predictions)
        split = [p.partition(ACTION_MARKER) for p in predictions]
        norms = [squash(norm) for norm, _, _ in split]
        scores = {
            "norm_rougeL": _rouge_l(norms, golds),
            "norm_bleu": _bleu(norms, golds),
            "no_error_share": mean([is_no_error(self.diagnose(n, g)) for n, g in zip(norms, golds)]),
        }
        if any(marker for _, marker, _ in split):
            actions = [squash(action) for _, _, action in split]
            references = column(rows, "moral_action", predictions)
            scores["action_rougeL"] = _rouge_l(actions, references)
            scores["action_bleu"] = _bleu(actions, references)
        return scores


def _rouge_l(predictions: Sequence[str], references: Sequence[str]) -> float:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return mean([scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)])


def _bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    import sacrebleu

    if not predictions:
        return float("nan")
    return min(1.0, sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100)
