"""Profile one REFINER training step on SmolLM2-135M-Instruct with torch's profiler: where the CPU time goes.

One warm-up step, then one step under `torch.profiler.profile` (CPU activities), batch 8 MWP prompts of the
release's `train.json`, the oracle critic, k hypotheses and T turns. Prints and writes (`profile_step.json`,
`profile_step.md`) the operators by self CPU time, and the step's time by the trainer's own phases (the
`time/*` metrics it logs: generate, forward, backward, critique).

    python benchmarks/profile_step.py --threads 1 --output-dir outputs/profile-step          # k = 4, T = 3
    python benchmarks/profile_step.py --threads 1 --k 1 --turns 2 --model path/to/model/folder
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common
import _machine

from refiner_trl.report import markdown_table, write_json, write_text


def profile_step(
    model_path: str, k: int, turns: int, batch_size: int, max_new_tokens: int, top: int
) -> dict[str, Any]:
    """Train two steps (the second profiled) and return the top operators and the step's logged phases."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    from refiner_trl import RefinerConfig, RefinerTrainer
    from refiner_trl.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_path)
    task, train, _, source = _common.task_data("mwp", _common.DEFAULT_DATA_DIR, 200, 8, None)
    rows = train.select_columns(["prompt", "completion"]).shuffle(seed=0).select(range(2 * batch_size))

    class ProfileSecondStep(TrainerCallback):
        def __init__(self) -> None:
            self.profiler = profile(activities=[ProfilerActivity.CPU])

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                self.profiler.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 2:
                self.profiler.__exit__(None, None, None)

    callback = ProfileSecondStep()
    with tempfile.TemporaryDirectory() as scratch:
        args = RefinerConfig(
            output_dir=scratch,
            max_steps=2,
            per_device_train_batch_size=batch_size,
            num_hypotheses=k,
            num_refinement_turns=turns,
            max_new_tokens=max_new_tokens,
            max_prompt_length=320,
            logging_steps=1,
            save_strategy="no",
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )
        trainer = RefinerTrainer(
            model, args, critic=task.oracle_critic(), train_dataset=rows, processing_class=tokenizer
        )
        trainer.add_callback(callback)
        trainer.train()
    events = callback.profiler.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    ranked = sorted(events, key=lambda event: event.self_cpu_time_total, reverse=True)
    operators = [
        {
            "name": event.key,
            "self_cpu_seconds": event.self_cpu_time_total / 1e6,
            "share": event.self_cpu_time_total / total,
            "calls": event.count,
        }
        for event in ranked[:top]
    ]
    phases = {key: value for key, value in trainer.state.log_history[1].items() if key.startswith("time/")}
    return {
        "model": model_path,
        "data": source,
        "k": k,
        "turns": turns,
        "batch_size": batch_size,
        "max_new_tokens": max_new_tokens,
        "threads": torch.get_num_threads(),
        "profiled_self_cpu_seconds": total / 1e6,
        "operators": operators,
        "phases": phases,
    }


def sampling_cost(model_path: str, k: int, batch_size: int, new_tokens: int, top_p: float) -> dict[str, Any]:
    """One turn's sampling (batch x k rows, exactly `new_tokens` new tokens each) with transformers' top-p warper and
    with the [`NucleusSampler`], CPU seconds (median of 2 after a warm-up)."""
    import time

    import torch

    from refiner_trl.data import encode_prompts
    from refiner_trl.generation import sampling_options
    from refiner_trl.modeling import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_path)
    _, train, _, _ = _common.task_data("mwp", _common.DEFAULT_DATA_DIR, 200, 8, None)
    prompts = [p for p in train.shuffle(seed=0)["prompt"][:batch_size] for _ in range(k)]
    inputs, _ = encode_prompts(tokenizer, prompts, 320, False, True)
    fixed = {"min_new_tokens": new_tokens, "max_new_tokens": new_tokens, "pad_token_id": tokenizer.pad_token_id}
    result: dict[str, Any] = {"rows": len(prompts), "new_tokens": new_tokens, "top_p": top_p}
    for name, nucleus_sampler in (("transformers_top_p", False), ("nucleus_sampler", True)):
        warper = {"do_sample": True, "temperature": 1.0, "top_p": top_p, "top_k": 0}  # transformers' warpers
        options = sampling_options(True, 1.0, top_p, 0) if nucleus_sampler else warper
        seconds = []
        for _ in range(3):
            start = time.process_time()
            with torch.no_grad():
                model.generate(**inputs, **fixed, **options)
            seconds.append(time.process_time() - start)
        result[name] = sorted(seconds[1:])[0]
        if nucleus_sampler:
            sampler = options["logits_processor"][0]
            result["rows_sorted_whole"] = sampler.sorted_rows / sampler.rows
    return result


def format_markdown(data: dict[str, Any]) -> str:
    """The operator table and the phase table."""
    rows = [
        [op["name"], f"{op['self_cpu_seconds']:.2f}", f"{100 * op['share']:.1f}", op["calls"]]
        for op in data["operators"]
    ]
    phases = [[name, f"{seconds:.2f}"] for name, seconds in data["phases"].items()]
    return (
        f"# One REFINER step on {data['model']}: k = {data['k']}, T = {data['turns']}, batch {data['batch_size']}\n\n"
        f"Profiled self CPU time: {data['profiled_self_cpu_seconds']:.1f} s ({data['threads']} thread(s)).\n\n"
        + markdown_table(["operator", "self CPU (s)", "share %", "calls"], rows)
        + "\n\nThe step's phases, as the trainer logs them (seconds):\n\n"
        + markdown_table(["phase", "seconds"], phases)
        + f"\n\nMachine: {_machine.machine_line(data['machine'])}\n"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="A model folder or .gguf file (default: SmolLM2 fetched into the cache).")
    parser.add_argument("--k", type=int, default=4, help="Hypotheses per example and turn.")
    parser.add_argument("--turns", type=int, default=3, help="T.")
    parser.add_argument("--batch-size", type=int, default=8, help="Prompts per step.")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="Longest sampled hypothesis.")
    parser.add_argument("--top", type=int, default=15, help="Operators listed.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    parser.add_argument("--output-dir", default="outputs/profile-step", help="Where the JSON and markdown go.")
    parser.add_argument(
        "--sampling-only", action="store_true", help="Only time one turn's sampling: top-p warper vs NucleusSampler."
    )
    args = parser.parse_args(argv)
    _common.quiet()
    threads = _common.set_threads(args.threads)
    model = args.model
    if model is None:
        from refiner_trl.pretrained import fetch

        model = str(fetch("smollm2-135m-instruct"))
    if args.sampling_only:
        data = sampling_cost(model, args.k, args.batch_size, args.max_new_tokens, 0.95)
        print(data, flush=True)
        write_json(Path(args.output_dir) / "sampling_cost.json", {**data, "machine": _machine.machine_info(threads)})
        return data
    data = profile_step(model, args.k, args.turns, args.batch_size, args.max_new_tokens, args.top)
    data["machine"] = _machine.machine_info(threads)
    output = Path(args.output_dir)
    write_json(output / "profile_step.json", data)
    text = format_markdown(data)
    write_text(output / "profile_step.md", text)
    print(text, flush=True)
    return data


if __name__ == "__main__":
    main()
