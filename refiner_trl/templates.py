"""The text templates of REFINER: what a model critic reads, and the generator's refine prompt (text or chat)."""

from __future__ import annotations

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
