"""The training arguments: [`SupervisedConfig`] (the warm start and the critic) and [`RefinerConfig`], which extends it
for [`RefinerTrainer`]."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

from .templates import REFINE_FEEDBACK_TEMPLATE, REFINE_TEMPLATE, check_template

SELECTION_STRATEGIES = ("random", "first", "flagged")
TURN_AGGREGATIONS = ("mean", "sum")
NONFINITE_LOSS_ACTIONS = ("raise", "skip")


@dataclass
class SupervisedConfig(TrainingArguments):
    r"""
    Training arguments of [`~refiner_trl.supervised.train_supervised`] and the base of [`RefinerConfig`]:
    [`~transformers.TrainingArguments`], `model_init_kwargs` and the two length limits. The recipes' model settings
    (`dtype`, `trust_remote_code`, `torch_num_threads`, ...) are [`~refiner_trl.script_args.ModelArguments`]'.

    Any `TrainingArguments` works with `train_supervised` ([`RefinerConfig`], [`~trl.SFTConfig`],
    [`~transformers.Seq2SeqTrainingArguments`]); this class adds what recipes set in their YAML file.

    Parameters:
        > Parameters that control the model

        model_init_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for `from_pretrained` when the model is given by name as the `model` argument of the
            [`RefinerTrainer`] (e.g. `{"dtype": "bfloat16", "trust_remote_code": true}`; `trust_remote_code` is off
            unless set). The recipes load their model from [`~refiner_trl.script_args.ModelArguments`] instead.

        > Parameters that control the data

        max_prompt_length (`int` or `None`, *optional*, defaults to `512`):
            Longest prompt in tokens (refine prompts included). Longer prompts keep their last tokens, so the feedback
            of a refine prompt is kept. Truncations are counted and reported once, and logged as
            `truncated_prompts`.
        max_completion_length (`int` or `None`, *optional*, defaults to `256`):
            Longest gold completion in tokens, EOS included, for the cross-entropy. Truncations are counted and
            reported once.
        chat_template_kwargs (`dict[str, Any]`, *optional*):
            Keyword arguments for the tokenizer's chat template when the dataset is conversational (TRL's format:
            `prompt` a list of `{"role", "content"}` messages, `completion` a list holding the assistant's message),
            e.g. `{"enable_thinking": false}`. Conversational prompts are rendered with the generation prompt for
            sampling, and prompt + completion with TRL's `apply_chat_template` for the loss; the warm start
            ([`~refiner_trl.supervised.train_supervised`]) renders its rows with the same template and arguments.

        > Parameters that control the output folder

        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Let a recipe start afresh into an `output_dir` that holds checkpoints of an earlier run: they are deleted
            first. Unset, such a run is refused (resume it with `resume_from_checkpoint: true`, or choose another
            `output_dir`), so that a rerun of the same command never writes over an earlier run's checkpoints.
    """

    _VALID_DICT_FIELDS = [*TrainingArguments._VALID_DICT_FIELDS, "model_init_kwargs", "chat_template_kwargs"]

    # A default that differs from TrainingArguments.
    logging_steps: float = field(default=10, metadata={"help": "Log every X update steps."})

    model_init_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Keyword arguments for `from_pretrained` when the model is given by name."}
    )
    max_prompt_length: int | None = field(
        default=512, metadata={"help": "Longest prompt in tokens; longer prompts keep their end."}
    )
    max_completion_length: int | None = field(
        default=256, metadata={"help": "Longest gold completion in tokens, EOS included."}
    )
    chat_template_kwargs: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Keyword arguments for the chat template of conversational datasets."}
    )
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start afresh over the checkpoints of an earlier run in output_dir."}
    )

    def __post_init__(self) -> None:
        if not self.learning_rate >= 0:  # before TrainingArguments or a trainer makes any folder
            raise ValueError(f"learning_rate must be at least 0, got {self.learning_rate}")
        super().__post_init__()
        for name in ("max_prompt_length", "max_completion_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 or None, got {value}")


@dataclass
class RefinerConfig(SupervisedConfig):
    r"""
    Configuration class for [`RefinerTrainer`].

    It extends [`SupervisedConfig`] (as TRL's `GKDConfig` extends `SFTConfig`) with the parameters specific to REFINER
    training. For a full list of training arguments, please refer to the [`~transformers.TrainingArguments`]
    documentation. Note that default values in this class may differ from those in
    [`~transformers.TrainingArguments`].

    Parameters:
        > Parameters that control the model and the data: those of [`SupervisedConfig`] (`model_init_kwargs`,
        `max_prompt_length`, `max_completion_length`, `chat_template_kwargs`).

        > Parameters that control the REFINER loop

        num_refinement_turns (`int`, *optional*, defaults to `3`):
            T, the number of turns per batch. Turn 0 sees the dataset prompt; turn t > 0 sees the refine prompt built
            from turn t - 1's picked hypothesis and its feedback. Each turn adds a cross-entropy term; every turn but
            the last explores (see `explore_last_turn`).
        num_hypotheses (`int`, *optional*, defaults to `4`):
            k, the number of hypotheses sampled per example and turn, in one batched `generate` call per turn.
        hypothesis_selection (`str`, *optional*, defaults to `"random"`):
            How one of the k hypotheses is picked for critique: `"random"` (the paper; seeded from `seed`, the global
            step, the micro-batch and the process index, so that picks are reproducible and survive resuming),
            `"first"`, or `"flagged"`: the critic reads all k hypotheses (k times the critique calls' inputs) and one
            is picked at random, seeded as `"random"`, among those it finds an error in (among all k when it finds
            none), so that refine turns keep seeing errors once the generator gets most training prompts right.
        explore_last_turn (`bool`, *optional*, defaults to `False`):
            Also sample and critique in the last turn. No turn follows it, so nothing of it reaches the loss: it only
            adds the logs `turn_{T-1}/no_error` and `turn_{T-1}/distinct_hypotheses` (how often the last turn's
            samples are right on training prompts), for one more `generate` call a step on top of T - 1. With T = 1
            and the default, a step samples nothing and is supervised fine-tuning.
        refine_template (`str`, *optional*, defaults to [`~refiner_trl.templates.REFINE_TEMPLATE`]):
            The prompt of a refine turn, with the placeholders `{prompt}` (the dataset prompt), `{hypothesis}` (the
            picked hypothesis) and `{feedback}` (the critic's feedback on it). Used for standard (string) prompts.
        refine_feedback_template (`str`, *optional*, defaults to [`~refiner_trl.templates.REFINE_FEEDBACK_TEMPLATE`]):
            The feedback message of a refine turn of a conversational prompt, with the placeholder `{feedback}`. The
            refine turn is the dataset conversation followed by `{"role": "assistant", "content": <hypothesis>}` and
            `{"role": "user", "content": <this template with the feedback>}`.
        turn_loss_aggregation (`str`, *optional*, defaults to `"mean"`):
            How the per-turn cross-entropies are combined: `"mean"` or `"sum"`. Each turn's loss is its summed
            completion-token loss divided by the completion tokens of the whole accumulated batch (all
            `gradient_accumulation_steps` micro-batches, and all processes with `average_tokens_across_devices`), as
            TRL's SFT trainer does: `gradient_accumulation_steps=2` with batch 4 trains as batch 8.
        nonfinite_loss (`str`, *optional*, defaults to `"raise"`):
            What a NaN or infinite training loss does: `"raise"` stops the run with a `FloatingPointError` naming the
            global step, the micro-batch and the per-turn losses; `"skip"` gives that micro-batch a zero gradient (the
            optimizer still steps, so AdamW's momentum still moves the weights) and counts it in the logs as
            `skipped_batches`. Evaluation losses are reported as they are.
        max_loss_forwards (`int`, *optional*, defaults to `4`):
            The loss's rows (every turn of a micro-batch) are sorted by length and split into at most this many
            forward passes, cut where they pad least (an extra pass must save 5% of the tokens), so that turn-0 rows
            are not padded to the length of refine rows. The loss and gradients are those of one forward; `1` runs
            one forward (e.g. under ZeRO-3 or FSDP, where every forward gathers the weights).

        > Parameters that control generation

        max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest sampled hypothesis in tokens.
        temperature (`float`, *optional*, defaults to `1.0`):
            Sampling temperature of the exploration.
        top_p (`float`, *optional*, defaults to `0.95`):
            Nucleus-sampling probability mass of the exploration.
        top_k (`int`, *optional*, defaults to `0`):
            Top-k filtering of the exploration; `0` turns it off.
        gather_deepspeed3_params (`bool`, *optional*, defaults to `True`):
            Gather the ZeRO-3 shards once for generation (fast, needs the whole model on each device); `False`
            generates layer by layer with sharded weights.

        > Parameters that control the logging

        log_refinements (`bool`, *optional*, defaults to `False`):
            At every logging step (training and evaluation), show a few examples of the last batch turn by turn:
            the turn's prompt, the picked hypothesis, the critic's feedback on it and the gold completion. Printed as
            a table in the console when `rich` is installed, and logged as a table (`refinements`, `eval_refinements`)
            to trackio and wandb when they are in `report_to`, as TRL's `log_completions` does.
        num_refinements_to_log (`int`, *optional*, defaults to `2`):
            How many examples of the last batch the refine-turn table shows (each with all its turns).
    """

    # A default that differs from TrainingArguments.
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep the `prompt` and `completion` columns; the trainer tokenizes them itself per turn."},
    )
    num_refinement_turns: int = field(default=3, metadata={"help": "T: turns per batch (turn 0 + T-1 refine turns)."})
    num_hypotheses: int = field(default=4, metadata={"help": "k: hypotheses sampled per example and turn."})
    hypothesis_selection: str = field(
        default="random",
        metadata={"help": "How one hypothesis is picked for critique.", "choices": list(SELECTION_STRATEGIES)},
    )
    explore_last_turn: bool = field(
        default=False,
        metadata={"help": "Also sample and critique in the last turn, for its turn_{T-1}/* logs only."},
    )
    refine_template: str = field(
        default=REFINE_TEMPLATE,
        metadata={"help": "Refine prompt with the placeholders {prompt}, {hypothesis} and {feedback}."},
    )
    refine_feedback_template: str = field(
        default=REFINE_FEEDBACK_TEMPLATE,
        metadata={"help": "Feedback message of a conversational refine turn, with the placeholder {feedback}."},
    )
    turn_loss_aggregation: str = field(
        default="mean",
        metadata={"help": "How per-turn losses are combined.", "choices": list(TURN_AGGREGATIONS)},
    )
    nonfinite_loss: str = field(
        default="raise",
        metadata={"help": "What a NaN or infinite training loss does.", "choices": list(NONFINITE_LOSS_ACTIONS)},
    )
    max_loss_forwards: int = field(
        default=4, metadata={"help": "Most forward passes the loss splits a micro-batch into, grouped by length."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Longest sampled hypothesis in tokens."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the exploration."})
    top_p: float = field(default=0.95, metadata={"help": "Nucleus-sampling mass of the exploration."})
    top_k: int = field(default=0, metadata={"help": "Top-k filtering of the exploration; 0 turns it off."})
    gather_deepspeed3_params: bool = field(
        default=True, metadata={"help": "Gather ZeRO-3 shards once for generation."}
    )
    log_refinements: bool = field(
        default=False,
        metadata={"help": "Show a few examples' turns (prompt, hypothesis, feedback, gold) at each logging step."},
    )
    num_refinements_to_log: int = field(
        default=2, metadata={"help": "How many examples of the last batch the refine-turn table shows."}
    )

    @property
    def num_explored_turns(self) -> int:
        """How many turns of a step sample and critique: T - 1, or T with `explore_last_turn`."""
        return self.num_refinement_turns - (0 if self.explore_last_turn else 1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_refinement_turns < 1:
            raise ValueError(f"num_refinement_turns must be at least 1, got {self.num_refinement_turns}")
        if self.num_hypotheses < 1:
            raise ValueError(f"num_hypotheses must be at least 1, got {self.num_hypotheses}")
        if self.hypothesis_selection not in SELECTION_STRATEGIES:
            raise ValueError(
                f"hypothesis_selection must be one of {SELECTION_STRATEGIES}, got {self.hypothesis_selection!r}"
            )
        if self.turn_loss_aggregation not in TURN_AGGREGATIONS:
            raise ValueError(
                f"turn_loss_aggregation must be one of {TURN_AGGREGATIONS}, got {self.turn_loss_aggregation!r}"
            )
        if self.max_loss_forwards < 1:
            raise ValueError(f"max_loss_forwards must be at least 1, got {self.max_loss_forwards}")
        if self.nonfinite_loss not in NONFINITE_LOSS_ACTIONS:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_LOSS_ACTIONS}, got {self.nonfinite_loss!r}")
        if self.num_refinements_to_log < 1:
            raise ValueError(f"num_refinements_to_log must be at least 1, got {self.num_refinements_to_log}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        check_template(self.refine_template, ("prompt", "hypothesis", "feedback"), "refine_template")
        check_template(self.refine_feedback_template, ("feedback",), "refine_feedback_template")
