"""The trainers the step-cost benchmark measures REFINER's step against: the authors'-style per-example exploration
loop, and the step as it was before its two speed-ups (shared-prompt sampling, the length-grouped loss forward).

Only the methods that differ are written here; everything else is the library's `RefinerTrainer`, so a difference
in step time is the price of what these methods do differently.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F


def per_example_trainer_class() -> type:
    """A `RefinerTrainer` whose exploration works one example at a time, as the authors' code does.

    Everything else (loss, one batched forward over all turns, logging, picks) is the library's: only `_explore`
    differs, so the difference in step time is the price of not batching generation, critique and prompt building.
    """
    from trl.models.utils import unwrap_model_for_generation

    from refiner_trl import RefinerTrainer
    from refiner_trl.critics import checked_critique, is_no_error
    from refiner_trl.templates import render_refine_prompt

    class PerExampleRefinerTrainer(RefinerTrainer):
        @torch.no_grad()
        def _explore(
            self, model: torch.nn.Module, prompts: list[str], references: list[str], mode: str
        ) -> list[list[str]]:
            args = self.args
            metrics = self._metrics[mode]
            pick_rng = self._next_pick_rng(mode)
            turn_prompts = [list(prompts)]
            num_explored = args.num_explored_turns
            generate_time = critique_time = 0.0
            was_training = model.training
            with unwrap_model_for_generation(
                model,
                self.accelerator,
                gather_deepspeed3_params=args.gather_deepspeed3_params,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as generator:
                generator.eval()
                for turn in range(num_explored):
                    next_prompts, accepted = [], []
                    for prompt, current, reference in zip(prompts, turn_prompts[-1], references):
                        start = time.perf_counter()
                        hypotheses = self._sample(generator, [current])
                        generate_time += time.perf_counter() - start
                        picked = hypotheses[self._pick(1, pick_rng)[0]]
                        start = time.perf_counter()
                        feedback = checked_critique(self.critic, [prompt], [picked], [reference])[0]
                        critique_time += time.perf_counter() - start
                        accepted.append(is_no_error(feedback))
                        next_prompts.append(render_refine_prompt(prompt, picked, feedback, args.refine_template))
                    metrics[f"turn_{turn}/no_error"].append(sum(accepted) / len(accepted))
                    if turn + 1 < args.num_refinement_turns:
                        turn_prompts.append(next_prompts)
            model.train(was_training)
            metrics["time/generate"].append(generate_time)
            metrics["time/critique"].append(critique_time)
            return turn_prompts

    return PerExampleRefinerTrainer


def single_forward_turn_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    turn_prompts: list[list[str]],
    completions: list[str],
    max_prompt_length: int | None,
    max_completion_length: int | None,
    encoder_decoder: bool,
    decoder_start_token_id: int | None = None,
) -> torch.Tensor:
    """The per-turn losses as computed before length groups: one right-padded forward over every turn's rows, with
    the logits of every position. The tests check the trainer's grouped forward against it.

    Args:
        model (`torch.nn.Module`):
            The model.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        turn_prompts (`list[list[str]]`):
            Each turn's prompts, one per example.
        completions (`list[str]`):
            The gold completions, one per example (the same in every turn).
        max_prompt_length (`int`, *optional*):
            Prompts are cut to this many tokens.
        max_completion_length (`int`, *optional*):
            Completions are cut to this many tokens.
        encoder_decoder (`bool`):
            Whether the model is an encoder-decoder.
        decoder_start_token_id (`int`, *optional*):
            An encoder-decoder's first decoder token.

    Returns:
        `torch.Tensor`: one mean token loss per turn.
    """
    from refiner_trl.data import LABEL_PAD, encode_prompt_completion
    from refiner_trl.trainer import _shift_right

    num_turns, batch_size = len(turn_prompts), len(completions)
    batch, _ = encode_prompt_completion(
        tokenizer,
        [p for prompts in turn_prompts for p in prompts],
        completions * num_turns,
        max_prompt_length,
        max_completion_length,
        encoder_decoder,
    )
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    labels = batch.pop("labels")
    if encoder_decoder:
        batch["decoder_input_ids"] = _shift_right(labels, decoder_start_token_id, tokenizer.pad_token_id)
        logits = model(**batch, use_cache=False).logits
    else:
        logits = model(**batch, use_cache=False).logits[:, :-1]
        labels = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD, reduction="none"
    ).view(num_turns, batch_size, -1)
    mask = (labels != LABEL_PAD).view(num_turns, batch_size, -1)
    return token_losses.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)


def variant_class(base: type, shared: bool, grouped: bool) -> type:
    """`base` (a `RefinerTrainer` class) with either speed-up turned back to the code before it.

    Args:
        base (`type`):
            The trainer class.
        shared (`bool`):
            Keep shared-prompt sampling; `False` repeats every prompt k times before its prefill.
        grouped (`bool`):
            Keep the length-grouped loss forward; `False` runs one right-padded forward with all logits.
    """
    if shared and grouped:
        return base
    namespace: dict[str, Any] = {}
    if not shared:

        def _sample(self: Any, generator: torch.nn.Module, prompts: list[str]) -> list[str]:
            from refiner_trl.modeling import generate_texts

            args = self.args
            return generate_texts(
                generator, self.processing_class, prompts, args.max_prompt_length, args.max_new_tokens,
                do_sample=True, num_return_sequences=args.num_hypotheses, temperature=args.temperature,
                top_p=args.top_p, top_k=args.top_k, share_prompt_cache=False,
            )[0]  # fmt: skip

        namespace["_sample"] = _sample
    if not grouped:

        def _turn_losses(
            self: Any, model: torch.nn.Module, turn_prompts: list[list[str]], completions: list[str], mode: str
        ) -> torch.Tensor:
            start = time.perf_counter()
            config = self.accelerator.unwrap_model(model).config
            per_turn = single_forward_turn_losses(
                model, self.processing_class, turn_prompts, completions, self.args.max_prompt_length,
                self.args.max_completion_length, self.encoder_decoder, getattr(config, "decoder_start_token_id", None),
            )  # fmt: skip
            self._metrics[mode]["time/forward"].append(time.perf_counter() - start)
            self._metrics[mode]["truncated_prompts"].append(0.0)
            return per_turn

        namespace["_turn_losses"] = _turn_losses
    name = f"{base.__name__}{'' if shared else 'Unshared'}{'' if grouped else 'SingleForward'}"
    return type(name, (base,), namespace)
