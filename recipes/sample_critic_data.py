"""Critic data from a generator's own samples: sample k hypotheses per training prompt, label them with the oracle.

The generator (e.g. the warm start of `recipes/train_generator.py`) is sampled with REFINER's exploration settings
(`num_hypotheses`, `temperature`, `top_p`, `max_new_tokens`) on the training prompts; the task's oracle critic labels
each sample with its feedback (or "No error."), and the records are appended to `output_dir/generator_samples.jsonl`
batch by batch. Run again, it goes on where it stopped. `recipes/train_critic.py` reads the file
(`generator_samples`), mixes the samples with the perturbations at `generator_sample_share`, and calibrates the critic
on the samples of the last `calibration_prompts` prompts.

    python recipes/sample_critic_data.py --config recipes/evidence_mwp_smollm2/critic_samples.yaml
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from refiner_trl.builders import load_model, load_task_data
from refiner_trl.config import RefinerConfig
from refiner_trl.critic_samples import SAMPLES_FILE, sample_critic_data
from refiner_trl.critics import is_no_error
from refiner_trl.generators import ModelGenerator
from refiner_trl.recipe_checks import check_model_path
from refiner_trl.recipe_parser import parse_recipe_args
from refiner_trl.script_args import ModelArguments, TaskArguments

SAMPLING_ARGUMENTS = (TaskArguments, ModelArguments, RefinerConfig)
"""The dataclasses this recipe parses; of `RefinerConfig` it reads the exploration settings and `output_dir`."""


def main(task_args: TaskArguments, model_args: ModelArguments, args: RefinerConfig) -> Path:
    """Sample, label and append; return the samples file."""
    # Threads
    if model_args.torch_num_threads is not None:
        torch.set_num_threads(model_args.torch_num_threads)

    check_model_path(model_args.model_name_or_path)  # a missing folder: say how to fetch it

    # Task data: the training rows are the prompts (max_train_samples keeps the first ones)
    task, train_rows, _ = load_task_data(task_args)

    # The generator, sampling as REFINER's exploration does
    texts = task.tokenizer_texts(train_rows) if model_args.tiny_architecture else []
    model, tokenizer = load_model(model_args, texts, args.seed)
    generator = ModelGenerator(
        model,
        tokenizer,
        max_prompt_length=args.max_prompt_length,
        max_new_tokens=args.max_new_tokens,
        do_sample=True,
        temperature=args.temperature,
        top_p=args.top_p,
        batch_size=args.per_device_eval_batch_size * args.num_hypotheses,
    )

    # Sample, label with the oracle, append batch by batch (resumes where an earlier run stopped)
    path = Path(args.output_dir) / SAMPLES_FILE
    records = sample_critic_data(
        generator,
        task,
        train_rows,
        path,
        num_samples=args.num_hypotheses,
        prompts_per_batch=args.per_device_eval_batch_size,
        seed=args.seed,
    )
    verdicts = Counter(is_no_error(f) for record in records for f in record["feedback"])
    print(f"{path}: {len(records)} prompts, {verdicts[False]} wrong and {verdicts[True]} right samples")
    return path


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(SAMPLING_ARGUMENTS))
