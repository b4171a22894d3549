"""Arguments shared by the recipes in `recipes/`: which task and data, which model, which critic.

Each recipe parses these dataclasses together with its training arguments through TRL's `TrlParser`, so every
field can be set in the YAML file given with `--config` and overridden on the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from datasets import Dataset

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .critics import Critic
    from .tasks.base import Task


@dataclass
class TaskArguments:
    """
    Which task and data a recipe uses.

    Parameters:
        task (`str`, *optional*, defaults to `"moral_stories"`):
            One of `"mwp"`, `"snlr"`, `"moral_stories"`.
        train_path (`str`, *optional*):
            A local `.json`/`.jsonl` file or a Hub dataset id with the training rows. Unset: the task's synthetic
            data (offline).
        eval_path (`str`, *optional*):
            Same for the evaluation rows. Unset: synthetic data with another seed.
        train_split (`str`, *optional*, defaults to `"train"`):
            Split read from a Hub dataset for training.
        eval_split (`str`, *optional*, defaults to `"validation"`):
            Split read from a Hub dataset for evaluation.
        synthetic_train_size (`int`, *optional*, defaults to `512`):
            Rows of synthetic training data when `train_path` is unset.
        synthetic_eval_size (`int`, *optional*, defaults to `64`):
            Rows of synthetic evaluation data when `eval_path` is unset.
        max_train_samples (`int`, *optional*):
            Keep only the first rows of the training data.
        max_eval_samples (`int`, *optional*):
            Keep only the first rows of the evaluation data.
        data_seed (`int`, *optional*, defaults to `0`):
            Seed of the synthetic data (evaluation data uses `data_seed + 1`).
        conversational (`bool`, *optional*, defaults to `False`):
            Give the rows in TRL's conversational format ([`~refiner_trl.chat.to_conversational`]: the prompt as a
            user message, the completion as the assistant's), for chat models: the trainer and the evaluation render
            them with the tokenizer's chat template, and refine turns continue the conversation. The critic still
            reads the plain text. Needs a tokenizer with a chat template (not a tiny one).
    """

    task: str = field(default="moral_stories", metadata={"help": "mwp, snlr or moral_stories."})
    train_path: str | None = field(default=None, metadata={"help": "Training rows: local file or Hub id."})
    eval_path: str | None = field(default=None, metadata={"help": "Evaluation rows: local file or Hub id."})
    train_split: str = field(default="train", metadata={"help": "Hub split for training."})
    eval_split: str = field(default="validation", metadata={"help": "Hub split for evaluation."})
    synthetic_train_size: int = field(default=512, metadata={"help": "Synthetic training rows."})
    synthetic_eval_size: int = field(default=64, metadata={"help": "Synthetic evaluation rows."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N evaluation rows."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the synthetic data."})
    conversational: bool = field(
        default=False, metadata={"help": "Rows as conversations (user prompt, assistant completion) for chat models."}
    )

    def get_task(self) -> Task:
        """The task named by `task`."""
        from .tasks import get_task

        return get_task(self.task)

    def load(self) -> tuple[Task, Dataset, Dataset]:
        """Return the task, its training rows and its evaluation rows (prompt-completion format plus task fields,
        conversational when `conversational`)."""
        task = self.get_task()
        train = self._rows(task, self.train_path, self.train_split, self.synthetic_train_size, self.data_seed)
        evaluation = self._rows(task, self.eval_path, self.eval_split, self.synthetic_eval_size, self.data_seed + 1)
        train, evaluation = _head(train, self.max_train_samples), _head(evaluation, self.max_eval_samples)
        if self.conversational:
            from .chat import to_conversational

            train, evaluation = to_conversational(train), to_conversational(evaluation)
        return task, train, evaluation

    @staticmethod
    def _rows(task: Task, path: str | None, split: str, size: int, seed: int) -> Dataset:
        return task.synthetic(n=size, seed=seed) if path is None else task.load(split, path=path)


def _head(dataset: Dataset, limit: int | None) -> Dataset:
    return dataset if limit is None else dataset.select(range(min(limit, len(dataset))))


@dataclass
class ModelArguments:
    """
    Which model a recipe trains: a name or path, or a tiny model built from a config (offline).

    Parameters:
        model_name_or_path (`str`, *optional*):
            A Hub id or a local folder saved with `save_pretrained` (e.g. the output of an earlier recipe).
        tiny_architecture (`str`, *optional*):
            `"seq2seq"` or `"causal"`: build a small model with random weights and a byte-level BPE tokenizer trained
            on the recipe's texts, instead of loading one. For smoke runs on a CPU.
        tiny_hidden_size (`int`, *optional*, defaults to `64`):
            Hidden size of the tiny model.
        tiny_num_layers (`int`, *optional*, defaults to `2`):
            Layers of the tiny model (per stack for seq2seq).
        tiny_vocab_size (`int`, *optional*, defaults to `1000`):
            Vocabulary size of the tiny tokenizer.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or local model folder."})
    tiny_architecture: str | None = field(
        default=None, metadata={"help": "Build a tiny model from a config.", "choices": ["seq2seq", "causal"]}
    )
    tiny_hidden_size: int = field(default=64, metadata={"help": "Hidden size of the tiny model."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Layers of the tiny model."})
    tiny_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary of the tiny tokenizer."})

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.tiny_architecture is None):
            raise ValueError("Set exactly one of `model_name_or_path` and `tiny_architecture`.")

    def load(
        self, texts: list[str], trust_remote_code: bool = False, seed: int = 0
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load the model and tokenizer, or build tiny ones whose tokenizer is trained on `texts`."""
        from .modeling import build_tiny_model, load_model_and_tokenizer, train_tokenizer

        if self.model_name_or_path is not None:
            return load_model_and_tokenizer(self.model_name_or_path, trust_remote_code=trust_remote_code)
        tokenizer = train_tokenizer(texts, vocab_size=self.tiny_vocab_size)
        model = build_tiny_model(
            self.tiny_architecture,
            tokenizer,
            hidden_size=self.tiny_hidden_size,
            num_layers=self.tiny_num_layers,
            seed=seed,
        )
        return model, tokenizer


@dataclass
class CriticArguments:
    """
    Which critic gives feedback: the task's oracle or a trained critic model.

    Parameters:
        critic (`str`, *optional*, defaults to `"oracle"`):
            `"oracle"` (compares with the gold completion) or the path of a critic saved by `recipes/train_critic.py`.
        critic_max_new_tokens (`int`, *optional*, defaults to `32`):
            Longest feedback a trained critic writes.
        critic_batch_size (`int`, *optional*, defaults to `64`):
            Inputs per `generate` call of a trained critic.
        critic_use_chat_template (`bool`, *optional*, defaults to `False`):
            The critic model is a chat model: it reads each critic input as a user message rendered with its
            tokenizer's chat template ([`ModelCritic`]'s `use_chat_template`).
    """

    critic: str = field(default="oracle", metadata={"help": "'oracle' or the path of a trained critic."})
    critic_max_new_tokens: int = field(default=32, metadata={"help": "Longest feedback of a trained critic."})
    critic_batch_size: int = field(default=64, metadata={"help": "Inputs per generate call of a trained critic."})
    critic_use_chat_template: bool = field(
        default=False, metadata={"help": "The critic is a chat model: its input goes through its chat template."}
    )

    def build(self, task: Task, trust_remote_code: bool = False) -> Critic:
        """The task's oracle critic, or a [`ModelCritic`] loaded from `critic`."""
        from .critics import ModelCritic

        if self.critic == "oracle":
            return task.oracle_critic()
        if not Path(self.critic).exists():
            raise FileNotFoundError(f"critic: {self.critic!r} is neither 'oracle' nor an existing folder")
        return ModelCritic(
            self.critic,
            max_new_tokens=self.critic_max_new_tokens,
            batch_size=self.critic_batch_size,
            trust_remote_code=trust_remote_code,
            use_chat_template=self.critic_use_chat_template,
        )
