"""A safe parser and executor for the linear equations of the MWP data (SVAMP setup).

An equation is a chain of steps, `#0: multiply ( number1, number2 ) | #1: subtract ( number0, #0 )`, optionally ending
in a terminator (`EOS` in the training file, `<END>` in the validation file). Each step applies one operator to two
operands; an operand is `numberK` (the K-th value of the problem's `Numbers`), `#K` (the result of an earlier step)
or a number literal such as `100.0`. The result of an equation is the result of its last step.

Parsing is syntactic: any word is accepted as an operator and any single token as an operand, so that the oracle critic
can compare a hypothesis with a gold equation step by step even when one of them uses a word it does not know.
Execution checks the meaning and raises [`EquationError`] for unknown operators or operands, references to later
steps, division by zero and non-finite results. Nothing here evaluates model text as code: the tokenizer and parser
are written by hand, take linear time and refuse inputs longer than [`MAX_EQUATION_CHARS`].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_EQUATION_CHARS = 2000
"""Longest equation text the parser reads; longer texts raise [`EquationError`]."""

MAX_STEPS = 64
"""Most steps one equation may have."""

OPERATORS = ("add", "subtract", "multiply", "divide")
"""The operators of the MWP data, in their canonical spelling."""

OPERATOR_ALIASES = {"substract": "subtract"}
"""Other spellings found in the data, mapped to the canonical one."""

COMMUTATIVE = frozenset({"add", "multiply"})

TERMINATORS = ("eos", "<end>", "<eos>", "</s>")
"""Words that may end an equation (compared lower-cased); they carry no meaning and are dropped."""

_PUNCTUATION = frozenset("():,|")


class EquationError(ValueError):
    """Raised for an equation that cannot be parsed or executed; the message says why."""


@dataclass(frozen=True)
class Step:
    """One step `#i: operator ( first, second )` of an equation.

    Args:
        operator (`str`):
            The operator, lower-cased, with known aliases mapped to their canonical spelling.
        operands (`tuple[str, str]`):
            The two operands as written, lower-cased (`numberK`, `#K` or a number literal).
    """

    operator: str
    operands: tuple[str, str]


def strip_terminator(text: str) -> str:
    """Drop a trailing terminator word (`EOS`, `<END>`, ...) and trailing `|` separators from an equation text.

    Args:
        text (`str`):
            The equation text.
    """
    text = text.strip()
    while True:
        lowered = text.lower()
        for terminator in TERMINATORS:
            if lowered.endswith(terminator):
                text = text[: -len(terminator)].rstrip()
                break
        else:
            stripped = text.rstrip("| \t\n\r")
            if stripped == text:
                return text
            text = stripped


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _PUNCTUATION:
            tokens.append(char)
            i += 1
        elif char.isascii() and (char.isalnum() or char in "#_."):
            j = i + 1
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] in "_."):
                j += 1
            tokens.append(text[i:j].lower())
            i = j
        else:
            tokens.append(char)
            i += 1
    return tokens


def parse_equation(text: str) -> tuple[Step, ...]:
    """Parse an equation text into its steps; step labels must read `#0`, `#1`, ... in order.

    Args:
        text (`str`):
            The equation, with or without a terminator.

    Returns:
        `tuple[Step, ...]`: at least one step.

    Raises:
        [`EquationError`]: for anything that is not an equation in this format.
    """
    if not isinstance(text, str):
        raise EquationError(f"an equation must be text, got {type(text).__name__}")
    if len(text) > MAX_EQUATION_CHARS:
        raise EquationError(f"equation longer than {MAX_EQUATION_CHARS} characters")
    tokens = _tokenize(strip_terminator(text))
    if not tokens:
        raise EquationError("empty equation")
    steps: list[Step] = []
    position = 0

    def take(description: str, expected: str | None = None) -> str:
        nonlocal position
        if position >= len(tokens):
            raise EquationError(f"expected {description} in #{len(steps)}, found the end of the equation")
        token = tokens[position]
        if (expected is not None and token != expected) or (expected is None and token in _PUNCTUATION):
            raise EquationError(f"expected {description} in #{len(steps)}, found {token!r}")
        position += 1
        return token

    while True:
        if len(steps) >= MAX_STEPS:
            raise EquationError(f"more than {MAX_STEPS} steps")
        take(f"the label '#{len(steps)}'", f"#{len(steps)}")
        take("':'", ":")
        operator = take("an operator")
        if not operator.replace("_", "").isalpha():
            raise EquationError(f"expected an operator in #{len(steps)}, found {operator!r}")
        take("'('", "(")
        first = take("a first operand")
        take("','", ",")
        second = take("a second operand")
        take("')'", ")")
        steps.append(Step(OPERATOR_ALIASES.get(operator, operator), (first, second)))
        if position == len(tokens):
            return tuple(steps)
        take("'|'", "|")


def format_equation(steps: Sequence[Step]) -> str:
    """Write steps in the canonical form `#0: op ( a, b ) | #1: op ( #0, c )` (no terminator).

    Args:
        steps (`Sequence[Step]`):
            The steps, as returned by [`parse_equation`].
    """
    return " | ".join(f"#{i}: {s.operator} ( {s.operands[0]}, {s.operands[1]} )" for i, s in enumerate(steps))


def normalize_equation(text: str) -> str:
    """The form in which equations are compared: canonical if `text` parses, else lower-cased and whitespace-collapsed.

    Both forms drop the terminator, so `... |  EOS` and `... |  <END>` compare equal, and so do `substract`/`subtract`.

    Args:
        text (`str`):
            The equation text.
    """
    try:
        return format_equation(parse_equation(text))
    except EquationError:
        return " ".join(strip_terminator(str(text)[:MAX_EQUATION_CHARS]).lower().split())


def _is_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _operand_value(operand: str, index: int, numbers: Sequence[float], results: Sequence[float]) -> float:
    if operand.startswith("#") and _is_digits(operand[1:]):
        k = int(operand[1:])
        if k >= index:
            raise EquationError(f"#{index} uses {operand}, which is not an earlier step")
        return results[k]
    if operand.startswith("number") and _is_digits(operand[6:]):
        k = int(operand[6:])
        if k >= len(numbers):
            raise EquationError(f"#{index} uses {operand}, but the problem has {len(numbers)} numbers")
        value = float(numbers[k])
    elif _is_digits(operand.replace(".", "", 1)):
        value = float(operand)
    else:
        raise EquationError(f"#{index} has an unknown operand {operand!r}")
    if not math.isfinite(value):
        raise EquationError(f"#{index} uses a non-finite value for {operand}")
    return value


def execute_steps(steps: Sequence[Step], numbers: Sequence[float]) -> float:
    """Compute the result of parsed steps with the problem's numbers.

    Args:
        steps (`Sequence[Step]`):
            The steps, as returned by [`parse_equation`].
        numbers (`Sequence[float]`):
            The values of `number0`, `number1`, ...

    Raises:
        [`EquationError`]: for an unknown operator or operand, division by zero or a non-finite result.
    """
    results: list[float] = []
    for index, step in enumerate(steps):
        if step.operator not in OPERATORS:
            raise EquationError(f"#{index} has an unknown operator {step.operator!r}")
        a, b = (_operand_value(operand, index, numbers, results) for operand in step.operands)
        if step.operator == "divide" and b == 0:
            raise EquationError(f"#{index} divides by zero")
        try:
            if step.operator == "add":
                value = a + b
            elif step.operator == "subtract":
                value = a - b
            elif step.operator == "multiply":
                value = a * b
            else:
                value = a / b
        except ArithmeticError as error:
            raise EquationError(f"#{index} cannot be computed ({error})") from error
        if not math.isfinite(value):
            raise EquationError(f"#{index} gives a non-finite result")
        results.append(value)
    if not results:
        raise EquationError("empty equation")
    return results[-1]


def execute_equation(text: str, numbers: Sequence[float]) -> float:
    """Parse and execute an equation text.

    Args:
        text (`str`):
            The equation, e.g. `"#0: multiply ( number1, number2 ) | #1: substract ( number0, #0 ) |  EOS"`.
        numbers (`Sequence[float]`):
            The values of `number0`, `number1`, ...

    Raises:
        [`EquationError`]: for a malformed equation or one that cannot be computed.

    Example:

    ```python
    >>> execute_equation("#0: multiply ( number1, number2 ) | #1: substract ( number0, #0 ) |  EOS", [20, 3, 4])
    8.0
    ```
    """
    return execute_steps(parse_equation(text), numbers)


def answers_match(value: float, answer: float) -> bool:
    """Whether a computed value equals an answer up to rounding (relative and absolute tolerance 1e-4).

    Args:
        value (`float`):
            The computed value.
        answer (`float`):
            The reference answer.
    """
    return math.isclose(value, answer, rel_tol=1e-4, abs_tol=1e-4)
