"""Critics: the protocol, coercion into one, the callable critic (model critics: tests/test_model_backed.py)."""

from __future__ import annotations

import doctest

import pytest
import torch

import refiner_trl.critics.base as critics_module
from refiner_trl.critics import NO_ERROR, CallableCritic, Critic, as_critic


class EchoCritic:
    """A critic by its `critique` method alone (no base class)."""

    def critique(self, prompts, hypotheses, references=None):
        return list(hypotheses)


def test_as_critic():
    critic = EchoCritic()
    assert as_critic(critic) is critic  # a Critic is returned as is
    callable_critic = CallableCritic(lambda p, h, r: [NO_ERROR] * len(h))
    assert as_critic(callable_critic) is callable_critic
    wrapped = as_critic(lambda p, h, r: [f"{x}|{y}|{z}" for x, y, z in zip(p, h, r)])
    assert isinstance(wrapped, CallableCritic) and isinstance(wrapped, Critic)
    assert wrapped.critique(["p"], ["h"], ["r"]) == ["p|h|r"]
    with pytest.raises(TypeError, match=r"bare Linear as critic: wrap it in ModelCritic\(model, tokenizer\)"):
        as_critic(torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match="Cannot use int as a critic"):
        as_critic(3)
    with pytest.raises(TypeError, match="Cannot use str as a critic"):
        as_critic("oracle")


def test_docstring_examples():
    results = doctest.testmod(critics_module)
    assert results.attempted > 0 and results.failed == 0, results  # no example found is a failure too
