"""[`ModelCritic`]: a trained seq2seq or causal language model as critic, with its calibrated "No error." threshold."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ..generators import ModelGenerator
from ..templates import CRITIC_INPUT_TEMPLATE, render_critic_input
from .base import NO_ERROR
from .calibration import Calibration, completion_logprobs

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


class ModelCritic:
    """A seq2seq or causal language model that writes feedback, one batched `generate` call per chunk.

    It reads [`render_critic_input`] of each (prompt, hypothesis) and never sees the references. Prompts and
    hypotheses are text (the trainer and [`refine`] pass a conversational prompt as
    [`~refiner_trl.chat.plain_text`]). A chat model critic (`use_chat_template=True`) reads the rendered critic input
    as one user message through its tokenizer's chat template.

    A calibrated critic ([`~refiner_trl.critics.calibration.Calibration`], saved by `recipes/train_critic.py` as
    `calibration.json` in the critic's folder and applied whenever the folder is loaded) first scores the answer
    [`NO_ERROR`] (its log-probability, one batched forward) and reports an error only where that score is below the
    calibrated threshold; for those inputs it writes its feedback greedily with "No error." barred as the first token.
    Its false alarms are then bounded as on the held-out samples it was calibrated on.

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
        calibration ([`~refiner_trl.critics.calibration.Calibration`], *optional*):
            The "No error." threshold to apply. Unset: the `calibration.json` of the folder `model` names, if any.
        use_calibration (`bool`, *optional*, defaults to `True`):
            `False` decodes greedily even when the folder holds a calibration (the critic's own decision).
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
        calibration: Calibration | None = None,
        use_calibration: bool = True,
    ):
        if use_calibration and calibration is None and isinstance(model, str):
            calibration = Calibration.load(model)
        self.calibration = calibration if use_calibration else None
        if self.calibration is not None and use_chat_template:
            raise ValueError(
                "a calibrated ModelCritic scores plain critic inputs; use_chat_template needs use_calibration=False"
            )
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
        if self.calibration is None:
            return self.generator.generate(critic_inputs)
        scores = self.no_error_logprobs(critic_inputs)
        flagged = [i for i, score in enumerate(scores) if score < self.calibration.threshold]
        feedback = [NO_ERROR] * len(critic_inputs)
        with self._no_error_barred():
            for i, text in zip(flagged, self.generator.generate([critic_inputs[i] for i in flagged])):
                feedback[i] = text
        return feedback

    def no_error_logprobs(self, critic_inputs: Sequence[str]) -> list[float]:
        """The critic's log-probability of answering [`NO_ERROR`] to each rendered input (one forward per batch)."""
        generator = self.generator
        return completion_logprobs(
            generator.model,
            generator.tokenizer,
            critic_inputs,
            NO_ERROR,
            generator.max_prompt_length,
            generator.batch_size,
        )

    @contextmanager
    def _no_error_barred(self) -> Iterator[None]:
        # The first token of "No error." is suppressed at the first generated position, through the model's
        # generation config, so that a flagged input gets the critic's most likely error feedback. transformers
        # places that position at the start of each `generate` call, so rows stay in one call (no early exit).
        config = self.model.generation_config
        first = self.tokenizer(NO_ERROR, add_special_tokens=False)["input_ids"][0]
        saved = config.begin_suppress_tokens
        config.begin_suppress_tokens, self.generator.drop_finished = [first], False
        try:
            yield
        finally:
            config.begin_suppress_tokens, self.generator.drop_finished = saved, True
