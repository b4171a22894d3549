"""A person as critic: show x and the hypothesis at the terminal, read one line of feedback."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from .base import NO_ERROR, CriticError


class HumanCritic:
    """A [`Critic`] that asks a person: for each hypothesis it shows x and z and reads one line of feedback.

    An empty (or blank) line means "no error" and becomes [`NO_ERROR`]. Input that ends before every hypothesis has
    feedback raises [`CriticError`]. Hypotheses are asked one after another, in the batch's order.

    Args:
        input_stream (`TextIO`, *optional*):
            Where feedback is read from, one line per hypothesis. Defaults to `sys.stdin` (looked up at each call).
        output_stream (`TextIO`, *optional*):
            Where x, the hypothesis and the question are shown. Defaults to `sys.stderr` (looked up at each call), so
            that stdout stays free for results.
        show_reference (`bool`, *optional*, defaults to `False`):
            Also show the gold completion when [`refine`] passes references, so that the person can act as an oracle.

    Example:

    ```python
    >>> from refiner_trl.refinement import refine
    >>> traces = refine(generator, HumanCritic(), prompts, max_turns=2)  # doctest: +SKIP
    ```
    """

    def __init__(
        self, input_stream: TextIO | None = None, output_stream: TextIO | None = None, show_reference: bool = False
    ):
        self.input_stream = input_stream
        self.output_stream = output_stream
        self.show_reference = show_reference

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        source = self.input_stream if self.input_stream is not None else sys.stdin
        out = self.output_stream if self.output_stream is not None else sys.stderr
        feedback: list[str] = []
        for index, (prompt, hypothesis) in enumerate(zip(prompts, hypotheses)):
            out.write(f"\n[{index + 1}/{len(prompts)}] Input:\n{prompt}\nHypothesis:\n{hypothesis}\n")
            if self.show_reference and references is not None:
                out.write(f"Reference:\n{references[index]}\n")
            out.write("Feedback (empty line = no error): ")
            out.flush()
            line = source.readline()
            if not line:
                raise CriticError(
                    f"HumanCritic: input ended (EOF) before the feedback for hypothesis {index + 1} of {len(prompts)}"
                )
            text = line.strip()
            feedback.append(text if text else NO_ERROR)
        return feedback
