"""Generators: the protocol, model and callable generators (the endpoint client: tests/test_openai_endpoint.py)."""

from __future__ import annotations

import doctest

import pytest

import refiner_trl.generators as generators_module
from refiner_trl.generators import (
    CallableGenerator,
    Generator,
    GeneratorError,
    ModelGenerator,
    as_generator,
    checked_generate,
)
from refiner_trl.modeling import build_tiny_model, inference_device, train_tokenizer


@pytest.fixture(scope="module")
def tiny_causal():
    tokenizer = train_tokenizer(["x + y = z", "Tom has 3 apples. Feedback: wrong operator."] * 20, vocab_size=300)
    return build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1), tokenizer


# --- protocol, wrappers -------------------------------------------------------------------------------------------


def test_callable_generator_and_checked_generate():
    generator = CallableGenerator(lambda prompts: [p[::-1] for p in prompts])
    assert isinstance(generator, Generator)
    assert checked_generate(generator, ["ab", "cd"]) == ["ba", "dc"]
    with pytest.raises(GeneratorError, match=r"expected 2, got 1 \(turn 3\)"):
        checked_generate(CallableGenerator(lambda prompts: ["one"]), ["a", "b"], " (turn 3)")
    with pytest.raises(GeneratorError, match="int at index 1"):
        checked_generate(CallableGenerator(lambda prompts: ["a", 2]), ["a", "b"])
    with pytest.raises(GeneratorError, match="ZeroDivisionError"):
        checked_generate(CallableGenerator(lambda prompts: [1 / 0]), ["a"])


def test_as_generator(tiny_causal):
    model, tokenizer = tiny_causal
    generator = CallableGenerator(lambda prompts: prompts)
    assert as_generator(generator) is generator
    assert isinstance(as_generator(lambda prompts: prompts), CallableGenerator)
    wrapped = as_generator((model, tokenizer))
    assert isinstance(wrapped, ModelGenerator) and wrapped.model is model and not wrapped.do_sample
    with pytest.raises(TypeError, match=r"pass \(model, tokenizer\)"):
        as_generator(model)  # a model has a `generate` method, but not a Generator's
    with pytest.raises(TypeError, match="Cannot use int"):
        as_generator(3)
    with pytest.raises(TypeError, match="tuple of 3"):
        as_generator((model, tokenizer, None))


def test_model_generator_chunks_by_batch_size(tiny_causal, monkeypatch):
    model, tokenizer = tiny_causal
    generator = ModelGenerator(model, tokenizer, max_new_tokens=3, batch_size=2, max_prompt_length=4)
    calls = []
    original = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: calls.append(kw["input_ids"].shape[0]) or original(**kw))
    prompts = [f"Tom has {i} apples." for i in range(5)]
    texts = generator.generate(prompts)
    assert calls == [2, 2, 1]
    assert len(texts) == 5 and all(isinstance(t, str) for t in texts)
    assert generator.num_truncated_prompts == 5  # every prompt is longer than 4 tokens
    with pytest.raises(ValueError, match="tokenizer"):
        ModelGenerator(model)


def test_inference_device_prefers_a_gpu_and_names_a_bad_device(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device() == torch.device("cuda")
    assert inference_device("cpu") == torch.device("cpu")
    assert inference_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"device: 'gpu0' is not a torch device"):
        inference_device("gpu0")


def test_docstring_examples():
    results = doctest.testmod(generators_module)
    assert results.attempted > 0 and results.failed == 0, results  # no example found is a failure too
