"""Step-cost benchmark: where a REFINER training step spends its time, and how close it is to its model calls.

On a small model (about 10M parameters, seq2seq and causal, random weights built from a config) with the lengths of
the MWP data (the release's when present, else synthetic), measured in one process on one machine:

1. **Breakdown** for k in `--ks` and T in `--turns`: the step time (from the Trainer's `on_step_begin` to its
   `on_step_end`) split into generate, critique, forward, backward, optimizer and everything else, and the
   **overhead** = step time / (generate + critique + forward + backward + optimizer): what the step costs beyond
   its model calls and the critic. The parts are the trainer's own logs (`time/generate`, `time/critique`,
   `time/forward`, `time/forward_backward`, `time/step`) and a callback around `optimizer.step()`.
2. **Comparisons** at one (k, T): REFINER's step against a supervised step on the same model and batch
   (`supervised.train_supervised`: TRL's SFTTrainer for causal models, transformers' Seq2SeqTrainer for
   encoder-decoders), and against a per-example loop (a `RefinerTrainer` subclass, written here, whose exploration
   generates, picks, critiques and builds the refine prompt one example at a time, as the authors' code does), and
   against itself with `explore_last_turn=True` (sampling and critiquing in the last turn too, for its logs only).
3. **Inference**: `refine` with early stopping against running all T turns for all examples, with a function
   generator that is right with probability p and the oracle critic (work counted), and with the model (greedy)
   and a critic that accepts with probability p (time measured).

Every number is a median over `--repeats` measured steps (after `--warmup` unmeasured ones).

    python benchmarks/step_cost.py --quick          # about a minute; CI runs it
    python benchmarks/step_cost.py --threads 1      # the full run (docs/benchmarks.md has its numbers)
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import _common
import step_cost_smollm2
import torch
from _common import markdown_table, median
from transformers import TrainerCallback

ARCHITECTURES = ("seq2seq", "causal")
PARTS = ("generate", "critique", "forward", "backward", "optimizer", "other")
MODEL_PARTS = ("generate", "critique", "forward", "backward", "optimizer")


@dataclass
class Settings:
    """Sizes of the step-cost run; `--quick` and the full run differ only here."""

    hidden_size: int = 256
    seq2seq_layers: int = 4
    causal_layers: int = 8
    vocab_size: int = 2000
    batch_size: int = 8
    ks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    turns: list[int] = field(default_factory=lambda: [1, 2, 3])
    compare_k: int = 4
    compare_turns: int = 3
    warmup: int = 1
    repeats: int = 3
    max_new_tokens: int | None = None  # None: the 95th percentile of the gold completions' lengths, EOS included
    inference_rows: int = 32
    inference_turns: int = 3
    accept_probability: float = 0.5
    inference_repeats: int = 3
    max_prompt_length: int = 320


QUICK = Settings(
    hidden_size=32,
    seq2seq_layers=1,
    causal_layers=1,
    vocab_size=400,
    batch_size=2,
    ks=[1, 2],
    turns=[1, 2],
    compare_k=2,
    compare_turns=2,
    warmup=1,
    repeats=2,
    max_new_tokens=8,
    inference_rows=8,
    inference_repeats=2,
)


# ------------------------------------------------------------------------------------------------ measurement


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (`on_step_begin` -> `on_step_end`), its CPU time (this process), and the wall
    time of `optimizer.step()` within it.

    With one torch thread, a step's CPU time is close to the wall time it would take on a quiet machine, so it is
    the steadier number on a CPU shared with other jobs.
    """

    def __init__(self) -> None:
        self.steps: dict[int, float] = {}
        self.cpu: dict[int, float] = {}
        self.optimizer: dict[int, float] = {}
        self._step_start = self._cpu_start = self._optimizer_start = 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._step_start, self._cpu_start = time.perf_counter(), time.process_time()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._optimizer_start = time.perf_counter()

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.optimizer[state.global_step + 1] = time.perf_counter() - self._optimizer_start

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.steps[state.global_step] = time.perf_counter() - self._step_start
        self.cpu[state.global_step] = time.process_time() - self._cpu_start


def _train(trainer: Any, timer: StepTimer) -> Any:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(timer)
    trainer.train()
    return trainer


