"""The training phases of the pretrained-model benchmark: warm starts, baselines, REFINER arms and critics, each saved
with its `done.json` so that `--resume` skips it."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import _common

from refiner_trl.report import write_json

if TYPE_CHECKING:
    from pretrained import Settings

ARMS: dict[str, dict[str, Any]] = {
    "refiner": {},
    "refiner_sum": {"turn_loss_aggregation": "sum"},
    "refiner_flagged": {"hypothesis_selection": "flagged", "num_hypotheses": 4},
    "refiner_long": {"refiner_share": 0.75},
    "refiner_lora": {"use_peft": True, "learning_rate": 1e-3},
}
"""REFINER arms: RefinerConfig overrides, plus `refiner_share` (the share of the S + R steps REFINER gets, the warm
start the rest; its baseline is the same warm start's R steps) and `use_peft` (LoRA r = 16 on every linear layer)."""

CRITICS = {"critic": False, "critic_samples": True}
"""Trained critics: name -> whether the warm start's own samples (labelled by the oracle) join the perturbations."""


def load_backbone(model: str | None, quick: bool, tokenizer_texts: list[str]) -> tuple[Any, Any]:
    """The pretrained model and tokenizer (SmolLM2 from the cache by default); `--quick`: a tiny causal model.

    Args:
        model (`str`, *optional*):
            A model folder or `.gguf` file; `None`: SmolLM2 (fetched into the cache), or the tiny model with `quick`.
        quick (`bool`):
            The `--quick` option.
        tokenizer_texts (`list[str]`):
            The tiny model's tokenizer texts.

    Returns:
        `(model, tokenizer)`.
    """
    from refiner_trl.modeling import load_model_and_tokenizer

    if quick and model is None:
        return _common.tiny_model("causal", tokenizer_texts, vocab_size=500, hidden_size=32, num_layers=1, seed=0)
    if model is None:
        from refiner_trl.pretrained import fetch

        model = str(fetch("smollm2-135m-instruct"))
    return load_model_and_tokenizer(model)


def _args(settings: Settings, output_dir: Path, steps: int, seed: int, **values: Any) -> dict[str, Any]:
    return {
        "output_dir": str(output_dir),
        "max_steps": steps,
        "per_device_train_batch_size": settings.batch_size,
        "learning_rate": values.pop("learning_rate", settings.learning_rate),
        "lr_scheduler_type": "constant",
        "max_prompt_length": settings.max_prompt_length,
        "max_completion_length": settings.max_completion_length,
        "logging_steps": max(1, steps // 10),
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": seed,
        "data_seed": seed,
        **values,
    }


def _lora() -> Any:
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")


def _save(trainer: Any, folder: Path, record: dict[str, Any]) -> Any:
    """Save the trained model (LoRA merged) and its `done.json`; return the plain model."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.save_pretrained(folder)
    trainer.processing_class.save_pretrained(folder)
    write_json(folder / "done.json", {**record, "log_history": trainer.state.log_history})
    return model


def done(folder: Path) -> bool:
    """Whether the phase saved in `folder` finished (its `done.json` is there).

    Args:
        folder (`Path`):
            A phase's folder.
    """
    return (folder / "done.json").is_file()


def train_phases(
    settings: Settings,
    arms: Sequence[str],
    critics: Sequence[str],
    seed: int,
    root: Path,
    model_name: str | None,
    quick: bool,
    resume: bool,
    train: Any,
    task: Any,
) -> None:
    """Train every phase of one seed that is not done yet: warm starts, baselines, REFINER arms, critics.

    Each phase saves its model and `done.json` in `root/<phase>`.

    Args:
        settings (`Settings`):
            The sizes and steps.
        arms (`Sequence[str]`):
            REFINER arms (keys of `ARMS`); each has its baseline.
        critics (`Sequence[str]`):
            Trained critics (keys of `CRITICS`).
        seed (`int`):
            The seed of every phase.
        root (`Path`):
            The seed's folder.
        model_name (`str`, *optional*):
            The `--model` option.
        quick (`bool`):
            The `--quick` option.
        resume (`bool`):
            Skip the phases with a `done.json`.
        train (`Dataset`):
            Prompt-completion training rows.
        task (`Task`):
            MWP.
    """
    from transformers import set_seed

    from refiner_trl import ModelGenerator, RefinerConfig, RefinerTrainer
    from refiner_trl.supervised import SupervisedConfig, train_supervised

    texts = task.tokenizer_texts(train)
    backbone, tokenizer = load_backbone(model_name, quick, texts)
    total = settings.warm_steps + settings.refiner_steps
    cached: dict[int, Any] = {}

    def warm_start(warm_steps: int) -> Any:
        """The warm start of `warm_steps` steps, trained once and saved; reloaded when already on disk."""
        folder = root / f"warm-{warm_steps}"
        if warm_steps not in cached:
            if not (resume and done(folder)):
                set_seed(seed)
                args = SupervisedConfig(**_args(settings, folder, warm_steps, seed))
                trainer = train_supervised(copy.deepcopy(backbone), tokenizer, train, args)
                _save(trainer, folder, {"phase": "warm", "steps": warm_steps})
            cached[warm_steps] = load_backbone(str(folder), False, texts)[0]
        return copy.deepcopy(cached[warm_steps])

    def phase(name: str, build: Any) -> None:
        folder = root / name
        if resume and done(folder):
            print(f"  seed {seed}: {name} already done", flush=True)
            return
        started = time.perf_counter()
        trainer, record = build(folder)
        _save(trainer, folder, {"phase": name, **record, "seconds": time.perf_counter() - started})
        print(f"  seed {seed}: {name} {time.perf_counter() - started:.0f} s", flush=True)

    for arm in arms:
        overrides = dict(ARMS[arm])
        share = overrides.pop("refiner_share", settings.refiner_steps / total)
        use_peft = overrides.pop("use_peft", False)
        refiner_steps = round(share * total)
        warm_steps = total - refiner_steps

        def baseline(folder: Path, warm_steps: int = warm_steps, refiner_steps: int = refiner_steps) -> Any:
            set_seed(seed)
            args = SupervisedConfig(**_args(settings, folder, refiner_steps, seed))
            trainer = train_supervised(warm_start(warm_steps), tokenizer, train, args)
            return trainer, {"warm_steps": warm_steps, "steps": refiner_steps}

        def refiner(
            folder: Path,
            arm: str = arm,
            warm_steps: int = warm_steps,
            refiner_steps: int = refiner_steps,
            overrides: dict = overrides,
            use_peft: bool = use_peft,
        ) -> Any:
            set_seed(seed)
            values = {
                "num_hypotheses": settings.num_hypotheses,
                "num_refinement_turns": settings.num_refinement_turns,
                "max_new_tokens": settings.max_new_tokens,
                **overrides,
            }
            args = RefinerConfig(**_args(settings, folder, refiner_steps, seed, **values))
            trainer = RefinerTrainer(
                warm_start(warm_steps),
                args,
                critic=task.oracle_critic(),
                train_dataset=train,
                processing_class=tokenizer,
                peft_config=_lora() if use_peft else None,
            )
            trainer.train()
            return trainer, {"warm_steps": warm_steps, "steps": refiner_steps, "overrides": ARMS[arm]}

        phase(f"baseline-{warm_steps}-{refiner_steps}", baseline)
        phase(arm, refiner)

    for name in critics:

        def critic(folder: Path, with_samples: bool = CRITICS[name]) -> Any:
            samples = None
            if with_samples:
                rows = train.select(range(min(settings.critic_sample_rows, len(train))))
                sampler = ModelGenerator(
                    warm_start(settings.warm_steps),
                    tokenizer,
                    max_new_tokens=settings.max_new_tokens,
                    do_sample=True,
                    top_p=0.95,
                    batch_size=settings.eval_batch_size,
                    max_prompt_length=settings.max_prompt_length,
                )
                n = settings.critic_samples_per_prompt
                set_seed(seed)
                flat = sampler.generate([p for p in rows["prompt"] for _ in range(n)])
                samples = [flat[i * n : (i + 1) * n] for i in range(len(rows))]
                samples += [[] for _ in range(len(train) - len(rows))]
            data = task.build_critic_dataset(train, seed=seed, negatives_per_example=2, generator_samples=samples)
            set_seed(seed)
            args = SupervisedConfig(**_args(settings, folder, settings.critic_steps, seed))
            data_rows = data.select_columns(["prompt", "completion"])
            trainer = train_supervised(copy.deepcopy(backbone), tokenizer, data_rows, args)
            return trainer, {"rows": len(data), "sources": {s: data["source"].count(s) for s in set(data["source"])}}

        phase(name, critic)
