"""What every critic shares: the [`Critic`] protocol, [`NO_ERROR`] and the checks on a critic's answers.

A critic reads (x, z) and writes short, structured feedback on z. The critic's "nothing wrong" text is [`NO_ERROR`];
it is defined here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..generators import _is_torch_module, checked_texts

NO_ERROR = "No error."
"""The feedback a critic writes when it finds nothing wrong in a hypothesis."""


def is_no_error(feedback: str) -> bool:
    """Whether `feedback` is the critic's "no error" verdict (case, whitespace and a final period ignored)."""
    return _normalise(feedback) == _normalise(NO_ERROR)


def _normalise(text: str) -> str:
    return " ".join(text.strip().rstrip(".").lower().split())


class CriticError(RuntimeError):
    """Raised when a critic fails or answers with something other than one text per hypothesis."""


@runtime_checkable
class Critic(Protocol):
    """What the trainer and [`refine`] need of a critic: batched feedback, one text per hypothesis.

    `references` are the gold completions; oracle critics compare with them, trained critics ignore them.
    """

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]: ...


@runtime_checkable
class StatefulCritic(Critic, Protocol):
    """A critic with state that a resumed training run must get back (a call counter, a seeded noise source, ...).

    [`RefinerTrainer`] saves `state_dict()` as JSON in every checkpoint (`critic_state.json`, or
    `critic_state_<process index>.json` with several processes) and passes it to `load_state_dict` when training
    resumes from that checkpoint. So the state must be JSON data: dicts with string keys, lists, strings, numbers,
    booleans and `None` (tuples come back as lists). Critics without these two methods are treated as stateless.
    """

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def checked_critique(
    critic: Critic,
    prompts: Sequence[str],
    hypotheses: Sequence[str],
    references: Sequence[str] | None = None,
    where: str = "",
) -> list[str]:
    """Call `critic.critique` and check its answer: one `str` per hypothesis, else [`CriticError`] naming `where`."""
    return checked_texts(
        lambda: critic.critique(list(prompts), list(hypotheses), None if references is None else list(references)),
        len(hypotheses),
        CriticError,
        f"{type(critic).__name__}.critique",
        ("feedback per hypothesis", "feedback must be text"),
        where,
    )


class CallableCritic:
    """A critic made from a function `fn(prompts, hypotheses, references) -> list[str]`.

    Args:
        fn (`Callable`):
            Called once per batch with three lists of the same length (`references` may be `None`).

    Example:

    ```python
    >>> from refiner_trl.critics import NO_ERROR, CallableCritic
    >>> critic = CallableCritic(lambda p, h, r: [NO_ERROR if a == b else f"The answer is {b}." for a, b in zip(h, r)])
    >>> critic.critique(["1+1="], ["2"], ["2"])
    ['No error.']

    ```
    """

    def __init__(self, fn: Callable[[list[str], list[str], list[str] | None], list[str]]):
        self.fn = fn

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        return list(self.fn(list(prompts), list(hypotheses), None if references is None else list(references)))


def as_critic(obj: Critic | Callable[[list[str], list[str], list[str] | None], list[str]]) -> Critic:
    """Turn a function from prompts, hypotheses and references to feedback, or a [`Critic`], into a [`Critic`].

    A bare model is refused: it needs its tokenizer and a critic template, which [`ModelCritic`] adds.

    Args:
        obj (`Critic` or `Callable`):
            A [`Critic`] (returned as is), or a callable `fn(prompts, hypotheses, references) -> list[str]` (wrapped in
            [`CallableCritic`]).

    Returns:
        [`Critic`]: `obj` as a critic.

    Example:

    ```python
    >>> from refiner_trl.critics import NO_ERROR, as_critic
    >>> as_critic(lambda p, h, r: [NO_ERROR for _ in h]).critique(["1+1="], ["2"], ["2"])
    ['No error.']

    ```
    """
    if _is_torch_module(obj):
        raise TypeError(f"Got a bare {type(obj).__name__} as critic: wrap it in ModelCritic(model, tokenizer).")
    if isinstance(obj, Critic):
        return obj
    if callable(obj):
        return CallableCritic(obj)
    raise TypeError(f"Cannot use {type(obj).__name__} as a critic: pass a Critic or fn(prompts, hypotheses, refs).")