def step_parts(trainer: Any, timer: StepTimer, warmup: int) -> dict[str, Any]:
    """Medians over the measured steps of the step time, its parts, and the overhead ratio."""
    logs = {entry["step"]: entry for entry in trainer.state.log_history if "time/step" in entry}
    per_step: dict[str, list[float]] = defaultdict(list)
    for step, total in sorted(timer.steps.items()):
        if step <= warmup or step not in logs:
            continue
        log = logs[step]
        parts = {
            "generate": log["time/generate"],
            "critique": log["time/critique"],
            "forward": log["time/forward"],
            "backward": log["time/forward_backward"] - log["time/forward"],
            "optimizer": timer.optimizer.get(step, 0.0),
        }
        parts["other"] = total - sum(parts.values())
        for name, value in parts.items():
            per_step[name].append(value)
        per_step["step"].append(total)
        per_step["step_cpu"].append(timer.cpu[step])
        per_step["model_calls"].append(sum(parts[name] for name in MODEL_PARTS))
        per_step["overhead"].append(total / per_step["model_calls"][-1])
        # "other", split: inside the trainer's training_step (tokenizing, picks, prompts) and outside it (clipping,
        # scheduler, zero_grad, callbacks).
        per_step["other_in_training_step"].append(
            log["time/step"] - parts["generate"] - parts["critique"] - log["time/forward_backward"]
        )
        per_step["other_outside_training_step"].append(total - log["time/step"] - parts["optimizer"])
    return {name: median(values) for name, values in per_step.items()} | {"measured_steps": len(per_step["step"])}


def supervised_step(model: Any, tokenizer: Any, rows: Any, settings: Settings, seed: int, scratch: str) -> dict:
    """Median step time of `train_supervised` (SFTTrainer / Seq2SeqTrainer) on the same model and batch."""
    from refiner_trl.supervised import SupervisedConfig, train_supervised

    timer = StepTimer()
    args = SupervisedConfig(**_trainer_args(settings, scratch, seed))
    trainer = _train(train_supervised(model, tokenizer, rows, args, train=False), timer)
    steps = [t for step, t in sorted(timer.steps.items()) if step > settings.warmup]
    cpu = [t for step, t in sorted(timer.cpu.items()) if step > settings.warmup]
    optimizer = [t for step, t in sorted(timer.optimizer.items()) if step > settings.warmup]
    return {
        "trainer": type(trainer).__name__,
        "step": median(steps),
        "step_cpu": median(cpu),
        "optimizer": median(optimizer),
        "measured_steps": len(steps),
    }


def _trainer_args(settings: Settings, scratch: str, seed: int) -> dict[str, Any]:
    return {
        "output_dir": scratch,
        "per_device_train_batch_size": settings.batch_size,
        "max_steps": settings.warmup + settings.repeats,
        "learning_rate": 1e-4,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": seed,
        "max_prompt_length": settings.max_prompt_length,
        "max_completion_length": 64,
        "dataloader_drop_last": True,
    }


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


def refiner_step(
    trainer_class: type,
    model: Any,
    tokenizer: Any,
    rows: Any,
    critic: Any,
    settings: Settings,
    k: int,
    turns: int,
    seed: int,
    scratch: str,
    **config: Any,
) -> dict[str, Any]:
    """Train `warmup + repeats` REFINER steps (`config`: more `RefinerConfig` fields) and return `step_parts`."""
    from refiner_trl import RefinerConfig

    timer = StepTimer()
    args = RefinerConfig(
        **_trainer_args(settings, scratch, seed),
        num_hypotheses=k,
        num_refinement_turns=turns,
        max_new_tokens=settings.max_new_tokens,
        **config,
    )
    trainer = trainer_class(model, args, critic=critic, train_dataset=rows, processing_class=tokenizer)
    return step_parts(_train(trainer, timer), timer, settings.warmup)


# -------------------------------------------------------------------------------------------------- inference


