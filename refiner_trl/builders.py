"""What the recipes build from their arguments ([`refiner_trl.script_args`]): the task's rows, the model and
tokenizer, the LoRA config. Free functions, as TRL's `get_peft_config(model_args)`; the critic is
[`~refiner_trl.critics.load_critic`]'s."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from datasets import Dataset

from .modeling import build_tiny_model, is_encoder_decoder, load_model_and_tokenizer, train_tokenizer
from .tasks import get_task

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .script_args import ModelArguments, TaskArguments
    from .tasks.base import Task


def load_task_data(task_args: TaskArguments) -> tuple[Task, Dataset, Dataset]:
    """The task, its training rows and its evaluation rows (prompt-completion format plus task fields, conversational
    when `conversational`): the task's files or Hub dataset, else its synthetic rows.

    Args:
        task_args ([`~refiner_trl.script_args.TaskArguments`]):
            Which task and rows.
    """
    task = get_task(task_args.task)
    seed = task_args.synthetic_seed
    train = _rows(task, task_args.train_path, task_args.train_split, task_args.synthetic_train_size, seed)
    evaluation = _rows(task, task_args.eval_path, task_args.eval_split, task_args.synthetic_eval_size, seed + 1)
    train, evaluation = _head(train, task_args.max_train_samples), _head(evaluation, task_args.max_eval_samples)
    if task_args.conversational:
        from .chat import to_conversational

        train, evaluation = to_conversational(train), to_conversational(evaluation)
    return task, train, evaluation


def _rows(task: Task, path: str | None, split: str, size: int, seed: int) -> Dataset:
    return task.synthetic(n=size, seed=seed) if path is None else task.load(split, path=path)


def _head(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


def model_init_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    """The `from_pretrained` keyword arguments of `model_args`, as TRL's scripts build them: `revision`, `dtype`,
    `attn_implementation`, `trust_remote_code`, and TRL's quantization config when `load_in_4bit` or `load_in_8bit`.

    Args:
        model_args ([`~refiner_trl.script_args.ModelArguments`]):
            The model's loading settings.
    """
    from trl import get_quantization_config

    kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": model_args.trust_remote_code,
    }
    quantization_config = get_quantization_config(model_args)
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    return kwargs


def load_model(
    model_args: ModelArguments, texts: list[str], seed: int = 0
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model and tokenizer (a Hub id, a folder, a `.gguf` file or a LoRA adapter folder, with
    [`model_init_kwargs`]), or build tiny ones whose tokenizer is trained on `texts`.

    Args:
        model_args ([`~refiner_trl.script_args.ModelArguments`]):
            Which model, and how it loads.
        texts (`list[str]`):
            The texts a tiny model's tokenizer learns (unused when the model is loaded).
        seed (`int`, *optional*, defaults to `0`):
            The seed of a tiny model's random weights.
    """
    if model_args.model_name_or_path is not None:
        return load_model_and_tokenizer(model_args.model_name_or_path, **model_init_kwargs(model_args))
    tokenizer = train_tokenizer(texts, vocab_size=model_args.tiny_vocab_size)
    model = build_tiny_model(
        model_args.tiny_architecture,
        tokenizer,
        hidden_size=model_args.tiny_hidden_size,
        num_layers=model_args.tiny_num_layers,
        seed=seed,
    )
    return model, tokenizer


def get_peft_config(model_args: ModelArguments, model: PreTrainedModel) -> Any | None:
    """TRL's `get_peft_config(model_args)` for `model`: the `LoraConfig` when `use_peft` (its task type
    `SEQ_2_SEQ_LM` for an encoder-decoder), else `None`.

    Args:
        model_args ([`~refiner_trl.script_args.ModelArguments`]):
            `use_peft` and the `lora_*` fields.
        model (`PreTrainedModel`):
            The model the adapter goes on.
    """
    from trl import get_peft_config as trl_get_peft_config

    if is_encoder_decoder(model):
        model_args = dataclasses.replace(model_args, lora_task_type="SEQ_2_SEQ_LM")
    return trl_get_peft_config(model_args)
