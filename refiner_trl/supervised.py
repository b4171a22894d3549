"""Supervised prompt -> completion training with the ecosystem's own trainers (the warm start and the critic).

Causal models train with TRL's [`~trl.SFTTrainer`] (`completion_only_loss=True`), encoder-decoders with transformers'
[`~transformers.Seq2SeqTrainer`]. Both see the tokens of [`encode_prompt_completion`], the encoding that
[`RefinerTrainer`] trains on and that generation reads: the prompt tokenized alone (its end kept when it is too long),
then the completion tokenized alone, then EOS. `SFTTrainer` given raw text would tokenize `prompt + completion` as one
string instead, and cut sequences at their end: with a vocabulary that merges the prompt's last characters with the
completion's first ones (TRL warns of it), the model would learn a context that generation never shows it, and a long
prompt would lose its completion rather than its beginning.

Conversational rows (TRL's format: `prompt` a list of messages, `completion` the assistant's message) take TRL's own
path for causal models: `SFTTrainer` renders them with the tokenizer's chat template (prompt with the generation
prompt, prompt + completion) and trains on the completion's tokens (`completion_only_loss=True`). These are the
tokens [`RefinerTrainer`]'s loss reads (TRL's `apply_chat_template`) and the prompt tokens generation reads
([`~refiner_trl.chat.render_generation_prompts`]), with the same `chat_template_kwargs`; the chat template's special
tokens stand between prompt and completion, so no token merges across them. Encoder-decoders render them as
[`RefinerTrainer`] does, with the collator.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

from datasets import Dataset
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Seq2SeqTrainer,
    Seq2SeqTrainingArguments,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from .chat import is_conversation, render_prompt_completion, require_chat_template
from .checkpoints import CheckpointManifestCallback
from .config import SupervisedConfig
from .data import (
    COMPLETION,
    LABEL_PAD,
    PROMPT,
    DataError,
    count_truncation,
    encode_prompt_completion,
    validate_prompt_completion,
)
from .modeling import is_encoder_decoder, prepare_tokenizer

DEFAULT_MAX_PROMPT_LENGTH = SupervisedConfig.max_prompt_length
DEFAULT_MAX_COMPLETION_LENGTH = SupervisedConfig.max_completion_length


def convert_args(args: TrainingArguments, target: type[TrainingArguments], **overrides: Any) -> TrainingArguments:
    """Copy `args` into an instance of `target`, keeping the fields `target` has and dropping the others.

    Args:
        args (`TrainingArguments`):
            Any training arguments, e.g. a [`RefinerConfig`].
        target (`type[TrainingArguments]`):
            The class to build, e.g. [`~trl.SFTConfig`] or [`~transformers.Seq2SeqTrainingArguments`].
        **overrides:
            Field values that replace the copied ones.

    Returns:
        `TrainingArguments`: an instance of `target`; fields `args` lacks keep `target`'s defaults.
    """
    values = args.to_dict()
    for name in values:  # `to_dict` hides every `*_token` field; copy the real values.
        if name.endswith("_token"):
            values[name] = getattr(args, name)
    wanted = {f.name for f in dataclasses.fields(target) if f.init}
    return target(**{**{k: v for k, v in values.items() if k in wanted}, **overrides})


def _limits(args: TrainingArguments, max_prompt_length: int | None, max_completion_length: int | None):
    prompt = max_prompt_length or getattr(args, "max_prompt_length", DEFAULT_MAX_PROMPT_LENGTH)
    completion = max_completion_length or getattr(args, "max_completion_length", DEFAULT_MAX_COMPLETION_LENGTH)
    return prompt, completion


def _warn_truncation(prompts: int, completions: int, name: str, sft_chat: bool = False) -> None:
    if prompts or completions:
        how = (
            "SFTTrainer cuts each conversation's tokens at max_prompt_length + max_completion_length, keeping their "
            "start, and drops rows left with no completion token"
            if sft_chat
            else "max_prompt_length keeps a prompt's end, max_completion_length a completion's start"
        )
        warnings.warn(
            f"{name}: {prompts} prompt(s) and {completions} completion(s) were cut to the length limits ({how}).",
            stacklevel=3,
        )


def tokenize_for_sft(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int | None,
    max_completion_length: int | None,
    name: str = "train_dataset",
) -> Dataset:
    """Pre-tokenize prompt-completion rows for [`~trl.SFTTrainer`] with [`encode_prompt_completion`] (causal models).

    Args:
        dataset (`Dataset`):
            Rows with `prompt` and `completion` strings; other columns are dropped.
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        max_prompt_length (`int` or `None`):
            Longest prompt in tokens (its end is kept).
        max_completion_length (`int` or `None`):
            Longest completion in tokens, EOS included.
        name (`str`, *optional*, defaults to `"train_dataset"`):
            Named in the truncation warning.

    Returns:
        `Dataset`: columns `input_ids` (prompt, completion, EOS) and `completion_mask` (1 on completion tokens), the
        pre-tokenized format `SFTTrainer` turns into labels when `completion_only_loss=True`.
    """
    cut = {"prompts": 0, "completions": 0}

    def encode(batch: dict[str, list]) -> dict[str, list]:
        encoded, truncation = encode_prompt_completion(
            tokenizer, batch[PROMPT], batch[COMPLETION], max_prompt_length, max_completion_length, False
        )
        cut["prompts"] += truncation.prompts
        cut["completions"] += truncation.completions
        lengths = encoded["attention_mask"].sum(dim=1).tolist()
        return {
            "input_ids": [ids[:n].tolist() for ids, n in zip(encoded["input_ids"], lengths)],
            "completion_mask": [
                (labels[:n] != LABEL_PAD).long().tolist() for labels, n in zip(encoded["labels"], lengths)
            ],
        }

    tokenized = dataset.map(encode, batched=True, remove_columns=dataset.column_names)
    _warn_truncation(cut["prompts"], cut["completions"], name)
    return tokenized


class PromptCompletionCollator:
    """Collate prompt-completion rows into an encoder-decoder batch with [`encode_prompt_completion`].

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The model's tokenizer.
        max_prompt_length (`int` or `None`):
            Longest prompt in tokens (its end is kept).
        max_completion_length (`int` or `None`):
            Longest completion in tokens, EOS included.
        is_encoder_decoder (`bool`, *optional*, defaults to `True`):
            Passed to [`encode_prompt_completion`].
        chat_template_kwargs (`dict`, *optional*):
            Keyword arguments for the chat template of conversational rows.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        max_prompt_length: int | None,
        max_completion_length: int | None,
        is_encoder_decoder: bool = True,
        chat_template_kwargs: dict[str, Any] | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_prompt_length = max_prompt_length
        self.max_completion_length = max_completion_length
        self.is_encoder_decoder = is_encoder_decoder
        self.chat_template_kwargs = chat_template_kwargs

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        prompts, completions, special = _texts(
            self.tokenizer, [f[PROMPT] for f in features], [f[COMPLETION] for f in features], self.chat_template_kwargs
        )
        batch, _ = encode_prompt_completion(
            self.tokenizer,
            prompts,
            completions,
            self.max_prompt_length,
            self.max_completion_length,
            self.is_encoder_decoder,
            add_special_tokens=special,
        )
        return batch


