"""Evaluate a generator alone, with a trained critic, an LLM critic and the oracle critic (the paper's Tables 2-3).

Usage:

```bash
python recipes/evaluate.py --config recipes/evaluate_mwp_tiny.yaml
python recipes/evaluate.py --config recipes/evaluate_mwp.yaml --eval_max_turns 1 --output_dir results/mwp-T1
python recipes/evaluate.py --config recipes/evaluate_mwp_llm.yaml   # + an LLM critic behind an API
```

Prints the table and writes to `output_dir`: `results.md` (the table with 95% bootstrap intervals and each critic's
paired gain over the generator alone, the primary metric after each turn, and each critic's recall and false alarms
on the turn-0 hypotheses against the oracle), `results.json` (every metric after every turn, acceptance, a few
traces), `metric_by_turn.png` and `rows/<critic>.jsonl.gz` (per row: the hypothesis and feedback at each turn, the
score after each turn). `eval_critics: [name=spec, ...]` adds rows, e.g. `decision_oracle` or another critic's folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from refiner_trl.builders import load_model, load_task_data
from refiner_trl.evaluation import (
    EvaluationResult,
    evaluate_and_report,
    evaluation_critics,
    evaluation_templates,
    turns_by_critic,
)
from refiner_trl.generators import ModelGenerator
from refiner_trl.modeling import inference_device
from refiner_trl.recipe_checks import check_model_path
from refiner_trl.recipe_parser import parse_recipe_args
from refiner_trl.script_args import CriticArguments, EvaluationArguments, ModelArguments, TaskArguments
from refiner_trl.templates import load_run_templates


@dataclass
class EvaluateArguments:
    """
    Where this recipe's report goes and how it runs. The generator is `model_name_or_path` of [`ModelArguments`] (a
    Hub id or a folder saved with `save_pretrained`, e.g. the output of a REFINER recipe); the trained critic is
    `eval_critic`, else `critic` of [`CriticArguments`] when it is a folder saved by `recipes/train_critic.py`;
    `llm_critic: openai:<model>` (or `critic: openai:<model>`) adds the "+ LLM critic" row; T and the generation
    lengths are [`EvaluationArguments`]'. The refine templates and the chat template's keyword arguments are the ones
    the model was trained with (the `refiner_templates.json` a REFINER recipe saves with it), unless
    `eval_refine_template` / `eval_refine_feedback_template` are given.

    Parameters:
        output_dir (`str`, *optional*, defaults to `"results"`):
            Where `results.md`, `results.json` and `metric_by_turn.png` are written.
        batch_size (`int`, *optional*, defaults to `64`):
            Prompts per `generate` call of the generator.
        title (`str`, *optional*):
            Heading of the report and title of the plot; defaults to one naming the task.
        progress (`bool`, *optional*, defaults to `True`):
            Show progress bars.
        device (`str`, *optional*):
            Where the generator and the trained critic run, e.g. `cuda:1`. Unset: the first CUDA GPU when there is
            one, else the CPU.
    """

    output_dir: str = field(default="results", metadata={"help": "Where the report is written."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per generate call."})
    title: str | None = field(default=None, metadata={"help": "Report heading and plot title."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})
    device: str | None = field(default=None, metadata={"help": "Device of the models; unset: cuda if any, else cpu."})


EVALUATE_ARGUMENTS = (TaskArguments, ModelArguments, CriticArguments, EvaluationArguments, EvaluateArguments)
"""The dataclasses this recipe parses (`--config file.yaml` and command-line overrides), in `main`'s order."""


def main(
    task_args: TaskArguments,
    model_args: ModelArguments,
    critic_args: CriticArguments,
    eval_args: EvaluationArguments,
    script_args: EvaluateArguments,
) -> EvaluationResult:
    """Load the generator and critics, evaluate, print the table and write the report; return the evaluation."""
    # Threads and device
    if model_args.torch_num_threads is not None:
        torch.set_num_threads(model_args.torch_num_threads)
    device = inference_device(script_args.device)

    check_model_path(model_args.model_name_or_path)  # a missing folder: say how to fetch it

    # Task data: the evaluation rows
    task, _, rows = load_task_data(task_args)

    # Generator, with the templates it was trained with, and critics: none, + trained critic, + LLM, + oracle critic
    templates = evaluation_templates(eval_args, load_run_templates(model_args.model_name_or_path))
    model, tokenizer = load_model(model_args, texts=[])
    generator = ModelGenerator(
        model.to(device),
        tokenizer,
        max_prompt_length=eval_args.eval_max_prompt_length,
        max_new_tokens=eval_args.eval_max_new_tokens,
        batch_size=script_args.batch_size,
        chat_template_kwargs=templates["chat_template_kwargs"],
    )
    critics = evaluation_critics(task, critic_args, eval_args, model_args.trust_remote_code, device)

    # Evaluate, write the report, print the table
    title = script_args.title or f"REFINER on {task.name}: {model_args.display_name}"
    return evaluate_and_report(
        task,
        generator,
        rows,
        critics,
        script_args.output_dir,
        title,
        turns_by_critic(eval_args, critics),
        script_args.progress,
        templates=templates,
    )


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(EVALUATE_ARGUMENTS))
