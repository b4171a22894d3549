"""Generation: `NucleusSampler` (the distribution of transformers' temperature, top-k and top-p warpers, without the
full sort) on every sampling path, the shared prompt prefill (each prompt encoded once for its k rows) and the early
exit of ended rows. None of them changes what is computed."""

from __future__ import annotations

import doctest
import warnings

import pytest
import torch
from conftest import code_rows, tokenizer_for
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from refiner_trl import generation
from refiner_trl.data import encode_prompts
from refiner_trl.generation import NucleusSampler, generate_texts, prefill_shared_prompts, sampling_options
from refiner_trl.modeling import build_tiny_model, train_tokenizer


def warped_probabilities(scores: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """What `generate(do_sample=True, ...)` draws from: transformers' warpers in its order, then a softmax."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    warpers.append(TopPLogitsWarper(top_p))
    return warpers(None, scores.clone()).softmax(-1)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 0, 0.95), (0.7, 0, 0.9), (1.3, 40, 0.8), (1.0, 7, 0.99)]
)
def test_the_nucleus_is_transformers_distribution(temperature, top_k, top_p):
    torch.manual_seed(0)
    # Peaked rows (as a pretrained model's) and one flat row whose nucleus is wider than the candidates.
    scores = torch.randn(6, 5000) * torch.tensor([[8.0], [6.0], [10.0], [7.0], [9.0], [0.01]])
    sampler = NucleusSampler(temperature, top_k, top_p, candidates=64)
    indices, weights, wide = sampler.nucleus(scores / temperature)
    expected = warped_probabilities(scores, temperature, top_k, top_p)
    for row in range(scores.shape[0]):
        if wide[row]:
            assert (expected[row] > 0).sum() > 64  # only a nucleus wider than the candidates is sorted whole
            continue
        ours = torch.zeros(5000).scatter_(0, indices[row], weights[row])
        torch.testing.assert_close(ours / ours.sum(), expected[row], atol=1e-6, rtol=1e-5)
    assert bool(wide[-1]) is (top_k == 0)  # the flat row: 64 candidates hold too little mass (top-k: all of it)
    assert not wide[:-1].any()


def test_the_draws_stay_in_the_nucleus_and_wide_rows_are_sorted():
    torch.manual_seed(1)
    medium = torch.full((2, 3000), -30.0)
    medium[:, :100] = torch.randn(2, 100) * 0.01 + 5  # a nucleus of ~90 tokens: more than 32, fewer than 16 x 32
    scores = torch.cat([torch.randn(4, 3000) * 9, medium, torch.randn(2, 3000) * 0.01])  # the last two flat
    expected = warped_probabilities(scores, 1.0, 0, 0.9)
    sampler = NucleusSampler(top_p=0.9, candidates=32)
    for _ in range(20):
        out = sampler(None, scores)
        tokens = out.argmax(-1)
        assert torch.isinf(out).sum(-1).tolist() == [2999] * 8  # one token per row
        assert (expected.gather(-1, tokens[:, None]) > 0).all()
    assert (sampler.rows, sampler.sorted_rows) == (160, 40)  # only the flat rows' nucleus is wider than 16 x 32
    # The draws follow the probabilities: the likeliest token of a peaked row comes up about as often as it should.
    peaked = scores[:1].expand(4000, -1)
    counts = torch.bincount(NucleusSampler(top_p=0.9)(None, peaked).argmax(-1), minlength=3000).float() / 4000
    top = expected[0].argmax()
    assert abs(counts[top] - expected[0, top]) < 0.03


def test_sampling_options_route_nucleus_sampling_through_the_sampler():
    assert sampling_options(False, 0.7, 0.9, 5) == {"do_sample": False}
    assert sampling_options(True, 0.7, 1.0, 5) == {"do_sample": True, "temperature": 0.7, "top_p": 1.0, "top_k": 5}
    options = sampling_options(True, 0.7, 0.9, 5)
    (sampler,) = options["logits_processor"]
    assert options["do_sample"] is False and isinstance(sampler, NucleusSampler)
    assert (sampler.temperature, sampler.top_k, sampler.top_p) == (0.7, 5, 0.9)


def seeded_draws(model, tokenizer, prompts, max_new_tokens: int, seed: int) -> list[list[str]]:
    """Two nucleus-sampled draws of 4 texts per prompt, from the same seed."""
    draws = []
    for _ in range(2):
        torch.manual_seed(seed)
        options = {"do_sample": True, "top_p": 0.9, "num_return_sequences": 4}
        draws.append(generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, **options)[0])
    return draws


def test_generate_texts_samples_reproducibly_through_the_sampler():
    texts = [f"count {i} {i + 1} {i + 2} words here" for i in range(40)]
    tokenizer = train_tokenizer(texts * 5, vocab_size=400)
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0)
    draws = seeded_draws(model, tokenizer, ["count 1", "count 2"], max_new_tokens=6, seed=3)
    assert draws[0] == draws[1] and len(draws[0]) == 8
    assert len(set(draws[0])) > 2  # a prompt's rows draw different texts


def test_docstring_examples():
    results = doctest.testmod(generation)
    assert results.attempted >= 2 and results.failed == 0


# ------------------------------------------------------------------------------------- shared prompts

PROMPTS = [
    "Item 1: what is its code?",
    "Item 222222: what is its code? Answer with the code of the item, please, and nothing else.",
    "Item 3?",
    "Item 1: what is its code?",  # a repeated prompt shares the prefill too
]


@pytest.fixture(scope="module")
def causal():
    tokenizer = tokenizer_for(code_rows(32, seed=0))
    return build_tiny_model("causal", tokenizer, seed=0, initializer_range=0.2).eval(), tokenizer


def forward_shapes(model, run):
    """Run `run()` and return the `(batch, length)` of every forward of `model`'s inner Llama model."""
    shapes = []
    handle = model.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        result = run()
    finally:
        handle.remove()
    return result, shapes


@pytest.mark.parametrize("k", [1, 4])
def test_shared_prompt_greedy_texts_equal_unshared(causal, k):
    model, tokenizer = causal
    unshared, _ = generate_texts(model, tokenizer, PROMPTS, max_new_tokens=10, share_prompt_cache=False)
    shared, shapes = forward_shapes(
        model, lambda: generate_texts(model, tokenizer, PROMPTS, max_new_tokens=10, num_return_sequences=k)[0]
    )
    # transformers refuses greedy decoding with num_return_sequences > 1; the k greedy rows equal the one.
    assert shared == [text for text in unshared for _ in range(k)]
    assert len(set(unshared)) > 1  # the prompts lead to different texts, so rows cannot be mixed up unnoticed
    width = encode_prompts(tokenizer, PROMPTS, None, False)[0]["input_ids"].shape[1]
    # One prefill of the 3 distinct prompts without their last token, then one token at a time for every row.
    assert shapes[0] == (3, width - 1)
    assert shapes[1] == (len(PROMPTS) * k, 1)


def test_shared_prompt_first_token_logits_equal_unshared(causal):
    model, tokenizer = causal
    k = 4
    inputs, _ = encode_prompts(tokenizer, PROMPTS, None, False)
    options = {
        "max_new_tokens": 1,
        "do_sample": True,
        "top_k": 0,
        "pad_token_id": tokenizer.pad_token_id,
        "return_dict_in_generate": True,
        "output_logits": True,
    }
    unshared = model.generate(**inputs, num_return_sequences=k, **options).logits[0]
    rows = [i for i in range(len(PROMPTS)) for _ in range(k)]
    cache, row_inputs = prefill_shared_prompts(model, inputs, PROMPTS, rows)
    assert cache.get_seq_length() == inputs["input_ids"].shape[1] - 1
    shared = model.generate(**row_inputs, cache=cache, **options).logits[0]
    assert shared.shape == unshared.shape == (len(PROMPTS) * k, len(tokenizer))
    torch.testing.assert_close(shared, unshared, atol=1e-5, rtol=1e-5)
    # The rows of different prompts differ, so the comparison would catch rows given the wrong prompt's cache.
    assert not torch.allclose(shared[0], shared[k], atol=1e-3)


def test_shared_prompt_sampling_is_reproducible(causal):
    model, tokenizer = causal
    draws = []
    for share in (True, True, False):
        torch.manual_seed(0)
        texts, _ = generate_texts(
            model, tokenizer, PROMPTS, 8, max_new_tokens=8, do_sample=True, num_return_sequences=4,
            share_prompt_cache=share,
        )  # fmt: skip
        draws.append(texts)
    assert draws[0] == draws[1]
    assert len(set(draws[0])) > len(PROMPTS)  # sampling draws different texts for a prompt's rows
    # On this model the logits agree bit for bit, so the draws of the unshared path are the same too.
    assert draws[0] == draws[2]


def test_unshareable_cache_falls_back_and_warns_once(causal, monkeypatch):
    model, tokenizer = causal

    monkeypatch.setattr(generation, "_WARNED_UNSHARED", set())
    # A model class that cannot use DynamicCache (as transformers says of xlnet, reformer, rwkv), simulated.
    monkeypatch.setattr(type(model), "_supports_default_dynamic_cache", classmethod(lambda cls: False))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(0)
        first, shapes = forward_shapes(
            model,
            lambda: generate_texts(
                model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, num_return_sequences=2
            )[0],
        )
        generate_texts(model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, num_return_sequences=2)
    messages = [str(w.message) for w in caught if "prefilled once per sample" in str(w.message)]
    assert len(messages) == 1 and "DynamicCache" in messages[0]
    assert shapes[0][0] == len(PROMPTS) * 2  # generate repeated every prompt before its prefill
    monkeypatch.undo()
    torch.manual_seed(0)
    unshared, _ = generate_texts(
        model, tokenizer, PROMPTS, max_new_tokens=6, do_sample=True, num_return_sequences=2, share_prompt_cache=False
    )
    assert first == unshared


# ------------------------------------------------------------------------------------------ early exit


def ending_tokenizer(model, tokenizer, prompts):
    """A copy of `tokenizer` whose EOS is a token the model's greedy texts hold at different positions, so that rows
    end at different times (a random tiny model seldom emits its real EOS)."""
    import copy
    from collections import Counter

    inputs, _ = encode_prompts(tokenizer, prompts, None, model.config.is_encoder_decoder)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new = output[:, 1:] if model.config.is_encoder_decoder else output[:, inputs["input_ids"].shape[1] :]
    for token, _ in Counter(new.flatten().tolist()).most_common(10):
        first = [(row == token).nonzero()[0].item() if (row == token).any() else None for row in new]
        if len({position for position in first if position is not None}) > 1 and first.count(None) > 1:
            ending = copy.deepcopy(tokenizer)
            ending.eos_token = ending.convert_ids_to_tokens(token)
            return ending
    raise AssertionError("no token ends the rows at different positions")


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_ended_rows_leave_the_batch_and_greedy_texts_stay_the_same(architecture):
    tokenizer = tokenizer_for(code_rows(32, seed=0))
    model = build_tiny_model(architecture, tokenizer, seed=0, initializer_range=0.2).eval()
    prompts = [row["prompt"] for row in code_rows(12, seed=1)]
    tokenizer = ending_tokenizer(model, tokenizer, prompts)
    kept = generate_texts(model, tokenizer, prompts, max_new_tokens=12, drop_finished=False)[0]
    rows = []
    original = model.generate

    def spy(**kwargs):
        rows.append(kwargs["input_ids"].shape[0])
        return original(**kwargs)

    model.generate = spy
    try:
        dropped = generate_texts(model, tokenizer, prompts, max_new_tokens=12)[0]
        assert len(rows) > 1 and rows[-1] < rows[0]  # ended rows left the batch, and generation went on without them
        for share in (True, False):  # the k rows of a prompt, from its shared or its repeated encoding
            repeated = generate_texts(
                model, tokenizer, prompts, max_new_tokens=12, num_return_sequences=3, share_prompt_cache=share
            )[0]
            assert repeated == [text for text in kept for _ in range(3)]
    finally:
        model.generate = original
    assert dropped == kept
    assert len(set(kept)) > 3


def test_sampling_with_early_exit_keeps_the_sampler_and_is_reproducible():
    tokenizer = tokenizer_for(code_rows(32, seed=0))
    model = build_tiny_model("causal", tokenizer, seed=0, initializer_range=0.2).eval()
    prompts = [row["prompt"] for row in code_rows(6, seed=1)]
    draws = seeded_draws(model, ending_tokenizer(model, tokenizer, prompts), prompts, max_new_tokens=12, seed=0)
    assert draws[0] == draws[1] and len(draws[0]) == 24
