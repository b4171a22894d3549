"""`NucleusSampler`: the distribution of transformers' temperature, top-k and top-p warpers, without the full sort."""

from __future__ import annotations

import doctest

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

from refiner_trl import sampling
from refiner_trl.modeling import build_tiny_model, generate_texts, sampling_options, train_tokenizer
from refiner_trl.sampling import NucleusSampler


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


def test_generate_texts_samples_reproducibly_through_the_sampler():
    texts = [f"count {i} {i + 1} {i + 2} words here" for i in range(40)]
    tokenizer = train_tokenizer(texts * 5, vocab_size=400)
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0)
    prompts = ["count 1", "count 2"]
    draws = []
    for _ in range(2):
        torch.manual_seed(3)
        draws.append(
            generate_texts(
                model, tokenizer, prompts, max_new_tokens=6, do_sample=True, num_return_sequences=4, top_p=0.9
            )[0]
        )
    assert draws[0] == draws[1] and len(draws[0]) == 8
    assert len(set(draws[0])) > 2  # a prompt's rows draw different texts


def test_docstring_examples():
    results = doctest.testmod(sampling)
    assert results.attempted >= 2 and results.failed == 0
