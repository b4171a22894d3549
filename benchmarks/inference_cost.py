"""Inference cost of the step-cost benchmark: `refine` with early stopping against running all T turns for every
example, with a function generator right with probability p and the oracle critic (work counted), and with the model
(greedy) and a critic that accepts with probability p (time measured)."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from _measurements import median

if TYPE_CHECKING:
    from step_cost import Settings


class RightWithProbability:
    """A function generator that writes the gold completion with probability p, else a perturbed one.

    Args:
        task (`Task`):
            The task (its `perturb` writes the wrong answers).
        prompts (`Sequence[str]`):
            The prompts it will be asked about.
        references (`Sequence[str]`):
            Their gold completions.
        p (`float`):
            The probability of a right answer.
        seed (`int`):
            The seed of its draws.
    """

    def __init__(self, task: Any, prompts: Sequence[str], references: Sequence[str], p: float, seed: int):
        self.task, self.p, self.rng = task, p, random.Random(seed)
        self.gold = dict(zip(prompts, references))
        self.prompts_generated = 0

    def generate(self, prompts: Sequence[str]) -> list[str]:
        self.prompts_generated += len(prompts)
        texts = []
        for prompt in prompts:
            # A refine prompt starts with the original prompt (REFINE_TEMPLATE = "{prompt}\nPrevious answer: ...").
            gold = self.gold[prompt.partition("\nPrevious answer:")[0]]
            right = self.rng.random() < self.p
            texts.append(gold if right else self.task.perturb(gold, self.rng)[0])
        return texts


class CountingCritic:
    """Counts the hypotheses it is asked about; accepts as `inner` says, or with probability p, or never.

    Args:
        inner (`Critic`):
            The critic whose feedback texts are returned (e.g. the oracle).
        mode (`str`):
            `"inner"` (the inner critic's verdicts), `"coin"` (accept with probability `p`, else the inner critic's
            text) or `"never"` (never accept: every example runs all turns).
        p (`float`, *optional*, defaults to `0.5`):
            The probability of accepting, for `"coin"`.
        seed (`int`, *optional*, defaults to `0`):
            The seed of its coin.
    """

    def __init__(self, inner: Any, mode: str, p: float = 0.5, seed: int = 0):
        self.inner, self.mode, self.p, self.rng = inner, mode, p, random.Random(seed)
        self.hypotheses_critiqued = 0

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        from refiner_trl.critics import NO_ERROR, is_no_error

        self.hypotheses_critiqued += len(hypotheses)
        feedback = self.inner.critique(prompts, hypotheses, references)
        if self.mode == "inner":
            return feedback
        # Texts for the rejected hypotheses: the inner critic's, or a generic one where it found no error.
        rejected = ["Check the equation again." if is_no_error(f) else f for f in feedback]
        if self.mode == "never":
            return rejected
        return [NO_ERROR if self.rng.random() < self.p else text for text in rejected]


def inference_cost(task: Any, model: Any, tokenizer: Any, rows: Any, settings: Settings, seed: int) -> dict:
    """`refine` with early stopping against all T turns for all examples, two ways (see the module docstring).

    Args:
        task (`Task`):
            The task (its oracle critic).
        model (`PreTrainedModel`):
            The generator of the timed runs.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        rows (`Dataset`):
            Prompt-completion rows.
        settings (`Settings`):
            The step-cost sizes (`accept_probability`, `inference_turns`, `inference_repeats`, lengths).
        seed (`int`):
            The seed of the coins.
    """
    prompts, references = list(rows["prompt"]), list(rows["completion"])
    p, turns = settings.accept_probability, settings.inference_turns
    return {
        "rows": len(prompts),
        "turns": turns,
        "p": p,
        "function_generator": counted_work(task, prompts, references, p, turns, seed),
        "model_generator": timed_model(task, model, tokenizer, prompts, references, settings, seed),
    }


def counted_work(task: Any, prompts: list[str], references: list[str], p: float, turns: int, seed: int) -> dict:
    """A function generator right with probability `p`, and the oracle: the texts generated each way, counted.

    Args:
        task (`Task`):
            The task.
        prompts (`list[str]`):
            The prompts.
        references (`list[str]`):
            Their gold completions.
        p (`float`):
            The generator's probability of a right answer.
        turns (`int`):
            `refine`'s `max_turns`.
        seed (`int`):
            The generator's seed.
    """
    from refiner_trl import refine

    oracle, work = task.oracle_critic(), {}
    for name, mode in (("early_stopping", "inner"), ("all_turns", "never")):
        generator = RightWithProbability(task, prompts, references, p, seed)
        critic = CountingCritic(oracle, mode)
        start = time.perf_counter()
        traces = refine(generator, critic, prompts, references=references, max_turns=turns)
        work[name] = {
            "seconds": time.perf_counter() - start,
            "prompts_generated": generator.prompts_generated,
            "hypotheses_critiqued": critic.hypotheses_critiqued,
            "final_accuracy": sum(t.final == r for t, r in zip(traces, references)) / len(references),
        }
    work["generated_ratio"] = work["all_turns"]["prompts_generated"] / work["early_stopping"]["prompts_generated"]
    work["expected_generated_ratio"] = (turns + 1) / sum((1 - p) ** t for t in range(turns + 1))
    return work


def timed_model(
    task: Any, model: Any, tokenizer: Any, prompts: list[str], references: list[str], settings: Settings, seed: int
) -> dict[str, Any]:
    """The model, greedy, with a critic that accepts with probability p: time each way, median over repeats.

    Args:
        task (`Task`):
            The task (its oracle writes the rejected hypotheses' feedback).
        model (`PreTrainedModel`):
            The generator.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        prompts (`list[str]`):
            The prompts.
        references (`list[str]`):
            Their gold completions.
        settings (`Settings`):
            The step-cost sizes.
        seed (`int`):
            The seed of the first repeat's coin (the next ones add their index).
    """
    from refiner_trl import ModelGenerator, refine

    oracle, p, turns = task.oracle_critic(), settings.accept_probability, settings.inference_turns
    generator = ModelGenerator(
        model.eval(),
        tokenizer,
        max_prompt_length=settings.max_prompt_length,
        max_new_tokens=settings.max_new_tokens,
        batch_size=64,
    )
    times: dict[str, list[float]] = defaultdict(list)
    cpu_times: dict[str, list[float]] = defaultdict(list)
    generated: dict[str, int] = {}
    for repeat in range(settings.inference_repeats):
        for name, mode in (("early_stopping", "coin"), ("all_turns", "never")):
            critic = CountingCritic(oracle, mode, p, seed=seed + repeat)
            start, cpu_start = time.perf_counter(), time.process_time()
            traces = refine(generator, critic, prompts, references=references, max_turns=turns)
            times[name].append(time.perf_counter() - start)
            cpu_times[name].append(time.process_time() - cpu_start)
            generated[name] = sum(len(t.hypotheses) for t in traces)
    result: dict[str, Any] = {
        name: {
            "seconds": median(values),
            "cpu_seconds": median(cpu_times[name]),
            "prompts_generated": generated[name],
        }
        for name, values in times.items()
    }
    result["speedup"] = result["all_turns"]["seconds"] / result["early_stopping"]["seconds"]
    result["cpu_speedup"] = result["all_turns"]["cpu_seconds"] / result["early_stopping"]["cpu_seconds"]
    return result