def _texts(tokenizer, prompts: list, completions: list, chat_template_kwargs: dict[str, Any] | None):
    """The rows' prompt and completion texts (conversations rendered with the chat template, as [`RefinerTrainer`]
    renders them for its loss), and whether to add special tokens when tokenizing them."""
    if prompts and is_conversation(prompts[0]):
        return (*render_prompt_completion(tokenizer, prompts, completions, chat_template_kwargs), False)
    return prompts, completions, True


def _chat_rows(dataset: Dataset, chat_template_kwargs: dict[str, Any]) -> Dataset:
    """Conversational rows for `SFTTrainer`: the `prompt` and `completion` columns, and `chat_template_kwargs` (the
    column TRL reads the template's keyword arguments from) when there are any."""
    rows = dataset.select_columns([PROMPT, COMPLETION])
    return rows.map(lambda _: {"chat_template_kwargs": chat_template_kwargs}) if chat_template_kwargs else rows


def train_supervised(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train_dataset: Dataset,
    args: TrainingArguments,
    eval_dataset: Dataset | None = None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    callbacks: list[TrainerCallback] | None = None,
    peft_config: Any | None = None,
    train: bool = True,
) -> Trainer:
    """Train `model` on prompt -> completion pairs with the cross-entropy of the completion only.

    Causal models: TRL's [`~trl.SFTTrainer`] with `completion_only_loss=True` on rows pre-tokenized by
    [`tokenize_for_sft`]. Encoder-decoders: transformers' [`~transformers.Seq2SeqTrainer`] with a
    [`PromptCompletionCollator`]. Either way the tokens are those of [`encode_prompt_completion`], as in
    [`RefinerTrainer`]; nothing is downloaded. Conversational rows are rendered with the tokenizer's chat template
    (and `args.chat_template_kwargs` when `args` has them): by `SFTTrainer` itself for causal models (TRL's
    conversational prompt-completion path, the loss on the completion's tokens, sequences cut at
    `max_prompt_length + max_completion_length`), by the collator for encoder-decoders, as [`RefinerTrainer`]
    renders them.

    `args` may be any [`~transformers.TrainingArguments`]: [`SupervisedConfig`], [`RefinerConfig`] (e.g. the
    REFINER run's own config, for the warm start), [`~trl.SFTConfig`] or [`~transformers.Seq2SeqTrainingArguments`].
    It is copied into an `SFTConfig` or a `Seq2SeqTrainingArguments` with [`convert_args`]: the fields the target has
    are kept, the others dropped; an `SFTConfig` given for a causal model is used as is. A copy from plain
    `TrainingArguments` keeps their defaults (no bf16, no gradient checkpointing), not `SFTConfig`'s.

    Args:
        model (`PreTrainedModel`):
            A causal or encoder-decoder LM; trained in place.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer (given a pad token if it has none).
        train_dataset (`Dataset`):
            TRL's prompt-completion format, standard (`prompt` and `completion` strings) or conversational (`prompt` a
            list of role/content messages ending with the user's, `completion` the assistant's message); other
            columns are ignored.
        args (`TrainingArguments`):
            The training arguments, converted as described above.
        eval_dataset (`Dataset`, *optional*):
            Same format; evaluated for the completion loss when `args.eval_strategy` says so.
        max_prompt_length (`int`, *optional*):
            Longest prompt in tokens, its end kept. Defaults to `args.max_prompt_length` when `args` has it, else 512.
        max_completion_length (`int`, *optional*):
            Longest completion in tokens, EOS included. Defaults to `args.max_completion_length`, else 256.
        callbacks (`list[TrainerCallback]`, *optional*):
            Passed to the trainer.
        peft_config (`peft.PeftConfig`, *optional*):
            Train an adapter (e.g. a `LoraConfig`) instead of all weights.
        train (`bool`, *optional*, defaults to `True`):
            Call `trainer.train()` before returning; `False` only builds the trainer.

    Returns:
        `Trainer`: the `SFTTrainer` or `Seq2SeqTrainer`, trained; save with `trainer.save_model(output_dir)` (the
        tokenizer is saved with it).

    Example:

    ```python
    >>> from refiner_trl.supervised import SupervisedConfig, train_supervised
    >>> trainer = train_supervised(model, tokenizer, critic_rows, SupervisedConfig("critic", max_steps=300))
    >>> trainer.save_model("critic")
    ```
    """
    prepare_tokenizer(tokenizer)
    callbacks = [*(callbacks or []), CheckpointManifestCallback()]  # each checkpoint's manifest, written last
    datasets = {"train_dataset": train_dataset, "eval_dataset": eval_dataset}
    datasets = {name: dataset for name, dataset in datasets.items() if dataset is not None}
    chat = {name: validate_prompt_completion(dataset, name) for name, dataset in datasets.items()}
    if len(set(chat.values())) > 1:
        raise DataError("train_dataset and eval_dataset must both be standard or both be conversational")
    chat = chat["train_dataset"]
    if chat:
        require_chat_template(tokenizer, f"train_dataset, row 0, {PROMPT!r}")
    chat_template_kwargs = getattr(args, "chat_template_kwargs", None) or {}
    prompt_limit, completion_limit = _limits(args, max_prompt_length, max_completion_length)
    if is_encoder_decoder(model) or chat:
        for name, dataset in datasets.items():
            prompts, completions, special = _texts(
                tokenizer, dataset[PROMPT], dataset[COMPLETION], chat_template_kwargs
            )
            cut = count_truncation(tokenizer, prompts, completions, prompt_limit, completion_limit, special)
            _warn_truncation(cut.prompts, cut.completions, name, sft_chat=chat and not is_encoder_decoder(model))

    if is_encoder_decoder(model):
        seq2seq_args = convert_args(args, Seq2SeqTrainingArguments, remove_unused_columns=False)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        trainer: Trainer = Seq2SeqTrainer(
            model=model,
            args=seq2seq_args,
            data_collator=PromptCompletionCollator(
                tokenizer, prompt_limit, completion_limit, chat_template_kwargs=chat_template_kwargs
            ),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=callbacks,
        )
    else:
        from trl import SFTConfig, SFTTrainer

        if isinstance(args, SFTConfig):
            sft_args = args
        elif chat:
            # TRL renders and tokenizes the conversations; sequences longer than both limits lose their end.
            limits = None if prompt_limit is None or completion_limit is None else prompt_limit + completion_limit
            sft_args = convert_args(args, SFTConfig, completion_only_loss=True, max_length=limits)
        else:
            # Sequences are already cut to the limits; SFTTrainer's own `max_length` would cut completions instead.
            sft_args = convert_args(args, SFTConfig, completion_only_loss=True, max_length=None)
        if chat:
            train_rows = _chat_rows(train_dataset, chat_template_kwargs)
            eval_rows = None if eval_dataset is None else _chat_rows(eval_dataset, chat_template_kwargs)
        else:
            train_rows = tokenize_for_sft(train_dataset, tokenizer, prompt_limit, completion_limit)
            eval_rows = None
            if eval_dataset is not None:
                eval_rows = tokenize_for_sft(eval_dataset, tokenizer, prompt_limit, completion_limit, "eval_dataset")
        trainer = SFTTrainer(
            model=model,
            args=sft_args,
            train_dataset=train_rows,
            eval_dataset=eval_rows,
            processing_class=tokenizer,
            callbacks=callbacks,
            peft_config=peft_config,
        )
    if train:
        trainer.train()
    return trainer
