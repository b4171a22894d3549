"""The one code path behind the scripts in `recipes/`: parse a YAML recipe, load the task, train, save, evaluate.

Every recipe parses its arguments with [`parse_recipe_args`]: TRL's `TrlParser` (`--config recipe.yaml`, command-line
overrides), plus a check that names a misspelt key of the YAML file or the command line and suggests the closest
known one. `recipes/train_{mwp,snlr,ms}.py` call [`run_refiner`]; `recipes/train_generator.py` calls
[`run_generator`].
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml
from trl import TrlParser

from .config import RefinerConfig
from .critics import Critic, ModelCritic
from .recipe_args import CriticArguments, ModelArguments, TaskArguments
from .supervised import SupervisedConfig
from .templates import REFINE_TEMPLATE

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, Trainer

    from .evaluation import EvaluationResult
    from .tasks.base import Task


@dataclass
class RecipeArguments:
    """
    What a recipe does besides training: the evaluation after it (the paper-style table of the task's metrics with and
    without a critic), and the CPU threads.

    Parameters:
        evaluate_after_training (`bool`, *optional*, defaults to `True`):
            After saving the model, refine the evaluation rows with each critic, write `results.md`,
            `results.json` and `metric_by_turn.png` into `output_dir` and print the table.
        eval_critic (`str`, *optional*):
            A critic saved by `recipes/train_critic.py`, for the table's "+ trained critic" row. Defaults to the
            recipe's `critic` when that is a path.
        eval_max_turns (`int`, *optional*, defaults to `3`):
            The most refine turns T per example at evaluation (the paper's T=3).
        eval_max_new_tokens (`int`, *optional*):
            Longest generated text in tokens at evaluation. Defaults to the training arguments' `max_new_tokens`
            when they have it (REFINER), else their `max_completion_length`.
        torch_num_threads (`int`, *optional*):
            `torch.set_num_threads` for the run. Unset: torch's default (all cores). `1` is much faster for tiny
            models on a CPU that other processes share, where threads wait on each other.
    """

    evaluate_after_training: bool = field(
        default=True, metadata={"help": "Evaluate with and without critics after training and print the table."}
    )
    eval_critic: str | None = field(
        default=None, metadata={"help": "Trained critic for the '+ trained critic' row (default: `critic` if a path)."}
    )
    eval_max_turns: int = field(default=3, metadata={"help": "Most refine turns per example at evaluation."})
    eval_max_new_tokens: int | None = field(
        default=None, metadata={"help": "Longest generated text at evaluation (default: max_new_tokens)."}
    )
    torch_num_threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads for the run."})

    def __post_init__(self) -> None:
        if self.eval_max_turns < 0:
            raise ValueError(f"eval_max_turns must be at least 0, got {self.eval_max_turns}")


REFINER_ARGUMENTS = (TaskArguments, ModelArguments, CriticArguments, RecipeArguments, RefinerConfig)
"""The dataclasses of `recipes/train_{mwp,snlr,ms}.py`, in the order [`parse_refiner_args`] returns them."""

GENERATOR_ARGUMENTS = (TaskArguments, ModelArguments, CriticArguments, RecipeArguments, SupervisedConfig)
"""The dataclasses of `recipes/train_generator.py`; its critic arguments only load the table's trained critic."""


# ------------------------------------------------------------------------------------------------------ parsing


def _suggest(name: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """Return the `--config` path and the other arguments, accepting `--config path` and `--config=path`."""
    for index, token in enumerate(argv):
        if token == "--config":
            if index + 1 >= len(argv):
                raise ValueError("--config needs the path of a YAML file")
            return argv[index + 1], argv[:index] + argv[index + 2 :]
        if token.startswith("--config="):
            return token.split("=", 1)[1], argv[:index] + argv[index + 1 :]
    return None, argv


def read_config(path: str) -> dict[str, Any]:
    """Read a YAML recipe with `yaml.safe_load`; it must hold a mapping.

    Args:
        path (`str`):
            The YAML file.
    """
    with open(path, encoding="utf-8") as file:
        config = yaml.safe_load(file)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a YAML mapping of argument names to values, got {type(config).__name__}")
    return config


def parse_recipe_args(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, defaults: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """Parse `--config recipe.yaml` and command-line overrides into the dataclasses, as TRL's scripts do.

    This is [`~trl.TrlParser.parse_args_and_config`] with one addition: a key of the YAML file or an option of the
    command line that no dataclass has raises a `ValueError` naming it, the file, and the closest known key (TRL
    would name neither the file nor a suggestion, and argparse would take `--learning_rat` as `--learning_rate`).

    Args:
        dataclass_types (`Sequence[type]`):
            The argument dataclasses, e.g. [`REFINER_ARGUMENTS`].
        argv (`Sequence[str]`, *optional*):
            The arguments; defaults to `sys.argv[1:]`.
        defaults (`dict[str, Any]`, *optional*):
            Defaults that replace the dataclasses' own; the YAML file and the command line still override them.

    Returns:
        `tuple`: one instance of each dataclass, in the order of `dataclass_types`.

    Example:

    ```python
    >>> from refiner_trl.recipes_common import REFINER_ARGUMENTS, parse_recipe_args
    >>> task, model, critic, evaluation, training = parse_recipe_args(
    ...     REFINER_ARGUMENTS, ["--config", "recipes/ms_tiny.yaml", "--learning_rate", "1e-4"]
    ... )
    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, cli = _split_config(argv)
    parser = TrlParser(dataclass_types)

    options = {s: a.dest for s, a in parser._option_string_actions.items()}
    for token in cli:
        name = token.split("=", 1)[0]
        if name.startswith("--") and name not in options:
            raise ValueError(f"unknown option {name!r}{_suggest(name, sorted(options))}")

    if config_path is not None:
        known = sorted({a.dest for a in parser._actions if a.dest != "help"} | {"env"})
        for key in read_config(config_path):
            if key not in known:
                raise ValueError(f"unknown key {key!r} in {config_path}{_suggest(str(key), known)}")
    if defaults:
        parser.set_defaults(**defaults)
    return tuple(parser.parse_args_and_config(cli if config_path is None else ["--config", config_path, *cli]))


def parse_refiner_args(task_name: str | None = None, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse the arguments of a REFINER recipe ([`REFINER_ARGUMENTS`]) for the task the script trains.

    Args:
        task_name (`str`, *optional*):
            The task the calling script trains; a `task` set to another one raises `ValueError`. `None`: any task.
        argv (`Sequence[str]`, *optional*):
            The arguments; defaults to `sys.argv[1:]`.

    Returns:
        `tuple`: `(TaskArguments, ModelArguments, CriticArguments, RecipeArguments, RefinerConfig)`.
    """
    parsed = parse_recipe_args(REFINER_ARGUMENTS, argv, defaults=None if task_name is None else {"task": task_name})
    check_task(parsed[0], task_name)
    return parsed


def check_task(task_args: TaskArguments, task_name: str | None) -> None:
    """Raise `ValueError` when `task_args.task` is not the task `task_name` the recipe trains."""
    if task_name is not None and task_args.task != task_name:
        raise ValueError(
            f"This recipe trains the {task_name!r} task, but the arguments set task: {task_args.task!r}. "
            f"Remove the `task` key, or run the recipe of the {task_args.task!r} task."
        )


# ---------------------------------------------------------------------------------------------- model & report


def load_model(
    model_args: ModelArguments, task: Task, rows: Dataset, args: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the model named by `model_args`, or build a tiny one whose tokenizer is trained on the task's texts.

    Args:
        model_args ([`ModelArguments`]):
            The model to load or build.
        task ([`Task`]):
            The task (for the tiny tokenizer's feedback texts).
        rows (`Dataset`):
            The training rows (for the tiny tokenizer).
        args (`TrainingArguments`):
            `seed`, `model_init_kwargs` and `trust_remote_code` are read; `refine_template` when present.
    """
    texts = (
        []
        if model_args.tiny_architecture is None
        else task.tokenizer_texts(rows, getattr(args, "refine_template", REFINE_TEMPLATE))
    )
    return model_args.load(
        texts, trust_remote_code=args.trust_remote_code, seed=args.seed, model_init_kwargs=args.model_init_kwargs
    )


def build_critic(critic_args: CriticArguments, task: Task, args: Any) -> Critic:
    """The critic of `critic_args`; a trained critic model is put on the training device (`args.device`).

    Args:
        critic_args ([`CriticArguments`]):
            `oracle` or a trained critic's folder.
        task ([`Task`]):
            The task (its oracle critic).
        args (`TrainingArguments`):
            `device` and `trust_remote_code` are read.
    """
    critic = critic_args.build(task, trust_remote_code=args.trust_remote_code)
    if isinstance(critic, ModelCritic):
        critic.model.to(args.device)
    return critic


def evaluate_and_report(
    trainer: Trainer,
    task: Task,
    rows: Dataset,
    recipe_args: RecipeArguments,
    critic_args: CriticArguments,
    title: str,
) -> EvaluationResult | None:
    """Refine `rows` with the generator alone, a trained critic and an LLM critic (when there are) and the oracle;
    write the report (`results.md`, `results.json`, `metric_by_turn.png`) into `output_dir` and print the table.

    Runs on the main process only, after the model was saved to `trainer.args.output_dir`. A model that DeepSpeed
    shards or that several processes hold is read back from there; a single-process model is used as it is.

    Args:
        trainer (`Trainer`):
            The trainer that trained and saved the model.
        task ([`Task`]):
            The task: metrics and oracle critic.
        rows (`Dataset`):
            The evaluation rows.
        recipe_args ([`RecipeArguments`]):
            How to evaluate; `eval_critic` is the trained critic.
        critic_args ([`CriticArguments`]):
            The recipe's critic: the trained critic when `eval_critic` is unset and it is a path; its `llm_critic`
            (or an `openai:` critic) gives the "+ LLM critic" row; its `critic_*` settings load both.
        title (`str`):
            The report's heading.

    Returns:
        [`EvaluationResult`] on the main process, `None` on the others.
    """
    from .evaluation import evaluate_refinement, standard_critics, write_report
    from .generators import ModelGenerator
    from .modeling import load_model_and_tokenizer

    if not trainer.accelerator.is_main_process:
        return None
    args = trainer.args  # for a warm start, the SFTConfig or Seq2SeqTrainingArguments `train_supervised` built
    trust = getattr(args, "trust_remote_code", False)
    if trainer.is_deepspeed_enabled or trainer.accelerator.num_processes > 1:
        model, tokenizer = load_model_and_tokenizer(args.output_dir, trust_remote_code=trust)
        model.to(trainer.accelerator.device)
    else:
        model, tokenizer = trainer.accelerator.unwrap_model(trainer.model), trainer.processing_class
    max_new_tokens = recipe_args.eval_max_new_tokens or getattr(args, "max_new_tokens", None)
    generator = ModelGenerator(
        model,
        tokenizer,
        max_prompt_length=getattr(args, "max_prompt_length", None) or 512,
        max_new_tokens=max_new_tokens or getattr(args, "max_completion_length", None) or 64,
        batch_size=args.per_device_eval_batch_size,
        chat_template_kwargs=getattr(args, "chat_template_kwargs", None),
    )
    trained_path = recipe_args.eval_critic or critic_args.trained_critic_path
    trained = None
    if trained_path is not None:
        trained = build_critic(dataclasses.replace(critic_args, critic=trained_path), task, args)
    llm = critic_args.table_llm_critic
    critics = standard_critics(task, trained, None if llm is None else critic_args.build_llm(task, llm))
    result = evaluate_refinement(task, generator, rows, critics, max_turns=recipe_args.eval_max_turns)
    paths = write_report(result, args.output_dir, title)
    print(f"\n{paths['markdown'].read_text(encoding='utf-8')}\nReport written to {args.output_dir}", flush=True)
    return result


# ---------------------------------------------------------------------------------------------------- recipes


def _setup(
    task_args: TaskArguments, model_args: ModelArguments, recipe_args: RecipeArguments, args: Any
) -> tuple[Task, Dataset, Dataset, PreTrainedModel, PreTrainedTokenizerBase]:
    """Threads and seed, then the task's rows and the model: what every recipe does before it trains."""
    import torch
    from transformers import set_seed

    if recipe_args.torch_num_threads is not None:
        torch.set_num_threads(recipe_args.torch_num_threads)
    set_seed(args.seed)
    task, train_rows, eval_rows = task_args.load()
    model, tokenizer = load_model(model_args, task, train_rows, args)
    return task, train_rows, eval_rows, model, tokenizer


def _title(kind: str, task: Task, model_args: ModelArguments, rows: Dataset) -> str:
    name = model_args.model_name_or_path or f"tiny {model_args.tiny_architecture} model"
    return f"{kind} on {task.name}: {name}, {len(rows)} evaluation rows"


def run_refiner(task_name: str | None = None, argv: Sequence[str] | None = None) -> EvaluationResult | None:
    """REFINER training for one task: parse the recipe, train the generator with a critic, save it, evaluate it.

    This is the whole of `recipes/train_{mwp,snlr,ms}.py`, which differ only in `task_name`. It runs as it is under
    `accelerate launch` (DDP, DeepSpeed ZeRO): only the main process evaluates, writes the report and prints.

    Args:
        task_name (`str`, *optional*):
            The task the recipe trains; `None` takes it from the arguments.
        argv (`Sequence[str]`, *optional*):
            The arguments; defaults to `sys.argv[1:]`.

    Returns:
        [`EvaluationResult`] on the main process when `evaluate_after_training`, else `None`.
    """
    from .trainer import RefinerTrainer

    task_args, model_args, critic_args, recipe_args, args = parse_refiner_args(task_name, argv)
    task, train_rows, eval_rows, model, tokenizer = _setup(task_args, model_args, recipe_args, args)
    trainer = RefinerTrainer(
        model,
        args,
        critic=build_critic(critic_args, task, args),
        train_dataset=train_rows,
        eval_dataset=eval_rows if args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=model_args.peft_config(model),
    )
    return _train_save_and_report("REFINER", trainer, task, eval_rows, model_args, critic_args, recipe_args)


def run_generator(argv: Sequence[str] | None = None) -> EvaluationResult | None:
    """The paper's warm start: supervised training of the generator on prompt -> completion, with no critic.

    Parses [`GENERATOR_ARGUMENTS`] (the critic arguments only name the trained critic of the evaluation table),
    trains with [`train_supervised`] (SFT for causal models, Seq2Seq for encoder-decoders), saves the model and
    tokenizer to `output_dir` (a REFINER recipe's `model_name_or_path`), and evaluates like [`run_refiner`].

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments; defaults to `sys.argv[1:]`.

    Returns:
        [`EvaluationResult`] on the main process when `evaluate_after_training`, else `None`.
    """
    from .supervised import train_supervised

    task_args, model_args, critic_args, recipe_args, args = parse_recipe_args(GENERATOR_ARGUMENTS, argv)
    if task_args.conversational:
        raise ValueError(
            "conversational: the warm start trains on standard rows; use conversational rows with the REFINER "
            "recipes (recipes/train_mwp.py, train_snlr.py, train_ms.py)"
        )
    task, train_rows, eval_rows, model, tokenizer = _setup(task_args, model_args, recipe_args, args)
    eval_dataset = eval_rows if args.eval_strategy != "no" else None
    trainer = train_supervised(
        model,
        tokenizer,
        train_rows,
        args,
        eval_dataset=eval_dataset,
        peft_config=model_args.peft_config(model),
        train=False,
    )
    return _train_save_and_report(
        "Warm-start generator", trainer, task, eval_rows, model_args, critic_args, recipe_args
    )


def _train_save_and_report(
    kind: str,
    trainer: Trainer,
    task: Task,
    eval_rows: Dataset,
    model_args: ModelArguments,
    critic_args: CriticArguments,
    recipe_args: RecipeArguments,
) -> EvaluationResult | None:
    """The tail every training recipe shares: train (resuming when asked), save to `output_dir`, then evaluate and
    report when `evaluate_after_training`."""
    args = trainer.args
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    trainer.save_model(args.output_dir)
    if not recipe_args.evaluate_after_training:
        return None
    title = _title(kind, task, model_args, eval_rows)
    return evaluate_and_report(trainer, task, eval_rows, recipe_args, critic_args, title)
