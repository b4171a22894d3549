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
has the numbers of a full run and what they mean. One pipeline is `learning_pipeline.run_pipeline`; the summary,
tables and plot are `learning_report`'s.

    python benchmarks/learning.py --quick     # a few minutes; CI runs it
    python benchmarks/learning.py             # the full run: 3 seeds x 2 archs x 2 tasks, 2 processes x 1 thread
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import _common
import _machine
import learning_report
from learning_pipeline import run_pipeline
from learning_report import DIAGNOSTIC_ROWS, ROWS, primary

TASKS = ("mwp", "snlr")
ARCHITECTURES = ("seq2seq", "causal")


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options: the common ones, tasks, architectures, data, workers, and one `--<field>` per `Settings` field.

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments; `None`: the process's own.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(
        parser,
        "outputs/benchmarks/learning",
        (0, 1, 2),
        resume_help="Skip pipelines already in the output JSON.",
        render=True,
    )
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--architectures", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    _common.add_data_dir_argument(
        parser,
        "The release's data (<dir>/<task>/train.json, val.json); synthetic rows when absent. 'none': always "
        "synthetic.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Pipelines run in parallel processes (default: 1 with --quick, else one per core up to 2).",
    )
    _common.add_settings_arguments(parser, Settings)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark (or re-render an earlier run with `--render`) and return its data.

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments; `None`: the process's own.
    """
    args = parse_args(argv)
    outputs = _common.Outputs(
        "learning",
        Path(args.output_dir),
        learning_report.format_markdown,
        learning_report.plot,
        complete=learning_report.complete,
    )
    return _common.drive(args, outputs, lambda: measure(args, argv, outputs))


def measure(args: argparse.Namespace, argv: Sequence[str] | None, outputs: _common.Outputs) -> dict[str, Any]:
    """Every (task, architecture, seed) pipeline not done yet, in `--workers` processes; the JSON is saved after each.

    Args:
        args (`argparse.Namespace`):
            The parsed options.
        argv (`Sequence[str]`, *optional*):
            The arguments, for the command written in the JSON.
        outputs (`Outputs`):
            Where the JSON goes; with `--resume`, the pipelines of an earlier run with the same settings are kept.
    """
    settings = _common.settings_from_args(args, replace(QUICK) if args.quick else Settings())
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    workers = args.workers if args.workers is not None else 1 if args.quick else max(1, min(2, os.cpu_count() or 1))
    threads = args.threads
    if threads is None and workers > 1:
        threads = max(1, (os.cpu_count() or 1) // workers)  # no oversubscription
    data_dir = _common.data_dir(args.data_dir)
    data: dict[str, Any] = {
        "benchmark": "learning",
        "command": _common.command_line(argv),
        "quick": args.quick,
        "machine": _machine.machine_info(threads or _common.set_threads(None)),
        "workers": workers,
        "settings": asdict(settings),
        "pipelines": [],
    }
    previous = outputs.earlier(args.resume)
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
        outputs.save(data)
        row = "  ".join(f"{name}={100 * primary(record, name):.1f}" for name, _ in (*ROWS, *DIAGNOSTIC_ROWS))
        print(
            f"[{data['wall_seconds'] / 60:5.1f} min] {record['task']}/{record['architecture']}/seed {record['seed']} "
            f"({record['seconds']['total']:.0f} s): {row}",
            flush=True,
        )

    if workers <= 1:
        for job in jobs:
            finished(run_pipeline(*job, settings, data_dir, threads))
    else:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_pipeline, *job, settings, data_dir, threads) for job in jobs]
            for future in as_completed(futures):
                finished(future.result())
    data["wall_seconds"] = time.perf_counter() - started
    return data


if __name__ == "__main__":
    main()
