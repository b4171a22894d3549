"""The paper's warm start: supervised training of the generator (prompt -> completion), with no critic.

Causal models train with TRL's `SFTTrainer` (completion-only loss), encoder-decoders with `Seq2SeqTrainer`; rows in
TRL's conversational format (`conversational: true`) are rendered with the tokenizer's chat template, as the REFINER
recipe that follows renders them. The model and tokenizer are saved to `output_dir`, the `model_name_or_path` of the
REFINER recipe that follows; the evaluation rows are then refined without a critic and with each critic, and the
table is printed. The critic arguments only name the table's trained and LLM critics.

    python recipes/train_generator.py --config recipes/generator_mwp_tiny.yaml
    accelerate launch --config_file ds_configs/accelerate_zero2.yaml recipes/train_generator.py \
        --config recipes/generator_mwp.yaml
"""

from __future__ import annotations

import os

import torch
from transformers import set_seed

from refiner_trl.builders import get_peft_config, load_model, load_task_data
from refiner_trl.evaluation import (
    EvaluationResult,
    evaluate_and_report,
    evaluation_critics,
    evaluation_templates,
    turns_by_critic,
)
from refiner_trl.generators import ModelGenerator
from refiner_trl.recipe_checks import prepare_training_run
from refiner_trl.recipe_parser import parse_recipe_args
from refiner_trl.script_args import CriticArguments, EvaluationArguments, ModelArguments, TaskArguments
from refiner_trl.supervised import SupervisedConfig, train_supervised

GENERATOR_ARGUMENTS = (TaskArguments, ModelArguments, CriticArguments, EvaluationArguments, SupervisedConfig)
"""The dataclasses this recipe parses (`--config file.yaml` and command-line overrides), in `main`'s order."""


def main(
    task_args: TaskArguments,
    model_args: ModelArguments,
    critic_args: CriticArguments,
    eval_args: EvaluationArguments,
    args: SupervisedConfig,
) -> EvaluationResult | None:
    """Train the generator supervised, save it, evaluate it; returns the evaluation on the main process."""
    # Checks before anything is built: the model folder, the checkpoint to resume from, the output folder
    resume = prepare_training_run(args, model_args.model_name_or_path)

    # Threads and seed
    if model_args.torch_num_threads is not None:
        torch.set_num_threads(model_args.torch_num_threads)
    set_seed(args.seed)

    # Task data
    task, train_rows, eval_rows = load_task_data(task_args)

    # Model: loaded by name, or a tiny one whose tokenizer learns the task's texts
    texts = task.tokenizer_texts(train_rows) if model_args.tiny_architecture else []
    model, tokenizer = load_model(model_args, texts, args.seed)

    # Trainer: SFTTrainer (causal) or Seq2SeqTrainer (encoder-decoder)
    trainer = train_supervised(
        model,
        tokenizer,
        train_rows,
        args,
        eval_dataset=eval_rows if args.eval_strategy != "no" else None,
        peft_config=get_peft_config(model_args, model),
        train=False,
    )

    # Train (resuming when asked) and save
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    if not eval_args.evaluate_after_training or not trainer.accelerator.is_main_process:
        return None

    # Evaluate (the default refine templates unless eval_refine_*template are given): the generator alone,
    # + trained critic, + LLM critic, + oracle critic
    templates = evaluation_templates(eval_args, {"chat_template_kwargs": args.chat_template_kwargs})
    generator = ModelGenerator.from_trainer(
        trainer,
        max_prompt_length=eval_args.eval_max_prompt_length,
        max_new_tokens=eval_args.eval_max_new_tokens,
        trust_remote_code=model_args.trust_remote_code,
        chat_template_kwargs=templates["chat_template_kwargs"],
    )
    critics = evaluation_critics(task, critic_args, eval_args, model_args.trust_remote_code, args.device)
    title = f"Warm-start generator on {task.name}: {model_args.display_name}, {len(eval_rows)} evaluation rows"
    turns = turns_by_critic(eval_args, critics)
    return evaluate_and_report(task, generator, eval_rows, critics, args.output_dir, title, turns, templates=templates)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(GENERATOR_ARGUMENTS))
