"""Learning benchmark: does REFINER beat its supervised warm start, at a size a 2-core CPU can train?

For each task (MWP, sNLR), architecture (seq2seq, causal) and seed, one pipeline:

1. data: the paper's release when `--data-dir` holds it (train on `train.json`, report on the first `--max-eval`
   rows of `val.json`), else the task's synthetic rows;
2. a byte-level BPE tokenizer trained on the training texts, the refine template and every feedback text
   (`Task.tokenizer_texts`), and a tiny generator built from a config (`modeling.build_tiny_model`);
3. warm start: `supervised.train_supervised` for `warm_steps` steps;
4. from the same warm-started weights: the **baseline** gets `refiner_steps` more supervised steps, and **REFINER**
   gets `refiner_steps` steps of `RefinerTrainer` with the task's oracle critic; both therefore take
   `warm_steps + refiner_steps` optimizer steps with the same batch size, learning rate and seed;
5. a tiny critic of the same architecture trained with `train_supervised` on `task.build_critic_dataset(train)`;
6. evaluation with `evaluation.evaluate_refinement` on the same evaluation rows: the baseline alone, REFINER alone
   (turn 0), REFINER + trained critic (T=3), REFINER + oracle critic (T=3), and diagnostics: the most frequent
   training answer for every row, the baseline + oracle critic, and REFINER with a critic that takes the trained
   critic's error / no-error *decision* but the oracle's *text* (separates detection from description); plus
   `critic_eval.evaluate_critic` on held-out critic data and the trained critic's verdicts on REFINER's own turn-0
   hypotheses against the oracle's.

REFINER samples k = 1 hypothesis per example and turn by default: the trainer picks one of its k samples at random
(or the first), and the samples are i.i.d., so the pick is distributed as one sample whatever k is; k > 1 would only
cost time. Generation gets at least as many new tokens as the 99th percentile of the training completions.

Results are written after every pipeline (`learning.json`), so a cut-short run keeps what it finished; `--resume`
skips the pipelines already there. At the end: `learning.md` (tables) and `learning.png` (plot). docs/benchmarks.md
has the numbers of a full run and what they mean.

    python benchmarks/learning.py --quick     # a few minutes; CI runs it
    python benchmarks/learning.py             # the full run: 3 seeds x 2 archs x 2 tasks, 2 processes x 1 thread
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common
from _common import Stopwatch, markdown_table, mean_std, pm

TASKS = ("mwp", "snlr")
ARCHITECTURES = ("seq2seq", "causal")
ROWS = (
    ("baseline", "baseline (supervised, S+R steps)"),
    ("refiner_alone", "REFINER, turn 0 (no critic)"),
    ("refiner_trained", "REFINER + trained critic (T=3)"),
    ("refiner_oracle", "REFINER + oracle critic (T=3)"),
)
DIAGNOSTIC_ROWS = (
    ("majority", "most frequent training completion, for every row"),
    ("baseline_oracle", "baseline + oracle critic (T=3)"),
    ("refiner_detect", "REFINER + trained detection, oracle text (T=3)"),
)


@dataclass
class Settings:
    """Sizes and steps of one pipeline; `--quick` and the full run differ only here."""

    hidden_size: int = 64
    num_layers: int = 2
    vocab_size: int = 1000
    batch_size: int = 32
    learning_rate: float = 2e-3
    warm_steps: int = 500
    refiner_steps: int = 50
    critic_steps: int = 300
    num_hypotheses: int = 1
    num_refinement_turns: int = 3
    eval_turns: int = 3
    max_eval: int = 200
    critic_eval_rows: int = 200
    max_new_tokens: int = 32  # raised to the 99th percentile of the training completions' length when that is more
    critic_max_new_tokens: int = 16
    max_prompt_length: int = 320
    synthetic_train: int = 2000
    synthetic_eval: int = 200


QUICK = Settings(
    hidden_size=32,
    num_layers=1,
    vocab_size=400,
    batch_size=8,
    warm_steps=12,
    refiner_steps=4,
    critic_steps=8,
    max_eval=12,
    critic_eval_rows=12,
    max_new_tokens=24,
    critic_max_new_tokens=10,
    synthetic_train=200,
    synthetic_eval=12,
)


# --------------------------------------------------------------------------------------------------- pipeline


class Recorder:
    """Wraps a generator or critic and keeps the answer of its first call (turn 0 of `refine`)."""

    def __init__(self, inner: Any):
        self.inner = inner
        self.first: tuple[list[str], list[str]] | None = None

    def generate(self, prompts: Sequence[str]) -> list[str]:
        texts = self.inner.generate(prompts)
        if self.first is None:
            self.first = (list(prompts), list(texts))
        return texts

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        feedback = self.inner.critique(prompts, hypotheses, references)
        if self.first is None:
            self.first = (list(hypotheses), list(feedback))
        return feedback


class DetectionCritic:
    """The trained critic's decision (error or not) with the oracle's text when both see an error.

    Where the trained critic says "no error" the answer is its own; where it names an error, the oracle's feedback
    replaces it, unless the oracle finds none (a false alarm keeps the trained critic's text). So this critic is as
    good at *finding* errors as the trained one and as good at *describing* them as the oracle.
    """

    def __init__(self, trained: Any, oracle: Any):
        self.trained, self.oracle = trained, oracle

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        from refiner_trl.critics import is_no_error

        decided = self.trained.critique(prompts, hypotheses, references)
        told = self.oracle.critique(prompts, hypotheses, references)
        return [d if is_no_error(d) or is_no_error(o) else o for d, o in zip(decided, told)]


def _common_args(settings: Settings, output_dir: str, steps: int, seed: int, warmup: int = 0) -> dict[str, Any]:
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


def _train(trainer: Any) -> Any:
    """Train without the per-log prints of `PrinterCallback` (the benchmark prints its own summary)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    trainer.train()
    return trainer


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


def _verdicts_on_turn0(task: Any, critic_first: Any, oracle_first: Any) -> dict[str, float]:
    """How the trained critic's verdicts on REFINER's turn-0 hypotheses compare with the oracle's."""
    from refiner_trl.critics import is_no_error

    if critic_first is None or oracle_first is None:
        return {}
    critic_hyps, critic_feedback = critic_first
    oracle_hyps, oracle_feedback = oracle_first
    if critic_hyps != oracle_hyps:  # both should have read the same z_0; refuse to compare otherwise
        return {}
    wrong = [not is_no_error(f) for f in oracle_feedback]
    flagged = [not is_no_error(f) for f in critic_feedback]
    n_wrong, n_right = sum(wrong), len(wrong) - sum(wrong)
    both = [i for i in range(len(wrong)) if wrong[i] and flagged[i]]
    return {
        "num": len(wrong),
        "oracle_error_rate": n_wrong / len(wrong) if wrong else float("nan"),
        "critic_flag_rate": sum(flagged) / len(flagged) if flagged else float("nan"),
        # recall: of the hypotheses the oracle finds wrong, the share the trained critic flags
        "detection_recall": sum(f for f, w in zip(flagged, wrong) if w) / n_wrong if n_wrong else float("nan"),
        # false alarms: of the hypotheses the oracle accepts, the share the trained critic flags
        "false_alarm_rate": sum(f for f, w in zip(flagged, wrong) if not w) / n_right if n_right else float("nan"),
        "detection_precision": sum(wrong[i] for i in range(len(wrong)) if flagged[i]) / sum(flagged)
        if sum(flagged)
        else float("nan"),
        # of the hypotheses both find wrong, the share where the trained critic names the oracle's error type
        "type_agreement": sum(
            task.feedback_type(critic_feedback[i]) == task.feedback_type(oracle_feedback[i]) for i in both
        )
        / len(both)
        if both
        else float("nan"),
    }


def majority_scores(task: Any, train: Any, evaluation: Any) -> dict[str, Any]:
    """The score of answering every evaluation row with the most frequent training completion (no model)."""
    from collections import Counter

    answer = Counter(train["completion"]).most_common(1)[0][0]
    return {"final": task.score([answer] * len(evaluation), evaluation), "answer": answer}


def run_pipeline(
    task_name: str, architecture: str, seed: int, settings: Settings, data_dir: str | None, threads: int | None
) -> dict[str, Any]:
    """Warm start, baseline, REFINER, critic and evaluation for one (task, architecture, seed); returns the record."""
    _common.quiet()
    _common.set_threads(threads)
    from transformers import set_seed

    from refiner_trl import ModelCritic, ModelGenerator, RefinerConfig, RefinerTrainer
    from refiner_trl.critic_eval import evaluate_critic
    from refiner_trl.evaluation import evaluate_refinement
    from refiner_trl.modeling import build_tiny_model, train_tokenizer
    from refiner_trl.supervised import SupervisedConfig, train_supervised
    from refiner_trl.templates import CRITIC_INPUT_TEMPLATE

    started, cpu_started = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}

    cpu_timings: dict[str, float] = {}

    def log(phase: str) -> None:
        cpu_timings[phase] = watch.cpu_seconds
        print(
            f"    {task_name}/{architecture}/seed {seed}: {phase} {timings[phase]:.0f} s "
            f"(CPU {cpu_timings[phase]:.0f} s)",
            flush=True,
        )

    task, train, evaluation, source = _common.task_data(
        task_name,
        None if data_dir is None else Path(data_dir),
        settings.synthetic_train,
        settings.synthetic_eval,
        settings.max_eval,
    )
    train = train.select_columns(["prompt", "completion"])
    critic_train = task.build_critic_dataset(train, seed=seed).select_columns(["prompt", "completion"])
    critic_heldout = task.build_critic_dataset(evaluation, seed=seed + 1)
    critic_heldout = critic_heldout.select(range(min(settings.critic_eval_rows, len(critic_heldout))))

    with Stopwatch() as watch:
        texts = task.tokenizer_texts(train) + [CRITIC_INPUT_TEMPLATE.format(prompt="", hypothesis="")] * 20
        tokenizer = train_tokenizer(texts, vocab_size=settings.vocab_size)
        size = {"hidden_size": settings.hidden_size, "num_layers": settings.num_layers}
        generator = build_tiny_model(architecture, tokenizer, seed=seed, **size)
        # Room for the gold completions: at least their 99th percentile in tokens (a longer one decodes cut off).
        lengths = sorted(
            len(ids) for ids in tokenizer(list(train["completion"]), add_special_tokens=False)["input_ids"]
        )
        max_new_tokens = max(settings.max_new_tokens, lengths[int(0.99 * (len(lengths) - 1))])
    timings["tokenizer_and_model"] = watch.seconds
    log("tokenizer_and_model")

    with tempfile.TemporaryDirectory() as scratch:
        set_seed(seed)
        with Stopwatch() as watch:
            warm_args = SupervisedConfig(
                **_common_args(settings, scratch, settings.warm_steps, seed, warmup=min(20, settings.warm_steps // 5))
            )
            warm = _train(train_supervised(generator, tokenizer, train, warm_args, train=False))
        timings["warm_start"] = watch.seconds
        log("warm_start")
        warm_loss = _final_loss(warm.state.log_history)

        baseline = copy.deepcopy(generator)
        refiner_model = copy.deepcopy(generator)
        set_seed(seed)
        with Stopwatch() as watch:
            more = _train(
                train_supervised(
                    baseline,
                    tokenizer,
                    train,
                    SupervisedConfig(**_common_args(settings, scratch, settings.refiner_steps, seed)),
                    train=False,
                )
            )
        timings["baseline_extra_steps"] = watch.seconds
        log("baseline_extra_steps")

        set_seed(seed)
        with Stopwatch() as watch:
            refiner_args = RefinerConfig(
                **_common_args(settings, scratch, settings.refiner_steps, seed),
                num_hypotheses=settings.num_hypotheses,
                num_refinement_turns=settings.num_refinement_turns,
                max_new_tokens=max_new_tokens,
                explore_last_turn=True,  # for the last turn's no_error log; the loss is defined the same without it
            )
            trainer = _train(
                RefinerTrainer(
                    refiner_model,
                    refiner_args,
                    critic=task.oracle_critic(),
                    train_dataset=train,
                    processing_class=tokenizer,
                )
            )
        timings["refiner"] = watch.seconds
        log("refiner")

        set_seed(seed)
        with Stopwatch() as watch:
            critic_model = build_tiny_model(architecture, tokenizer, seed=seed + 1000, **size)
            critic_trainer = _train(
                train_supervised(
                    critic_model,
                    tokenizer,
                    critic_train,
                    SupervisedConfig(
                        **_common_args(
                            settings, scratch, settings.critic_steps, seed, warmup=min(20, settings.critic_steps // 5)
                        )
                    ),
                    train=False,
                )
            )
        timings["critic"] = watch.seconds
        log("critic")

    with Stopwatch() as watch:

        def model_generator(model: Any) -> ModelGenerator:
            return ModelGenerator(
                model.eval(),
                tokenizer,
                max_prompt_length=settings.max_prompt_length,
                max_new_tokens=max_new_tokens,
                batch_size=64,
            )

        trained_critic = ModelCritic(
            critic_model.eval(),
            tokenizer,
            max_prompt_length=settings.max_prompt_length,
            max_new_tokens=settings.critic_max_new_tokens,
            batch_size=64,
        )
        oracle = task.oracle_critic()
        recorded_trained, recorded_oracle = Recorder(trained_critic), Recorder(oracle)
        turns = settings.eval_turns
        baseline_result = evaluate_refinement(
            task, model_generator(baseline), evaluation, {"none": None, "oracle": oracle}, max_turns=turns,
            progress=False,
        )  # fmt: skip
        refiner_result = evaluate_refinement(
            task,
            model_generator(refiner_model),
            evaluation,
            {
                "none": None,
                "trained": recorded_trained,
                "oracle": recorded_oracle,
                "detect": DetectionCritic(trained_critic, oracle),
            },
            max_turns=turns,
            progress=False,
        )
        critic_quality = evaluate_critic(trained_critic, task, critic_heldout)
    timings["evaluation"] = watch.seconds
    log("evaluation")
    timings["total"] = time.perf_counter() - started
    cpu_timings["total"] = time.process_time() - cpu_started

    def run_of(result: Any, name: str) -> dict[str, Any]:
        run = next(r for r in result.runs if r.name == name)
        return {"final": run.final, "by_turn": run.by_turn, "refine": run.refine}

    results = {
        "majority": majority_scores(task, train, evaluation),
        "baseline": run_of(baseline_result, "none"),
        "baseline_oracle": run_of(baseline_result, "oracle"),
        "refiner_alone": run_of(refiner_result, "none"),
        "refiner_trained": run_of(refiner_result, "trained"),
        "refiner_oracle": run_of(refiner_result, "oracle"),
        "refiner_detect": run_of(refiner_result, "detect"),
    }
    examples = next(r for r in refiner_result.runs if r.name == "trained").examples[:3]
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
            "critic": sum(p.numel() for p in critic_model.parameters()),
        },
        "steps": {
            "warm_start": settings.warm_steps,
            "baseline_total": settings.warm_steps + settings.refiner_steps,
            "refiner_total": settings.warm_steps + settings.refiner_steps,
            "critic": settings.critic_steps,
        },
        "results": results,
        "critic_heldout": {k: v for k, v in critic_quality.items() if k != "predictions"},
        "critic_on_refiner_turn0": _verdicts_on_turn0(task, recorded_trained.first, recorded_oracle.first),
        "training": {
            "warm_start_final_loss": warm_loss,
            "baseline_final_loss": _final_loss(more.state.log_history),
            "critic_final_loss": _final_loss(critic_trainer.state.log_history),
            "refiner": _refiner_training_summary(trainer.state.log_history, settings.num_refinement_turns),
        },
        "examples_trained_critic": examples,
        "seconds": timings,
        "cpu_seconds": cpu_timings,
    }


# ------------------------------------------------------------------------------------------------ aggregation


def _primary(record: dict[str, Any], row: str) -> float:
    value = record["results"].get(row, {}).get("final", {}).get(record["primary_metric"])
    return float("nan") if value is None else value


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds, per (task, architecture), of every row's primary metric and the gains."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["architecture"])].append(record)
    summary = []
    for (task, architecture), group in sorted(groups.items()):
        entry: dict[str, Any] = {
            "task": task,
            "architecture": architecture,
            "data": group[0]["data"],
            "metric": group[0]["primary_metric"],
            "seeds": sorted(r["seed"] for r in group),
            "num_eval": group[0]["num_eval"],
        }
        for row, _ in (*ROWS, *DIAGNOSTIC_ROWS):
            values = [_primary(r, row) for r in group]
            mean, std, _ = mean_std(values)
            entry[row] = {"mean": mean, "std": std, "values": values}
        for name, (high, low) in {
            "gain_trained_vs_baseline": ("refiner_trained", "baseline"),
            "gain_oracle_vs_trained": ("refiner_oracle", "refiner_trained"),
            "gain_alone_vs_baseline": ("refiner_alone", "baseline"),
        }.items():
            values = [_primary(r, high) - _primary(r, low) for r in group]
            mean, std, _ = mean_std(values)
            entry[name] = {"mean": mean, "std": std, "values": values}
        for name in ("exact_match", "no_error_accuracy", "error_type_accuracy", "false_alarm_rate"):
            mean, std, _ = mean_std([r["critic_heldout"].get(name) for r in group])
            entry[f"critic_{name}"] = {"mean": mean, "std": std}
        for name in ("oracle_error_rate", "detection_recall", "false_alarm_rate", "type_agreement"):
            mean, std, _ = mean_std([r["critic_on_refiner_turn0"].get(name) for r in group])
            entry[f"turn0_{name}"] = {"mean": mean, "std": std}
        entry["targets"] = {
            "trained_at_least_10_points_above_baseline": entry["gain_trained_vs_baseline"]["mean"] >= 0.10,
            "oracle_above_trained": entry["gain_oracle_vs_trained"]["mean"] > 0,
        }
        summary.append(entry)
    return summary


def format_markdown(data: dict[str, Any]) -> str:
    """The tables of `learning.md`: results, gains and critic quality."""
    records, summary = data["pipelines"], data["summary"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["architecture"])].append(record)
    settings = data["settings"]
    lines = [
        "# Learning benchmark",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Machine: {_common.machine_line(data['machine'])}. Wall time: {data.get('wall_seconds', 0) / 60:.1f} min"
        f" for {len(records)} pipelines ({data.get('workers', 1)} worker process(es)).",
        "",
        f"Tiny models built from a config: hidden {settings['hidden_size']}, {settings['num_layers']} layer(s) "
        f"(per stack), vocabulary {settings['vocab_size']}; batch {settings['batch_size']}, learning rate "
        f"{settings['learning_rate']}. Steps: warm start S={settings['warm_steps']}, then R="
        f"{settings['refiner_steps']} more (supervised for the baseline, REFINER with the oracle critic, k="
        f"{settings['num_hypotheses']}, T={settings['num_refinement_turns']}); critic {settings['critic_steps']} "
        f"steps. Evaluation on the first {settings['max_eval']} rows of `val.json` (or synthetic rows), greedy, "
        f"T={settings['eval_turns']}. Values: primary metric in %, mean ± standard deviation over seeds.",
        "",
        "## Results",
        "",
    ]
    header = ["task (data)", "arch", "seeds", *[label for _, label in ROWS], "trained − baseline", "target met"]
    rows = []
    for entry in summary:
        group = groups[(entry["task"], entry["architecture"])]
        rows.append(
            [
                f"{entry['task']} ({entry['data']}, {entry['metric']})",
                entry["architecture"],
                len(group),
                *[pm(_primary(r, row) for r in group) for row, _ in ROWS],
                pm(_primary(r, "refiner_trained") - _primary(r, "baseline") for r in group),
                "yes" if entry["targets"]["trained_at_least_10_points_above_baseline"] else "no",
            ]
        )
    lines += [markdown_table(header, rows), "", "## Diagnostics", ""]
    header = [
        "task",
        "arch",
        *[label for _, label in DIAGNOSTIC_ROWS],
        "critic held-out: exact / error type / no-error acc.",
        "turn-0: oracle error rate / critic recall / false alarms / type agreement",
    ]
    rows = []
    for entry in summary:
        group = groups[(entry["task"], entry["architecture"])]

        def held(name: str, group: list[dict[str, Any]] = group) -> str:
            return pm(r["critic_heldout"].get(name) for r in group)

        def turn0(name: str, group: list[dict[str, Any]] = group) -> str:
            return pm(r["critic_on_refiner_turn0"].get(name) for r in group)

        rows.append(
            [
                entry["task"],
                entry["architecture"],
                *[pm(_primary(r, row) for r in group) for row, _ in DIAGNOSTIC_ROWS],
                f"{held('exact_match')} / {held('error_type_accuracy')} / {held('no_error_accuracy')}",
                f"{turn0('oracle_error_rate')} / {turn0('detection_recall')} / {turn0('false_alarm_rate')} / "
                f"{turn0('type_agreement')}",
            ]
        )
    lines += [markdown_table(header, rows), ""]
    lines += ["## Per pipeline", ""]
    header = ["task", "arch", "seed", *[row for row, _ in (*ROWS, *DIAGNOSTIC_ROWS)], "minutes"]
    rows = [
        [
            r["task"],
            r["architecture"],
            r["seed"],
            *[f"{100 * _primary(r, row):.1f}" for row, _ in (*ROWS, *DIAGNOSTIC_ROWS)],
            f"{r['seconds']['total'] / 60:.1f}",
        ]
        for r in records
    ]
    lines += [markdown_table(header, rows), ""]
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> Path:
    """Bars of each row's primary metric per (task, architecture), with the seeds' spread as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    figure, axes = plt.subplots(figsize=(7.5, 3.6), dpi=100)
    width = 0.8 / len(ROWS)
    for i, (row, label) in enumerate(ROWS):
        means = [100 * (entry[row]["mean"] if entry[row]["mean"] == entry[row]["mean"] else 0) for entry in summary]
        stds = [100 * (entry[row]["std"] if entry[row]["std"] == entry[row]["std"] else 0) for entry in summary]
        positions = [j + (i - (len(ROWS) - 1) / 2) * width for j in range(len(summary))]
        axes.bar(positions, means, width, yerr=stds, capsize=2, label=label)
    for j, entry in enumerate(summary):
        majority = entry.get("majority", {}).get("mean", float("nan"))
        if majority == majority:
            label = "most frequent training answer" if j == 0 else None
            axes.hlines(100 * majority, j - 0.45, j + 0.45, colors="black", linestyles="dotted", label=label)
    axes.set_xticks(range(len(summary)))
    axes.set_xticklabels([f"{e['task']}\n{e['architecture']}" for e in summary])
    axes.set_ylabel("equation / inference-rule accuracy (%)")
    axes.set_title("REFINER vs supervised baseline (tiny models, mean ± std over seeds)", fontsize=9)
    axes.legend(fontsize=7, loc="upper left")
    axes.grid(axis="y", alpha=0.3)
    axes.set_ylim(0, max(5.0, axes.get_ylim()[1]))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_outputs(data: dict[str, Any], output_dir: Path, final: bool, write_json: bool = True) -> None:
    """Write `learning.json` and, when `final`, `learning.md` and `learning.png`."""
    data["summary"] = aggregate(data["pipelines"])
    if write_json:
        _common.write_json(output_dir / "learning.json", data)
    output_dir.mkdir(parents=True, exist_ok=True)
    if final and data["pipelines"]:
        (output_dir / "learning.md").write_text(format_markdown(data), encoding="utf-8")
        plot(data, output_dir / "learning.png")


# ------------------------------------------------------------------------------------------------------ main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(parser, "outputs/benchmarks/learning", (0, 1, 2))
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--architectures", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument(
        "--data-dir",
        default=str(_common.DEFAULT_DATA_DIR),
        help="The release's data (<dir>/<task>/train.json, val.json); synthetic rows when absent. 'none': always "
        "synthetic.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Pipelines run in parallel processes (default: 1 with --quick, else one per core up to 2).",
    )
    parser.add_argument("--resume", action="store_true", help="Skip pipelines already in the output JSON.")
    parser.add_argument(
        "--render", metavar="JSON", default=None, help="Only write the markdown and plot of an earlier run's JSON."
    )
    for field in dataclasses.fields(Settings):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=type(field.default), default=None, help=f"Override {field.name}."
        )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.render:
        data = json.loads(Path(args.render).read_text(encoding="utf-8"))
        write_outputs(data, Path(args.output_dir), final=True, write_json=False)
        print(format_markdown(data))
        return data
    _common.quiet()
    settings = dataclasses.replace(QUICK) if args.quick else Settings()
    overrides = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(Settings) if getattr(args, f.name) is not None
    }
    settings = dataclasses.replace(settings, **overrides)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    if args.workers is None:
        args.workers = 1 if args.quick else max(1, min(2, os.cpu_count() or 1))
    if args.threads is None and args.workers > 1:
        args.threads = max(1, (os.cpu_count() or 1) // args.workers)  # no oversubscription
    data_dir = None if args.data_dir.lower() == "none" else args.data_dir
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    data: dict[str, Any] = {
        "benchmark": "learning",
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)]),
        "quick": args.quick,
        "machine": _common.machine_info(args.threads or _common.set_threads(None)),
        "workers": args.workers,
        "settings": dataclasses.asdict(settings),
        "pipelines": [],
    }
    json_path = output_dir / "learning.json"
    if args.resume and json_path.is_file():
        previous = json.loads(json_path.read_text(encoding="utf-8"))
        if previous.get("settings") == data["settings"]:
            data["pipelines"] = previous.get("pipelines", [])
    done = {(r["task"], r["architecture"], r["seed"]) for r in data["pipelines"]}
    jobs = [
        (task, arch, seed)
        for seed in seeds
        for task in args.tasks
        for arch in args.architectures
        if (task, arch, seed) not in done
    ]
    print(f"{len(jobs)} pipeline(s); settings: {data['settings']}", flush=True)
    started = time.perf_counter()

    def finished(record: dict[str, Any]) -> None:
        data["pipelines"].append(record)
        data["pipelines"].sort(key=lambda r: (r["task"], r["architecture"], r["seed"]))
        data["wall_seconds"] = time.perf_counter() - started
        write_outputs(data, output_dir, final=False)
        row = "  ".join(f"{name}={100 * _primary(record, name):.1f}" for name, _ in (*ROWS, *DIAGNOSTIC_ROWS))
        print(
            f"[{data['wall_seconds'] / 60:5.1f} min] {record['task']}/{record['architecture']}/seed {record['seed']} "
            f"({record['seconds']['total']:.0f} s): {row}",
            flush=True,
        )

    if args.workers <= 1:
        for job in jobs:
            finished(run_pipeline(*job, settings, data_dir, args.threads))
    else:
        import multiprocessing

        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_pipeline, *job, settings, data_dir, args.threads) for job in jobs]
            for future in as_completed(futures):
                finished(future.result())
    data["wall_seconds"] = time.perf_counter() - started
    write_outputs(data, output_dir, final=True)
    print()
    print(format_markdown(data))
    print(f"Written to {output_dir}/learning.{{json,md,png}}", flush=True)
    return data


if __name__ == "__main__":
    main()
