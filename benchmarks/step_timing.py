"""Timing training steps: a callback around each optimizer step, the parts of a REFINER step from the trainer's logs,
and the REFINER and supervised steps measured on the same model and batch (the step-cost benchmark's unit)."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from _common import train_quietly
from _measurements import median
from transformers import TrainerCallback

if TYPE_CHECKING:
    from step_cost import Settings

PARTS = ("generate", "critique", "forward", "backward", "optimizer", "other")
MODEL_PARTS = ("generate", "critique", "forward", "backward", "optimizer")


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


def step_parts(trainer: Any, timer: StepTimer, warmup: int) -> dict[str, Any]:
    """Medians over the measured steps of the step time, its parts, and the overhead ratio.

    Args:
        trainer (`RefinerTrainer`):
            A trained trainer (its `time/*` logs give the parts).
        timer (`StepTimer`):
            The callback that timed its steps.
        warmup (`int`):
            The first steps, left out.
    """
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


def trainer_args(settings: Settings, scratch: str, seed: int) -> dict[str, Any]:
    """The training arguments shared by every measured trainer: `warmup + repeats` steps, logged at each.

    Args:
        settings (`Settings`):
            The step-cost sizes.
        scratch (`str`):
            The trainers' output folder (nothing is saved).
        seed (`int`):
            The seed.
    """
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


def supervised_step(model: Any, tokenizer: Any, rows: Any, settings: Settings, seed: int, scratch: str) -> dict:
    """Median step time of `train_supervised` (SFTTrainer / Seq2SeqTrainer) on the same model and batch.

    Args:
        model (`PreTrainedModel`):
            The model (trained in place: pass a copy).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        rows (`Dataset`):
            Prompt-completion rows, `batch_size * (warmup + repeats)` of them.
        settings (`Settings`):
            The step-cost sizes.
        seed (`int`):
            The seed.
        scratch (`str`):
            The trainer's output folder.
    """
    from refiner_trl.supervised import SupervisedConfig, train_supervised

    timer = StepTimer()
    args = SupervisedConfig(**trainer_args(settings, scratch, seed))
    trainer = train_quietly(train_supervised(model, tokenizer, rows, args, train=False), timer)
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
    """Train `warmup + repeats` REFINER steps and return their [`step_parts`].

    Args:
        trainer_class (`type`):
            `RefinerTrainer` or one of its variants (`trainer_variants`).
        model (`PreTrainedModel`):
            The model (trained in place: pass a copy).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        rows (`Dataset`):
            Prompt-completion rows.
        critic (`Critic`):
            The critic of the exploration.
        settings (`Settings`):
            The step-cost sizes (`max_new_tokens` among them).
        k (`int`):
            `num_hypotheses`.
        turns (`int`):
            `num_refinement_turns`.
        seed (`int`):
            The seed.
        scratch (`str`):
            The trainer's output folder.
        **config:
            More `RefinerConfig` fields.
    """
    from refiner_trl import RefinerConfig

    timer = StepTimer()
    args = RefinerConfig(
        **trainer_args(settings, scratch, seed),
        num_hypotheses=k,
        num_refinement_turns=turns,
        max_new_tokens=settings.max_new_tokens,
        **config,
    )
    trainer = trainer_class(model, args, critic=critic, train_dataset=rows, processing_class=tokenizer)
    return step_parts(train_quietly(trainer, timer), timer, settings.warmup)