class RightWithProbability:
    """A function generator that writes the gold completion with probability p, else a perturbed one."""

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
        inner: the critic whose feedback texts are returned (e.g. the oracle).
        mode: `"inner"` (the inner critic's verdicts), `"coin"` (accept with probability `p`, else the inner critic's
            text) or `"never"` (never accept: every example runs all turns).
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
    """`refine` with early stopping against all T turns for all examples, two ways (see the module docstring)."""
    from refiner_trl import ModelGenerator, refine

    prompts, references = list(rows["prompt"]), list(rows["completion"])
    oracle, p, turns = task.oracle_critic(), settings.accept_probability, settings.inference_turns
    result: dict[str, Any] = {"rows": len(prompts), "turns": turns, "p": p}

    # 1. A function generator right with probability p, and the oracle: the work each way, counted.
    work = {}
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
    result["function_generator"] = work

    # 2. The model, greedy, with a critic that accepts with probability p: time, median over repeats.
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
    model_result: dict[str, Any] = {
        name: {
            "seconds": median(values),
            "cpu_seconds": median(cpu_times[name]),
            "prompts_generated": generated[name],
        }
        for name, values in times.items()
    }
    model_result["speedup"] = model_result["all_turns"]["seconds"] / model_result["early_stopping"]["seconds"]
    model_result["cpu_speedup"] = (
        model_result["all_turns"]["cpu_seconds"] / model_result["early_stopping"]["cpu_seconds"]
    )
    result["model_generator"] = model_result
    return result


# ------------------------------------------------------------------------------------------------------- main


def build(architecture: str, settings: Settings, seed: int) -> tuple[Any, Any, Any, Any, str, int]:
    """The task, the training rows, a tokenizer trained on them, the model, the data source, and max_new_tokens."""
    from refiner_trl.modeling import build_tiny_model, train_tokenizer

    task, train, _, source = _common.task_data("mwp", _DATA_DIR, 2000, 16, None)
    train = train.select_columns(["prompt", "completion"])
    tokenizer = train_tokenizer(task.tokenizer_texts(train), vocab_size=settings.vocab_size)
    layers = settings.seq2seq_layers if architecture == "seq2seq" else settings.causal_layers
    model = build_tiny_model(architecture, tokenizer, hidden_size=settings.hidden_size, num_layers=layers, seed=seed)
    completions = tokenizer(list(train["completion"]), add_special_tokens=False)["input_ids"]
    lengths = sorted(len(ids) + 1 for ids in completions)
    p95 = lengths[int(0.95 * (len(lengths) - 1))]
    return task, train, tokenizer, model, source, settings.max_new_tokens or p95


_DATA_DIR: Path | None = _common.DEFAULT_DATA_DIR


def run(settings: Settings, architectures: Sequence[str], seed: int) -> dict[str, Any]:
    """Every measurement, for each architecture."""
    from refiner_trl import RefinerTrainer

    results: dict[str, Any] = {}
    per_example = per_example_trainer_class()
    before_class = step_cost_smollm2.variant_class(RefinerTrainer, shared=False, grouped=False)
    for architecture in architectures:
        task, train, tokenizer, model, source, max_new_tokens = build(architecture, settings, seed)
        arch_settings = replace(settings, max_new_tokens=max_new_tokens)
        rows = train.shuffle(seed=seed).select(range(settings.batch_size * (settings.warmup + settings.repeats)))
        prompt_tokens = [len(ids) for ids in tokenizer(list(rows["prompt"]))["input_ids"]]
        entry: dict[str, Any] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "data": source,
            "max_new_tokens": max_new_tokens,
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
            "grid": [],
        }
        print(
            f"{architecture}: {entry['parameters'] / 1e6:.2f}M parameters, max_new_tokens={max_new_tokens}", flush=True
        )
        oracle = task.oracle_critic()
        with tempfile.TemporaryDirectory() as scratch:
            for turns in settings.turns:
                for k in settings.ks:
                    parts = refiner_step(
                        RefinerTrainer, copy.deepcopy(model), tokenizer, rows, oracle, arch_settings, k, turns, seed,
                        scratch,
                    )  # fmt: skip
                    entry["grid"].append({"k": k, "turns": turns, **parts})
                    print(
                        f"  k={k} T={turns}: step {parts['step']:.3f} s, overhead {parts['overhead']:.3f}",
                        flush=True,
                    )
            k, turns = settings.compare_k, settings.compare_turns
            refiner = refiner_step(
                RefinerTrainer, copy.deepcopy(model), tokenizer, rows, oracle, arch_settings, k, turns, seed, scratch
            )
            loop = refiner_step(
                per_example, copy.deepcopy(model), tokenizer, rows, oracle, arch_settings, k, turns, seed, scratch
            )
            before = refiner_step(
                before_class, copy.deepcopy(model), tokenizer, rows, oracle, arch_settings, k, turns, seed, scratch
            )
            last_turn = refiner_step(
                RefinerTrainer, copy.deepcopy(model), tokenizer, rows, oracle, arch_settings, k, turns, seed, scratch,
                explore_last_turn=True,
            )  # fmt: skip
            supervised = supervised_step(copy.deepcopy(model), tokenizer, rows, arch_settings, seed, scratch)
        entry["comparison"] = {
            "k": k,
            "turns": turns,
            "refiner": refiner,
            "per_example_loop": loop,
            "before": before,
            "before_over_refiner": before["step"] / refiner["step"],
            "before_over_refiner_cpu": before["step_cpu"] / refiner["step_cpu"],
            "explore_last_turn": last_turn,
            "supervised": supervised,
            "refiner_over_supervised": refiner["step"] / supervised["step"],
            "per_example_over_refiner": loop["step"] / refiner["step"],
            "refiner_over_supervised_cpu": refiner["step_cpu"] / supervised["step_cpu"],
            "per_example_over_refiner_cpu": loop["step_cpu"] / refiner["step_cpu"],
            "explore_last_turn_over_refiner": last_turn["step"] / refiner["step"],
            "explore_last_turn_over_refiner_cpu": last_turn["step_cpu"] / refiner["step_cpu"],
        }
        print(
            f"  k={k} T={turns}: REFINER {refiner['step']:.3f} s, per-example loop {loop['step']:.3f} s, "
            f"before the speed-ups {before['step']:.3f} s, {supervised['trainer']} {supervised['step']:.3f} s",
            flush=True,
        )
        inference_rows = train.shuffle(seed=seed + 1).select(range(settings.inference_rows))
        entry["inference"] = inference_cost(task, model, tokenizer, inference_rows, arch_settings, seed)
        results[architecture] = entry
    return results


