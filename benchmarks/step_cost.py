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
   encoder-decoders), and against a per-example loop (a `RefinerTrainer` subclass in `trainer_variants`, whose
   exploration generates, picks, critiques and builds the refine prompt one example at a time, as the authors' code
   does), and against itself with `explore_last_turn=True` (sampling and critiquing in the last turn too, for its
   logs only).
3. **Inference**: `refine` with early stopping against running all T turns for all examples, with a function
   generator that is right with probability p and the oracle critic (work counted), and with the model (greedy)
   and a critic that accepts with probability p (time measured).

Every number is a median over `--repeats` measured steps (after `--warmup` unmeasured ones). The step timing is in
`step_timing`, the trainers compared in `trainer_variants`, the inference in `inference_cost`, the SmolLM2 section in
`step_cost_smollm2` and the tables and plot in `step_cost_report`.

    python benchmarks/step_cost.py --quick          # about a minute; CI runs it
    python benchmarks/step_cost.py --threads 1      # the full run (docs/benchmarks.md has its numbers)
"""

from __future__ import annotations

import argparse
import copy
import functools
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import _common
import _machine
import step_cost_report
import step_cost_smollm2
from inference_cost import inference_cost
from step_timing import refiner_step, supervised_step
from trainer_variants import per_example_trainer_class, variant_class

ARCHITECTURES = ("seq2seq", "causal")


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


# ------------------------------------------------------------------------------------------------------ tiny


def build(
    architecture: str, settings: Settings, seed: int, data_dir: Path | None
) -> tuple[Any, Any, Any, Any, str, int]:
    """The task, the training rows, a tokenizer trained on them, the model, the data source, and max_new_tokens.

    Args:
        architecture (`str`):
            `"seq2seq"` or `"causal"`.
        settings (`Settings`):
            The sizes.
        seed (`int`):
            The seed of the model's weights.
        data_dir (`Path`, *optional*):
            The release's data; `None`: synthetic MWP rows.
    """
    task, train, _, source = _common.task_data("mwp", data_dir, 2000, 16, None)
    train = train.select_columns(["prompt", "completion"])
    layers = settings.seq2seq_layers if architecture == "seq2seq" else settings.causal_layers
    model, tokenizer = _common.tiny_model(
        architecture, task.tokenizer_texts(train), settings.vocab_size, settings.hidden_size, layers, seed
    )
    p95 = _common.completion_length(tokenizer, train["completion"], 0.95, eos=True)
    return task, train, tokenizer, model, source, settings.max_new_tokens or p95


def run(settings: Settings, architectures: Sequence[str], seed: int, data_dir: Path | None) -> dict[str, Any]:
    """Every measurement of the tiny models, for each architecture: the grid, the comparisons and the inference.

    Args:
        settings (`Settings`):
            The sizes.
        architectures (`Sequence[str]`):
            Among `ARCHITECTURES`.
        seed (`int`):
            The seed of the models and batches.
        data_dir (`Path`, *optional*):
            The release's data; `None`: synthetic MWP rows.
    """
    results: dict[str, Any] = {}
    for architecture in architectures:
        task, train, tokenizer, model, source, max_new_tokens = build(architecture, settings, seed, data_dir)
        arch_settings = replace(settings, max_new_tokens=max_new_tokens)
        rows = train.shuffle(seed=seed).select(range(settings.batch_size * (settings.warmup + settings.repeats)))
        prompt_tokens = [len(ids) for ids in tokenizer(list(rows["prompt"]))["input_ids"]]
        entry: dict[str, Any] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "data": source,
            "max_new_tokens": max_new_tokens,
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
        }
        print(
            f"{architecture}: {entry['parameters'] / 1e6:.2f}M parameters, max_new_tokens={max_new_tokens}", flush=True
        )
        with tempfile.TemporaryDirectory() as scratch:
            measure = functools.partial(
                _measure, model=model, tokenizer=tokenizer, rows=rows, critic=task.oracle_critic(),
                settings=arch_settings, seed=seed, scratch=scratch,
            )  # fmt: skip
            entry["grid"] = grid(measure, settings.ks, settings.turns)
            entry["comparison"] = comparison(measure, settings.compare_k, settings.compare_turns)
        inference_rows = train.shuffle(seed=seed + 1).select(range(settings.inference_rows))
        entry["inference"] = inference_cost(task, model, tokenizer, inference_rows, arch_settings, seed)
        results[architecture] = entry
    return results


def _measure(
    trainer_class: type | None,
    k: int,
    turns: int,
    model: Any,
    tokenizer: Any,
    rows: Any,
    critic: Any,
    settings: Settings,
    seed: int,
    scratch: str,
    **config: Any,
) -> dict[str, Any]:
    """`refiner_step` of `trainer_class` on a copy of `model`; `None`: `supervised_step` (k and T unused)."""
    if trainer_class is None:
        return supervised_step(copy.deepcopy(model), tokenizer, rows, settings, seed, scratch)
    return refiner_step(
        trainer_class, copy.deepcopy(model), tokenizer, rows, critic, settings, k, turns, seed, scratch, **config
    )


def grid(measure: Callable[..., dict[str, Any]], ks: Sequence[int], turns: Sequence[int]) -> list[dict[str, Any]]:
    """The breakdown of today's `RefinerTrainer` step for each T in `turns` and k in `ks`.

    Args:
        measure (`Callable`):
            `(trainer_class, k, turns)` -> the step's parts, on the architecture's model and batch.
        ks (`Sequence[int]`):
            The numbers of hypotheses.
        turns (`Sequence[int]`):
            The numbers of refinement turns.
    """
    from refiner_trl import RefinerTrainer

    cells = []
    for t in turns:
        for k in ks:
            parts = measure(RefinerTrainer, k, t)
            cells.append({"k": k, "turns": t, **parts})
            print(f"  k={k} T={t}: step {parts['step']:.3f} s, overhead {parts['overhead']:.3f}", flush=True)
    return cells


def comparison(measure: Callable[..., dict[str, Any]], k: int, turns: int) -> dict[str, Any]:
    """REFINER's step at (k, T) against the per-example loop, the step before the speed-ups, the step exploring its
    last turn too, and the supervised step; with their ratios (wall and CPU).

    Args:
        measure (`Callable`):
            `(trainer_class, k, turns, **config)` -> the step's parts; `trainer_class=None`: the supervised step.
        k (`int`):
            The number of hypotheses.
        turns (`int`):
            The number of refinement turns.
    """
    from refiner_trl import RefinerTrainer

    refiner = measure(RefinerTrainer, k, turns)
    loop = measure(per_example_trainer_class(), k, turns)
    before = measure(variant_class(RefinerTrainer, shared=False, grouped=False), k, turns)
    last_turn = measure(RefinerTrainer, k, turns, explore_last_turn=True)
    supervised = measure(None, k, turns)
    print(
        f"  k={k} T={turns}: REFINER {refiner['step']:.3f} s, per-example loop {loop['step']:.3f} s, "
        f"before the speed-ups {before['step']:.3f} s, {supervised['trainer']} {supervised['step']:.3f} s",
        flush=True,
    )
    return {
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


# ----------------------------------------------------------------------------------------------------- driver


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The options: the common ones, the sections, and one `--<field>` per field of `Settings`.

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments; `None`: the process's own.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _common.add_common_arguments(
        parser,
        "outputs/benchmarks/step_cost",
        (0,),
        resume_help="Keep the sections and SmolLM2 cells of the output dir's JSON.",
        render=True,
    )
    parser.add_argument("--architectures", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    _common.add_data_dir_argument(parser, "'none': synthetic MWP rows.")
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
        "step_cost", Path(args.output_dir), step_cost_report.format_markdown, step_cost_report.plot
    )
    return _common.drive(args, outputs, lambda: measure(args, argv, outputs))


def measure(args: argparse.Namespace, argv: Sequence[str] | None, outputs: _common.Outputs) -> dict[str, Any]:
    """The sections of `--sections`, the JSON saved after each (and after each SmolLM2 cell).

    Args:
        args (`argparse.Namespace`):
            The parsed options.
        argv (`Sequence[str]`, *optional*):
            The arguments, for the command written in the JSON.
        outputs (`Outputs`):
            Where the JSON goes; with `--resume`, its earlier sections and cells are kept.
    """
    threads = _common.set_threads(args.threads)
    data_dir = _common.data_dir(args.data_dir)
    settings = _common.settings_from_args(args, replace(QUICK) if args.quick else Settings())
    seeds = args.seeds or [0]
    started = time.perf_counter()
    earlier = outputs.earlier(args.resume)
    data: dict[str, Any] = {
        "benchmark": "step_cost",
        "command": _common.command_line(argv),
        "quick": args.quick,
        "machine": _machine.machine_info(threads),
        "settings": asdict(settings),
        "seed": seeds[0],
    }
    if len(seeds) > 1:
        print(f"step_cost uses one seed (the model and batch); using {seeds[0]}", flush=True)
    earlier_seconds = earlier.get("wall_seconds") or 0.0

    def save() -> None:
        data["wall_seconds"] = earlier_seconds + time.perf_counter() - started
        outputs.save(data)

    if "tiny" in args.sections:
        data["results"] = earlier.get("results") or run(settings, args.architectures, seeds[0], data_dir)
        save()
    if "smollm2" in args.sections:
        from refiner_trl.pretrained import fetch

        path = fetch("smollm2-135m-instruct") if args.smollm2_path is None else Path(args.smollm2_path)
        if not (path / "config.json").is_file():
            raise SystemExit(f"--smollm2-path {path}: no model folder there (no config.json)")
        data["smollm2"] = earlier.get("smollm2", {})
        step_cost_smollm2.run(
            path, step_cost_smollm2.settings_for(settings), seeds[0], data_dir, data["smollm2"], save
        )
    data["wall_seconds"] = earlier_seconds + time.perf_counter() - started
    return data


if __name__ == "__main__":
    main()
