"""Step-cost benchmark: where a REFINER training step spends its time, read from the trainer's own `time/*` logs.

For each model of `--models` (`tiny-seq2seq` and `tiny-causal`: about 10M parameters built from a config, with a
tokenizer trained on the data; or a model folder, e.g. SmolLM2-135M-Instruct), a batch of MWP prompts (the release's
when `--data-dir` holds it, else synthetic) and the task's oracle critic:

1. **grid**, k in `--ks` and T in `--turns`: `RefinerTrainer` trains `--warmup` + `--repeats` steps on a fresh copy
   of the model, logging every step. A cell is the median over the measured steps of every `time/*` log the trainer
   writes (`time/generate`, `time/critique`, `time/forward`, `time/forward_backward`, `time/step`) and of the whole
   optimizer step (wall and CPU, `on_step_begin` -> `on_step_end`: the one number no log has); **overhead** = step /
   (generate + critique + forward_backward), what the step costs beyond its model calls and the critic;
2. at `--compare-k`, `--compare-turns`: the supervised step (`train_supervised`: TRL's SFTTrainer, or transformers'
   Seq2SeqTrainer for encoder-decoders) on the same model and batch, and REFINER with `explore_last_turn=True`;
3. with `--profile`: `torch.profiler` over one REFINER step at that point, the operators by CPU time.

Each cell is written to `step_cost.json` when measured; `--resume` skips the cells already there.

    python benchmarks/step_cost.py --quick                  # seconds; tests/test_benchmarks_quick.py runs it
    python benchmarks/step_cost.py --threads 1              # the tiny models (docs/benchmarks.md, section 2)
    python benchmarks/step_cost.py --threads 1 --resume --models \\
        /root/.cache/refiner-trl/smollm2-135m-instruct-bcc81830d10c --ks 1 4 --repeats 2 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import render
from transformers import TrainerCallback

QUICK = {
    "hidden_size": 32, "seq2seq_layers": 1, "causal_layers": 1,
    "vocab_size": 400, "batch_size": 2, "ks": [1, 2], "turns": [1, 2], "compare_k": 2, "compare_turns": 2,
    "repeats": 2, "max_new_tokens": 8,
}  # fmt: skip


class StepClock(TrainerCallback):
    """Wall and CPU seconds of each optimizer step, `on_step_begin` -> `on_step_end`."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, *args: Any, **kwargs: Any) -> None:
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


class ProfileStep(TrainerCallback):
    """`torch.profiler` (CPU) over the optimizer step that follows `warmup` steps."""

    def __init__(self, warmup: int) -> None:
        from torch.profiler import ProfilerActivity, profile

        self.warmup, self.profiler = warmup, profile(activities=[ProfilerActivity.CPU])

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup:
            self.profiler.__enter__()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup + 1:
            self.profiler.__exit__(None, None, None)


def train(trainer: Any, warmup: int, *callbacks: TrainerCallback) -> dict[str, Any]:
    """Train `trainer` (with more `callbacks`) and return the medians over its steps after `warmup`: the step's wall
    and CPU seconds, every `time/*` log and the overhead."""
    from transformers.trainer_callback import PrinterCallback

    clock = StepClock()
    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    for callback in (clock, *callbacks):
        trainer.add_callback(callback)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if any(key.startswith("time/") for key in entry)][warmup:]
    cell: dict[str, Any] = {
        "trainer": type(trainer).__name__,
        "measured_steps": len(clock.wall[warmup:]),
        "step": statistics.median(clock.wall[warmup:]),
        "step_cpu": statistics.median(clock.cpu[warmup:]),
    }
    for key in dict.fromkeys(key for entry in logs for key in entry if key.startswith("time/")):
        cell[key] = statistics.median(entry[key] for entry in logs if key in entry)
    model_calls = sum(cell.get(f"time/{part}", 0.0) for part in ("generate", "critique", "forward_backward"))
    cell["overhead"] = cell["step"] / model_calls if logs else None
    return cell


