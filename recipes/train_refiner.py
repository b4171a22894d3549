"""REFINER training: the generator learns to refine its reasoning from a critic's feedback, then is evaluated.

For each batch and each of T turns, the generator is trained with cross-entropy on the gold reasoning, samples k
hypotheses, one is picked and critiqued, and x + hypothesis + feedback is the next turn's prompt ([`RefinerTrainer`]).
The critic is the task's oracle, a critic saved by `recipes/train_critic.py`, or an LLM behind an OpenAI-compatible
API. After training, the model is saved to `output_dir` and the evaluation rows are refined without a critic and
with each critic; the table is printed and written to `output_dir` (`results.md`, `results.json`,
`metric_by_turn.png`).

The YAML's `task` picks the task; `train_mwp.py`, `train_snlr.py` and `train_ms.py` are this recipe for one task.

    python recipes/train_refiner.py --config recipes/ms_tiny.yaml                 # tiny, offline, CPU
    python recipes/train_refiner.py --config recipes/mwp.yaml --learning_rate 1e-4  # YAML + override
    accelerate launch --config_file ds_configs/accelerate_zero3.yaml recipes/train_refiner.py --config recipes/mwp.yaml
"""

from __future__ import annotations

import os

import torch
from transformers import set_seed

from refiner_trl import RefinerConfig, RefinerTrainer
from refiner_trl.builders import get_peft_config, load_model, load_task_data
from refiner_trl.critics import load_critic
from refiner_trl.evaluation import (
    EvaluationResult,
    evaluate_and_report,
    evaluation_critics,
    evaluation_templates,
    turns_by_critic,
)
from refiner_trl.generators import ModelGenerator
from refiner_trl.model_card import save_model_card
from refiner_trl.recipe_checks import prepare_training_run
from refiner_trl.recipe_parser import parse_recipe_args
from refiner_trl.script_args import CriticArguments, EvaluationArguments, ModelArguments, TaskArguments
from refiner_trl.templates import run_templates

REFINER_ARGUMENTS = (TaskArguments, ModelArguments, CriticArguments, EvaluationArguments, RefinerConfig)
"""The dataclasses this recipe parses (`--config file.yaml` and command-line overrides), in `main`'s order."""


def main(
    task_args: TaskArguments,
    model_args: ModelArguments,
    critic_args: CriticArguments,
    eval_args: EvaluationArguments,
    args: RefinerConfig,
) -> EvaluationResult | None:
    """Train the generator with the critic, save it, evaluate it; returns the evaluation on the main process.

    Runs as it is under `accelerate launch` (DDP, DeepSpeed ZeRO): every process trains, the main process alone
    evaluates, writes the report and prints.
    """
    # Checks before anything is built: the model folder, the checkpoint to resume from, the output folder
    resume = prepare_training_run(args, model_args.model_name_or_path)

    # Threads and seed
    if model_args.torch_num_threads is not None:
        torch.set_num_threads(model_args.torch_num_threads)
    set_seed(args.seed)

    # Task data: the task's files or Hub dataset, else its synthetic rows
    task, train_rows, eval_rows = load_task_data(task_args)

    # Model: loaded by name, or a tiny one whose tokenizer learns the task's texts
    texts = task.tokenizer_texts(train_rows, args.refine_template) if model_args.tiny_architecture else []
    model, tokenizer = load_model(model_args, texts, args.seed)

    # Critic: the oracle, a trained critic on the training device, or an LLM behind an API
    critic = load_critic(critic_args.critic, task, critic_args, model_args.trust_remote_code, device=args.device)

    # Trainer
    trainer = RefinerTrainer(
        model,
        args,
        critic=critic,
        train_dataset=train_rows,
        eval_dataset=eval_rows if args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args, model),
    )

    # Train (resuming when asked) and save
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(args.output_dir)
    save_model_card(
        trainer, model_args.display_name, task.name, critic_args.critic, task_args.train_path, task_args.synthetic_seed
    )
    if not eval_args.evaluate_after_training or not trainer.accelerator.is_main_process:
        return None

    # Evaluate with the run's templates: the generator alone, + trained critic, + LLM critic, + oracle critic
    templates = evaluation_templates(eval_args, run_templates(args))
    generator = ModelGenerator.from_trainer(
        trainer,
        max_prompt_length=eval_args.eval_max_prompt_length,
        max_new_tokens=eval_args.eval_max_new_tokens,
        trust_remote_code=model_args.trust_remote_code,
        chat_template_kwargs=templates["chat_template_kwargs"],
    )
    critics = evaluation_critics(task, critic_args, eval_args, model_args.trust_remote_code, args.device)
    title = f"REFINER on {task.name}: {model_args.display_name}, {len(eval_rows)} evaluation rows"
    turns = turns_by_critic(eval_args, critics)
    return evaluate_and_report(task, generator, eval_rows, critics, args.output_dir, title, turns, templates=templates)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(REFINER_ARGUMENTS))
