"""Math word problems (the paper's SVAMP setup): x = problem, z = linear equation, y = its value.

Source rows (the release's `mwp/train.json`, `mwp/val.json`) have `Body`, `Question`, `Numbers` (a space-separated
string or a list of numbers), `Linear_Formula` and `Answer`. The completion is the equation in canonical form: steps
`#i: op ( a, b )` joined by ` | `, no terminator, lower-case, `subtract` spelled so (see [`normalize_equation`]).
Gold formulas that do not parse are kept, whitespace-normalised; they then count in `equation_accuracy` but not in
`answer_accuracy` (which uses only rows whose gold formula executes to the `Answer`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from datasets import Dataset

from ..critics.base import NO_ERROR
from ..data import COMPLETION, PROMPT, DataError, require_fields
from .base import Task, column, mean, rows_of, squash
from .mwp_equations import (
    COMMUTATIVE,
    OPERATORS,
    EquationError,
    Step,
    answers_match,
    execute_equation,
    format_equation,
    normalize_equation,
    parse_equation,
)
from .mwp_synthetic import generate_problem

FIELDS = ("Body", "Numbers", "Linear_Formula", "Answer")
"""Fields that must be present and non-empty; `Question` must be present but may be empty (one train row's is)."""

MISSING_OPERATION = "An operation is missing."
EXTRA_OPERATION = "There is an extra operation."
MALFORMED = "The equation is malformed."
INCORRECT = "The equation is incorrect."


def wrong_number(step: int, position: int) -> str:
    """The feedback part for a wrong operand: `"the first number in #0 is incorrect"`.

    Args:
        step (`int`):
            The step's index.
        position (`int`):
            `0` for the first operand, `1` for the second.
    """
    return f"the {('first', 'second')[position]} number in #{step} is incorrect"


def wrong_operator(step: int) -> str:
    """The feedback part for a wrong operator: `"the operator in #1 is incorrect"`.

    Args:
        step (`int`):
            The step's index.
    """
    return f"the operator in #{step} is incorrect"


def parse_numbers(value: Any) -> list[float]:
    """Read `Numbers`: a space-separated string (`"56.0 9.0"`) or a list of numbers.

    Args:
        value (`str` or `list`):
            The field's value.

    Raises:
        `ValueError`: for anything else.
    """
    items = value.split() if isinstance(value, str) else list(value)
    numbers = [float(item) for item in items]
    if not all(math.isfinite(number) for number in numbers):
        raise ValueError(f"non-finite number in {value!r}")
    return numbers


def format_number(value: float) -> str:
    """Write a number compactly: `56` for 56.0, `0.25` for 0.25.

    Args:
        value (`float`):
            The number.
    """
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def make_prompt(body: str, question: str, numbers: Sequence[float]) -> str:
    """The generator's prompt: the problem, then the values of `number0`, `number1`, ..., then `Equation:`.

    Args:
        body (`str`):
            The problem's `Body`, numbers masked as `number0`, ...
        question (`str`):
            Its `Question` (may be empty).
        numbers (`Sequence[float]`):
            The values of `number0`, `number1`, ...
    """
    values = ", ".join(f"number{i}={format_number(v)}" for i, v in enumerate(numbers))
    return f"{squash(f'{body} {question}')}\nNumbers: {values}\nEquation:"


class MWPTask(Task):
    """Math word problems; feedback names a wrong number or operator in a step, a missing or an extra operation.

    `load` has no Hub default: pass `path` to a file like the release's `mwp/train.json`. Rows have the columns
    `prompt`, `completion` (canonical equation), `numbers` (`list[float]`) and `answer` (`float`).

    Feedback (parts joined by `"; "`): `"The first number in #0 is incorrect."`, `"The second number in #1 is
    incorrect."`, `"The operator in #1 is incorrect."`, `"An operation is missing."`, `"There is an extra
    operation."`; oracle-only: `"The equation is malformed."` (the hypothesis does not parse) and `"The equation is
    incorrect."` (the reference does not parse and differs). Swapped operands of `add` / `multiply` are no error for
    the oracle, though `equation_accuracy` (the paper's exact match) counts them as wrong.
    """

    name = "mwp"
    perturbation_types = ("wrong_number", "wrong_operator", "missing_operation", "extra_operation")
    metrics = ("equation_accuracy", "answer_accuracy")
    feedback_patterns = (
        ("wrong_number", r"\b(first|second) number in #\d+ is incorrect"),
        ("wrong_operator", r"\boperator in #\d+ is incorrect"),
        ("missing_operation", r"\boperation is missing"),
        ("extra_operation", r"\bextra operation"),
        ("malformed", r"\bmalformed"),
        ("incorrect", r"\bequation is incorrect"),
    )

    def from_records(self, records: Dataset | Sequence[dict[str, Any]], source: str = "records") -> Dataset:
        rows = rows_of(records)
        require_fields(rows, FIELDS, source)
        prompts, completions, numbers_column, answers = [], [], [], []
        for index, row in enumerate(rows):
            if row.get("Question") is None:
                raise DataError(f"{source}, row {index}: field 'Question' is missing")
            try:
                numbers = parse_numbers(row["Numbers"])
            except (TypeError, ValueError) as error:
                raise DataError(f"{source}, row {index}: field 'Numbers' is not a list of numbers ({error})") from None
            try:
                answer = float(row["Answer"])
            except (TypeError, ValueError):
                raise DataError(f"{source}, row {index}: field 'Answer' is not a number: {row['Answer']!r}") from None
            prompts.append(make_prompt(row["Body"], row["Question"], numbers))
            completions.append(normalize_equation(str(row["Linear_Formula"])))
            numbers_column.append(numbers)
            answers.append(answer)
        return Dataset.from_dict(
            {PROMPT: prompts, COMPLETION: completions, "numbers": numbers_column, "answer": answers}
        )

    def _synthetic_record(self, rng: random.Random) -> dict[str, Any]:
        return generate_problem(rng)

    def diagnose(self, hypothesis: str, reference: str) -> str:
        if normalize_equation(hypothesis) == normalize_equation(reference):
            return NO_ERROR
        try:
            hyp = parse_equation(hypothesis)
        except EquationError:
            return MALFORMED
        try:
            ref = parse_equation(reference)
        except EquationError:
            return INCORRECT
        if len(hyp) < len(ref):
            return MISSING_OPERATION
        if len(hyp) > len(ref):
            return EXTRA_OPERATION
        errors = []
        for i, (h, r) in enumerate(zip(hyp, ref)):
            if h.operator != r.operator:
                errors.append(wrong_operator(i))
            if r.operator in COMMUTATIVE and h.operands == r.operands[::-1]:
                continue
            errors.extend(wrong_number(i, k) for k in range(2) if h.operands[k] != r.operands[k])
        if not errors:  # differs only in commutative order
            return NO_ERROR
        return "; ".join(errors).capitalize() + "."

    def _propose(self, kind: str, gold: str, rng: random.Random, others: Sequence[str] | None) -> str | None:
        try:
            steps = list(parse_equation(gold))
        except EquationError:
            return None
        used = [int(o[6:]) for s in steps for o in s.operands if o.startswith("number") and o[6:].isdigit()]
        count = max(used, default=-1) + 2  # the numbers the gold uses, and one more
        i = rng.randrange(len(steps))
        if kind == "wrong_number":
            position = rng.randrange(2)
            choices = [f"number{k}" for k in range(count)] + [f"#{j}" for j in range(i)]
            choices = [c for c in choices if c != steps[i].operands[position]]
            operands = list(steps[i].operands)
            operands[position] = rng.choice(choices)
            steps[i] = Step(steps[i].operator, (operands[0], operands[1]))
        elif kind == "wrong_operator":
            steps[i] = Step(rng.choice([o for o in OPERATORS if o != steps[i].operator]), steps[i].operands)
        elif kind == "missing_operation":
            if len(steps) < 2:
                return None
            steps = _remove_step(steps, i)
        elif kind == "extra_operation":
            last = f"#{len(steps) - 1}"
            steps.append(Step(rng.choice(OPERATORS), (last, f"number{rng.randrange(count)}")))
        return format_equation(steps)

    def score(self, predictions: Sequence[str], rows: Dataset | Sequence[dict[str, Any]]) -> dict[str, float]:
        """Equation accuracy (normalised exact match, the paper's Table 2) and answer accuracy by execution.

        `answer_accuracy` is computed on the `answer_rows` rows whose gold equation executes to their `answer`
        (`nan` when there are none); a prediction that does not execute counts as wrong.

        Args:
            predictions (`Sequence[str]`):
                Generated equations, one per row.
            rows (`Dataset` or `Sequence[dict]`):
                Rows with `completion`, `numbers` and `answer`.
        """
        golds = column(rows, COMPLETION, predictions)
        numbers = column(rows, "numbers", predictions)
        answers = column(rows, "answer", predictions)
        equation = [normalize_equation(p) == normalize_equation(g) for p, g in zip(predictions, golds)]
        answer_hits = []
        for prediction, gold, values, answer in zip(predictions, golds, numbers, answers):
            if _executes_to(gold, values, answer):
                answer_hits.append(_executes_to(prediction, values, answer))
        return {
            "equation_accuracy": mean(equation),
            "answer_accuracy": mean(answer_hits),
            "answer_rows": float(len(answer_hits)),
        }


def _executes_to(equation: str, numbers: Sequence[float], answer: float) -> bool:
    try:
        return answers_match(execute_equation(equation, numbers), answer)
    except EquationError:
        return False


def _remove_step(steps: list[Step], index: int) -> list[Step]:
    """Drop step `index`; later uses of its result take its first operand, later references shift down by one."""
    replacement = steps[index].operands[0]

    def shift(operand: str) -> str:
        if operand.startswith("#") and operand[1:].isdigit():
            k = int(operand[1:])
            return replacement if k == index else (f"#{k - 1}" if k > index else operand)
        return operand

    kept = steps[:index] + steps[index + 1 :]
    return [Step(s.operator, (shift(s.operands[0]), shift(s.operands[1]))) for s in kept]
