"""The recipes' arguments: plain data, as TRL's `ModelConfig`.

Each recipe in `recipes/` parses some of these dataclasses together with its training arguments
([`~refiner_trl.recipe_parser.parse_recipe_args`], TRL's `TrlParser`), so every field can be set in the YAML file given
with `--config` and overridden on the command line. Building things from them is done by free functions the recipe
calls in its `main`, as TRL's `get_peft_config(model_args)`: [`~refiner_trl.builders.load_task_data`],
[`~refiner_trl.builders.load_model`], [`~refiner_trl.critics.load_critic`],
[`~refiner_trl.evaluation.evaluation_critics`]. This module imports nothing from the package.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from trl import ModelConfig


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


@dataclass
class ModelArguments(ModelConfig):
    """
    Which model a recipe trains or evaluates, and how it is loaded: TRL's [`~trl.ModelConfig`] (`model_name_or_path`,
    `model_revision`, `dtype`, `attn_implementation`, `use_peft` and the `lora_*` fields, `load_in_4bit`, ...) and a
    tiny model built from a config (offline).

    Parameters:
        model_name_or_path (`str`, *optional*):
            A Hub id, a local folder saved with `save_pretrained` (e.g. the output of an earlier recipe or of
            `python -m refiner_trl.pretrained fetch`), a `.gguf` file, or a LoRA adapter folder.
        dtype (`str`, *optional*, defaults to `"auto"`):
            `"auto"` (the checkpoint's dtype, transformers' default), `"bfloat16"`, `"float16"` or `"float32"`. TRL's
            `ModelConfig` defaults to `"float32"`.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Whether to run modelling code from the repository of a model (or critic model) loaded by name. Off unless
            set.
        torch_num_threads (`int`, *optional*):
            `torch.set_num_threads`, called by the recipes before they build anything. Unset: torch's default (all
            cores). `1` is much faster for tiny models on a CPU that other processes share.
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

    # A default that differs from ModelConfig: transformers' own.
    dtype: str | None = field(
        default="auto",
        metadata={"help": "dtype of the loaded model.", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run modelling code from the model's repository. Off unless set."}
    )
    torch_num_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for the run."})
    tiny_architecture: str | None = field(
        default=None, metadata={"help": "Build a tiny model from a config.", "choices": ["seq2seq", "causal"]}
    )
    tiny_hidden_size: int = field(default=64, metadata={"help": "Hidden size of the tiny model."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Layers of the tiny model."})
    tiny_vocab_size: int = field(default=1000, metadata={"help": "Vocabulary of the tiny tokenizer."})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.torch_num_threads is not None and self.torch_num_threads < 1:
            raise ValueError(f"torch_num_threads must be at least 1 or None, got {self.torch_num_threads}")
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


@dataclass
class CriticArguments:
    """
    Which critic gives feedback (the task's oracle, a trained critic model, or an LLM behind an OpenAI-compatible
    API), which critics the evaluation table adds, and how a critic is trained (`recipes/train_critic.py`).

    Parameters:
        critic (`str`, *optional*, defaults to `"oracle"`):
            `"oracle"` (compares with the gold completion), the path of a critic saved by `recipes/train_critic.py`,
            or `"openai:<model>"`: an [`LLMCritic`] on that model behind the API at `critic_base_url`. Read by
            [`~refiner_trl.critics.load_critic`].
        eval_critic (`str`, *optional*):
            A critic saved by `recipes/train_critic.py`, for the evaluation table's "+ trained critic" row. Defaults
            to `critic` when that is a path.
        llm_critic (`str`, *optional*):
            `"openai:<model>"` for the evaluation table's "+ LLM critic" row, next to a trained critic. Defaults to
            `critic` when that is an `openai:` critic.
        eval_critics (`list[str]`, *optional*):
            More rows of the evaluation table, each `name=spec` (a spec as `critic` takes, or `"decision_oracle"`:
            the oracle's decision with no word on what is wrong), in order, before the oracle's row.
        critic_max_new_tokens (`int`, *optional*, defaults to `32`):
            Longest feedback a trained critic or an LLM critic writes.
        critic_batch_size (`int`, *optional*, defaults to `64`):
            Inputs per `generate` call of a trained critic.
        critic_use_chat_template (`bool`, *optional*, defaults to `False`):
            The critic model is a chat model: it reads each critic input as a user message rendered with its
            tokenizer's chat template ([`ModelCritic`]'s `use_chat_template`).
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
        negatives_per_example (`int`, *optional*, defaults to `2`):
            `recipes/train_critic.py`: perturbed completions per gold row in the critic data (each gold row also gives
            one "No error." row).
        num_examples_shown (`int`, *optional*, defaults to `8`):
            `recipes/train_critic.py`: held-out examples (input end, gold feedback, predicted feedback) printed and
            saved.
        generator_samples (`str`, *optional*):
            `recipes/train_critic.py`: a `generator_samples.jsonl` of `recipes/sample_critic_data.py` (a generator's
            own samples on the training rows, labelled by the task's oracle) that joins the critic data.
        generator_sample_share (`float`, *optional*):
            `recipes/train_critic.py`: the generator samples' share of the critic data, in [0, 1]; the larger side is
            subsampled ([`~refiner_trl.critic_samples.mix_at_share`]). Unset: every row as it comes.
        calibration_prompts (`int`, *optional*, defaults to `0`):
            `recipes/train_critic.py`: hold out the samples of the last N sampled prompts (and those prompts' gold and
            perturbation rows) and calibrate the critic's "No error." threshold on them after training
            (`calibration.json` and `calibration_curve.png` in `output_dir`; [`ModelCritic`] applies it whenever it
            loads the folder).
        max_false_alarm (`float`, *optional*, defaults to `0.2`):
            `recipes/train_critic.py`: the calibration's bound on the share of right held-out samples flagged.
    """

    critic: str = field(
        default="oracle", metadata={"help": "'oracle', the path of a trained critic, or 'openai:<model>'."}
    )
    eval_critic: str | None = field(
        default=None, metadata={"help": "Trained critic for the '+ trained critic' row (default: `critic` if a path)."}
    )
    llm_critic: str | None = field(
        default=None, metadata={"help": "'openai:<model>' for the evaluation's '+ LLM critic' row."}
    )
    eval_critics: list[str] | None = field(
        default=None, metadata={"help": "More evaluation rows, each name=spec (e.g. mine=outputs/critic)."}
    )
    critic_max_new_tokens: int = field(default=32, metadata={"help": "Longest feedback of a model or LLM critic."})
    critic_batch_size: int = field(default=64, metadata={"help": "Inputs per generate call of a trained critic."})
    critic_use_chat_template: bool = field(
        default=False, metadata={"help": "The critic is a chat model: its input goes through its chat template."}
    )
    critic_base_url: str | None = field(default=None, metadata={"help": "API root of an LLM critic."})
    critic_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "Environment variable with the LLM critic's key (not the key)."}
    )
    critic_reference_guided: bool = field(default=False, metadata={"help": "Show the LLM critic the gold completion."})
    critic_timeout: float = field(default=60.0, metadata={"help": "Seconds per LLM critic request."})
    critic_max_retries: int = field(default=3, metadata={"help": "Retries of a failed LLM critic request."})
    critic_max_workers: int = field(default=8, metadata={"help": "Concurrent LLM critic requests."})
    negatives_per_example: int = field(default=2, metadata={"help": "Perturbed completions per gold row."})
    num_examples_shown: int = field(default=8, metadata={"help": "Held-out examples printed and saved."})
    generator_samples: str | None = field(
        default=None, metadata={"help": "generator_samples.jsonl of recipes/sample_critic_data.py."}
    )
    generator_sample_share: float | None = field(
        default=None, metadata={"help": "Share of generator samples in the critic data (unset: all rows)."}
    )
    calibration_prompts: int = field(
        default=0, metadata={"help": "Hold out the last N sampled prompts to calibrate the no-error threshold."}
    )
    max_false_alarm: float = field(default=0.2, metadata={"help": "Bound on the calibrated critic's false alarms."})

    def __post_init__(self) -> None:
        for entry in self.eval_critics or []:
            name, _, spec = entry.partition("=")
            if not name.strip() or not spec.strip():
                raise ValueError(f"eval_critics: {entry!r} is not name=spec (e.g. mine=outputs/critic)")
            if name.strip() in ("none", "trained", "LLM", "oracle"):
                raise ValueError(f"eval_critics: {entry!r} takes the name of a standard row; name it otherwise")
        if not 0.0 <= self.max_false_alarm <= 1.0:
            raise ValueError(f"max_false_alarm must be a share in [0, 1], got {self.max_false_alarm}")
        if self.calibration_prompts and self.generator_samples is None:
            raise ValueError("calibration_prompts: the calibration holds out generator samples; set generator_samples")


@dataclass
class EvaluationArguments:
    """
    The paper-style evaluation: the evaluation rows refined without a critic and with each critic, the task's metrics
    after every turn. The training recipes run it after saving the model; `recipes/evaluate.py` runs it alone.

    Parameters:
        evaluate_after_training (`bool`, *optional*, defaults to `True`):
            Training recipes: after saving the model, refine the evaluation rows with each critic, write `results.md`,
            `results.json` and `metric_by_turn.png` into `output_dir` and print the table.
        eval_max_turns (`int`, *optional*, defaults to `3`):
            The most refine turns T per example of the trained and LLM critics' rows (the paper's T=3).
        eval_oracle_max_turns (`int`, *optional*, defaults to `3`):
            T of the oracle critic's row (the paper's oracle rows use 3).
        eval_oracle (`bool`, *optional*, defaults to `True`):
            Whether the table has the oracle critic's row.
        eval_max_prompt_length (`int` or `None`, *optional*, defaults to `512`):
            Longest generator prompt in tokens at evaluation; longer prompts keep their end (in a refine prompt, the
            feedback). `None`: no limit.
        eval_max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest hypothesis in tokens at evaluation.
        eval_refine_template (`str`, *optional*):
            The refine prompt of string prompts at evaluation, with `{prompt}`, `{hypothesis}` and `{feedback}`.
            Unset: the `refine_template` the model was trained with (the training recipe's, or the
            `refiner_templates.json` that `RefinerTrainer` saves with the model), else the default.
        eval_refine_feedback_template (`str`, *optional*):
            The feedback message of conversational refine turns at evaluation, with `{feedback}`. Unset: the
            `refine_feedback_template` the model was trained with, else the default.
    """

    evaluate_after_training: bool = field(
        default=True, metadata={"help": "Evaluate with and without critics after training and print the table."}
    )
    eval_max_turns: int = field(default=3, metadata={"help": "T of the trained and LLM critics' rows."})
    eval_oracle_max_turns: int = field(default=3, metadata={"help": "T of the oracle critic's row."})
    eval_oracle: bool = field(default=True, metadata={"help": "Add the oracle critic's row."})
    eval_max_prompt_length: int | None = field(
        default=512, metadata={"help": "Longest generator prompt in tokens at evaluation."}
    )
    eval_max_new_tokens: int = field(default=64, metadata={"help": "Longest hypothesis in tokens at evaluation."})
    eval_refine_template: str | None = field(
        default=None, metadata={"help": "Refine prompt at evaluation; unset: the one the model was trained with."}
    )
    eval_refine_feedback_template: str | None = field(
        default=None,
        metadata={"help": "Conversational feedback message at evaluation; unset: the one the model was trained with."},
    )

    def __post_init__(self) -> None:
        for name in ("eval_max_turns", "eval_oracle_max_turns"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be at least 0, got {getattr(self, name)}")
        if self.eval_max_prompt_length is not None and self.eval_max_prompt_length < 1:
            raise ValueError(f"eval_max_prompt_length must be at least 1 or None, got {self.eval_max_prompt_length}")
        if self.eval_max_new_tokens < 1:
            raise ValueError(f"eval_max_new_tokens must be at least 1, got {self.eval_max_new_tokens}")
