"""The trainers the step-cost benchmark measures REFINER's step against: the authors'-style per-example exploration
loop, and the step as it was before its two speed-ups (shared-prompt sampling, the length-grouped loss forward).

Only the methods that differ are written here; everything else is the library's `RefinerTrainer`, so a difference
in step time is the price of what these methods do differently.
"""

from __future__ import annotations

from typing import Any

import torch


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
                        with self._timed("time/generate"):
                            hypotheses = self._sample(generator, [current])
                        picked = hypotheses[self._pick(1, pick_rng)[0]]
                        with self._timed("time/critique"):
                            feedback = checked_critique(self.critic, [prompt], [picked], [reference])[0]
                        accepted.append(is_no_error(feedback))
                        next_prompts.append(render_refine_prompt(prompt, picked, feedback, args.refine_template))
                    metrics[f"turn_{turn}/no_error"].append(sum(accepted) / len(accepted))
                    if turn + 1 < args.num_refinement_turns:
                        turn_prompts.append(next_prompts)
            model.train(was_training)
            return turn_prompts

    return PerExampleRefinerTrainer


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
            from refiner_trl.generation import generate_texts

            args = self.args
            return generate_texts(
                generator, self.processing_class, prompts, args.max_prompt_length, args.max_new_tokens,
                do_sample=True, num_return_sequences=args.num_hypotheses, temperature=args.temperature,
                top_p=args.top_p, top_k=args.top_k, share_prompt_cache=False,
            )[0]  # fmt: skip

        namespace["_sample"] = _sample
    if not grouped:

        def _turn_losses(
            self: Any,
            model: torch.nn.Module,
            turn_prompts: list[list[str]],
            completions: list[str],
            mode: str,
            num_items_in_batch: Any = None,
        ) -> torch.Tensor:
            from refiner_trl.losses import reference_turn_losses

            with self._timed("time/forward"):  # the per-turn means: the token mean of a step of one micro-batch
                per_turn = reference_turn_losses(
                    model, self.processing_class, turn_prompts, completions, self.args.max_prompt_length,
                    self.args.max_completion_length,
                )  # fmt: skip
            self._metrics[mode]["truncated_prompts"].append(0.0)
            return per_turn

        namespace["_turn_losses"] = _turn_losses
    name = f"{base.__name__}{'' if shared else 'Unshared'}{'' if grouped else 'SingleForward'}"
    return type(name, (base,), namespace)
