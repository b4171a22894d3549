"""The text templates of REFINER: what a model critic reads, and the generator's refine prompt (text or chat)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CRITIC_INPUT_TEMPLATE = "{prompt}\nHypothesis: {hypothesis}\nFeedback:"
"""How (x, z) is rendered for a model critic; critic training data and [`ModelCritic`] both use it."""

REFINE_TEMPLATE = "{prompt}\nPrevious answer: {hypothesis}\nFeedback: {feedback}\nRefined answer:"
"""The prompt of a refine turn: the original prompt x, the picked hypothesis z and the critic's feedback f."""

REFINE_FEEDBACK_TEMPLATE = "Feedback: {feedback}\nWrite the refined answer."
"""The user message of a conversational refine turn, after the assistant message holding the picked hypothesis."""


def render_critic_input(prompt: str, hypothesis: str, template: str = CRITIC_INPUT_TEMPLATE) -> str:
    """Render the text a model critic reads for one hypothesis."""
    return template.format(prompt=prompt, hypothesis=hypothesis)


def render_refine_prompt(prompt: str, hypothesis: str, feedback: str, template: str = REFINE_TEMPLATE) -> str:
    """Render the prompt of a refine turn from the original prompt, a hypothesis and its feedback."""
    return template.format(prompt=prompt, hypothesis=hypothesis, feedback=feedback)


def check_template(template: str, fields: tuple[str, ...], name: str) -> None:
    """Raise `ValueError` naming `name` unless `template` uses exactly the placeholders `fields`."""
    import string

    used = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    if used != set(fields):
        wanted = ", ".join("{" + f + "}" for f in fields)
        raise ValueError(f"{name} must use the placeholders {wanted}; it uses {sorted(used)}: {template!r}")


RUN_TEMPLATES_FILE = "refiner_templates.json"
"""The file [`RefinerTrainer`] writes next to each model it saves: the templates it trained with (`refine_template`,
`refine_feedback_template`) and the chat template's keyword arguments, which the evaluation reads back."""

RUN_TEMPLATE_KEYS = ("refine_template", "refine_feedback_template", "chat_template_kwargs")


def run_templates(args: Any) -> dict[str, Any]:
    """The templates of a run's config (a [`RefinerConfig`]): `refine_template`, `refine_feedback_template` and
    `chat_template_kwargs` (`{}` when unset)."""
    return {
        "refine_template": args.refine_template,
        "refine_feedback_template": args.refine_feedback_template,
        "chat_template_kwargs": dict(args.chat_template_kwargs or {}),
    }


def load_run_templates(model_name_or_path: str | os.PathLike | None) -> dict[str, Any]:
    """The templates a model was trained with, from the [`RUN_TEMPLATES_FILE`] of its folder; `{}` when the model is
    not a local folder or has no such file (e.g. a Hub id, a warm start, a model not trained by [`RefinerTrainer`]).

    Raises:
        `ValueError`: naming the file, when it is not a JSON object or its templates lack their placeholders.
    """
    if model_name_or_path is None:
        return {}
    path = Path(model_name_or_path) / RUN_TEMPLATES_FILE
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not JSON ({error})") from error
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: expected a JSON object with {', '.join(RUN_TEMPLATE_KEYS)}")
    if "refine_template" in saved:
        check_template(saved["refine_template"], ("prompt", "hypothesis", "feedback"), f"{path}: refine_template")
    if "refine_feedback_template" in saved:
        check_template(saved["refine_feedback_template"], ("feedback",), f"{path}: refine_feedback_template")
    return {key: saved[key] for key in RUN_TEMPLATE_KEYS if key in saved}
