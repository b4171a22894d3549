"""Templated math word problems with one to three operations, in the release's row format.

Numbers are masked in the text as `number0`, `number1`, ... in order of appearance, as in the real data; a problem may
carry a distractor number its equation does not use. Every value stays a positive integer, so each gold equation
executes exactly to its `Answer`.
"""

from __future__ import annotations

import random
from typing import Any

from .mwp_equations import execute_equation

NAMES = (
    ("Mia", "she", "her", "her"), ("Liam", "he", "him", "his"), ("Ava", "she", "her", "her"),
    ("Noah", "he", "him", "his"), ("Zoe", "she", "her", "her"), ("Omar", "he", "him", "his"),
    ("Lena", "she", "her", "her"), ("Ravi", "he", "him", "his"), ("Sara", "she", "her", "her"),
    ("Tom", "he", "him", "his"), ("Ines", "she", "her", "her"), ("Kofi", "he", "him", "his"),
)  # fmt: skip
"""(name, subject pronoun, object pronoun, possessive)."""
FRIENDS = ("a friend", "a cousin", "a neighbour", "the teacher", "a classmate")
ITEMS = ("apples", "marbles", "stickers", "books", "cookies", "pencils", "cards", "stamps", "shells", "coins")
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("pack", "packs"), ("jar", "jars"))


class _Problem:
    """Accumulates sentences, masked numbers and steps; numbers are indexed in the order the text mentions them."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.values: list[int] = []
        self.sentences: list[str] = []
        self.steps: list[str] = []
        self.total = 0

    def number(self, value: int) -> str:
        self.values.append(value)
        return f"number{len(self.values) - 1}"

    def step(self, operator: str, first: str, second: str) -> str:
        self.steps.append(f"#{len(self.steps)}: {operator} ( {first}, {second} )")
        return f"#{len(self.steps) - 1}"


def _start(p: _Problem, name: str, pronoun: str, item: str) -> str | None:
    """The first sentence(s): a starting amount (returned as an operand) or a first step."""
    rng = p.rng
    form = rng.choice(("has", "has", "containers", "group"))
    if form == "containers":
        (single, plural), a, b = rng.choice(CONTAINERS), rng.randint(2, 9), rng.randint(2, 12)
        p.sentences.append(f"{name} has {p.number(a)} {plural} with {p.number(b)} {item} in each {single} .")
        p.total = a * b
        return p.step("multiply", f"number{len(p.values) - 2}", f"number{len(p.values) - 1}")
    a = rng.randint(5, 60)
    p.sentences.append(f"{name} has {p.number(a)} {item} .")
    p.total = a
    first = f"number{len(p.values) - 1}"
    if form == "group":
        (single, plural), b, c = rng.choice(CONTAINERS), rng.randint(2, 6), rng.randint(2, 10)
        p.sentences.append(
            f"{pronoun.capitalize()} buys {p.number(b)} {plural} with {p.number(c)} {item} in each {single} ."
        )
        group = p.step("multiply", f"number{len(p.values) - 2}", f"number{len(p.values) - 1}")
        p.total = a + b * c
        return p.step("add", first, group)
    return first


def _operation(p: _Problem, current: str, pronoun: str, objective: str, possessive: str) -> str:
    """One more sentence that applies an operation to the running total."""
    rng, total = p.rng, p.total
    divisors = [d for d in range(2, 10) if total % d == 0 and total // d > 1]
    choices = (
        ["add", "add", "multiply"] + (["subtract", "subtract"] if total > 2 else []) + (["divide"] if divisors else [])
    )
    operator = rng.choice(choices)
    he = pronoun.capitalize()
    if operator == "add":
        b = rng.randint(2, 40)
        text = rng.choice(
            (f"{he} buys {{n}} more .", f"{rng.choice(FRIENDS).capitalize()} gives {objective} {{n}} more .")
        )
        p.total += b
    elif operator == "subtract":
        b = rng.randint(1, total - 1)
        text = rng.choice((f"{he} gives {{n}} to {rng.choice(FRIENDS)} .", f"{he} loses {{n}} of them ."))
        p.total -= b
    elif operator == "multiply":
        b = rng.randint(2, 4)
        text = f"Then {possessive} collection grows to {{n}} times its size ."
        p.total *= b
    else:
        b = rng.choice(divisors)
        text = f"{he} shares them equally among {{n}} friends and keeps one share ."
        p.total //= b
    p.sentences.append(text.format(n=p.number(b)))
    return p.step(operator, current, f"number{len(p.values) - 1}")


def _distractor(p: _Problem) -> str:
    """A sentence with a number the equation does not use."""
    friend = p.rng.choice(FRIENDS).capitalize()
    return f"{friend} has {p.number(p.rng.randint(2, 30))} {p.rng.choice(ITEMS)} ."


def generate_problem(rng: random.Random) -> dict[str, Any]:
    """One problem as a row of the release's format (`Body`, `Question`, `Numbers`, `Linear_Formula`, `Answer`).

    Args:
        rng (`random.Random`):
            The source of randomness.
    """
    name, pronoun, objective, possessive = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    p = _Problem(rng)
    distractor = rng.choice((None, None, None, "before", "after"))
    if distractor == "before":
        p.sentences.append(_distractor(p))
    current = _start(p, name, pronoun, item)
    if distractor == "after":
        p.sentences.append(_distractor(p))
    target = rng.randint(len(p.steps) or 1, 3)
    while len(p.steps) < target:
        current = _operation(p, current, pronoun, objective, possessive)
    formula = " | ".join(p.steps) + " |  EOS"
    numbers = [float(v) for v in p.values]
    return {
        "Body": " ".join(p.sentences),
        "Question": rng.choice(
            (f"How many {item} does {name} have now ?", f"How many {item} does {name} have in the end ?")
        ),
        "Numbers": " ".join(str(v) for v in numbers),
        "Linear_Formula": formula,
        "Answer": str(execute_equation(formula, numbers)),
    }