def refiner_cell(
    setup: dict[str, Any], args: argparse.Namespace, k: int, turns: int, profile: bool = False, **config: Any
) -> dict[str, Any]:
    """`args.warmup + args.repeats` REFINER steps at (k, T) on a copy of the model ([`train`]); with `profile`, the
    operators of the first measured step by CPU time, from `torch.profiler`."""
    from refiner_trl import RefinerConfig, RefinerTrainer

    config = RefinerConfig(
        **common_args(args, setup["scratch"]), num_hypotheses=k, num_refinement_turns=turns,
        max_new_tokens=setup["max_new_tokens"], **config,
    )  # fmt: skip
    trainer = RefinerTrainer(
        copy.deepcopy(setup["model"]), config, critic=setup["critic"], train_dataset=setup["rows"],
        processing_class=setup["tokenizer"],
    )  # fmt: skip
    if not profile:
        return train(trainer, args.warmup)
    profiler = ProfileStep(args.warmup)
    cell = train(trainer, args.warmup, profiler)
    events = sorted(profiler.profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events) or 1.0
    cell["operators"] = [
        {"operator": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "share": e.self_cpu_time_total / total}
        for e in events[:15]
    ]
    return cell


def supervised_cell(setup: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The supervised step (`train_supervised`) on a copy of the same model and batch."""
    from refiner_trl.supervised import SupervisedConfig, train_supervised

    config = SupervisedConfig(**common_args(args, setup["scratch"]))
    model, tokenizer = copy.deepcopy(setup["model"]), setup["tokenizer"]
    return train(train_supervised(model, tokenizer, setup["rows"], config, train=False), args.warmup)


def common_args(args: argparse.Namespace, scratch: str) -> dict[str, Any]:
    return {
        "output_dir": scratch, "per_device_train_batch_size": args.batch_size,
        "max_steps": args.warmup + args.repeats, "learning_rate": 1e-4, "logging_steps": 1, "report_to": [],
        "save_strategy": "no", "disable_tqdm": True, "seed": args.seed, "max_prompt_length": args.max_prompt_length,
        "max_completion_length": 64, "dataloader_drop_last": True, "use_cpu": args.use_cpu,
    }  # fmt: skip


def build(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """The model, tokenizer, batch rows, critic and `max_new_tokens` of one `--models` entry."""
    import torch

    from refiner_trl import get_task
    from refiner_trl.modeling import build_tiny_model, load_model_and_tokenizer, train_tokenizer

    task = get_task("mwp")
    release = Path(args.data_dir) / "mwp" / "train.json"
    train_rows = task.load(path=str(release)) if release.is_file() else task.synthetic(n=2000, seed=0)
    train_rows = train_rows.select_columns(["prompt", "completion"])
    if name.startswith("tiny-"):
        architecture = name.removeprefix("tiny-")
        tokenizer = train_tokenizer(task.tokenizer_texts(train_rows), vocab_size=args.vocab_size)
        layers = args.seq2seq_layers if architecture == "seq2seq" else args.causal_layers
        model = build_tiny_model(architecture, tokenizer, args.hidden_size, layers, seed=args.seed)
    else:
        model, tokenizer = load_model_and_tokenizer(name, dtype=torch.float32)
    rows = train_rows.shuffle(seed=args.seed).select(range(args.batch_size * (args.warmup + args.repeats)))
    completions = tokenizer(list(train_rows["completion"]), add_special_tokens=False)["input_ids"]
    lengths = sorted(len(ids) + 1 for ids in completions)  # EOS included
    return {
        "model": model, "tokenizer": tokenizer, "rows": rows, "critic": task.oracle_critic(),
        "data": "release" if release.is_file() else "synthetic",
        "max_new_tokens": args.max_new_tokens or lengths[int(0.95 * (len(lengths) - 1))],
        "parameters": sum(p.numel() for p in model.parameters()),
        "mean_prompt_tokens": statistics.mean(len(ids) for ids in tokenizer(list(rows["prompt"]))["input_ids"]),
    }  # fmt: skip


def plan(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """Every cell of a model: its name and `(setup) -> record`."""
    k, t = args.compare_k, args.compare_turns
    cells = [
        (f"k={k} T={turns}", lambda s, k=k, turns=turns: refiner_cell(s, args, k, turns))
        for turns in args.turns
        for k in (args.ks if turns > 1 else args.ks[:1])  # T = 1 samples nothing: k does not matter
    ]
    cells += [
        ("supervised", lambda s: supervised_cell(s, args)),
        (f"explore_last_turn k={k} T={t}", lambda s: refiner_cell(s, args, k, t, explore_last_turn=True)),
    ]
    if args.profile:
        cells.append((f"profile k={k} T={t}", lambda s: refiner_cell(s, args, k, t, profile=True)))
    return cells


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="Tiny models and sizes: seconds (the test runs it).")
    add("--models", nargs="+", default=["tiny-seq2seq", "tiny-causal"], help="tiny-seq2seq, tiny-causal or folders.")
    add("--output-dir", default="outputs/benchmarks/step_cost")
    add("--data-dir", default=str(render.DATA_DIR), help="The release's data; 'none': synthetic MWP rows.")
    add("--resume", action="store_true", help="Keep the cells of the output dir's step_cost.json.")
    add("--profile", action="store_true", help="Also profile one REFINER step at the compare point.")
    add("--threads", type=int, default=None, help="torch threads (1 on a CPU shared with other jobs).")
    add("--use-cpu", action="store_true", help="Train on the CPU even when an accelerator is there.")
    add("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    add("--turns", type=int, nargs="+", default=[1, 2, 3])
    sizes = {
        "hidden-size": 256, "seq2seq-layers": 4, "causal-layers": 8, "vocab-size": 2000, "batch-size": 8,
        "compare-k": 4, "compare-turns": 3, "warmup": 1, "repeats": 3, "max-prompt-length": 320, "seed": 0,
        "max-new-tokens": None,
    }  # fmt: skip
    return render.parse_sized_args(parser, argv, sizes, QUICK)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    from refiner_trl.report import write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    path = output_dir / "step_cost.json"
    earlier = json.loads(path.read_text(encoding="utf-8")) if args.resume and path.is_file() else {}
    data = {
        "benchmark": "step_cost", "command": " ".join(["python", *sys.argv]), "quick": args.quick,
        "machine": render.machine(args.threads), "settings": vars(args), "models": earlier.get("models", {}),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            key = Path(name).name
            setup = {**build(name, args), "scratch": scratch}
            entry = data["models"].setdefault(key, {"cells": {}})
            entry.update({k: v for k, v in setup.items() if isinstance(v, (int, float, str))})
            print(f"{key}: {setup['parameters'] / 1e6:.2f}M parameters, {setup['max_new_tokens']} new tokens")
            for cell, measure in plan(args):
                if cell in entry["cells"]:
                    continue
                entry["cells"][cell] = measure(setup)
                write_json(path, data)
                record = entry["cells"][cell]
                overhead = "" if record["overhead"] is None else f", overhead {record['overhead']:.3f}"
                print(f"  {cell}: step {record['step']:.3f} s{overhead}", flush=True)
    render.write_outputs(output_dir, "step_cost", data, markdown(data))
    render.plot_stacked(
        {model: {cell: parts(record) for cell, record in entry["cells"].items() if cell.startswith("k=")}
         for model, entry in data["models"].items()},
        output_dir / "step_cost.png", "seconds per step",
    )  # fmt: skip
    return data


def parts(cell: dict[str, Any]) -> dict[str, float]:
    """A REFINER step split into generate, critique, forward, backward and other (the rest of the step)."""
    generate, critique = cell.get("time/generate", 0.0), cell.get("time/critique", 0.0)
    forward, forward_backward = cell.get("time/forward", 0.0), cell.get("time/forward_backward", 0.0)
    split = {"generate": generate, "critique": critique, "forward": forward, "backward": forward_backward - forward}
    return {**split, "other": cell["step"] - generate - critique - forward_backward}


def markdown(data: dict[str, Any]) -> str:
    lines = ["# Step cost", "", render.machine_line(data["machine"]), "", f"Command: `{data['command']}`", ""]
    for model, entry in data["models"].items():
        cells = entry["cells"]
        grid = [{"cell": name, **cell, **parts(cell)} for name, cell in cells.items() if name.startswith("k=")]
        lines += [f"## {model}: {entry['parameters'] / 1e6:.2f}M parameters, {entry['data']} data", ""]
        columns = ["cell", "step", "step_cpu", "generate", "critique", "forward", "backward", "other", "overhead"]
        lines += ["Seconds per step (medians):", "", render.table(grid, columns), ""]
        refiner = cells.get(f"k={data['settings']['compare_k']} T={data['settings']['compare_turns']}")
        others = [(name, cell) for name, cell in cells.items() if not name.startswith(("k=", "profile"))]
        if refiner and others:
            rows = [{"step": name, "seconds": c["step"], "cpu": c["step_cpu"], "over": c["step"] / refiner["step"]}
                    for name, c in others]  # fmt: skip
            headings = {"step": "step", "seconds": "wall s", "cpu": "CPU s", "over": "/ REFINER step"}
            lines += ["Comparisons:", "", render.table(rows, headings), ""]
        for name, cell in cells.items():
            if "operators" in cell:
                operators = render.table(cell["operators"], ["operator", "self_cpu_s", "share"])
                lines += [f"Profile of one step, {name}:", "", operators, ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
