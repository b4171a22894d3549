"""RefinerTrainer: REFINER's exploration loop (Paul et al., EACL 2024) as a TRL trainer."""

from __future__ import annotations

import textwrap
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch.nn.parallel import DistributedDataParallel
from transformers import PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput
from trl.models.utils import unwrap_model_for_generation
from trl.trainer.base_trainer import _BaseTrainer

from .chat import (
    Prompt,
    is_conversation,
    plain_text,
    prefix_mismatch,
    refine_prompt,
    render_generation_prompts,
    render_prompt_completion,
    require_chat_template,
)
from .checkpoints import is_complete_checkpoint, last_complete_checkpoint, load_critic_state, save_critic_state
from .config import RefinerConfig
from .critics import Critic, checked_critique, is_no_error
from .data import (
    COMPLETION,
    LABEL_PAD,
    PROMPT,
    collate_text,
    count_truncation,
    encode_prompt_completion,
    validate_prompt_completion,
)
from .length_groups import length_groups
from .modeling import (
    forward_parameters,
    generate_texts,
    is_encoder_decoder,
    load_model_and_tokenizer,
    prepare_tokenizer,
)
from .refinement_logs import RefinementLog


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

    A turn's loss is the mean over the micro-batch's completion tokens. With `gradient_accumulation_steps > 1`, a
    step's loss is the mean of its micro-batches' losses: equal to one larger batch only when the micro-batches hold
    as many completion tokens. (TRL's SFT trainer and transformers average over all completion tokens of the
    accumulated batch instead, so a token of a short micro-batch weighs more here than there.)

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
    # compute_loss returns the unscaled loss of one micro-batch; the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

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
            model, loaded_tokenizer = load_model_and_tokenizer(
                model, trust_remote_code=args.trust_remote_code, **(args.model_init_kwargs or {})
            )
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
        datasets = {"train_dataset": train_dataset}
        if isinstance(eval_dataset, dict):
            datasets.update({f"eval_dataset[{key!r}]": dataset for key, dataset in eval_dataset.items()})
        elif eval_dataset is not None:
            datasets["eval_dataset"] = eval_dataset
        for name, dataset in datasets.items():
            if validate_prompt_completion(dataset, name):
                require_chat_template(processing_class, f"{name}, row 0, {PROMPT!r}")
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
        self.critic = critic
        self.encoder_decoder = is_encoder_decoder(model)
        self._metrics: dict[str, defaultdict[str, list[float]]] = {
            "train": defaultdict(list),
            "eval": defaultdict(list),
        }
        self._pick_position = {"train": (-1, 0), "eval": (-1, 0)}
        self._eval_metric_prefix = "eval"  # `evaluate` sets it per dataset: `eval_<key>` for a dict of them
        self._warned_truncation = False
        self._warned_chat_prefix = False
        self._checked_chat_prefix = False
        self._refinement_log = RefinementLog(args)
        for name, dataset in datasets.items():
            self._report_dataset_truncation(dataset, name)
        # Checked on the datasets' prompts; once more on the first batch, whose refine turns the datasets lack.
        self._checked_chat_prefix = self._warned_chat_prefix
        if hasattr(self.model, "add_model_tags"):
            self.model.add_model_tags(self._tag_names)

    def _send_telemetry(self) -> None:
        """A plugin sends nothing anywhere: these runs are often offline and the user did not ask for it."""

    def _report_dataset_truncation(self, dataset: Dataset, name: str) -> None:
        """Warn, before training, how many of a dataset's prompts and completions exceed the length limits."""
        prompts, completions, add_special_tokens = self._loss_texts(dataset[PROMPT], dataset[COMPLETION])
        truncation = count_truncation(
            self.processing_class,
            prompts,
            completions,
            self.args.max_prompt_length,
            self.args.max_completion_length,
            add_special_tokens,
        )
        if truncation.prompts or truncation.completions:
            warnings.warn(
                f"{name}: {truncation.prompts} of {len(dataset)} prompts exceed max_prompt_length="
                f"{self.args.max_prompt_length} (they keep their last tokens) and {truncation.completions} "
                f"completions exceed max_completion_length={self.args.max_completion_length} (they are cut).",
                stacklevel=3,
            )

    # ----------------------------------------------------------------------------------------------- the step

    def training_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: int | None = None
    ) -> torch.Tensor:
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        total = time.perf_counter() - start
        metrics = self._metrics["train"]
        # Backward is what the step spent outside compute_loss; forward was timed inside it.
        metrics["time/forward_backward"].append(metrics["time/forward"][-1] + total - self._compute_loss_time)
        metrics["time/step"].append(total)
        return loss

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, list[Prompt]],
        return_outputs: bool = False,
        num_items_in_batch: int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, None]:
        start = time.perf_counter()
        mode = "train" if model.training else "eval"
        turn_prompts = self._explore(model, inputs[PROMPT], inputs[COMPLETION], mode)
        turn_losses = self._turn_losses(model, turn_prompts, inputs[COMPLETION], mode)
        loss = turn_losses.mean() if self.args.turn_loss_aggregation == "mean" else turn_losses.sum()
        if mode == "train":
            loss = self._check_finite(model, loss, turn_losses)
        self._compute_loss_time = time.perf_counter() - start
        return (loss, None) if return_outputs else loss

    @torch.no_grad()
    def _explore(
        self, model: torch.nn.Module, prompts: list[Prompt], references: list[Prompt], mode: str
    ) -> list[list[Prompt]]:
        """Explore T - 1 turns (T with `explore_last_turn`) and return each turn's prompts (turn 0: the dataset's)."""
        args, k = self.args, self.args.num_hypotheses
        metrics = self._metrics[mode]
        turn_prompts = [list(prompts)]
        num_explored = args.num_explored_turns
        metrics["time/generate"].append(0.0)
        metrics["time/critique"].append(0.0)
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
                start = time.perf_counter()
                hypotheses = self._sample(generator, turn_prompts[-1])
                metrics["time/generate"][-1] += time.perf_counter() - start
                groups = [hypotheses[i * k : (i + 1) * k] for i in range(len(prompts))]

                start = time.perf_counter()
                where = f" (global step {self.state.global_step}, turn {turn})"
                picked, feedback = self._pick_and_critique(critic_prompts, groups, critic_references, pick_rng, where)
                metrics["time/critique"][-1] += time.perf_counter() - start
                explored.append((picked, feedback))

                metrics[f"turn_{turn}/no_error"].append(float(np.mean([is_no_error(f) for f in feedback])))
                metrics[f"turn_{turn}/distinct_hypotheses"].append(float(np.mean([len(set(g)) / k for g in groups])))
                if turn + 1 < args.num_refinement_turns:
                    turn_prompts.append(
                        [
                            refine_prompt(x, z, f, args.refine_template, args.refine_feedback_template)
                            for x, z, f in zip(prompts, picked, feedback)
                        ]
                    )
        model.train(was_training)
        self._refinement_log.record(mode, turn_prompts, explored, references)
        return turn_prompts

    def _sample(self, generator: torch.nn.Module, prompts: list[Prompt]) -> list[str]:
        """k hypotheses per prompt in one `generate` call, with the exploration's sampling settings (prompt-major).

        Conversations are rendered with the chat template and its generation prompt first."""
        args = self.args
        chat = is_conversation(prompts[0])
        hypotheses, _ = generate_texts(
            generator,
            self.processing_class,
            render_generation_prompts(self.processing_class, prompts, args.chat_template_kwargs) if chat else prompts,
            max_prompt_length=args.max_prompt_length,
            max_new_tokens=args.max_new_tokens,
            do_sample=True,
            num_return_sequences=args.num_hypotheses,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k,
            add_special_tokens=not chat,
        )
        return hypotheses

    def _loss_texts(self, prompts: list[Prompt], completions: list[Prompt]) -> tuple[list[str], list[str], bool]:
        """The prompt and completion texts of the loss, and whether to add special tokens when tokenizing them.

        Strings are returned as they are. Conversations are rendered with the chat template (TRL's
        `apply_chat_template`), whose special tokens are in the text; a prompt text that differs from the one
        generation sees (a template that is not prefix-preserving) is warned about once."""
        if not is_conversation(prompts[0]):
            return list(prompts), list(completions), True
        kwargs = self.args.chat_template_kwargs
        prompt_texts, completion_texts = render_prompt_completion(self.processing_class, prompts, completions, kwargs)
        if not self._checked_chat_prefix:
            # Rendering every prompt a second time each step would double the chat rendering of the hot path.
            self._checked_chat_prefix = True
            mismatch = prefix_mismatch(render_generation_prompts(self.processing_class, prompts, kwargs), prompt_texts)
            if mismatch is not None:
                self._warned_chat_prefix = True
                warnings.warn(
                    "The chat template is not prefix-preserving: it renders a prompt with the generation prompt "
                    "differently than followed by the completion, so the loss conditions the gold completion on a "
                    f"context that exploration does not sample from ({mismatch}). Use a template that renders both "
                    "the same way. This warning is shown once.",
                    stacklevel=3,
                )
        return prompt_texts, completion_texts, False

    def _turn_losses(
        self, model: torch.nn.Module, turn_prompts: list[list[Prompt]], completions: list[Prompt], mode: str
    ) -> torch.Tensor:
        """Cross-entropy of the gold completions given every turn's prompts; one loss per turn.

        All turns' rows are sorted by length and cut into at most `max_loss_forwards` groups (see
        [`~refiner_trl.length_groups.length_groups`]), one forward each, so that short turn-0 rows are not padded to
        the length of refine rows. Causal rows are left-padded so that the completions end in the last column, and
        only the completion positions' logits are computed. The per-turn sums of token losses are those of one padded
        forward over all rows: the same loss and gradients.
        """
        num_turns, batch_size = len(turn_prompts), len(completions)
        prompts, completion_texts, add_special_tokens = self._loss_texts(
            [p for prompts in turn_prompts for p in prompts], completions * num_turns
        )
        batch, truncation = encode_prompt_completion(
            self.processing_class,
            prompts,
            completion_texts,
            self.args.max_prompt_length,
            self.args.max_completion_length,
            self.encoder_decoder,
            add_special_tokens=add_special_tokens,
            left_pad=not self.encoder_decoder,
        )
        self._count_truncation(truncation.prompts, self._metrics[mode])
        batch = {key: value.to(self.accelerator.device) for key, value in batch.items()}
        label_counts = (batch["labels"] != LABEL_PAD).sum(dim=1)
        row_lengths = batch["attention_mask"].sum(dim=1)
        lengths = list(zip(row_lengths.tolist(), label_counts.tolist()))
        if not self.encoder_decoder:
            lengths = [(length,) for length, _ in lengths]  # one padded dimension: prompt + completion
        turn_of_row = torch.arange(num_turns, device=label_counts.device).repeat_interleave(batch_size)
        start = time.perf_counter()
        # Processes run the same number of forwards (their collectives must pair up), so it cannot follow lengths.
        min_saving = 0.05 if self.accelerator.num_processes == 1 else 0.0
        groups = length_groups(lengths, self.args.max_loss_forwards, min_saving)
        loss_sums = None
        for number, rows in enumerate(groups):
            index = torch.tensor(rows, device=label_counts.device)
            # DDP's forward prepares the gradient reduction of the next backward: once per micro-batch. The backward
            # of the summed loss still reduces every weight's gradient once, summed over the groups.
            forward_model = model.module if number > 0 and isinstance(model, DistributedDataParallel) else model
            sums = self._completion_loss_sums(forward_model, {key: value[index] for key, value in batch.items()})
            part = sums.new_zeros(num_turns).index_add(0, turn_of_row[index], sums)
            loss_sums = part if loss_sums is None else loss_sums + part
        per_turn = loss_sums / label_counts.view(num_turns, batch_size).sum(dim=1).clamp(min=1)
        self._metrics[mode]["time/forward"].append(time.perf_counter() - start)
        for turn, value in enumerate(per_turn.detach().float().cpu().tolist()):
            self._metrics[mode][f"turn_{turn}/loss"].append(value)
        return per_turn

    def _completion_loss_sums(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One forward over a group of rows, cut to its own longest row; each row's summed completion-token loss."""
        labels = batch["labels"]
        label_width = int((labels != LABEL_PAD).sum(dim=1).max())
        width = int(batch["attention_mask"].sum(dim=1).max())
        if self.encoder_decoder:
            config = self.accelerator.unwrap_model(model).config
            labels = labels[:, :label_width]
            decoder_input_ids = _shift_right(labels, config.decoder_start_token_id, config.pad_token_id)
            logits = model(
                input_ids=batch["input_ids"][:, :width],
                attention_mask=batch["attention_mask"][:, :width],
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            ).logits
        else:
            # Left-padded: every completion ends in the last column, so its logits are the last label_width + 1.
            input_ids, attention_mask = batch["input_ids"][:, -width:], batch["attention_mask"][:, -width:]
            keep = min(label_width + 1, width)
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
            parameters = forward_parameters(model)
            if "position_ids" in parameters:  # the positions of the same tokens right-padded
                inputs["position_ids"] = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
            if "logits_to_keep" in parameters:
                inputs["logits_to_keep"] = keep
            logits = model(**inputs).logits[:, -keep:][:, :-1]
            labels = labels[:, labels.shape[1] - keep + 1 :]
        token_losses = F.cross_entropy(
            logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD, reduction="none"
        )
        return token_losses.view(labels.shape).sum(dim=1)

    def _count_truncation(self, count: int, metrics: defaultdict[str, list[float]]) -> None:
        """Log how many of this step's prompts (all turns) were cut, and warn the first time it happens."""
        metrics["truncated_prompts"].append(float(count))
        if count and not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(
                f"{count} prompts of this batch exceed max_prompt_length={self.args.max_prompt_length} and keep only "
                "their last tokens; the count is logged as `truncated_prompts`. This warning is shown once.",
                stacklevel=2,
            )

    def _check_finite(self, model: torch.nn.Module, loss: torch.Tensor, turn_losses: torch.Tensor) -> torch.Tensor:
        """Return a finite loss as it is; raise on a non-finite one, or skip it when `nonfinite_loss="skip"`."""
        finite = bool(torch.isfinite(loss))
        if self.args.nonfinite_loss == "skip":
            self._metrics["train"]["skipped_batches"].append(float(not finite))
        if finite:
            return loss
        step, micro = self._pick_position["train"]
        where = f"global step {step}, micro-batch {micro}"
        if self.args.nonfinite_loss == "raise":
            raise FloatingPointError(
                f"Non-finite training loss {loss.item()} at {where} (per-turn losses: {turn_losses.tolist()}); "
                "set nonfinite_loss='skip' to skip such micro-batches instead"
            )
        warnings.warn(f"Skipping a micro-batch with a non-finite training loss at {where}.", stacklevel=2)
        # Zero times every trainable weight: the backward reaches each weight (as DDP expects) with a zero gradient,
        # where `loss * 0` would carry NaN back through the activations. The value stays the non-finite loss, which
        # the Trainer's `logging_nan_inf_filter` keeps out of the logged loss as it does for any such loss.
        zero = sum((p.sum() * 0.0 for p in model.parameters() if p.requires_grad), loss.new_zeros(()))
        return loss.detach() + zero

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
        """As [`~transformers.Trainer.train`], with two additions for resuming.

        `resume_from_checkpoint=True` resumes from the newest *complete* checkpoint in `output_dir`, one whose
        `trainer_state.json` (the file the Trainer writes last) is there and readable: a checkpoint cut short by a
        kill while it was being written is skipped with a warning, and a path to one is refused. And the critic's
        state is restored from the checkpoint when the critic has `load_state_dict` (see
        [`~refiner_trl.critics.StatefulCritic`]).
        """
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No complete checkpoint to resume from in output_dir ({self.args.output_dir})")
        elif resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if resume_from_checkpoint is not None:
            if not is_complete_checkpoint(resume_from_checkpoint):
                raise ValueError(
                    f"{resume_from_checkpoint} is not a complete checkpoint (no readable {TRAINER_STATE_NAME}, which "
                    "is written last): it was probably cut short while being written. Resume from an earlier one, "
                    "or pass resume_from_checkpoint=True for the newest complete one."
                )
            load_critic_state(self.critic, resume_from_checkpoint, self.args.world_size, self.args.process_index)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

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


def _shift_right(labels: torch.Tensor, start_token_id: int, pad_token_id: int) -> torch.Tensor:
    """Decoder inputs of an encoder-decoder: the labels shifted right behind the start token, -100 as padding."""
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = start_token_id
    return shifted.masked_fill(shifted == LABEL_PAD, pad_token_id)
