"""Conversational prompts: TRL's chat format in REFINER's turns, rendered with the tokenizer's chat template.

A prompt is either a string (TRL's standard format) or a conversation: a list of `{"role", "content"}` messages
(TRL's conversational format). A refine turn of a conversation is the same conversation continued: the picked
hypothesis as the assistant's message, then the critic's feedback as the user's message. Rendering goes through TRL's
`maybe_apply_chat_template` / `apply_chat_template` with `add_generation_prompt=True`, as TRL's trainers do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

from datasets import Dataset
from trl.data_utils import apply_chat_template, is_conversational, maybe_apply_chat_template

from .data import COMPLETION, PROMPT, DataError, check_messages, content_text
from .templates import REFINE_FEEDBACK_TEMPLATE, REFINE_TEMPLATE, render_refine_prompt

Message = dict[str, str]
Prompt = Union[str, list[Message]]  # noqa: UP007 (a runtime alias, readable in signatures)


def is_conversation(prompt: Any) -> bool:
    """Whether `prompt` is a conversation (TRL's `is_conversational` on a prompt), not a string.

    Args:
        prompt (`Any`):
            A prompt or completion of a prompt-completion row.
    """
    return isinstance(prompt, list) and bool(prompt) and is_conversational({PROMPT: prompt})


def plain_text(value: Prompt) -> str:
    """The text a critic reads of a prompt or completion: a string as it is, or a conversation's message contents
    (system messages included) joined with newlines.

    A conversation of one user message gives exactly its content, so a critic trained on a task's plain-text prompts
    reads the same text whichever format the generator's rows have. Critics never see the chat template's markup.

    Args:
        value (`str` or `list[dict]`):
            A prompt or a completion, standard or conversational.
    """
    if isinstance(value, str):
        return value
    return "\n".join(content_text(message["content"]) for message in value)


def check_prompts(prompts: Sequence[Any], where: str) -> bool:
    """Check that `prompts` are all strings or all conversations ending with a user message; return which.

    Args:
        prompts (`Sequence`):
            The prompts of one call.
        where (`str`):
            Names them in error messages, e.g. `"refine: prompts"`.

    Returns:
        `bool`: whether they are conversations.

    Raises:
        [`DataError`]: naming the prompt at fault.
    """
    chat = bool(prompts) and isinstance(prompts[0], list)
    for index, prompt in enumerate(prompts):
        if chat:
            check_messages(prompt, f"{where}[{index}]", last_role="user")
        elif not isinstance(prompt, str):
            raise DataError(
                f"{where}[{index}]: expected a string like prompt 0, got {type(prompt).__name__}; pass all strings "
                "or all conversations (lists of role/content messages)"
            )
    return chat


def require_chat_template(tokenizer: Any, where: str) -> None:
    """Raise [`DataError`] naming `where` when a tokenizer that must render a conversation has no chat template.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer.
        where (`str`):
            What holds the conversation, e.g. `"train_dataset, row 0, 'prompt'"`.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise DataError(
            f"{where} is a conversation, but the tokenizer has no chat template: use a chat model's tokenizer, set "
            "`tokenizer.chat_template`, or give the rows as strings (TRL's standard format)"
        )


def render_generation_prompts(
    tokenizer: Any, prompts: Sequence[list[Message]], chat_template_kwargs: dict[str, Any] | None = None
) -> list[str]:
    """Render conversations for generation: the chat template with the generation prompt (the assistant's turn opened).

    Tokenize the texts without adding special tokens: the template wrote them.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            A tokenizer with a chat template.
        prompts (`Sequence[list[dict]]`):
            Conversations ending with a user message.
        chat_template_kwargs (`dict`, *optional*):
            More keyword arguments for the template (e.g. `{"enable_thinking": False}`).
    """
    kwargs = chat_template_kwargs or {}
    return [maybe_apply_chat_template({PROMPT: prompt}, tokenizer, **kwargs)[PROMPT] for prompt in prompts]


def render_prompt_completion(
    tokenizer: Any,
    prompts: Sequence[list[Message]],
    completions: Sequence[list[Message]],
    chat_template_kwargs: dict[str, Any] | None = None,
) -> tuple[list[str], list[str]]:
    """Render conversational prompt-completion pairs for the loss with TRL's `apply_chat_template`.

    The completion text is what the template writes for the assistant's message (its end-of-turn tokens included);
    the prompt text is the part before it. With a prefix-preserving template the prompt text equals
    [`render_generation_prompts`]'s; [`prefix_mismatch`] finds where it does not.

    Returns:
        `(prompt_texts, completion_texts)`.
    """
    kwargs = chat_template_kwargs or {}
    rendered = [
        apply_chat_template({PROMPT: prompt, COMPLETION: completion}, tokenizer, **kwargs)
        for prompt, completion in zip(prompts, completions)
    ]
    return [row[PROMPT] for row in rendered], [row[COMPLETION] for row in rendered]


def prefix_mismatch(generation_prompts: Sequence[str], loss_prompts: Sequence[str]) -> str | None:
    """The first generation prompt that the loss's prompt text does not reproduce, or `None` when all match.

    A chat template that renders a prompt differently alone (with the generation prompt) than followed by the
    completion is not prefix-preserving: TRL's `apply_chat_template` then keeps the common prefix as the prompt, so the
    loss conditions the gold completion on a context that generation never saw. (TRL's
    `is_chat_template_prefix_preserving` checks another property, the one its tool loop needs: that appending a tool
    message keeps the rendered earlier messages; REFINER needs this one, checked on the very texts it trains on.)

    Returns:
        `str` or `None`: a description of the first difference.
    """
    for index, (generated, loss) in enumerate(zip(generation_prompts, loss_prompts)):
        if generated != loss:
            return f"prompt {index}: generation adds {generated[len(loss) :]!r} after {loss[-40:]!r}"
    return None


def refine_prompt(
    prompt: Prompt,
    hypothesis: str,
    feedback: str,
    refine_template: str = REFINE_TEMPLATE,
    refine_feedback_template: str = REFINE_FEEDBACK_TEMPLATE,
) -> Prompt:
    """The prompt of a refine turn, in the format of `prompt`.

    A string prompt gives `refine_template` rendered with the prompt, hypothesis and feedback. A conversation gives
    the conversation continued with `{"role": "assistant", "content": hypothesis}` and `{"role": "user", "content":
    refine_feedback_template.format(feedback=feedback)}`. Either way it is built on the original prompt x and the
    latest hypothesis and feedback only, as REFINER's refine prompt is.

    Args:
        prompt (`str` or `list[dict]`):
            The original prompt x.
        hypothesis (`str`):
            The hypothesis to refine.
        feedback (`str`):
            The critic's feedback on it.
        refine_template (`str`, *optional*, defaults to [`REFINE_TEMPLATE`]):
            The refine prompt of string prompts, with `{prompt}`, `{hypothesis}` and `{feedback}`.
        refine_feedback_template (`str`, *optional*, defaults to [`REFINE_FEEDBACK_TEMPLATE`]):
            The user message of conversations, with `{feedback}`.

    Example:

    ```python
    >>> conversation = [{"role": "user", "content": "2 + 2 ="}]
    >>> refine_prompt(conversation, "5", "Expected 4.", refine_feedback_template="{feedback}")[1:]
    [{'role': 'assistant', 'content': '5'}, {'role': 'user', 'content': 'Expected 4.'}]

    ```
    """
    if isinstance(prompt, str):
        return render_refine_prompt(prompt, hypothesis, feedback, refine_template)
    return [
        *prompt,
        {"role": "assistant", "content": hypothesis},
        {"role": "user", "content": refine_feedback_template.format(feedback=feedback)},
    ]


def to_conversational(dataset: Dataset, system_prompt: str | None = None) -> Dataset:
    """Standard prompt-completion rows in TRL's conversational format, the other columns kept.

    The prompt becomes one user message (after a system message when `system_prompt` is given) and the completion
    one assistant message, so that [`plain_text`] of a converted row without a system prompt is the original text.

    Args:
        dataset (`Dataset`):
            Rows with `prompt` and `completion` strings, e.g. a task's.
        system_prompt (`str`, *optional*):
            The content of a system message put first in every prompt.

    Example:

    ```python
    >>> from datasets import Dataset
    >>> to_conversational(Dataset.from_list([{"prompt": "2 + 2 =", "completion": "4"}]))[0]
    {'prompt': [{'role': 'user', 'content': '2 + 2 ='}], 'completion': [{'role': 'assistant', 'content': '4'}]}

    ```
    """
    system = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        return {
            PROMPT: [*system, {"role": "user", "content": row[PROMPT]}],
            COMPLETION: [{"role": "assistant", "content": row[COMPLETION]}],
        }

    return dataset.map(convert)
