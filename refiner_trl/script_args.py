"""Arguments shared by the recipes in `recipes/`: which task and data, which model, which critic, what evaluation.

Each recipe parses these dataclasses together with its training arguments ([`~refiner_trl.recipe_parser.
parse_recipe_args`], TRL's `TrlParser`), so every field can be set in the YAML file given with `--config` and
overridden on the command line.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .critics import Critic
    from .llm_critic import LLMCritic
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
        synthetic_seed (`int`, *optional*, defaults to `0`):
            Seed of the synthetic data (evaluation data uses `synthetic_seed + 1`) and of the critic data built from
            the rows. Not `TrainingArguments.data_seed`, the data sampler's seed.
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
    synthetic_seed: int = field(default=0, metadata={"help": "Seed of the synthetic data."})
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
        train = self._rows(task, self.train_path, self.train_split, self.synthetic_train_size, self.synthetic_seed)
        evaluation = self._rows(
            task, self.eval_path, self.eval_split, self.synthetic_eval_size, self.synthetic_seed + 1
        )
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
            A Hub id, a local folder saved with `save_pretrained` (e.g. the output of an earlier recipe or of
            `python -m refiner_trl.pretrained fetch`), or a `.gguf` file.
        tiny_architecture (`str`, *optional*):
            `"seq2seq"` or `"causal"`: build a small model with random weights and a byte-level BPE tokenizer trained
            on the recipe's texts, instead of loading one. For smoke runs on a CPU.
        tiny_hidden_size (`int`, *optional*, defaults to `64`):
            Hidden size of the tiny model.
        tiny_num_layers (`int`, *optional*, defaults to `2`):
            Layers of the tiny model (per stack for seq2seq).
        tiny_vocab_size (`int`, *optional*, defaults to `1000`):
            Vocabulary size of the tiny tokenizer.
        use_peft (`bool`, *optional*, defaults to `False`):
            Train a LoRA adapter instead of all weights (needs `refiner-trl[peft]`). The names of this and the
            `lora_*` fields are those of TRL's `ModelConfig`.
        lora_r (`int`, *optional*, defaults to `16`):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to `32`):
            LoRA scaling numerator.
        lora_dropout (`float`, *optional*, defaults to `0.05`):
            Dropout of the LoRA layers.
        lora_target_modules (`list[str]`, *optional*):
            Modules that get adapters; unset: peft's default for the architecture.
    """

    model_name_or_path: str | None = field(default=None, metadata={"help": "Hub id or local model folder."})
    tiny_architecture: str | None = field(
        default=None, metadata={"help": "Build a tiny model from a config.", "choices": ["seq2seq", "causal"]}
    )
    tiny_hidden_size: int = field(default=64, metadata={"help": "Hidden size of the tiny model."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Layers of the tiny model."})
    tiny_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary of the tiny tokenizer."})
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "Modules that get adapters."})

    def __post_init__(self) -> None:
        if self.model_name_or_path is None and self.tiny_architecture is None:
            raise ValueError("Set `model_name_or_path` or `tiny_architecture`.")
        if self.model_name_or_path is not None and self.tiny_architecture is not None:
            # So that `--model_name_or_path outputs/generator` works with a recipe whose YAML builds a tiny model.
            warnings.warn(
                f"model_name_or_path ({self.model_name_or_path}) replaces tiny_architecture "
                f"({self.tiny_architecture}): the model is loaded, not built.",
                stacklevel=2,
            )
            self.tiny_architecture = None

    @property
    def display_name(self) -> str:
        """The model's name in report titles: `model_name_or_path`, or "tiny <architecture> model"."""
        return self.model_name_or_path or f"tiny {self.tiny_architecture} model"

    def load(
        self,
        texts: list[str],
        trust_remote_code: bool = False,
        seed: int = 0,
        model_init_kwargs: dict[str, Any] | None = None,
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        """Load the model and tokenizer (a Hub id, a folder or a `.gguf` file, with `model_init_kwargs` such as
        `dtype` passed to `from_pretrained`), or build tiny ones whose tokenizer is trained on `texts`."""
        from .modeling import build_tiny_model, load_model_and_tokenizer, train_tokenizer

        if self.model_name_or_path is not None:
            return load_model_and_tokenizer(
                self.model_name_or_path, trust_remote_code=trust_remote_code, **(model_init_kwargs or {})
            )
        tokenizer = train_tokenizer(texts, vocab_size=self.tiny_vocab_size)
        model = build_tiny_model(
            self.tiny_architecture,
            tokenizer,
            hidden_size=self.tiny_hidden_size,
            num_layers=self.tiny_num_layers,
            seed=seed,
        )
        return model, tokenizer

    def peft_config(self, model: PreTrainedModel) -> Any | None:
        """The `LoraConfig` for `model` when `use_peft`, else `None`."""
        if not self.use_peft:
            return None
        from peft import LoraConfig, TaskType

        from .modeling import is_encoder_decoder

        return LoraConfig(
            task_type=TaskType.SEQ_2_SEQ_LM if is_encoder_decoder(model) else TaskType.CAUSAL_LM,
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules,
        )


OPENAI_CRITIC_PREFIX = "openai:"
"""A `critic` that starts with it names a chat model behind an OpenAI-compatible API: `openai:<model>`."""


@dataclass
class CriticModelArguments:
    """
    How a critic model writes its feedback: for the critic a recipe trains (`recipes/train_critic.py`, evaluated on
    held-out critic data) and the critic it uses ([`CriticArguments`]).

    Parameters:
        critic_max_new_tokens (`int`, *optional*, defaults to `32`):
            Longest feedback a trained critic or an LLM critic writes.
        critic_batch_size (`int`, *optional*, defaults to `64`):
            Inputs per `generate` call of a trained critic.
    """

    critic_max_new_tokens: int = field(default=32, metadata={"help": "Longest feedback of a model or LLM critic."})
    critic_batch_size: int = field(default=64, metadata={"help": "Inputs per generate call of a trained critic."})


@dataclass
class CriticArguments(CriticModelArguments):
    """
    Which critic gives feedback: the task's oracle, a trained critic model, or an LLM behind an OpenAI-compatible API;
    with the settings of [`CriticModelArguments`].

    Parameters:
        critic (`str`, *optional*, defaults to `"oracle"`):
            `"oracle"` (compares with the gold completion), the path of a critic saved by `recipes/train_critic.py`,
            or `"openai:<model>"`: an [`LLMCritic`] on that model behind the API at `critic_base_url`.
        llm_critic (`str`, *optional*):
            `"openai:<model>"` for the evaluation table's "+ LLM critic" row, next to a trained critic. Defaults to
            `critic` when that is an `openai:` critic.
        critic_base_url (`str`, *optional*):
            The API root of an LLM critic, e.g. `http://127.0.0.1:8000/v1`. Unset: the environment variable
            `OPENAI_BASE_URL`, else OpenAI's API.
        critic_api_key_env (`str`, *optional*, defaults to `"OPENAI_API_KEY"`):
            The name of the environment variable that holds the LLM critic's API key (never the key itself); unset
            in the environment, no key is sent.
        critic_reference_guided (`bool`, *optional*, defaults to `False`):
            Show the LLM critic the gold completion (a reference-guided judge).
        critic_timeout (`float`, *optional*, defaults to `60.0`):
            Seconds an LLM critic's request may take, per attempt.
        critic_max_retries (`int`, *optional*, defaults to `3`):
            Retries of an LLM critic's failed request.
        critic_max_workers (`int`, *optional*, defaults to `8`):
            Concurrent requests of an LLM critic.
        critic_use_chat_template (`bool`, *optional*, defaults to `False`):
            The critic model is a chat model: it reads each critic input as a user message rendered with its
            tokenizer's chat template ([`ModelCritic`]'s `use_chat_template`).
    """

    critic: str = field(
        default="oracle", metadata={"help": "'oracle', the path of a trained critic, or 'openai:<model>'."}
    )
    llm_critic: str | None = field(
        default=None, metadata={"help": "'openai:<model>' for the evaluation's '+ LLM critic' row."}
    )
    critic_base_url: str | None = field(default=None, metadata={"help": "API root of an LLM critic."})
    critic_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable with the LLM critic's key (not the key)."}
    )
    critic_reference_guided: bool = field(default=False, metadata={"help": "Show the LLM critic the gold completion."})
    critic_timeout: float = field(default=60.0, metadata={"help": "Seconds per LLM critic request."})
    critic_max_retries: int = field(default=3, metadata={"help": "Retries of a failed LLM critic request."})
    critic_max_workers: int = field(default=8, metadata={"help": "Concurrent LLM critic requests."})
    critic_use_chat_template: bool = field(
        default=False, metadata={"help": "The critic is a chat model: its input goes through its chat template."}
    )

    def __post_init__(self) -> None:
        for name in ("critic", "llm_critic"):
            value = getattr(self, name)
            if value is not None and value.startswith(OPENAI_CRITIC_PREFIX) and not _openai_model(value):
                raise ValueError(f"{name}: {value!r} names no model; write {OPENAI_CRITIC_PREFIX}<model>")
        if self.llm_critic is not None and not self.llm_critic.startswith(OPENAI_CRITIC_PREFIX):
            raise ValueError(f"llm_critic: {self.llm_critic!r} must be {OPENAI_CRITIC_PREFIX}<model>")

    @property
    def table_llm_critic(self) -> str | None:
        """The `openai:<model>` of the evaluation's "+ LLM critic" row: `llm_critic`, else `critic` if an LLM."""
        if self.llm_critic is not None:
            return self.llm_critic
        return self.critic if self.critic.startswith(OPENAI_CRITIC_PREFIX) else None

    @property
    def trained_critic_path(self) -> str | None:
        """`critic` when it is a trained critic's folder (neither `oracle` nor an LLM), else `None`."""
        return None if self.critic == "oracle" or self.critic.startswith(OPENAI_CRITIC_PREFIX) else self.critic

    def build(
        self, task: Task, trust_remote_code: bool = False, device: Any = None, critic: str | None = None
    ) -> Critic:
        """The oracle critic, an [`LLMCritic`] for `openai:<model>`, or a [`ModelCritic`] loaded from `critic`.

        Args:
            task ([`Task`]):
                The task (its oracle critic, its error types for an LLM critic).
            trust_remote_code (`bool`, *optional*, defaults to `False`):
                Run a critic model's repository code when loading it.
            device (`str` or `torch.device`, *optional*):
                Where a critic model runs (e.g. the training device); unset: where it loads.
            critic (`str`, *optional*):
                Another critic than `self.critic`, with these settings (the evaluation's trained critic).
        """
        from .critics import ModelCritic

        critic = self.critic if critic is None else critic
        if critic == "oracle":
            return task.oracle_critic()
        if critic.startswith(OPENAI_CRITIC_PREFIX):
            return self.build_llm(task, critic)
        if not Path(critic).exists():
            raise FileNotFoundError(
                f"critic: {critic!r} is neither 'oracle', nor {OPENAI_CRITIC_PREFIX}<model>, nor an existing folder"
            )
        model_critic = ModelCritic(
            critic,
            max_new_tokens=self.critic_max_new_tokens,
            batch_size=self.critic_batch_size,
            trust_remote_code=trust_remote_code,
            use_chat_template=self.critic_use_chat_template,
        )
        if device is not None:
            model_critic.model.to(device)
        return model_critic

    def table_critics(
        self, task: Task, trust_remote_code: bool = False, device: Any = None, trained: str | None = None
    ) -> dict[str, Critic | None]:
        """The critics of the evaluation table ([`~refiner_trl.evaluation.standard_critics`]): none, the trained
        critic (`trained`, else `critic` when it is a folder), the LLM critic ([`table_llm_critic`]), the oracle.

        Args:
            task ([`Task`]):
                The task.
            trust_remote_code (`bool`, *optional*, defaults to `False`):
                Run the trained critic's repository code when loading it.
            device (`str` or `torch.device`, *optional*):
                Where the trained critic runs.
            trained (`str`, *optional*):
                The trained critic's folder, in place of `critic`'s.
        """
        from .evaluation import standard_critics

        path = trained or self.trained_critic_path
        llm = self.table_llm_critic
        return standard_critics(
            task,
            None if path is None else self.build(task, trust_remote_code, device, critic=path),
            None if llm is None else self.build_llm(task, llm),
        )

    def build_llm(self, task: Task, spec: str) -> LLMCritic:
        """An [`LLMCritic`] on the model of `spec` (`openai:<model>`) behind `critic_base_url`, with these settings.

        Args:
            task ([`Task`]):
                The task (its error types and feedback format).
            spec (`str`):
                `openai:<model>`.
        """
        from .generators import OpenAIChatGenerator
        from .llm_critic import LLMCritic

        generator = OpenAIChatGenerator(
            _openai_model(spec),
            base_url=self.critic_base_url,
            api_key_env=self.critic_api_key_env,
            timeout=self.critic_timeout,
            max_retries=self.critic_max_retries,
            max_tokens=self.critic_max_new_tokens,
            max_workers=self.critic_max_workers,
        )
        return LLMCritic(generator, task=task, use_references=self.critic_reference_guided)


