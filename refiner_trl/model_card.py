"""The model card a recipe saves with its model: TRL's `create_model_card`, plus what REFINER trained with.

TRL's card (`README.md` in `output_dir`) holds the trainer's name, the paper and its citation (`RefinerTrainer._name`,
`_paper`, `_tag_names`), the Hub base model and dataset when they are Hub ids, and the framework versions. A REFINER
model also depends on its critic and its task, so [`save_model_card`] adds them, with the base model and the data
even when they are local (a folder, a built model, synthetic rows), where TRL's template has no words for them.
Nothing is sent anywhere: the card is a local file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_FINE_TUNED = re.compile(r"^This model is a fine-tuned version of .*$", flags=re.M)


def is_hub_id(name: str | None) -> bool:
    """Whether `name` reads as a Hub repository id (`owner/name`) and is not a local path.

    Args:
        name (`str`, *optional*):
            A model or dataset name.
    """
    return bool(name) and bool(_HUB_ID.match(name)) and not Path(name).exists()


def _linked(name: str, kind: str) -> str:
    prefix = "datasets/" if kind == "dataset" else ""
    return f"[{name}](https://huggingface.co/{prefix}{name})" if is_hub_id(name) else f"`{name}`"


def save_model_card(
    trainer: Any, base_model: str, task: str, critic: str, dataset: str | None = None, synthetic_seed: int = 0
) -> Path | None:
    """Write `README.md` into the trainer's `output_dir`: TRL's model card with a REFINER section.

    Returns the card's path, or `None` on a process other than the main one (which writes nothing).

    Args:
        trainer ([`RefinerTrainer`]):
            The trainer whose model is saved; its `create_model_card` writes TRL's card and its `args` give the
            settings.
        base_model (`str`):
            The model REFINER started from: a Hub id, a folder, or a description such as `"tiny seq2seq model"`.
        task (`str`):
            The task's name, e.g. `"moral_stories"`.
        critic (`str`):
            The critic of training: `"oracle"`, a critic folder, or `"openai:<model>"`.
        dataset (`str`, *optional*):
            The training rows: a Hub dataset id or a file; `None` for the task's synthetic rows.
        synthetic_seed (`int`, *optional*, defaults to `0`):
            The seed of the synthetic rows, when `dataset` is `None`.
    """
    if not trainer.is_world_process_zero():
        return None
    output_dir = Path(trainer.args.output_dir)
    dataset_text = dataset or f"synthetic {task} rows (seed {synthetic_seed})"
    trainer.create_model_card(
        model_name=output_dir.name,
        dataset_name=dataset if is_hub_id(dataset) else None,
        tags=[task, "refiner-trl"],
    )
    path = output_dir / "README.md"
    card = ModelCard.load(path)
    if is_hub_id(base_model):
        card.data.base_model = base_model
    args = trainer.args
    oracle = "the task's oracle (it compares each hypothesis with the gold completion)"
    critic_text = oracle if critic == "oracle" else _linked(critic, "model")
    base, data = _linked(base_model, "model"), _linked(dataset_text, "dataset")
    intro = f"This model is a REFINER generator trained from {base} on {data} (task `{task}`)."
    settings = [
        ("base model", base),
        ("task", f"`{task}`"),
        ("training data", data),
        ("critic", critic_text),
        ("turns T (`num_refinement_turns`)", args.num_refinement_turns),
        ("hypotheses k (`num_hypotheses`)", args.num_hypotheses),
        ("hypothesis selection", f"`{args.hypothesis_selection}`"),
        ("turn loss aggregation", f"`{args.turn_loss_aggregation}`"),
        ("steps", trainer.state.global_step),
    ]
    name = trainer.hub_model_id or str(output_dir)
    body = (
        "## REFINER\n\n| setting | value |\n|:---|:---|\n"
        + "".join(f"| {key} | {value} |\n" for key, value in settings)
        + "\n## Quick start\n\nThe model writes an answer, then refines it from a critic's feedback until the critic "
        "finds no error (`refiner_trl.refine` of refiner-trl; any critic: the task's oracle, a trained "
        "`ModelCritic`, an `LLMCritic`, a person at the terminal):\n\n"
        f"```python\nfrom refiner_trl import HumanCritic, ModelGenerator, refine\n\n"
        f'generator = ModelGenerator("{name}", max_new_tokens={args.max_new_tokens})\n'
        'traces = refine(generator, HumanCritic(), ["<a prompt in the training format>"], max_turns=3)\n'
        "print(traces[0].final)\n```\n\n"
        f"A refine turn's prompt is `{args.refine_template!r}`.\n\n"
    )
    text = _FINE_TUNED.sub(lambda _: intro, card.text, count=1)  # TRL's sentence names only Hub models and data
    quick_start = re.search(r"^## Quick start\n.*?(?=^## )", text, flags=re.M | re.S)  # TRL's: a chat pipeline
    card.text = text[: quick_start.start()] + body + text[quick_start.end() :] if quick_start else text + "\n" + body
    card.save(path)
    return path
