"""One pipeline of the learning benchmark, for one (task, architecture, seed): data, tiny tokenizer and generator,
warm start, the baseline's and REFINER's extra steps from the same weights, a tiny critic, and the evaluation
(`learning_evaluation`).

`run_pipeline` returns the pipeline's record, which `learning_report` aggregates over seeds and writes up.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _common
from _measurements import Stopwatch
from learning_evaluation import evaluate

if TYPE_CHECKING:
    from learning import Settings


class Phases:
    """The wall and CPU seconds of each phase of a pipeline, printed as each phase ends.

    Args:
        name (`str`):
            The pipeline, as printed (`task/architecture/seed N`).
    """

    def __init__(self, name: str):
        self.name = name
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def time(self, phase: str) -> Iterator[None]:
        """`with phases.time("warm_start"): ...` records and prints the phase's seconds.

        Args:
            phase (`str`):
                The phase's name (a key of the record's `seconds` and `cpu_seconds`).
        """
        with Stopwatch() as watch:
            yield
        self.seconds[phase], self.cpu_seconds[phase] = watch.seconds, watch.cpu_seconds
        print(f"    {self.name}: {phase} {watch.seconds:.0f} s (CPU {watch.cpu_seconds:.0f} s)", flush=True)


def _trainer_args(settings: Settings, output_dir: str, steps: int, seed: int, warmup: int = 0) -> dict[str, Any]:
    return {
        "output_dir": output_dir,
        "per_device_train_batch_size": settings.batch_size,
        "per_device_eval_batch_size": 64,
        "max_steps": steps,
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": "constant_with_warmup" if warmup else "constant",
        "warmup_steps": warmup,
        "logging_steps": max(1, steps // 10),
        "report_to": [],
        "save_strategy": "no",
        "disable_tqdm": True,
        "seed": seed,
        "data_seed": seed,
        "max_prompt_length": settings.max_prompt_length,
        "max_completion_length": 64,
    }


def _final_loss(log_history: list[dict[str, Any]]) -> float:
    losses = [entry["loss"] for entry in log_history if "loss" in entry]
    return float(losses[-1]) if losses else float("nan")


def _refiner_training_summary(log_history: list[dict[str, Any]], turns: int) -> dict[str, Any]:
    """Per-turn losses and the share of picked samples the oracle accepted, first and last logged window."""
    entries = [entry for entry in log_history if "turn_0/loss" in entry]
    if not entries:
        return {}
    summary: dict[str, Any] = {}
    for name, entry in (("first", entries[0]), ("last", entries[-1])):
        summary[name] = {
            "step": entry.get("step"),
            **{f"turn_{t}/loss": entry.get(f"turn_{t}/loss") for t in range(turns)},
            **{f"turn_{t}/no_error": entry.get(f"turn_{t}/no_error") for t in range(turns)},
        }
    return summary


def run_pipeline(
    task_name: str, architecture: str, seed: int, settings: Settings, data_dir: Path | None, threads: int | None
) -> dict[str, Any]:
    """Warm start, baseline, REFINER, critic and evaluation for one (task, architecture, seed); returns the record.

    Args:
        task_name (`str`):
            `"mwp"` or `"snlr"`.
        architecture (`str`):
            `"seq2seq"` or `"causal"`.
        seed (`int`):
            The seed of the models, the data order and the critic data.
        settings (`Settings`):
            The sizes and steps.
        data_dir (`Path`, *optional*):
            The release's data; `None`: synthetic rows.
        threads (`int`, *optional*):
            torch threads of this process.
    """
    _common.quiet()
    _common.set_threads(threads)
    from refiner_trl.templates import CRITIC_INPUT_TEMPLATE

    started, cpu_started = time.perf_counter(), time.process_time()
    phases = Phases(f"{task_name}/{architecture}/seed {seed}")
    task, train, evaluation, source = _common.task_data(
        task_name, data_dir, settings.synthetic_train, settings.synthetic_eval, settings.max_eval
    )
    train = train.select_columns(["prompt", "completion"])
    critic_train = task.build_critic_dataset(train, seed=seed).select_columns(["prompt", "completion"])
    critic_heldout = task.build_critic_dataset(evaluation, seed=seed + 1)
    critic_heldout = critic_heldout.select(range(min(settings.critic_eval_rows, len(critic_heldout))))

    with phases.time("tokenizer_and_model"):
        texts = task.tokenizer_texts(train) + [CRITIC_INPUT_TEMPLATE.format(prompt="", hypothesis="")] * 20
        generator, tokenizer = _common.tiny_model(
            architecture, texts, settings.vocab_size, settings.hidden_size, settings.num_layers, seed
        )
        # Room for the gold completions: at least their 99th percentile in tokens (a longer one decodes cut off).
        max_new_tokens = max(settings.max_new_tokens, _common.completion_length(tokenizer, train["completion"], 0.99))
    models, training = train_models(
        architecture, generator, tokenizer, task, train, critic_train, settings, seed, max_new_tokens, phases
    )
    with phases.time("evaluation"):
        evaluated = evaluate(task, models, tokenizer, train, evaluation, critic_heldout, settings, max_new_tokens)
    phases.seconds["total"] = time.perf_counter() - started
    phases.cpu_seconds["total"] = time.process_time() - cpu_started
    return {
        "task": task_name,
        "architecture": architecture,
        "seed": seed,
        "data": source,
        "num_train": len(train),
        "num_eval": len(evaluation),
        "max_new_tokens": max_new_tokens,
        "primary_metric": task.metrics[0],
        "parameters": {
            "generator": sum(p.numel() for p in generator.parameters()),
            "critic": sum(p.numel() for p in models["critic"].parameters()),
        },
        "steps": {
            "warm_start": settings.warm_steps,
            "baseline_total": settings.warm_steps + settings.refiner_steps,
            "refiner_total": settings.warm_steps + settings.refiner_steps,
            "critic": settings.critic_steps,
        },
        "results": evaluated["results"],
        "critic_heldout": evaluated["critic_heldout"],
        "critic_on_refiner_turn0": evaluated["critic_on_refiner_turn0"],
        "training": training,
        "examples_trained_critic": evaluated["examples_trained_critic"],
        "seconds": phases.seconds,
        "cpu_seconds": phases.cpu_seconds,
    }


def train_models(
    architecture: str,
    generator: Any,
    tokenizer: Any,
    task: Any,
    train: Any,
    critic_train: Any,
    settings: Settings,
    seed: int,
    max_new_tokens: int,
    phases: Phases,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The warm start (of `generator`, in place), then from its weights the baseline's supervised steps and
    REFINER's steps with the oracle critic, and a tiny critic trained on the critic data.

    Args:
        architecture (`str`):
            The architecture of the critic too.
        generator (`PreTrainedModel`):
            The tiny generator, untrained.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer (the critic's too).
        task (`Task`):
            The task (its oracle critic).
        train (`Dataset`):
            Prompt-completion training rows.
        critic_train (`Dataset`):
            The critic's prompt-completion rows.
        settings (`Settings`):
            The sizes and steps.
        seed (`int`):
            The seed of every phase.
        max_new_tokens (`int`):
            REFINER's sampling length.
        phases (`Phases`):
            Times each phase.

    Returns:
        `(models, training)`: the trained `baseline`, `refiner` and `critic` models, and the final losses and
        REFINER's per-turn logs.
    """
    from transformers import set_seed

    from refiner_trl import RefinerConfig, RefinerTrainer
    from refiner_trl.modeling import build_tiny_model
    from refiner_trl.supervised import SupervisedConfig, train_supervised

    with tempfile.TemporaryDirectory() as scratch:

        def supervised(model: Any, rows: Any, steps: int, warmup: int = 0) -> Any:
            args = SupervisedConfig(**_trainer_args(settings, scratch, steps, seed, warmup=warmup))
            return _common.train_quietly(train_supervised(model, tokenizer, rows, args, train=False))

        set_seed(seed)
        with phases.time("warm_start"):
            warm = supervised(generator, train, settings.warm_steps, warmup=min(20, settings.warm_steps // 5))
        baseline, refiner_model = copy.deepcopy(generator), copy.deepcopy(generator)
        set_seed(seed)
        with phases.time("baseline_extra_steps"):
            more = supervised(baseline, train, settings.refiner_steps)
        set_seed(seed)
        with phases.time("refiner"):
            refiner_args = RefinerConfig(
                **_trainer_args(settings, scratch, settings.refiner_steps, seed),
                num_hypotheses=settings.num_hypotheses,
                num_refinement_turns=settings.num_refinement_turns,
                max_new_tokens=max_new_tokens,
                explore_last_turn=True,  # for the last turn's no_error log; the loss is defined the same without it
            )
            trainer = _common.train_quietly(
                RefinerTrainer(
                    refiner_model,
                    refiner_args,
                    critic=task.oracle_critic(),
                    train_dataset=train,
                    processing_class=tokenizer,
                )
            )
        set_seed(seed)
        with phases.time("critic"):
            size = {"hidden_size": settings.hidden_size, "num_layers": settings.num_layers}
            critic_model = build_tiny_model(architecture, tokenizer, seed=seed + 1000, **size)
            critic_trainer = supervised(
                critic_model, critic_train, settings.critic_steps, warmup=min(20, settings.critic_steps // 5)
            )
    training = {
        "warm_start_final_loss": _final_loss(warm.state.log_history),
        "baseline_final_loss": _final_loss(more.state.log_history),
        "critic_final_loss": _final_loss(critic_trainer.state.log_history),
        "refiner": _refiner_training_summary(trainer.state.log_history, settings.num_refinement_turns),
    }
    return {"baseline": baseline, "refiner": refiner_model, "critic": critic_model}, training
