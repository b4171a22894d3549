"""Iterative refinement at inference: early stopping per example, turn accounting, the HF path."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refiner_trl import refinement as refine_module
from refiner_trl.critics import NO_ERROR, CallableCritic, CriticError
from refiner_trl.generators import GeneratorError, ModelGenerator
from refiner_trl.modeling import build_tiny_model, train_tokenizer
from refiner_trl.refinement import RefinementTrace, refine, refine_metrics
from refiner_trl.templates import render_refine_prompt


class Recorder:
    """Wraps a function as a generator or critic and records the batch of every call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[list] = []

    def __call__(self, *batch):
        self.calls.append(list(batch[0]) if len(batch) == 1 else list(zip(*batch[:2])))
        return self.fn(*batch)


def oracle(prompts, hypotheses, references):
    return [NO_ERROR if h == r else f"The answer is {r}." for h, r in zip(hypotheses, references)]


def test_early_stopping_with_the_oracle_critic():
    prompts = [f"q{i}" for i in range(6)]
    references = [f"a{i}" for i in range(6)]
    # Right on the even examples at turn 0; on a refine prompt, it follows the oracle's feedback.
    answers = {p: (r if i % 2 == 0 else "wrong") for i, (p, r) in enumerate(zip(prompts, references))}
    answers |= {render_refine_prompt(p, "wrong", f"The answer is {r}."): r for p, r in zip(prompts, references)}
    generator = Recorder(lambda batch: [answers[p] for p in batch])
    critic = Recorder(oracle)

    traces = refine(generator, CallableCritic(critic), prompts, references=references, max_turns=3)

    odd = [1, 3, 5]
    assert generator.calls == [
        prompts,  # turn 0: every example
        [render_refine_prompt(prompts[i], "wrong", f"The answer is {references[i]}.") for i in odd],  # turn 1: half
    ]
    assert [len(batch) for batch in critic.calls] == [6, 3]  # the refined half is checked once more, then all close
    assert critic.calls[1] == [(prompts[i], references[i]) for i in odd]
    for i, trace in enumerate(traces):
        assert trace.prompt == prompts[i] and trace.final == references[i] and trace.accepted
        if i % 2 == 0:
            assert trace.hypotheses == [references[i]] and trace.feedback == [NO_ERROR] and trace.num_refinements == 0
        else:
            assert trace.hypotheses == ["wrong", references[i]]
            assert trace.feedback == [f"The answer is {references[i]}.", NO_ERROR]
    assert refine_metrics(traces) == {
        "accepted": 1.0,
        "mean_refinements": 0.5,
        "accepted_at_turn_0": 0.5,
        "accepted_at_turn_1": 0.5,
    }


@pytest.mark.parametrize("final_critique", [False, True])
def test_stops_after_max_turns(final_critique):
    generator = Recorder(lambda batch: ["wrong"] * len(batch))
    critic = Recorder(lambda prompts, hypotheses, refs: ["Still wrong."] * len(prompts))
    traces = refine(generator, critic, ["x", "y"], max_turns=2, final_critique=final_critique)
    assert [len(batch) for batch in generator.calls] == [2, 2, 2]
    assert len(critic.calls) == 2 + final_critique
    for trace in traces:
        assert trace.hypotheses == ["wrong"] * 3 and trace.final == "wrong" and not trace.accepted
        assert len(trace.feedback) == 2 + final_critique
    assert refine_metrics(traces) == {
        "accepted": 0.0,
        "mean_refinements": 2.0,
        "accepted_at_turn_0": 0.0,
        "accepted_at_turn_1": 0.0,
        "accepted_at_turn_2": 0.0,
    }


def test_final_critique_can_accept_the_last_refinement():
    generator = lambda batch: ["right" if "Feedback" in p else "wrong" for p in batch]  # noqa: E731
    critic = lambda prompts, hypotheses, refs: [NO_ERROR if h == "right" else "No." for h in hypotheses]  # noqa: E731
    (without,) = refine(generator, critic, ["x"], max_turns=1)
    (with_final,) = refine(generator, critic, ["x"], max_turns=1, final_critique=True)
    assert without.hypotheses == with_final.hypotheses == ["wrong", "right"]
    assert without.feedback == ["No."] and not without.accepted
    assert with_final.feedback == ["No.", NO_ERROR] and with_final.accepted


def test_zero_turns_and_no_prompts():
    critic = Recorder(oracle)
    (trace,) = refine(lambda batch: ["z"], critic, ["x"], references=["y"], max_turns=0)
    assert trace == RefinementTrace(prompt="x", hypotheses=["z"], feedback=[], final="z", accepted=False)
    assert critic.calls == []
    assert refine(lambda batch: 1 / 0, critic, []) == [] and refine_metrics([]) == {}


