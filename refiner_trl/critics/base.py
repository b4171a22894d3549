"""Critics: anything that reads (x, z) and writes short, structured feedback on z.

The critic's "nothing wrong" text is [`NO_ERROR`]; it is defined here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .generators import ModelGenerator, _is_torch_module, checked_texts
from .templates import CRITIC_INPUT_TEMPLATE, render_critic_input

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

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


class ModelCritic:
    """A seq2seq or causal language model that writes feedback, one batched `generate` call per chunk.

    It reads [`render_critic_input`] of each (prompt, hypothesis) and never sees the references. Prompts and
    hypotheses are text (the trainer and [`refine`] pass a conversational prompt as
    [`~refiner_trl.chat.plain_text`]). A chat model critic (`use_chat_template=True`) reads the rendered critic input
    as one user message through its tokenizer's chat template.

    Args:
        model (`PreTrainedModel` or `str`):
            The critic model, or a name or path to load it from (its tokenizer comes from the same place).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            Required when `model` is a model object.
        max_prompt_length (`int`, *optional*, defaults to `512`):
            Longest critic input in tokens; longer inputs keep their end.
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest feedback in tokens.
        batch_size (`int`, *optional*, defaults to `64`):
            How many inputs go into one `generate` call.
        template (`str`, *optional*, defaults to [`CRITIC_INPUT_TEMPLATE`]):
            Must be the template the critic was trained with.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Passed to `from_pretrained` when `model` is a name or path.
        use_chat_template (`bool`, *optional*, defaults to `False`):
            Send each critic input as the user message of a conversation rendered with the tokenizer's chat template
            and its generation prompt, for a chat (instruct) model critic.
        chat_template_kwargs (`dict`, *optional*):
            More keyword arguments for the chat template when `use_chat_template=True`.
    """

    def __init__(
        self,
        model: PreTrainedModel | str,
        tokenizer: PreTrainedTokenizerBase | None = None,
        max_prompt_length: int = 512,
        max_new_tokens: int = 64,
        batch_size: int = 64,
        template: str = CRITIC_INPUT_TEMPLATE,
        trust_remote_code: bool = False,
        use_chat_template: bool = False,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        # One greedy generator serves the critic: loading by name, batching and truncation live there.
        self.generator = ModelGenerator(
            model,
            tokenizer,
            max_prompt_length=max_prompt_length,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            trust_remote_code=trust_remote_code,
            chat_template_kwargs=chat_template_kwargs,
        )
        self.template = template
        self.use_chat_template = use_chat_template

    @property
    def model(self) -> PreTrainedModel:
        """The critic model."""
        return self.generator.model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The critic's tokenizer."""
        return self.generator.tokenizer

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        return self.critique_rendered([render_critic_input(p, h, self.template) for p, h in zip(prompts, hypotheses)])

    def critique_rendered(self, critic_inputs: Sequence[str]) -> list[str]:
        """Feedback on critic inputs already rendered with the template (e.g. rows of critic training data)."""
        if self.use_chat_template:
            return self.generator.generate([[{"role": "user", "content": text}] for text in critic_inputs])
        return self.generator.generate(critic_inputs)
