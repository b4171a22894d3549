"""Evaluate a generator alone, with a trained critic, an LLM critic and the oracle critic (the paper's Tables 2-3).

Usage:

```bash
python recipes/evaluate.py --config recipes/evaluate_mwp_tiny.yaml
python recipes/evaluate.py --config recipes/evaluate_mwp.yaml --max_turns 1 --output_dir results/mwp-T1
python recipes/evaluate.py --config recipes/evaluate_mwp_llm.yaml   # + an LLM critic behind an API
```

Prints the table and writes to `output_dir`: `results.md` (the table, and the primary metric after each turn),
`results.json` (every metric after every turn, acceptance, a few traces) and `metric_by_turn.png`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from refiner_trl.evaluation import LLM_CRITIC, EvaluationResult, evaluate_and_report
from refiner_trl.generators import ModelGenerator
from refiner_trl.modeling import inference_device
from refiner_trl.recipe_args import CriticArguments, TaskArguments
from refiner_trl.recipe_parser import parse_recipe_args


@dataclass
class EvaluateArguments:
    """
    What is evaluated, and where the report goes. The trained critic is `critic` of [`CriticArguments`] (a folder
    saved by `recipes/train_critic.py`); with `critic: oracle` the table has no trained-critic row. `llm_critic:
    openai:<model>` (or `critic: openai:<model>`) adds the "+ LLM critic" row.

    Parameters:
        generator (`str`):
            The generator: a Hub id or a folder saved with `save_pretrained` (e.g. the output of a REFINER recipe).
        output_dir (`str`, *optional*, defaults to `"results"`):
            Where `results.md`, `results.json` and `metric_by_turn.png` are written.
        max_turns (`int`, *optional*, defaults to `3`):
            T of the trained and LLM critics' rows.
        oracle_max_turns (`int`, *optional*, defaults to `3`):
            T of the oracle critic's row (the paper's oracle rows use 3).
        oracle (`bool`, *optional*, defaults to `True`):
            Whether the table has the oracle critic's row.
        max_prompt_length (`int`, *optional*, defaults to `512`):
            Longest generator prompt in tokens (refine prompts keep their end, where the feedback is).
        max_new_tokens (`int`, *optional*, defaults to `64`):
            Longest hypothesis in tokens.
        batch_size (`int`, *optional*, defaults to `64`):
            Prompts per `generate` call of the generator.
        title (`str`, *optional*):
            Heading of the report and title of the plot; defaults to one naming the task.
        progress (`bool`, *optional*, defaults to `True`):
            Show progress bars.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Run modelling code from the models' repositories when loading them by name.
        device (`str`, *optional*):
            Where the generator and the trained critic run, e.g. `cuda:1`. Unset: the first CUDA GPU when there is
            one, else the CPU.
        torch_num_threads (`int`, *optional*):
            `torch.set_num_threads` for the run. Unset: torch's default (all cores). `1` is much faster for tiny
            models on a CPU that other processes share.
    """

    generator: str = field(metadata={"help": "Generator: Hub id or saved folder."})
    output_dir: str = field(default="results", metadata={"help": "Where the report is written."})
    max_turns: int = field(default=3, metadata={"help": "T of the trained and LLM critics' rows."})
    oracle_max_turns: int = field(default=3, metadata={"help": "T of the oracle critic's row."})
    oracle: bool = field(default=True, metadata={"help": "Add the oracle critic's row."})
    max_prompt_length: int = field(default=512, metadata={"help": "Longest generator prompt in tokens."})
    max_new_tokens: int = field(default=64, metadata={"help": "Longest hypothesis in tokens."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per generate call."})
    title: str | None = field(default=None, metadata={"help": "Report heading and plot title."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run the model repositories' code."})
    device: str | None = field(default=None, metadata={"help": "Device of the models; unset: cuda if any, else cpu."})
    torch_num_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for the run."})


EVALUATE_ARGUMENTS = (TaskArguments, CriticArguments, EvaluateArguments)
"""The dataclasses this recipe parses (`--config file.yaml` and command-line overrides), in `main`'s order."""


def main(task_args: TaskArguments, critic_args: CriticArguments, eval_args: EvaluateArguments) -> EvaluationResult:
    """Load the generator and critics, evaluate, print the table and write the report; return the evaluation."""
    # Threads and device
    if eval_args.torch_num_threads is not None:
        torch.set_num_threads(eval_args.torch_num_threads)
    device = inference_device(eval_args.device)

    # Task data: the evaluation rows
    task, _, rows = task_args.load()

    # Generator and critics: none, + trained critic, + LLM critic, + oracle critic
    generator = ModelGenerator(
        eval_args.generator,
        max_prompt_length=eval_args.max_prompt_length,
        max_new_tokens=eval_args.max_new_tokens,
        batch_size=eval_args.batch_size,
        trust_remote_code=eval_args.trust_remote_code,
    )
    generator.model.to(device)
    critics = critic_args.table_critics(task, eval_args.trust_remote_code, device)
    if not eval_args.oracle:
        critics.pop("oracle")

    # Evaluate, write the report, print the table
    max_turns = {"trained": eval_args.max_turns, LLM_CRITIC: eval_args.max_turns, "oracle": eval_args.oracle_max_turns}
    title = eval_args.title or f"REFINER on {task.name}: {eval_args.generator}"
    return evaluate_and_report(
        task, generator, rows, critics, eval_args.output_dir, title, max_turns, progress=eval_args.progress
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(EVALUATE_ARGUMENTS))
