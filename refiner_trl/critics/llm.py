"""An LLM as critic (LLM-as-judge feedback): any [`Generator`], e.g. a chat model behind an OpenAI-compatible API.

[`LLMCritic`] renders a critique prompt for each (x, z), asks the generator for all of them in one batch (an
[`OpenAIChatGenerator`] sends them concurrently), and maps each answer to feedback: [`NO_ERROR`] when the answer
says in any words that nothing is wrong, else the answer's first line.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..generators import Generator, GeneratorError, checked_generate
from .base import NO_ERROR, is_no_error

if TYPE_CHECKING:
    from ..tasks.base import Task

LLM_CRITIC_TEMPLATE = (
    "You review a proposed answer to a problem and name its first error.\n\n"
    "Problem:\n{prompt}\n\n"
    "Proposed answer:\n{hypothesis}\n"
    "{reference}"
    "\nThe kinds of error, each with the feedback to write for it:\n{error_types}\n\n"
    'Reply with one line only: the feedback for the first error, in the style above, or exactly "{no_error}" if the '
    "proposed answer has no error."
)
"""The default critique prompt of [`LLMCritic`]. Its placeholders: `{prompt}` (the problem x), `{hypothesis}` (z),
`{reference}` (empty, or a block with the gold answer for a reference-guided judge), `{error_types}` (one line per
error type of the task, with an example of its feedback) and `{no_error}` ([`NO_ERROR`])."""

REFERENCE_BLOCK = "\nA correct answer, for reference:\n{reference}\n"
"""What fills `{reference}` in the critique prompt of a reference-guided [`LLMCritic`]."""

TEMPLATE_FIELDS = ("prompt", "hypothesis", "reference", "error_types", "no_error")

# Phrases that say "nothing is wrong". A text is "no error" when it has one and, with them removed, no error word.
# "correct" and its like count only as a verdict on the answer ("is correct", "looks right"), or as the whole answer:
# "The correct answer is 26." names an error.
_NO_ERROR_PHRASES = re.compile(
    r"\b(no (errors?|mistakes?|issues?|problems?|flaws?)( (found|detected))?|nothing( is)? wrong|"
    r"(do not|don't|cannot|can't|could not|couldn't) (see|find|spot) any (errors?|mistakes?|issues?|problems?)|"
    r"without (any )?(errors?|mistakes?)|all good|"
    r"(is|are|looks|seems|appears|'s)( to be)?( fully| entirely| completely)? "
    r"(correct|right|fine|valid|good|ok|okay))\b"
)
_WHOLE_NO_ERROR = re.compile(r"^(correct|right|yes|ok|okay|fine|valid|none|perfect)\W*$")
_ERROR_WORDS = re.compile(
    r"\b(incorrect|wrong|missing|miss|should|instead|but|however|not|\w*n't|invalid|extra|error|mistake|"
    r"reversed|contradict\w*|misalign\w*)\b"
)
_LABEL = re.compile(r"^\s*(feedback|answer|verdict|critique)\s*:\s*", re.IGNORECASE)


def means_no_error(answer: str, task: Task | None = None) -> bool:
    """Whether a critic's free-form answer says that the hypothesis has no error ("Looks correct.", "No mistakes
    found", "I don't see any errors", "No error." itself, ...).

    An answer that names an error of the task's feedback types, or that still has an error word ("wrong", "missing",
    "but", "not", ...) once its "no error" phrases are removed, is not a "no error" answer: "No error in #0, but the
    operator in #1 is incorrect." names an error.

    Args:
        answer (`str`):
            The answer, as the LLM wrote it.
        task ([`Task`], *optional*):
            Its `feedback_type` recognises the task's error feedback.
    """
    if is_no_error(answer):
        return True
    if task is not None:
        from ..tasks.base import NO_ERROR_TYPE  # when a task is given, its module is loaded already

        if task.feedback_type(answer) not in ("unknown", NO_ERROR_TYPE):
            return False
    text = " ".join(answer.lower().replace("’", "'").split())
    if _WHOLE_NO_ERROR.match(text):
        return True
    if not _NO_ERROR_PHRASES.search(text):
        return False
    return not _ERROR_WORDS.search(_NO_ERROR_PHRASES.sub(" ", text))


def answer_to_feedback(answer: str, task: Task | None = None) -> str:
    """Map an LLM critic's answer to feedback: [`NO_ERROR`] when it means "no error" (see [`means_no_error`]), else
    its first non-empty line without a leading `Feedback:` label or surrounding quotes.

    Args:
        answer (`str`):
            The answer, as the LLM wrote it.
        task ([`Task`], *optional*):
            Passed to [`means_no_error`].
    """
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    first = _LABEL.sub("", lines[0]).strip().strip("\"'`*").strip() if lines else ""
    return NO_ERROR if means_no_error(first, task) else first


def error_types_text(task: Task | None, num_rows: int = 32, seed: int = 0) -> str:
    """The `{error_types}` of the critique prompt: one line per error type of `task`, with an example of its feedback
    drawn from the task's automatic critic data on synthetic rows (so the LLM writes feedback in the task's format).

    Args:
        task ([`Task`], *optional*):
            The task; `None` gives a generic line.
        num_rows (`int`, *optional*, defaults to `32`):
            Synthetic rows to draw the examples from.
        seed (`int`, *optional*, defaults to `0`):
            Their seed.
    """
    if task is None or not task.perturbation_types:
        return "- any error: a short sentence that names what is wrong"
    critic_rows = task.build_critic_dataset(task.synthetic(n=num_rows, seed=seed), seed=seed)
    examples: dict[str, str] = {}
    for feedback, kind in zip(critic_rows["completion"], critic_rows["feedback_type"]):
        examples.setdefault(kind, feedback)
    return "\n".join(
        f"- {kind.replace('_', ' ')}" + (f': e.g. "{examples[kind]}"' if kind in examples else "")
        for kind in task.perturbation_types
    )


class LLMCritic:
    """Any LLM as critic: a critique prompt per (x, z), one batched [`Generator`] call, answers mapped to feedback.

    With an [`OpenAIChatGenerator`] this is any chat LLM behind an OpenAI-compatible API (OpenAI, vLLM,
    `transformers serve`, llama.cpp's server, ...), its requests sent concurrently; any other [`Generator`] works too
    (a local instruct model through [`ModelGenerator`]). It serves [`RefinerTrainer`] during training and [`refine`]
    or [`evaluate_refinement`] at evaluation. The prompt is [`LLM_CRITIC_TEMPLATE`], the task's `critique_template`
    when it has one, or `template`; the answers go through [`answer_to_feedback`], so that an answer meaning "no
    error" in other words becomes [`NO_ERROR`] and the refinement loop stops.

    Args:
        generator ([`Generator`]):
            Answers the critique prompts, one text per prompt, in order.
        task ([`Task`], *optional*):
            Gives the error types of the prompt (with an example feedback each, see [`error_types_text`]), its
            `critique_template` if it has one, and its feedback types to [`means_no_error`].
        template (`str`, *optional*):
            The critique prompt, with `{prompt}` and `{hypothesis}` and any of `{reference}`, `{error_types}`,
            `{no_error}`; wins over the task's.
        use_references (`bool`, *optional*, defaults to `False`):
            A reference-guided judge: put the gold completion in the prompt (as [`REFERENCE_BLOCK`] in
            `{reference}`); `critique` then needs `references`.

    Example:

    ```python
    >>> from refiner_trl import CallableGenerator, LLMCritic
    >>> critic = LLMCritic(CallableGenerator(lambda prompts: ["Looks correct to me."] * len(prompts)))
    >>> critic.critique(["2 + 3 ="], ["5"])
    ['No error.']

    ```
    """

    def __init__(
        self,
        generator: Generator,
        task: Task | None = None,
        template: str | None = None,
        use_references: bool = False,
    ):
        template = template or getattr(task, "critique_template", None) or LLM_CRITIC_TEMPLATE
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        if not {"prompt", "hypothesis"} <= used or not used <= set(TEMPLATE_FIELDS):
            raise ValueError(
                f"The critique template must use {{prompt}} and {{hypothesis}} and may use {{reference}}, "
                f"{{error_types}}, {{no_error}}; it uses {sorted(used)}: {template!r}"
            )
        if use_references and "reference" not in used:
            raise ValueError("use_references=True needs a critique template with {reference}")
        self.generator = generator
        self.task = task
        self.template = template
        self.use_references = use_references
        self.error_types = error_types_text(task) if "error_types" in used else ""

    def render(self, prompt: str, hypothesis: str, reference: str | None = None) -> str:
        """The critique prompt of one hypothesis.

        Args:
            prompt (`str`):
                The problem x.
            hypothesis (`str`):
                The hypothesis z.
            reference (`str`, *optional*):
                The gold completion, shown only when `use_references`.
        """
        block = REFERENCE_BLOCK.format(reference=reference) if self.use_references else ""
        return self.template.format(
            prompt=prompt, hypothesis=hypothesis, reference=block, error_types=self.error_types, no_error=NO_ERROR
        )

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        if self.use_references and (references is None or len(references) != len(hypotheses)):
            raise ValueError("A reference-guided LLMCritic needs one reference per hypothesis.")
        golds = references if self.use_references else [None] * len(hypotheses)
        inputs = [self.render(p, h, r) for p, h, r in zip(prompts, hypotheses, golds)]
        answers = checked_generate(self.generator, inputs, f" ({type(self).__name__})")
        empty = [index for index, answer in enumerate(answers) if not answer.strip()]
        if empty:  # empty feedback would be trained on as if it named an error
            raise GeneratorError(
                f"{type(self).__name__}: the LLM's answer for hypothesis {empty[0]} is empty ({len(empty)} of "
                f"{len(answers)} empty); feedback must name an error or say {NO_ERROR!r}. Check the model, its "
                "max_tokens (critic_max_new_tokens) and the critique template."
            )
        return [answer_to_feedback(answer, self.task) for answer in answers]
