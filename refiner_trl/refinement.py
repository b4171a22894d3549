"""Iterative refinement at inference: generate, critique, refine, each example stopping on its own."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from .critics import Critic, as_critic, checked_critique, is_no_error
from .generators import Generator, as_generator, checked_generate
from .templates import REFINE_FEEDBACK_TEMPLATE, REFINE_TEMPLATE, check_template

if TYPE_CHECKING:
    from .chat import Prompt


@dataclass
class RefinementTrace:
    """Everything [`refine`] did for one example.

    `feedback[t]` is the critic's feedback on `hypotheses[t]`, and `hypotheses[t + 1]` was generated from
    `refine_prompt(prompt, hypotheses[t], feedback[t])`. So `len(feedback) == len(hypotheses)` when the last
    hypothesis was critiqued (the critic accepted it, or `final_critique=True`), else `len(feedback) ==
    len(hypotheses) - 1`.

    Args:
        prompt (`str` or `list[dict]`):
            The input x: a string, or a conversation of `{"role", "content"}` messages.
        hypotheses (`list[str]`):
            One hypothesis per generation turn, turn 0 (from x alone) first.
        feedback (`list[str]`):
            The critic's feedback on the hypotheses, in the same order.
        final (`str`):
            The last hypothesis: the one to score.
        accepted (`bool`):
            Whether the critic answered "no error" on `final`. When `True` with `num_refinements < max_turns`, the
            example stopped early.
    """

    prompt: Prompt
    hypotheses: list[str] = field(default_factory=list)
    feedback: list[str] = field(default_factory=list)
    final: str = ""
    accepted: bool = False

    @property
    def num_refinements(self) -> int:
        """How many refine turns this example took (0 when the critic accepted the first hypothesis)."""
        return len(self.hypotheses) - 1


def refine(
    generator: Generator | Callable[[list[str]], list[str]] | tuple[Any, Any],
    critic: Critic | Callable[..., list[str]],
    prompts: Sequence[Prompt],
    references: Sequence[Prompt] | None = None,
    max_turns: int = 3,
    refine_template: str = REFINE_TEMPLATE,
    final_critique: bool = False,
    progress: bool = False,
    refine_feedback_template: str = REFINE_FEEDBACK_TEMPLATE,
) -> list[RefinementTrace]:
    """Refine each prompt's hypothesis with the critic's feedback until the critic finds no error, up to `max_turns`.

    Turn 0 generates z_0 for all prompts in one generator call. Then, for turn t = 1..`max_turns`: the critic reads
    z_{t-1} of the examples still open (one batched call); those it answers "no error" ([`is_no_error`]) close; the
    generator writes z_t for the others from [`~refiner_trl.chat.refine_prompt`] of x, z_{t-1} and f_{t-1} (one batched
    call): `refine_template` for a string prompt, and for a conversation the conversation continued with z_{t-1} as
    the assistant's message and `refine_feedback_template` of f_{t-1} as the user's. The generator receives
    conversations as they are ([`ModelGenerator`] renders them with its chat template); the critic always receives
    text ([`~refiner_trl.chat.plain_text`]: a conversation's message contents joined with newlines). The work
    of each turn shrinks with the examples still open, and a turn with none open calls nothing.

    By default the last refined hypothesis z_`max_turns` gets no critique: with no turn left to use it, it would only
    cost a critic call (or a person's time). Pass `final_critique=True` to critique it anyway (one more batched critic
    call), so that `accepted` tells for every example whether the critic accepts its final hypothesis.

    Args:
        generator ([`Generator`], `Callable` or `tuple`):
            A [`Generator`], a `(model, tokenizer)` pair (greedy [`ModelGenerator`]) or a function `fn(prompts) ->
            texts`; see [`as_generator`]. The same generator writes z_0 and the refinements.
        critic ([`Critic`] or `Callable`):
            A [`Critic`], or a function `fn(prompts, hypotheses, references) -> feedback` (wrapped in
            [`CallableCritic`]); see [`as_critic`].
        prompts (`Sequence[str]` or `Sequence[list[dict]]`):
            The inputs x: all strings, or all conversations of `{"role", "content"}` messages ending with the user's.
        references (`Sequence[str]`, *optional*):
            Gold completions, one per prompt, passed to the critic as text (oracle critics need them; others ignore
            them). A conversational completion (a list holding the assistant's message) is passed as its content.
        max_turns (`int`, *optional*, defaults to `3`):
            The most refine turns T per example; `0` only generates z_0.
        refine_template (`str`, *optional*, defaults to [`REFINE_TEMPLATE`]):
            The refine prompt, with the placeholders `{prompt}`, `{hypothesis}` and `{feedback}`; it must be the
            template the generator was trained with.
        final_critique (`bool`, *optional*, defaults to `False`):
            Also critique the hypotheses of examples still open after the last refine turn.
        progress (`bool`, *optional*, defaults to `False`):
            Show a progress bar over turns, with the number of examples still open.
        refine_feedback_template (`str`, *optional*, defaults to [`REFINE_FEEDBACK_TEMPLATE`]):
            The user message of a conversational refine turn, with the placeholder `{feedback}`; it must be the
            template the generator was trained with.

    Returns:
        `list[RefinementTrace]`: one [`RefinementTrace`] per prompt, in the prompts' order.

    Example:

    ```python
    >>> from refiner_trl.critics import NO_ERROR
    >>> def oracle(prompts, hypotheses, refs):
    ...     return [NO_ERROR if h == r else f"Expected {r}." for h, r in zip(hypotheses, refs)]
    >>> def generator(prompts):
    ...     return ["4" if "Expected 4" in p else "5" for p in prompts]
    >>> trace = refine(generator, oracle, ["2 + 2 ="], references=["4"])[0]
    >>> trace.hypotheses, trace.feedback, trace.final, trace.accepted
    (['5', '4'], ['Expected 4.', 'No error.'], '4', True)

    ```
    """
    from .chat import check_prompts, plain_text, refine_prompt  # on first use: it imports TRL and torch

    generator = as_generator(generator)
    critic = as_critic(critic)
    prompts = list(prompts)
    check_prompts(prompts, "refine: prompts")
    critic_prompts = [plain_text(prompt) for prompt in prompts]
    if references is not None:
        references = [plain_text(reference) for reference in references]
        if len(references) != len(prompts):
            raise ValueError(f"Got {len(references)} references for {len(prompts)} prompts; pass one per prompt.")
    if not isinstance(max_turns, int) or max_turns < 0:
        raise ValueError(f"max_turns must be an int >= 0, got {max_turns!r}")
    check_template(refine_template, ("prompt", "hypothesis", "feedback"), "refine_template")
    check_template(refine_feedback_template, ("feedback",), "refine_feedback_template")

    traces = [RefinementTrace(prompt=prompt) for prompt in prompts]
    if not prompts:
        return traces
    with tqdm(total=max_turns + 1, desc="refine", unit="turn", disable=not progress) as bar:
        for trace, hypothesis in zip(traces, checked_generate(generator, prompts, " (turn 0)")):
            trace.hypotheses.append(hypothesis)
        bar.update(1)
        open_ = list(range(len(prompts)))
        for turn in range(1, max_turns + 1 + int(final_critique)):
            feedback = checked_critique(
                critic,
                [critic_prompts[i] for i in open_],
                [traces[i].hypotheses[-1] for i in open_],
                None if references is None else [references[i] for i in open_],
                where=f" (critique of turn {turn - 1})",
            )
            for i, text in zip(open_, feedback):
                traces[i].feedback.append(text)
                traces[i].accepted = is_no_error(text)
            open_ = [i for i in open_ if not traces[i].accepted]
            if turn > max_turns or not open_:
                break
            refine_prompts = [
                refine_prompt(
                    prompts[i],
                    traces[i].hypotheses[-1],
                    traces[i].feedback[-1],
                    refine_template,
                    refine_feedback_template,
                )
                for i in open_
            ]
            for i, hypothesis in zip(open_, checked_generate(generator, refine_prompts, f" (turn {turn})")):
                traces[i].hypotheses.append(hypothesis)
            bar.update(1)
            bar.set_postfix(open=len(open_))
    for trace in traces:
        trace.final = trace.hypotheses[-1]
    return traces


def refine_metrics(traces: Sequence[RefinementTrace]) -> dict[str, float]:
    """Summarise [`refine`]'s traces: how often and at which turn the critic accepted, and how many refinements ran.

    Args:
        traces (`Sequence[RefinementTrace]`):
            What [`refine`] returned.

    Returns:
        `dict[str, float]`: `"accepted"` (share of examples whose final hypothesis the critic accepted),
        `"mean_refinements"` (refine turns per example), and `"accepted_at_turn_{t}"` for each turn t that has a
        hypothesis (share of examples the critic accepted with z_t; these sum to `"accepted"`).
    """
    if not traces:
        return {}
    n = len(traces)
    metrics = {
        "accepted": sum(trace.accepted for trace in traces) / n,
        "mean_refinements": sum(trace.num_refinements for trace in traces) / n,
    }
    for turn in range(max(trace.num_refinements for trace in traces) + 1):
        accepted = sum(trace.accepted and trace.num_refinements == turn for trace in traces)
        metrics[f"accepted_at_turn_{turn}"] = accepted / n
    return metrics
