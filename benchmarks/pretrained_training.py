"""The training phases of the pretrained-model benchmark: warm starts, baselines, REFINER arms and critics, each saved
with its `done.json` so that `--resume` skips it."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
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


class SeedPhases:
    """The training phases of one seed, from one backbone: warm starts, baselines, REFINER arms, critics.

    Each phase saves its model and `done.json` in `root/<phase>`; a warm start is trained once, saved, and reloaded
    from disk by the phases that start from it.

    Args:
        settings (`Settings`):
            The sizes and steps.
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

    def __init__(
        self,
        settings: Settings,
        seed: int,
        root: Path,
        model_name: str | None,
        quick: bool,
        resume: bool,
        train: Any,
        task: Any,
    ):
        self.settings, self.seed, self.root = settings, seed, root
        self.resume, self.train, self.task = resume, train, task
        self.texts = task.tokenizer_texts(train)
        self.backbone, self.tokenizer = load_backbone(model_name, quick, self.texts)
        self.cached: dict[int, Any] = {}

    def train_all(self, arms: Sequence[str], critics: Sequence[str]) -> None:
        """Train every phase that is not done yet: each arm's baseline and the arm, then the critics.

        Args:
            arms (`Sequence[str]`):
                REFINER arms (keys of `ARMS`); each has its baseline.
            critics (`Sequence[str]`):
                Trained critics (keys of `CRITICS`).
        """
        settings = self.settings
        total = settings.warm_steps + settings.refiner_steps
        for arm in arms:
            overrides = dict(ARMS[arm])
            share = overrides.pop("refiner_share", settings.refiner_steps / total)
            use_peft = overrides.pop("use_peft", False)
            refiner_steps = round(share * total)
            warm_steps = total - refiner_steps
            baseline = functools.partial(self.baseline, warm_steps=warm_steps, steps=refiner_steps)
            self.run(f"baseline-{warm_steps}-{refiner_steps}", baseline)
            refiner = functools.partial(
                self.refiner,
                arm=arm,
                warm_steps=warm_steps,
                steps=refiner_steps,
                overrides=overrides,
                use_peft=use_peft,
            )
            self.run(arm, refiner)
        for name in critics:
            self.run(name, functools.partial(self.critic, with_samples=CRITICS[name]))

    def run(self, name: str, build: Callable[[Path], tuple[Any, dict[str, Any]]]) -> None:
        """Train the phase `name` with `build(folder)` and save it, unless `--resume` finds it done.

        Args:
            name (`str`):
                The phase, and its folder's name.
            build (`Callable[[Path], tuple]`):
                The folder -> `(trainer, record)`, the trainer trained.
        """
        folder = self.root / name
        if self.resume and done(folder):
            print(f"  seed {self.seed}: {name} already done", flush=True)
            return
        started = time.perf_counter()
        trainer, record = build(folder)
        _save(trainer, folder, {"phase": name, **record, "seconds": time.perf_counter() - started})
        print(f"  seed {self.seed}: {name} {time.perf_counter() - started:.0f} s", flush=True)

    def warm_start(self, warm_steps: int) -> Any:
        """A copy of the warm start of `warm_steps` steps, trained once and saved; reloaded when already on disk.

        Args:
            warm_steps (`int`):
                Its supervised steps.
        """
        from transformers import set_seed

        from refiner_trl.supervised import SupervisedConfig, train_supervised

        folder = self.root / f"warm-{warm_steps}"
        if warm_steps not in self.cached:
            if not (self.resume and done(folder)):
                set_seed(self.seed)
                args = SupervisedConfig(**_args(self.settings, folder, warm_steps, self.seed))
                trainer = train_supervised(copy.deepcopy(self.backbone), self.tokenizer, self.train, args)
                _save(trainer, folder, {"phase": "warm", "steps": warm_steps})
            self.cached[warm_steps] = load_backbone(str(folder), False, self.texts)[0]
        return copy.deepcopy(self.cached[warm_steps])

    def baseline(self, folder: Path, warm_steps: int, steps: int) -> tuple[Any, dict[str, Any]]:
        """`steps` more supervised steps from the warm start of `warm_steps` steps.

        Args:
            folder (`Path`):
                The phase's folder.
            warm_steps (`int`):
                The warm start's steps.
            steps (`int`):
                The baseline's steps.
        """
        from transformers import set_seed

        from refiner_trl.supervised import SupervisedConfig, train_supervised

        set_seed(self.seed)
        args = SupervisedConfig(**_args(self.settings, folder, steps, self.seed))
        trainer = train_supervised(self.warm_start(warm_steps), self.tokenizer, self.train, args)
        return trainer, {"warm_steps": warm_steps, "steps": steps}

    def refiner(
        self, folder: Path, arm: str, warm_steps: int, steps: int, overrides: dict[str, Any], use_peft: bool
    ) -> tuple[Any, dict[str, Any]]:
        """`steps` REFINER steps with the oracle critic from the warm start of `warm_steps` steps.

        Args:
            folder (`Path`):
                The phase's folder.
            arm (`str`):
                The arm (a key of `ARMS`).
            warm_steps (`int`):
                The warm start's steps.
            steps (`int`):
                REFINER's steps.
            overrides (`dict`):
                The arm's `RefinerConfig` fields.
            use_peft (`bool`):
                Train LoRA adapters (merged when saved).
        """
        from transformers import set_seed

        from refiner_trl import RefinerConfig, RefinerTrainer

        settings = self.settings
        set_seed(self.seed)
        values = {
            "num_hypotheses": settings.num_hypotheses,
            "num_refinement_turns": settings.num_refinement_turns,
            "max_new_tokens": settings.max_new_tokens,
            **overrides,
        }
        args = RefinerConfig(**_args(settings, folder, steps, self.seed, **values))
        trainer = RefinerTrainer(
            self.warm_start(warm_steps),
            args,
            critic=self.task.oracle_critic(),
            train_dataset=self.train,
            processing_class=self.tokenizer,
            peft_config=_lora() if use_peft else None,
        )
        trainer.train()
        return trainer, {"warm_steps": warm_steps, "steps": steps, "overrides": ARMS[arm]}

    def critic(self, folder: Path, with_samples: bool) -> tuple[Any, dict[str, Any]]:
        """The backbone fine-tuned on the task's critic data: perturbations, and with `with_samples` the warm
        start's own samples on training prompts, labelled by the oracle.

        Args:
            folder (`Path`):
                The phase's folder.
            with_samples (`bool`):
                Whether generator samples join the perturbations.
        """
        from transformers import set_seed

        from refiner_trl.supervised import SupervisedConfig, train_supervised

        settings, seed, train = self.settings, self.seed, self.train
        samples = self._samples() if with_samples else None
        data = self.task.build_critic_dataset(train, seed=seed, negatives_per_example=2, generator_samples=samples)
        set_seed(seed)
        args = SupervisedConfig(**_args(settings, folder, settings.critic_steps, seed))
        data_rows = data.select_columns(["prompt", "completion"])
        trainer = train_supervised(copy.deepcopy(self.backbone), self.tokenizer, data_rows, args)
        return trainer, {"rows": len(data), "sources": {s: data["source"].count(s) for s in set(data["source"])}}

    def _samples(self) -> list[list[str]]:
        """The warm start's samples on the first `critic_sample_rows` training prompts (none for the others)."""
        from transformers import set_seed

        from refiner_trl import ModelGenerator

        settings, train = self.settings, self.train
        rows = train.select(range(min(settings.critic_sample_rows, len(train))))
        sampler = ModelGenerator(
            self.warm_start(settings.warm_steps),
            self.tokenizer,
            max_new_tokens=settings.max_new_tokens,
            do_sample=True,
            top_p=0.95,
            batch_size=settings.eval_batch_size,
            max_prompt_length=settings.max_prompt_length,
        )
        n = settings.critic_samples_per_prompt
        set_seed(self.seed)
        flat = sampler.generate([p for p in rows["prompt"] for _ in range(n)])
        samples = [flat[i * n : (i + 1) * n] for i in range(len(rows))]
        return samples + [[] for _ in range(len(train) - len(rows))]
