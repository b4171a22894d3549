"""Peer ratio: a REFINER step next to TRL's own `GRPOTrainer` step at the same k, batch and sampling settings.

Both trainers as they are, in one run, on copies of one model (SmolLM2-135M-Instruct by default, `--model` a folder;
`--quick`: a tiny causal model built from a config) and the same batch of MWP prompts (the release's when `--data-dir`
holds it, else synthetic):

- **GRPO**: `GRPOTrainer` with `num_generations` = k, `per_device_train_batch_size` = batch x k completions (one
  generation per optimizer step, `steps_per_generation` = 1), `max_completion_length` = `--max-new-tokens`, the
  exploration's temperature, top-p and top-k, no vLLM, `beta` = 0 (TRL's default: no reference model), float32 and
  no gradient checkpointing, as REFINER's config (TRL's default turns it on: `--grpo-gradient-checkpointing`), and a
  reward from the task's oracle: 1 when it finds no error in the completion, else 0;
- **REFINER**: `RefinerTrainer` at the same k, T = `--turns` (2: one explored turn, as GRPO's one generation), the
  oracle critic, the same `max_new_tokens`.

Each is timed per optimizer step (wall and CPU, `on_step_begin` -> `on_step_end`); the median over `--repeats` steps
after `--warmup` steps. The ratio is REFINER's step over GRPO's: below 1, REFINER's step is the cheaper one.

    python benchmarks/peer_ratio.py --quick                       # seconds; tests/test_benchmarks_quick.py runs it
    python benchmarks/peer_ratio.py --threads 1 --data-dir none   # SmolLM2, k = 4, batch 8, 48 new tokens
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import render
import step_cost

SMOLLM2 = "/root/.cache/refiner-trl/smollm2-135m-instruct-bcc81830d10c"
QUICK = {
    "model": "tiny-causal", "hidden_size": 32, "causal_layers": 1, "vocab_size": 400, "batch_size": 2, "k": 2,
    "repeats": 2, "max_new_tokens": 8,
}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="A tiny causal model and sizes: seconds (the test runs it).")
    add("--model", default=SMOLLM2, help="A causal model folder, or tiny-causal.")
    add("--output-dir", default="outputs/benchmarks/peer_ratio")
    add("--data-dir", default=str(render.DATA_DIR), help="The release's data; 'none': synthetic MWP rows.")
    add("--threads", type=int, default=None, help="torch threads (1 on a CPU shared with other jobs).")
    add("--use-cpu", action="store_true", help="Train on the CPU even when an accelerator is there.")
    add("--temperature", type=float, default=1.0)
    add("--top-p", type=float, default=0.95)
    add("--grpo-gradient-checkpointing", action="store_true", help="TRL's default for GRPO (off in REFINER's).")
    sizes = {
        "k": 4, "turns": 2, "batch-size": 8, "max-new-tokens": 48, "warmup": 1, "repeats": 3, "max-prompt-length": 320,
        "seed": 0, "hidden-size": 256, "seq2seq-layers": 4, "causal-layers": 8, "vocab-size": 2000,
    }  # fmt: skip
    return render.parse_sized_args(parser, argv, sizes, QUICK)


def grpo_cell(setup: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """`args.warmup + args.repeats` steps of TRL's `GRPOTrainer` on a copy of the model, the oracle as reward."""
    from trl import GRPOConfig, GRPOTrainer

    from refiner_trl.critics import is_no_error

    critic = setup["critic"]

    def oracle_reward(prompts: list[str], completions: list[str], reference: list[str], **_: Any) -> list[float]:
        return [float(is_no_error(f)) for f in critic.critique(list(prompts), list(completions), list(reference))]

    base = step_cost.common_args(args, setup["scratch"])
    for key in ("max_prompt_length", "max_completion_length", "per_device_train_batch_size"):
        base.pop(key)
    config = GRPOConfig(
        **base, per_device_train_batch_size=args.batch_size * args.k, num_generations=args.k, steps_per_generation=1,
        max_completion_length=setup["max_new_tokens"], temperature=args.temperature, top_p=args.top_p, top_k=0,
        use_vllm=False, beta=0.0, bf16=False, log_completions=False,
        gradient_checkpointing=args.grpo_gradient_checkpointing,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=copy.deepcopy(setup["model"]), reward_funcs=oracle_reward, args=config,
        train_dataset=setup["rows"].rename_column("completion", "reference"),
        processing_class=copy.deepcopy(setup["tokenizer"]),
    )  # fmt: skip
    return step_cost.train(trainer, args.warmup)


def refiner_cell(setup: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The same number of `RefinerTrainer` steps at k and T, the oracle critic, the same sampling settings."""
    return step_cost.refiner_cell(setup, args, args.k, args.turns, temperature=args.temperature, top_p=args.top_p)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = {
        "benchmark": "peer_ratio", "command": " ".join(["python", *sys.argv]), "quick": args.quick,
        "machine": render.machine(args.threads), "settings": vars(args),
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        setup = {**step_cost.build(args.model, args), "scratch": scratch}
        data.update({k: v for k, v in setup.items() if isinstance(v, (int, float, str)) and k != "scratch"})
        print(f"{Path(args.model).name}: {setup['parameters'] / 1e6:.2f}M parameters", flush=True)
        for name, measure in (("grpo", grpo_cell), ("refiner", refiner_cell)):
            data[name] = measure(setup, args)
            print(f"  {name}: step {data[name]['step']:.3f} s, CPU {data[name]['step_cpu']:.3f} s", flush=True)
    data["ratio"] = data["refiner"]["step"] / data["grpo"]["step"]
    data["ratio_cpu"] = data["refiner"]["step_cpu"] / data["grpo"]["step_cpu"]
    data["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    render.write_outputs(args.output_dir, "peer_ratio", data, markdown(data))
    return data


def markdown(data: dict[str, Any]) -> str:
    settings = data["settings"]
    rows = [
        {"trainer": f"{cell['trainer']} ({name})", "steps": cell["measured_steps"], "wall": cell["step"],
         "cpu": cell["step_cpu"], "generate": cell.get("time/generate")}
        for name, cell in (("GRPO", data["grpo"]), ("REFINER", data["refiner"]))
    ]  # fmt: skip
    headings = {"trainer": "trainer", "steps": "measured steps", "wall": "step, wall s (median)",
                "cpu": "step, CPU s (median)", "generate": "of which generate, s"}  # fmt: skip
    return "\n".join([
        "# Peer ratio: REFINER step / TRL GRPO step", "", render.machine_line(data["machine"]),
        f"Load average at the end: {data['load_average_at_end']}.", "", f"Command: `{data['command']}`", "",
        f"{Path(settings['model']).name} ({data['parameters'] / 1e6:.2f}M parameters, {data['data']} data): batch "
        f"{settings['batch_size']} prompts, k = {settings['k']}, REFINER T = {settings['turns']}, "
        f"{data['max_new_tokens']} new tokens, temperature {settings['temperature']}, top-p {settings['top_p']}; "
        f"GRPO's gradient checkpointing {'on' if settings['grpo_gradient_checkpointing'] else 'off'}.", "",
        render.table(rows, headings), "",
        f"Ratio REFINER / GRPO: {data['ratio']:.3f} (wall), {data['ratio_cpu']:.3f} (CPU).", "",
    ])  # fmt: skip


if __name__ == "__main__":
    main()
