"""Synthetic natural-language reasoning (sNLR): x = fact + rules, z = the chain of inference steps, y = the consequent.

Source rows (the release's `snlr/train.json`, `snlr/val.json`) have `fact`, `rules` (a list, or one string),
`explanations` (`#0: poppy is plant #1: poppy is beautiful #2: poppy is strong`) and `consequents`
(`The poppy is strong`; `Nothing` when no rule applies, with the chain `#0: The argument is invalid!!`).
The completion is the chain, whitespace-normalised.

Each step of a reference chain has a role, read off the chain alone: the last step is the conclusion; a step
`a is b` whose `b` is a category (plant, animal, person) or whose `a` is not the chain's entity (the subject of the
conclusion) is implicit knowledge (`poppy is plant`, `intelligent is smart`); the other steps are link steps
(`poppy is smart`).
"""

from __future__ import annotations

import difflib
import random
import re
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from ..critics.base import NO_ERROR
from ..data import COMPLETION, PROMPT, require_fields
from .base import Task, column, mean, rows_of, squash
from .snlr_synthetic import ATTRIBUTES, CATEGORIES, generate_example

FIELDS = ("fact", "rules", "explanations", "consequents")
INVALID_ARGUMENT = "argument is invalid"
"""A chain's only step when no rule applies (normalised); its consequent is `Nothing`."""

MISSING_LINK = "A link step is missing."
MISSING_IMPLICIT = "An implicit-knowledge step is missing."
MISSING_CONCLUSION = "The conclusion is missing."

_STEP_MARKER = re.compile(r"#\d+\s*:")


def invalid_step(index: int) -> str:
    """The feedback part for a step that does not follow: `"step #2 is not a valid inference"`.

    Args:
        index (`int`):
            The step's index in the hypothesis.
    """
    return f"step #{index} is not a valid inference"


def split_steps(chain: str) -> list[str]:
    """The steps of a chain `#0: a is b #1: ...`, stripped; a text without markers is one step.

    Args:
        chain (`str`):
            The chain text.
    """
    return [squash(step) for step in _STEP_MARKER.split(str(chain)) if step.strip()]


def format_chain(steps: Sequence[str]) -> str:
    """Write steps as a chain: `#0: poppy is plant #1: poppy is strong`.

    Args:
        steps (`Sequence[str]`):
            The steps.
    """
    return " ".join(f"#{i}: {step}" for i, step in enumerate(steps))


def normalize_step(step: str) -> str:
    """The form in which steps are compared: lower-case, single spaces, no final punctuation, no leading `the`.

    Args:
        step (`str`):
            One step.
    """
    text = " ".join(step.lower().split()).rstrip(".!? ")
    return text[4:] if text.startswith("the ") else text


def consequent_of(chain: str) -> str:
    """The consequent a chain concludes, normalised: its last step (`"nothing"` for an invalid argument).

    Args:
        chain (`str`):
            The chain text.
    """
    steps = split_steps(chain)
    last = normalize_step(steps[-1]) if steps else ""
    return "nothing" if last == INVALID_ARGUMENT else last


def step_role(step: str, entity: str) -> str:
    """`"implicit"` or `"link"`: the role of a non-final step in a chain whose conclusion is about `entity`.

    Args:
        step (`str`):
            The step, normalised ([`normalize_step`]).
        entity (`str`):
            The subject of the chain's conclusion, normalised.
    """
    subject, _, predicate = step.partition(" is ")
    return "implicit" if predicate in CATEGORIES or subject != entity else "link"


