"""RefinerTrainer: REFINER's exploration loop (Paul et al., EACL 2024) as a TRL trainer."""

from __future__ import annotations

import textwrap
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.base_trainer import _BaseTrainer

from .chat import Prompt, is_conversation, plain_text, refine_prompt, render_generation_prompts
from .checkpoints import CheckpointManifestCallback, checkpoint_problem, last_complete_checkpoint
from .config import RefinerConfig
from .critics import Critic, checked_critique, is_no_error, load_critic_state, save_critic_state
from .data import COMPLETION, LABEL_PAD, PROMPT, collate_text
from .generation import generate_texts
from .losses import CompletionEncoder, finite_or_skipped, turn_loss_sums
from .modeling import is_encoder_decoder, load_model_and_tokenizer, prepare_tokenizer
from .refinement_logs import RefinementLog
from .report import write_json
from .templates import RUN_TEMPLATES_FILE, run_templates


class RefinerTrainer(_BaseTrainer):
    """
    Trainer for REFINER, from [REFINER: Reasoning Feedback on Intermediate
    Representations](https://huggingface.co/papers/2304.01904).

    For every batch and each of the T = `num_refinement_turns` turns but the last, the trainer samples
    k = `num_hypotheses` hypotheses for the turn's prompts in one batched `generate` call, picks one per example, asks
    the critic for feedback on all picked hypotheses in one batched call, and builds the next turn's prompt from
    `refine_template` (the last turn builds no prompt, so it explores only with `explore_last_turn`).
    The loss is the cross-entropy of the gold completion given each turn's prompt (turn 0: the dataset prompt),
    computed for all turns in one forward pass and combined as `turn_loss_aggregation` says. The model's weights do
    not change within a step, so this equals the paper's interleaved loop.

    A turn's loss is its summed completion-token loss divided by the number of completion tokens of the whole
    accumulated batch (`num_items_in_batch`: the `gradient_accumulation_steps` micro-batches of a step, and all
    processes with `average_tokens_across_devices`), as TRL's SFT trainer and transformers do: a step of
    `gradient_accumulation_steps=2` and batch 4 trains as one of batch 8. Every turn scores the same gold completions,
    so every turn has that many tokens. Evaluation averages over each batch's completion tokens.

    Args:
        model (`str` or [`~transformers.PreTrainedModel`]):
            The generator: a seq2seq or causal LM, or a name or path to load one from (with its tokenizer).
        args ([`RefinerConfig`], *optional*):
            Training arguments. Defaults to a [`RefinerConfig`] writing to `<model name>-REFINER`.
        critic ([`~refiner_trl.critics.Critic`]):
            Anything with `critique(prompts, hypotheses, references) -> list[str]`. It receives the dataset prompts,
            the picked hypotheses and the gold completions as references, always as text: a conversational prompt or
            completion as its messages' contents joined with newlines ([`~refiner_trl.chat.plain_text`]).
        train_dataset ([`~datasets.Dataset`]):
            TRL's prompt-completion format, standard (`prompt` and `completion` strings) or conversational (`prompt` a
            list of `{"role", "content"}` messages ending with the user's, `completion` a list holding the
            assistant's message). Conversational rows are rendered with the tokenizer's chat template
            (`chat_template_kwargs`), and a refine turn continues the conversation with the picked hypothesis as the
            assistant's message and the feedback as the user's (`refine_feedback_template`). The loss is on the
            completion tokens only either way.
        eval_dataset ([`~datasets.Dataset`] or `dict[str, Dataset]`, *optional*):
            Same format; evaluation computes the same multi-turn loss and metrics. With a dict, each dataset's metrics
            are named `eval_<key>_<metric>`, as transformers names their loss `eval_<key>_loss`.
        processing_class ([`~transformers.PreTrainedTokenizerBase`], *optional*):
            The tokenizer; loaded with the model when `model` is a name or path.
        callbacks (`list[TrainerCallback]`, *optional*):
            Callbacks, as for [`~transformers.Trainer`].
        optimizers (`tuple`, *optional*, defaults to `(None, None)`):
            Optimizer and learning-rate scheduler, as for [`~transformers.Trainer`].
        peft_config ([`~peft.PeftConfig`], *optional*):
            When given, an adapter is trained instead of the whole model.
    """

    _tag_names = ["trl", "refiner"]
    _name = "REFINER"
    _paper = {
        "title": "REFINER: Reasoning Feedback on Intermediate Representations",
        "id": "2304.01904",
        "citation": textwrap.dedent("""\
            @inproceedings{paul2024refiner,
                title        = {{REFINER: Reasoning Feedback on Intermediate Representations}},
                author       = {Debjit Paul and Mete Ismayilzada and Maxime Peyrard and Beatriz Borges
                                and Antoine Bosselut and Robert West and Boi Faltings},
                year         = 2024,
                booktitle    = {Proceedings of the 18th Conference of the European Chapter of the Association
                                for Computational Linguistics (EACL)},
            }"""),
    }
    # compute_loss divides by the completion tokens of the whole accumulated batch (`_get_num_items_in_batch`).
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: str | PreTrainedModel,
        args: RefinerConfig | None = None,
        critic: Critic | None = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: PreTrainedTokenizerBase | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple = (None, None),
        peft_config: Any | None = None,
    ):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = RefinerConfig(f"{Path(name or 'model').name}-REFINER")
        if isinstance(model, str):
            model, loaded_tokenizer = load_model_and_tokenizer(model, **(args.model_init_kwargs or {}))
            processing_class = processing_class or loaded_tokenizer
        if processing_class is None:
            raise ValueError("RefinerTrainer needs `processing_class` (the tokenizer) when `model` is a model object.")
        if critic is None or not callable(getattr(critic, "critique", None)):
            raise TypeError(
                "RefinerTrainer needs a `critic` with a `critique(prompts, hypotheses, references)` method."
            )
        if train_dataset is None:
            raise ValueError("RefinerTrainer needs a `train_dataset` with `prompt` and `completion` columns.")
        prepare_tokenizer(processing_class)
        self.encoder_decoder = is_encoder_decoder(model)
        self._encoder = CompletionEncoder(
            processing_class, args.max_prompt_length, args.max_completion_length, self.encoder_decoder,
            args.chat_template_kwargs,
        )  # fmt: skip
        self._encoder.check_datasets(train_dataset, eval_dataset)
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)

        super().__init__(
            model=model,
            args=args,
            data_collator=collate_text,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self.add_callback(CheckpointManifestCallback())  # each checkpoint's manifest, written last
        self.critic = critic
        self._seconds: defaultdict[str, float] = defaultdict(float)  # per phase of the micro-batch (`_timed`)
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._pick_position = {"train": (-1, 0), "eval": (-1, 0)}
        self._eval_metric_prefix = "eval"  # `evaluate` sets it per dataset: `eval_<key>` for a dict of them
        self._refinement_log = RefinementLog(args)
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    def _send_telemetry(self) -> None:
        """A plugin sends nothing anywhere: these runs are often offline and the user did not ask for it."""

    # ----------------------------------------------------------------------------------------------- the step

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: int | None = None
    ) -> torch.Tensor:
        with self._timed("time/step"):
            loss = super().training_step(model, inputs, num_items_in_batch)
        self._log_times("train")
        return loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, list[Prompt]],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        with self._timed("compute_loss"):
            mode = "train" if model.training else "eval"
            turn_prompts = self._explore(model, inputs[PROMPT], inputs[COMPLETION], mode)
            turn_losses = self._turn_losses(model, turn_prompts, inputs[COMPLETION], mode, num_items_in_batch)
            loss = turn_losses.mean() if self.args.turn_loss_aggregation == "mean" else turn_losses.sum()
            if num_items_in_batch is not None and self.args.average_tokens_across_devices:
                # The count covers every process and DDP averages the processes' gradients: undo that average.
                loss = loss * self.accelerator.num_processes
            if mode == "train":
                loss = self._check_finite(model, loss, turn_losses)
        return (loss, None) if return_outputs else loss

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device) -> torch.Tensor:
        """The completion tokens of a step's micro-batches (of all processes with `average_tokens_across_devices`)."""
        labels = [self._encoder.encode(batch[PROMPT], batch[COMPLETION])[0]["labels"] for batch in batch_samples]
        count = torch.tensor(sum(int((rows != LABEL_PAD).sum()) for rows in labels), device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count

    @contextmanager
    def _timed(self, phase: str) -> Iterator[None]:
        """Add the block's seconds to `phase` of this micro-batch, logged by `_log_times` as `time/<phase>`."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[phase] += time.perf_counter() - start

    def _log_times(self, mode: str) -> None:
        """Log the micro-batch's phase times; backward is what a training step spent outside `compute_loss`."""
        seconds = {"time/generate": 0.0, "time/critique": 0.0, **self._seconds}
        self._seconds.clear()
        inside = seconds.pop("compute_loss")
        if "time/step" in seconds:
            seconds["time/forward_backward"] = seconds["time/forward"] + seconds["time/step"] - inside
        for name, value in seconds.items():
            self._metrics[mode][name].append(value)

    @torch.no_grad()
    def _explore(
        self, model: torch.nn.Module, prompts: list[Prompt], references: list[Prompt], mode: str
    ) -> list[list[Prompt]]:
        """Explore T - 1 turns (T with `explore_last_turn`) and return each turn's prompts (turn 0: the dataset's)."""
        args, k = self.args, self.args.num_hypotheses
        metrics = self._metrics[mode]
        turn_prompts = [list(prompts)]
        num_explored = args.num_explored_turns
        pick_rng = self._next_pick_rng(mode)  # its (step, micro-batch) position is the one errors name
        if num_explored == 0:
            return turn_prompts
        critic_prompts, critic_references = [plain_text(x) for x in prompts], [plain_text(r) for r in references]
        explored = []  # each explored turn's picks and feedback, for the refine-turn table (`log_refinements`)
        was_training = model.training
        with unwrap_model_for_generation(
            model,
            self.accelerator,
            gather_deepspeed3_params=args.gather_deepspeed3_params,
            gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
        ) as generator:
            generator.eval()
            for turn in range(num_explored):
                with self._timed("time/generate"):
                    hypotheses = self._sample(generator, turn_prompts[-1])
                groups = [hypotheses[i * k : (i + 1) * k] for i in range(len(prompts))]
                where = f" (global step {self.state.global_step}, turn {turn})"
                with self._timed("time/critique"):
                    picked, feedback = self._pick_and_critique(
                        critic_prompts, groups, critic_references, pick_rng, where
                    )
                explored.append((picked, feedback))
                metrics[f"turn_{turn}/no_error"].append(float(np.mean([is_no_error(f) for f in feedback])))
                metrics[f"turn_{turn}/distinct_hypotheses"].append(float(np.mean([len(set(g)) / k for g in groups])))
                if turn + 1 < args.num_refinement_turns:
                    templates = args.refine_template, args.refine_feedback_template
                    turn_prompts.append(
                        [refine_prompt(x, z, f, *templates) for x, z, f in zip(prompts, picked, feedback)]
                    )
        model.train(was_training)
        self._refinement_log.record(mode, turn_prompts, explored, references)
        return turn_prompts

    def _sample(self, generator: torch.nn.Module, prompts: list[Prompt]) -> list[str]:
        """k hypotheses per prompt in one `generate` call, with the exploration's sampling settings (prompt-major).

        Conversations are rendered with the chat template and its generation prompt first."""
        args, chat = self.args, is_conversation(prompts[0])
        if chat:
            prompts = render_generation_prompts(self.processing_class, prompts, args.chat_template_kwargs)
        return generate_texts(
            generator, self.processing_class, prompts, args.max_prompt_length, args.max_new_tokens, do_sample=True,
            num_return_sequences=args.num_hypotheses, temperature=args.temperature, top_p=args.top_p,
            top_k=args.top_k, add_special_tokens=not chat,
        )[0]  # fmt: skip

    def _turn_losses(
        self,
        model: torch.nn.Module,
        turn_prompts: list[list[Prompt]],
        completions: list[Prompt],
        mode: str,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Cross-entropy of the gold completions given every turn's prompts; one loss per turn.

        Each turn's summed completion-token loss ([`~refiner_trl.losses.turn_loss_sums`]: rows grouped by length
        into at most `max_loss_forwards` forwards) divided by `num_items_in_batch`, the completion tokens of the
        accumulated batch, or by this micro-batch's when it is `None`. The logged `turn_<t>/loss` is this
        micro-batch's per-token mean either way.
        """
        num_turns = len(turn_prompts)
        batch, cut = self._encoder.encode([p for prompts in turn_prompts for p in prompts], completions * num_turns)
        self._metrics[mode]["truncated_prompts"].append(float(cut))
        batch = {key: value.to(self.accelerator.device) for key, value in batch.items()}
        with self._timed("time/forward"):
            sums, counts = turn_loss_sums(
                model, batch, num_turns, self.args.max_loss_forwards, self.accelerator.num_processes
            )
        means = sums / counts.clamp(min=1)
        for turn, value in enumerate(means.detach().float().cpu().tolist()):
            self._metrics[mode][f"turn_{turn}/loss"].append(value)
        return means if num_items_in_batch is None else sums / num_items_in_batch

    def _check_finite(self, model: torch.nn.Module, loss: torch.Tensor, turn_losses: torch.Tensor) -> torch.Tensor:
        """Return a finite loss as it is; raise on a non-finite one, or skip it when `nonfinite_loss="skip"`."""
        if self.args.nonfinite_loss == "skip":
            self._metrics["train"]["skipped_batches"].append(float(not torch.isfinite(loss)))
        step, micro = self._pick_position["train"]
        return finite_or_skipped(
            loss, turn_losses, model, self.args.nonfinite_loss, f"global step {step}, micro-batch {micro}"
        )

    # ------------------------------------------------------------------------------------- hypothesis picks

    def _next_pick_rng(self, mode: str) -> torch.Generator:
        """Advance `mode`'s (step, micro-batch) pick position and return an RNG seeded from it.

        The RNG is seeded from the seed, the global step, the micro-batch, the process index and the mode. Nothing
        needs saving for resuming: a resumed run reaches the same (step, micro-batch) positions and so draws the same
        picks, and each process draws its own.
        """
        step = self.state.global_step
        last_step, micro = self._pick_position[mode]
        micro = micro + 1 if last_step == step else 0
        self._pick_position[mode] = (step, micro)
        entropy = [self.args.seed, step, micro, self.accelerator.process_index, int(mode == "eval")]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)
        return torch.Generator().manual_seed(seed)

    def _pick_and_critique(
        self,
        prompts: list[str],
        groups: list[list[str]],
        references: list[str],
        rng: torch.Generator,
        where: str,
    ) -> tuple[list[str], list[str]]:
        """Pick one hypothesis of each example's group and return the picks with the critic's feedback on them.

        `"random"` and `"first"` pick, then critique the picks in one call. `"flagged"` critiques all k hypotheses in
        one call, then picks at random among those with an error (among all k when none has one).
        """
        k = self.args.num_hypotheses
        if self.args.hypothesis_selection != "flagged":
            picked = [group[j] for group, j in zip(groups, self._pick(len(groups), rng))]
            return picked, checked_critique(self.critic, prompts, picked, references, where=where)
        every = [hypothesis for group in groups for hypothesis in group]
        repeated = [[value for value in values for _ in range(k)] for values in (prompts, references)]
        feedback = checked_critique(self.critic, repeated[0], every, repeated[1], where=where)
        draws = torch.rand(len(groups), generator=rng).tolist()
        chosen = []
        for example, draw in enumerate(draws):
            rows = range(example * k, (example + 1) * k)
            flagged = [row for row in rows if not is_no_error(feedback[row])] or list(rows)
            chosen.append(flagged[int(draw * len(flagged))])
        return [every[row] for row in chosen], [feedback[row] for row in chosen]

    def _pick(self, num_examples: int, rng: torch.Generator) -> list[int]:
        """The index of each example's pick among its k hypotheses, for `"random"` and `"first"`."""
        if self.args.hypothesis_selection == "first":
            return [0] * num_examples
        return torch.randint(self.args.num_hypotheses, (num_examples,), generator=rng).tolist()

    # ------------------------------------------------------------------------------------- evaluation, logs

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor, None, None]:
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        self._log_times("eval")
        return loss.detach(), None, None

    def evaluate(
        self,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> dict[str, float]:
        # The Trainer calls this again for each dataset of a dict, with the prefix `eval_<key>`; `log` names this
        # trainer's metrics with the same prefix, so that two evaluation sets' metrics do not overwrite each other.
        self._eval_metric_prefix = metric_key_prefix
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        names = sorted(metrics)
        if names:
            # Counts (`_COUNTS`) are summed over the logging window and the processes; the rest is averaged.
            values = [float(np.sum(metrics[n]) if n in _COUNTS else np.mean(metrics[n])) for n in names]
            totals = self.accelerator.reduce(torch.tensor(values, device=self.accelerator.device), reduction="sum")
            processes = self.accelerator.num_processes
            prefix = f"{self._eval_metric_prefix}_" if mode == "eval" else ""
            logs.update({f"{prefix}{n}": t if n in _COUNTS else t / processes for n, t in zip(names, totals.tolist())})
        super().log(logs, start_time)
        metrics.clear()
        key = f"{self._eval_metric_prefix}_refinements" if mode == "eval" else "refinements"
        self._refinement_log.flush(mode, self.state.global_step, key, self.is_world_process_zero())

    # ------------------------------------------------------------------------------- checkpoints, resuming

    def train(
        self,
        resume_from_checkpoint: str | bool | None = None,
        trial: Any = None,
        ignore_keys_for_eval: list[str] | None = None,
    ) -> TrainOutput:
        """As [`~transformers.Trainer.train`]; `resume_from_checkpoint=True` resumes from the newest *complete*
        checkpoint in `output_dir` (one cut short while being written is skipped with a warning, and a path to one is
        refused), and the critic's state is restored from the checkpoint ([`~refiner_trl.critics.StatefulCritic`]).
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint to resume from in output_dir ({self.args.output_dir})")
        if resume_from_checkpoint:
            if problem := checkpoint_problem(resume_from_checkpoint):
                raise ValueError(
                    f"{resume_from_checkpoint} is not a complete checkpoint: {problem}. It was probably cut short "
                    "while being written: resume from an earlier one, or pass resume_from_checkpoint=True for the "
                    "newest complete one."
                )
            load_critic_state(self.critic, resume_from_checkpoint, self.args.world_size, self.args.process_index)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """As [`~transformers.Trainer.save_model`], plus the run's templates (`refiner_templates.json`), which the
        evaluation of the saved model reads back ([`~refiner_trl.evaluation.evaluation_templates`])."""
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            folder = Path(output_dir if output_dir is not None else self.args.output_dir)
            write_json(folder / RUN_TEMPLATES_FILE, run_templates(self.args))

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        model_name = Path(self.args.output_dir).name if self.args.hub_model_id is None else self.args.hub_model_id
        self.create_model_card(model_name=model_name.split("/")[-1])
        # Before the Trainer's files, so that the checkpoint's trainer_state.json, written last, vouches for it too.
        checkpoint = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        save_critic_state(
            self.critic, checkpoint, self.state.global_step, self.args.world_size, self.args.process_index
        )
        super()._save_checkpoint(model, trial)


_COUNTS = frozenset({"skipped_batches"})
"""Metrics that are counts, summed (not averaged) over a logging window and the processes."""
