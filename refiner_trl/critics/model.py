"""[`ModelCritic`]: a trained seq2seq or causal language model as critic."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..generators import ModelGenerator
from ..templates import CRITIC_INPUT_TEMPLATE, render_critic_input

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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
