"""Train a REFINER critic on automatic critic data, save it, and report how well it names held-out errors.

The critic data comes with no human in the loop: `task.build_critic_dataset` perturbs gold completions and writes the
feedback that names each error (or "No error." for the gold). Causal critics train with TRL's `SFTTrainer`
(completion-only loss), encoder-decoders with transformers' `Seq2SeqTrainer` (see `refiner_trl.supervised`).

Usage:

```bash
python recipes/train_critic.py --config recipes/critic_mwp_tiny.yaml
python recipes/train_critic.py --config recipes/critic_mwp.yaml --max_steps 2000   # CLI overrides the YAML
```

Writes to `output_dir`: the critic and its tokenizer (load with `ModelCritic(output_dir)`), and `critic_eval.json`
(exact match, "found no error", "named the right error", per-type accuracy, a few examples).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch
from transformers import set_seed

from refiner_trl.builders import get_peft_config, load_model, load_task_data
from refiner_trl.critic_eval import evaluate_critic, format_critic_report
from refiner_trl.critic_samples import critic_rows, read_samples, split_calibration
from refiner_trl.critics import NO_ERROR, ModelCritic, is_no_error
from refiner_trl.critics.calibration import calibrate, calibration_summary, completion_logprobs
from refiner_trl.recipe_checks import prepare_training_run
from refiner_trl.recipe_parser import parse_recipe_args
from refiner_trl.report import write_json
from refiner_trl.script_args import CriticArguments, ModelArguments, TaskArguments
from refiner_trl.supervised import SupervisedConfig, train_supervised
from refiner_trl.templates import render_critic_input

CRITIC_ARGUMENTS = (TaskArguments, ModelArguments, CriticArguments, SupervisedConfig)
"""The dataclasses this recipe parses (`--config file.yaml` and command-line overrides), in `main`'s order."""


def main(
    task_args: TaskArguments,
    model_args: ModelArguments,
    critic_args: CriticArguments,
    training_args: SupervisedConfig,
) -> dict:
    """Build critic data, train, save, evaluate; return the evaluation (also written to `critic_eval.json`).

    Under `accelerate launch` every process trains; the main process alone evaluates and writes the report (the
    others return `{}`).
    """
    # Checks before anything is built: the model folder, the checkpoint to resume from, the output folder
    resume = prepare_training_run(training_args, model_args.model_name_or_path)

    # Threads and seed
    if model_args.torch_num_threads is not None:
        torch.set_num_threads(model_args.torch_num_threads)
    set_seed(training_args.seed)

    # Critic data: the task's automatic perturbations of the gold completions, and a generator's own samples
    task, train_rows, eval_rows = load_task_data(task_args)
    records = read_samples(critic_args.generator_samples) if critic_args.generator_samples else []
    records, calibration_records = split_calibration(records, critic_args.calibration_prompts)
    critic_train = critic_rows(
        task,
        train_rows,
        records,
        share=critic_args.generator_sample_share,
        negatives_per_example=critic_args.negatives_per_example,
        seed=task_args.synthetic_seed,
        excluded=[record["index"] for record in calibration_records],
    )
    critic_eval = task.build_critic_dataset(
        eval_rows, seed=task_args.synthetic_seed + 1, negatives_per_example=critic_args.negatives_per_example
    )
    held_out = Counter(is_no_error(f) for record in calibration_records for f in record["feedback"])
    if calibration_records and len(held_out) < 2:
        raise ValueError(
            f"calibration_prompts: the {len(calibration_records)} held-out prompts' samples are all "
            f"{'right' if True in held_out else 'wrong'}; the threshold needs both (hold out more prompts)"
        )
    sources = Counter(critic_train["source"])
    print(f"critic data ({task.name}): {len(critic_train)} training rows {dict(sources)}, {len(critic_eval)} held out")

    # Model: loaded by name, or a tiny one whose tokenizer learns the critic data's texts
    texts = [f"{p} {c}" for p, c in zip(critic_train["prompt"], critic_train["completion"])]
    model, tokenizer = load_model(model_args, texts, training_args.seed)

    # Train (resuming when asked) and save
    eval_dataset = critic_eval if training_args.eval_strategy != "no" else None
    peft_config = get_peft_config(model_args, model)
    trainer = train_supervised(
        model, tokenizer, critic_train, training_args, eval_dataset=eval_dataset, peft_config=peft_config, train=False
    )
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(training_args.output_dir)  # with the tokenizer; collective under DeepSpeed ZeRO-3
    if not trainer.is_world_process_zero():
        return {}

    # Calibrate the "No error." threshold on the held-out prompts' samples
    calibration = None
    if calibration_records:
        inputs = [render_critic_input(r["prompt"], h) for r in calibration_records for h in r["hypotheses"]]
        scores = completion_logprobs(
            trainer.model, tokenizer, inputs, NO_ERROR, training_args.max_prompt_length, critic_args.critic_batch_size
        )
        wrong = [not is_no_error(f) for r in calibration_records for f in r["feedback"]]
        calibration = calibrate(scores, wrong, critic_args.max_false_alarm)
        calibration.save(training_args.output_dir)
        print(f"calibration on {len(inputs)} held-out samples: {calibration_summary(calibration)}")

    # Evaluate on held-out critic data, as the critic will be used (calibrated when it was): exact match, "found no
    # error", "named the right error"
    critic = ModelCritic(
        trainer.model,
        tokenizer,
        max_prompt_length=training_args.max_prompt_length,
        max_new_tokens=critic_args.critic_max_new_tokens,
        batch_size=critic_args.critic_batch_size,
        calibration=calibration,
    )
    result = evaluate_critic(critic, task, critic_eval, return_predictions=True)
    predictions = result.pop("predictions")
    examples = [
        {"input_end": row["prompt"][-160:], "gold": row["completion"], "predicted": predicted}
        for row, predicted in zip(
            critic_eval.select(range(min(critic_args.num_examples_shown, len(critic_eval)))), predictions
        )
    ]
    print(f"\nheld-out critic evaluation ({len(critic_eval)} rows):\n{format_critic_report(result)}\n")
    for example in examples:
        print(f"  gold: {example['gold']!r}  predicted: {example['predicted']!r}")

    report = {
        "task": task.name,
        "critic": str(Path(training_args.output_dir).resolve()),
        "num_train_rows": len(critic_train),
        "train_rows_by_source": dict(sources),
        "calibration": None if calibration is None else calibration_summary(calibration),
        **result,
        "examples": examples,
        "task_args": asdict(task_args),
        "model_args": asdict(model_args),
    }
    path = write_json(Path(training_args.output_dir) / "critic_eval.json", report)
    print(f"\nsaved the critic and {path}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(CRITIC_ARGUMENTS))