def test_custom_template_reaches_the_generator():
    generator = Recorder(lambda batch: ["z"] * len(batch))
    refine(generator, lambda p, h, r: ["bad"], ["x"], max_turns=1, refine_template="{feedback}|{hypothesis}|{prompt}")
    assert generator.calls[1] == ["bad|z|x"]


def test_bad_arguments_and_bad_answers():
    generator, critic = (lambda batch: ["z"] * len(batch)), (lambda p, h, r: ["bad"] * len(p))
    with pytest.raises(ValueError, match="2 references for 1 prompts"):
        refine(generator, critic, ["x"], references=["a", "b"])
    with pytest.raises(ValueError, match="refine_template"):
        refine(generator, critic, ["x"], refine_template="{prompt} {hypothesis}")
    with pytest.raises(ValueError, match="max_turns"):
        refine(generator, critic, ["x"], max_turns=-1)
    with pytest.raises(TypeError, match="critic"):
        refine(generator, "oracle", ["x"])
    with pytest.raises(GeneratorError, match=r"expected 2, got 1 \(turn 1\)"):
        refine(lambda batch: ["z"] * (2 if batch == ["x", "y"] else 1), critic, ["x", "y"])
    with pytest.raises(CriticError, match=r"expected 2, got 1 \(critique of turn 0\)"):
        refine(generator, lambda p, h, r: ["bad"], ["x", "y"])


@settings(max_examples=60, deadline=None)
@given(
    turns_needed=st.lists(st.integers(0, 5), min_size=1, max_size=8),
    max_turns=st.integers(0, 4),
    final_critique=st.booleans(),
)
def test_turn_accounting(turns_needed, max_turns, final_critique):
    """Example i is right from turn turns_needed[i] on; each turn generates and critiques only the open examples."""
    asked = [0] * len(turns_needed)

    def generate(batch):
        texts = []
        for prompt in batch:
            i = int(prompt.split("\n")[0])
            texts.append("right" if asked[i] >= turns_needed[i] else f"wrong at {asked[i]}")
            asked[i] += 1
        return texts

    generator = Recorder(generate)
    critic = Recorder(lambda p, hypotheses, r: [NO_ERROR if h == "right" else "Wrong." for h in hypotheses])
    prompts = [str(i) for i in range(len(turns_needed))]
    traces = refine(generator, critic, prompts, max_turns=max_turns, final_critique=final_critique)

    for turn, batch in enumerate(generator.calls):
        assert len(batch) == sum(k >= turn for k in turns_needed) > 0
    assert len(generator.calls) == 1 + min(max_turns, max(turns_needed))
    # The critic reads z_0 .. z_{T-1}, and z_T too with final_critique.
    critiqued = max_turns + final_critique
    assert len(critic.calls) == min(critiqued, max(turns_needed) + 1)
    for turn, batch in enumerate(critic.calls, start=1):
        assert len(batch) == sum(k >= turn - 1 for k in turns_needed) > 0
    for trace, k in zip(traces, turns_needed):
        assert trace.num_refinements == min(k, max_turns)
        assert (trace.final == "right") == (k <= max_turns)
        assert trace.accepted == (k < critiqued)
        assert len(trace.feedback) == min(len(trace.hypotheses), critiqued)
    assert refine_metrics(traces)["accepted"] == sum(k < critiqued for k in turns_needed) / len(turns_needed)


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_refine_with_a_tiny_hf_model(architecture):
    tokenizer = train_tokenizer(["Tom has 3 apples. 3 + 2 = 5. Feedback: wrong operator."] * 10, vocab_size=300)
    model = build_tiny_model(architecture, tokenizer, hidden_size=32, num_layers=1)
    critic = Recorder(lambda prompts, hypotheses, refs: ["The operator is wrong."] * len(prompts))
    prompts = ["Tom has 3 apples.", "He buys 2 more apples."]
    traces = refine(ModelGenerator(model, tokenizer, max_new_tokens=4), critic, prompts, max_turns=2)
    assert [trace.prompt for trace in traces] == prompts
    for trace in traces:
        assert len(trace.hypotheses) == 3 and all(isinstance(h, str) for h in trace.hypotheses)
        assert trace.feedback == ["The operator is wrong."] * 2 and trace.final == trace.hypotheses[-1]
    assert [len(batch) for batch in critic.calls] == [2, 2]
    with pytest.raises(TypeError, match="ModelCritic"):  # checked before anything is generated
        refine((model, tokenizer), model, prompts)


def test_progress_bar(capsys):
    refine(lambda batch: ["z"] * len(batch), lambda p, h, r: ["bad"] * len(p), ["x"], max_turns=2, progress=True)
    assert "refine" in capsys.readouterr().err


def test_docstring_examples():
    results = doctest.testmod(refine_module)
    assert results.attempted > 0 and results.failed == 0, results  # no example found is a failure too