def _openai_model(spec: str) -> str:
    return spec[len(OPENAI_CRITIC_PREFIX) :].strip()


@dataclass
class RecipeArguments:
    """
    The evaluation a training recipe runs after it saved the model: the paper-style table of the task's metrics
    without a critic and with each critic.

    Parameters:
        evaluate_after_training (`bool`, *optional*, defaults to `True`):
            After saving the model, refine the evaluation rows with each critic, write `results.md`,
            `results.json` and `metric_by_turn.png` into `output_dir` and print the table.
        eval_critic (`str`, *optional*):
            A critic saved by `recipes/train_critic.py`, for the table's "+ trained critic" row. Defaults to the
            recipe's `critic` when that is a path.
        eval_max_turns (`int`, *optional*, defaults to `3`):
            The most refine turns T per example at evaluation (the paper's T=3).
        eval_max_new_tokens (`int`, *optional*):
            Longest generated text in tokens at evaluation. Defaults to the training arguments' `max_new_tokens`
            when they have it (REFINER), else their `max_completion_length`.
    """

    evaluate_after_training: bool = field(
        default=True, metadata={"help": "Evaluate with and without critics after training and print the table."}
    )
    eval_critic: str | None = field(
        default=None, metadata={"help": "Trained critic for the '+ trained critic' row (default: `critic` if a path)."}
    )
    eval_max_turns: int = field(default=3, metadata={"help": "Most refine turns per example at evaluation."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Longest generated text at evaluation (default: max_new_tokens)."}
    )

    def __post_init__(self) -> None:
        if self.eval_max_turns < 0:
            raise ValueError(f"eval_max_turns must be at least 0, got {self.eval_max_turns}")