class SNLRTask(Task):
    """sNLR; feedback names an invalid step, a missing link step or a missing implicit-knowledge step.

    `load` has no Hub default: pass `path` to a file like the release's `snlr/train.json`. Rows have the columns
    `prompt`, `completion` (the chain) and `consequent`.

    Feedback (parts joined by `"; "`): `"Step #2 is not a valid inference."`, `"A link step is missing."`, `"An
    implicit-knowledge step is missing."`; oracle-only: `"The conclusion is missing."` (the chain stops early). Steps
    are compared normalised, and the oracle accepts a chain whose premises come in another order, though
    `inference_rule_accuracy` (exact match of the normalised chain) does not.
    """

    name = "snlr"
    perturbation_types = ("invalid_step", "missing_link", "missing_implicit")
    metrics = ("inference_rule_accuracy", "consequent_accuracy")
    feedback_patterns = (
        ("invalid_step", r"\bstep #\d+ is not a valid inference"),
        ("missing_link", r"\blink step is missing"),
        ("missing_implicit", r"\bimplicit[- ]knowledge step is missing"),
        ("missing_conclusion", r"\bconclusion is missing"),
    )

    def from_records(self, records: Dataset | Sequence[dict[str, Any]], source: str = "records") -> Dataset:
        rows = rows_of(records)
        require_fields(rows, FIELDS, source)
        prompts, completions, consequents = [], [], []
        for row in rows:
            rules = row["rules"] if isinstance(row["rules"], str) else " ".join(row["rules"])
            prompts.append(f"Fact: {squash(row['fact'])}\nRules: {squash(rules)}\nInference steps:")
            completions.append(format_chain(split_steps(row["explanations"])))
            consequents.append(squash(row["consequents"]))
        return Dataset.from_dict({PROMPT: prompts, COMPLETION: completions, "consequent": consequents})

    def _synthetic_record(self, rng: random.Random) -> dict[str, Any]:
        return generate_example(rng)

    def diagnose(self, hypothesis: str, reference: str) -> str:
        hyp = [normalize_step(s) for s in split_steps(hypothesis)]
        ref = [normalize_step(s) for s in split_steps(reference)]
        if hyp == ref or (hyp and ref and hyp[-1] == ref[-1] and sorted(hyp[:-1]) == sorted(ref[:-1])):
            return NO_ERROR
        entity = ref[-1].partition(" is ")[0] if ref else ""
        errors, missing = [], []
        matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
        for tag, r0, r1, h0, h1 in matcher.get_opcodes():
            if tag == "equal":
                continue
            errors.extend(invalid_step(k) for k in range(h0, h1))
            # Reference steps that a wrong step stands in for are not reported again as missing.
            missing.extend(range(r0 + (h1 - h0), r1))
        for r in missing:
            if r == len(ref) - 1:
                message = MISSING_CONCLUSION
            else:
                message = MISSING_IMPLICIT if step_role(ref[r], entity) == "implicit" else MISSING_LINK
            if message not in errors:
                errors.append(message)
        return "; ".join(e.rstrip(".") for e in errors).capitalize() + "." if errors else NO_ERROR

    def _propose(self, kind: str, gold: str, rng: random.Random, others: Sequence[str] | None) -> str | None:
        steps = split_steps(gold)
        normalised = [normalize_step(s) for s in steps]
        if not steps or normalised[-1] == INVALID_ARGUMENT:
            return None
        entity = normalised[-1].partition(" is ")[0]
        if kind == "invalid_step":
            k = rng.randrange(len(steps))
            subject, _, predicate = steps[k].partition(" is ")
            steps[k] = f"{subject} is {rng.choice([a for a in ATTRIBUTES if a != predicate.strip()])}"
            return format_chain(steps)
        role = "link" if kind == "missing_link" else "implicit"
        candidates = [k for k in range(len(steps) - 1) if step_role(normalised[k], entity) == role]
        if not candidates:
            return None
        del steps[rng.choice(candidates)]
        return format_chain(steps)

    def score(self, predictions: Sequence[str], rows: Dataset | Sequence[dict[str, Any]]) -> dict[str, float]:
        """Inference-rule accuracy (exact match of the normalised chain) and consequent accuracy (Table 3).

        A prediction's consequent is its last step; an invalid-argument chain concludes `Nothing`.

        Args:
            predictions (`Sequence[str]`):
                Generated chains, one per row.
            rows (`Dataset` or `Sequence[dict]`):
                Rows with `completion` and `consequent`.
        """
        golds = column(rows, COMPLETION, predictions)
        consequents = column(rows, "consequent", predictions)
        chains = [
            [normalize_step(s) for s in split_steps(p)] == [normalize_step(s) for s in split_steps(g)]
            for p, g in zip(predictions, golds)
        ]
        conclusions = [consequent_of(p) == normalize_step(c) for p, c in zip(predictions, consequents)]
        return {"inference_rule_accuracy": mean(chains), "consequent_accuracy": mean(conclusions)}