def _cpu(value: dict[str, Any], key: str = "step_cpu") -> str:
    return f"{value[key]:.3f}" if key in value else "–"


def format_markdown(data: dict[str, Any]) -> str:
    """The tables of `step_cost.md`."""
    settings, results = data["settings"], data.get("results", {})
    lines = [
        "# Step-cost benchmark",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Machine: {_common.machine_line(data['machine'])}. Wall time: {data['wall_seconds'] / 60:.1f} min.",
        "",
        f"Batch {settings['batch_size']} MWP prompts, oracle critic; tiny models have random weights (so every "
        f"sampled hypothesis runs to max_new_tokens). Medians over {settings['repeats']} steps after "
        f"{settings['warmup']} warm-up step(s) (SmolLM2: over 2 after 1). Times in seconds. `step` is wall time from "
        "the Trainer's `on_step_begin` to its `on_step_end`, `step CPU` the process's CPU time over the same span "
        "(with one torch thread, close to the wall time on a quiet machine); overhead = step / (generate + critique "
        "+ forward + backward + optimizer), all wall times of the same step.",
        "",
    ]
    if "smollm2" in data:
        lines += step_cost_smollm2.format_markdown(data["smollm2"])
    for architecture, entry in results.items():
        lines += [
            f"## {architecture}: {entry['parameters'] / 1e6:.2f}M parameters, max_new_tokens "
            f"{entry['max_new_tokens']}, mean prompt {entry['mean_prompt_tokens']:.0f} tokens",
            "",
        ]
        header = ["k", "T", "k·T", "step", "step CPU", *PARTS, "overhead"]
        rows = [
            [
                g["k"],
                g["turns"],
                g["k"] * g["turns"],
                f"{g['step']:.3f}",
                _cpu(g),
                *[f"{g[p]:.3f}" for p in PARTS],
                f"{g['overhead']:.3f}",
            ]
            for g in entry["grid"]
        ]
        worst = max(g["overhead"] for g in entry["grid"])
        lines += [
            markdown_table(header, rows),
            "",
            f"Largest overhead: {worst:.3f} (target ≤ 1.10: {'met' if worst <= 1.10 else 'missed'}).",
            "",
        ]
        c = entry["comparison"]
        r, sup, loop = c["refiner"], c["supervised"], c["per_example_loop"]
        last_turn = c.get("explore_last_turn")

        def ratio(key: str, c: dict[str, Any] = c) -> str:
            return f"{c[key]:.2f}" if key in c else "–"

        lines += [
            f"Same model and batch, k={c['k']}, T={c['turns']}:",
            "",
            markdown_table(
                ["trainer", "step", "step CPU", "generate", "overhead", "ratio (wall)", "ratio (CPU)"],
                [
                    ["RefinerTrainer", f"{r['step']:.3f}", _cpu(r), f"{r['generate']:.3f}", f"{r['overhead']:.3f}"]
                    + ["1", "1"],
                    [f"{sup['trainer']} (`train_supervised`)", f"{sup['step']:.3f}", _cpu(sup), "–", "–"]
                    + [
                        f"REFINER / supervised = {c['refiner_over_supervised']:.2f}",
                        ratio("refiner_over_supervised_cpu"),
                    ],
                    [
                        "per-example loop (authors' style)",
                        f"{loop['step']:.3f}",
                        _cpu(loop),
                        f"{loop['generate']:.3f}",
                        f"{loop['overhead']:.3f}",
                        f"per-example / REFINER = {c['per_example_over_refiner']:.2f}",
                        ratio("per_example_over_refiner_cpu"),
                    ],
                    *(
                        [
                            [
                                "RefinerTrainer before the speed-ups (unshared prefill, one padded forward)",
                                f"{c['before']['step']:.3f}",
                                _cpu(c["before"]),
                                f"{c['before']['generate']:.3f}",
                                f"{c['before']['overhead']:.3f}",
                                f"before / REFINER = {c['before_over_refiner']:.2f}",
                                ratio("before_over_refiner_cpu"),
                            ]
                        ]
                        if "before" in c
                        else []
                    ),
                    *(
                        [
                            [
                                "RefinerTrainer, `explore_last_turn=True`",
                                f"{last_turn['step']:.3f}",
                                _cpu(last_turn),
                                f"{last_turn['generate']:.3f}",
                                f"{last_turn['overhead']:.3f}",
                                f"last turn explored / REFINER = {c['explore_last_turn_over_refiner']:.2f}",
                                ratio("explore_last_turn_over_refiner_cpu"),
                            ]
                        ]
                        if last_turn
                        else []
                    ),
                ],
            ),
            "",
        ]
        inference = entry["inference"]
        work, timed = inference["function_generator"], inference["model_generator"]
        early, full = timed["early_stopping"], timed["all_turns"]
        lines += [
            f"Inference (`refine`), {inference['rows']} prompts, T={inference['turns']}, p={inference['p']}:",
            "",
            markdown_table(
                ["generator", "early stopping", "all T turns", "all / early"],
                [
                    [
                        "function, right with prob. p, + oracle: texts generated",
                        work["early_stopping"]["prompts_generated"],
                        work["all_turns"]["prompts_generated"],
                        f"{work['generated_ratio']:.2f} (expected {work['expected_generated_ratio']:.2f})",
                    ],
                    [
                        "model (greedy) + critic accepting with prob. p: texts generated",
                        early["prompts_generated"],
                        full["prompts_generated"],
                        f"{full['prompts_generated'] / early['prompts_generated']:.2f}",
                    ],
                    [
                        "model (greedy) + critic accepting with prob. p: wall seconds",
                        f"{early['seconds']:.3f}",
                        f"{full['seconds']:.3f}",
                        f"{timed['speedup']:.2f}",
                    ],
                    [
                        "model (greedy) + critic accepting with prob. p: CPU seconds",
                        _cpu(early, "cpu_seconds"),
                        _cpu(full, "cpu_seconds"),
                        f"{timed['cpu_speedup']:.2f}" if "cpu_speedup" in timed else "–",
                    ],
                ],
            ),
            "",
        ]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> Path:
    """Step time (wall and CPU) against k·T, one line per architecture and T; and the parts of each step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = dict(data.get("results", {}))
    if "smollm2" in data:
        results["SmolLM2"] = {"grid": step_cost_smollm2.after_grid(data["smollm2"])}
    figure, axes = plt.subplots(1, 2 + len(results), figsize=(3.6 * (2 + len(results)), 3.4), dpi=80)
    markers = {1: "o", 2: "s", 3: "^", 4: "D"}
    for axis, key, title in ((axes[0], "step", "step wall time (s)"), (axes[1], "step_cpu", "step CPU time (s)")):
        for architecture, entry in results.items():
            by_turns: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for g in entry["grid"]:
                by_turns[g["turns"]].append(g)
            for turns, grid in sorted(by_turns.items()):
                grid = sorted(grid, key=lambda g: g["k"])
                axis.plot(
                    [g["k"] * turns for g in grid],
                    [g.get(key, float("nan")) for g in grid],
                    marker=markers.get(turns, "x"),
                    linestyle="-" if architecture == "seq2seq" else "--",
                    label=f"{architecture}, T={turns}",
                )
        axis.set_xlabel("k · T (k · (T−1) samples per example)", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    for axis, (architecture, entry) in zip(axes[2:], results.items()):
        grid = entry["grid"]
        bottom = [0.0] * len(grid)
        for part in PARTS:
            values = [max(g[part], 0.0) for g in grid]
            axis.bar(range(len(grid)), values, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, values)]
        axis.set_xticks(range(len(grid)))
        axis.set_xticklabels([f"{g['k']},{g['turns']}" for g in grid], fontsize=6, rotation=90)
        axis.set_xlabel("k, T")
        axis.set_title(f"{architecture}: parts of a step (wall s)", fontsize=9)
        axis.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, "outputs/benchmarks/step_cost", (0,))
    parser.add_argument("--architectures", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument("--data-dir", default=str(_common.DEFAULT_DATA_DIR), help="'none': synthetic MWP rows.")
    parser.add_argument(
        "--render", metavar="JSON", default=None, help="Only write the markdown and plot of an earlier run's JSON."
    )
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=("tiny", "smollm2"),
        default=["tiny"],
        help="tiny: the ~10M-parameter models; smollm2: SmolLM2-135M-Instruct (see --smollm2-path).",
    )
    parser.add_argument(
        "--smollm2-path",
        default=None,
        help="A SmolLM2 model folder; default: the fetch command's cache folder, fetched when it is not there.",
    )
    parser.add_argument(
        "--resume", action="store_true", help="Keep the sections and SmolLM2 cells of the output dir's JSON."
    )
    for f in fields(Settings):
        name = f"--{f.name.replace('_', '-')}"
        if f.name in ("ks", "turns"):
            parser.add_argument(name, type=int, nargs="+", default=None, help=f"Override {f.name}.")
        else:
            kind = float if f.name == "accept_probability" else int
            parser.add_argument(name, type=kind, default=None, help=f"Override {f.name}.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    global _DATA_DIR
    args = parse_args(argv)
    if args.render:
        return render(Path(args.render), Path(args.output_dir))
    _common.quiet()
    threads = _common.set_threads(args.threads)
    _DATA_DIR = None if args.data_dir.lower() == "none" else Path(args.data_dir)
    settings = replace(QUICK) if args.quick else Settings()
    overrides = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name) is not None}
    settings = replace(settings, **overrides)
    seeds = args.seeds or [0]
    output_dir = Path(args.output_dir)
    started = time.perf_counter()
    json_path = output_dir / "step_cost.json"
    import json

    earlier = json.loads(json_path.read_text(encoding="utf-8")) if args.resume and json_path.is_file() else {}
    data: dict[str, Any] = {
        "benchmark": "step_cost",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "machine": _common.machine_info(threads),
        "settings": asdict(settings),
        "seed": seeds[0],
    }
    if len(seeds) > 1:
        print(f"step_cost uses one seed (the model and batch); using {seeds[0]}", flush=True)
    earlier_seconds = earlier.get("wall_seconds") or 0.0

    def save() -> None:
        data["wall_seconds"] = earlier_seconds + time.perf_counter() - started
        _common.write_json(json_path, data)

    if "tiny" in args.sections:
        data["results"] = earlier.get("results") or run(settings, args.architectures, seeds[0])
        save()
    if "smollm2" in args.sections:
        from refiner_trl.pretrained import fetch

        path = fetch("smollm2-135m-instruct") if args.smollm2_path is None else Path(args.smollm2_path)
        if not (path / "config.json").is_file():
            raise SystemExit(f"--smollm2-path {path}: no model folder there (no config.json)")
        data["smollm2"] = earlier.get("smollm2", {})
        step_cost_smollm2.run(
            path, step_cost_smollm2.settings_for(settings), seeds[0], _DATA_DIR, data["smollm2"], save
        )
    save()
    return render(json_path, output_dir)


def render(json_path: Path, output_dir: Path) -> dict[str, Any]:
    """Write `step_cost.md` and `step_cost.png` into `output_dir` from a run's JSON, and print the tables."""
    import json

    data = json.loads(json_path.read_text(encoding="utf-8"))
    output_dir.mkdir(parents=True, exist_ok=True)
    markdown = format_markdown(data)
    (output_dir / "step_cost.md").write_text(markdown, encoding="utf-8")
    plot(data, output_dir / "step_cost.png")
    print()
    print(markdown)
    print(f"Written to {output_dir}/step_cost.{{json,md,png}}", flush=True)
    return data


if __name__ == "__main__":
    main()
