"""Models in-process: `ModelCritic` batches like it critiques one input at a time, `ModelGenerator`'s sampling options
shape what it writes, and the helpers beside them (`prepare_tokenizer`, `load_records` of a `save_to_disk` folder)."""

from __future__ import annotations

import pytest
from conftest import ARCHITECTURES, GenerateSpy, code_rows, tokenizer_for
from datasets import Dataset, DatasetDict
from transformers import set_seed

from refiner_trl.critics import ModelCritic
from refiner_trl.data import DataError, load_records
from refiner_trl.generation import NucleusSampler, generate_texts
from refiner_trl.generators import ModelGenerator
from refiner_trl.modeling import build_tiny_model, prepare_tokenizer
from refiner_trl.templates import render_critic_input

ROWS = code_rows(8, seed=0)
PROMPTS = [r["prompt"] for r in ROWS[:5]]
HYPOTHESES = ["a b c", "d e", "f", "g h i j", "k l"]


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for(ROWS)


def input_dependent_model(architecture, tokenizer):
    """A tiny model whose larger initial weights make its greedy text depend on its input (at 0.02 it is constant)."""
    return build_tiny_model(architecture, tokenizer, seed=0, initializer_range=0.2)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_model_critic_critiques_a_batch_as_it_does_each_input_alone(architecture, tokenizer):
    model = input_dependent_model(architecture, tokenizer)
    critic = ModelCritic(model, tokenizer, max_new_tokens=6, batch_size=2)
    spy = GenerateSpy(model)
    feedback = critic.critique(PROMPTS, HYPOTHESES, references=["x"] * 5)

    alone = [
        generate_texts(model, tokenizer, [render_critic_input(p, h)], max_new_tokens=6)[0][0]
        for p, h in zip(PROMPTS, HYPOTHESES)
    ]
    assert len(set(alone)) == 5  # the check needs inputs whose feedback differs
    assert feedback == alone  # padding in a batch of two changes nothing, and the order is kept
    # One call per batch of two (continuations of rows that have not ended carry their cache).
    assert [call["input_ids"].shape[0] for call in spy.calls if call.get("cache") is None][:3] == [2, 2, 1]
    assert all(call["do_sample"] is False for call in spy.calls)
    assert critic.critique(PROMPTS, HYPOTHESES, references=["y"] * 5) == feedback  # the references are not read


@pytest.fixture(scope="module")
def greedy_and_model(tokenizer):
    model = input_dependent_model("causal", tokenizer)
    return ModelGenerator(model, tokenizer, max_new_tokens=6).generate(PROMPTS), model


@pytest.mark.parametrize(
    "sampling",
    [{"top_p": 1e-6}, {"temperature": 1e-4}],
    ids=["top_p keeps only the likeliest token", "temperature near 0"],
)
def test_model_generator_sampling_that_keeps_the_likeliest_token_is_greedy(sampling, greedy_and_model, tokenizer):
    greedy, model = greedy_and_model
    set_seed(0)
    assert ModelGenerator(model, tokenizer, max_new_tokens=6, do_sample=True, **sampling).generate(PROMPTS) == greedy


def test_model_generator_samples_seeded_and_passes_its_options_to_generate(greedy_and_model, tokenizer):
    greedy, model = greedy_and_model
    generator = ModelGenerator(model, tokenizer, max_new_tokens=6, do_sample=True, temperature=3.0, top_p=0.99)
    set_seed(0)
    sampled = generator.generate(PROMPTS)
    set_seed(0)
    assert generator.generate(PROMPTS) == sampled
    assert sampled != greedy

    spy = GenerateSpy(model)
    try:
        generator.generate(PROMPTS[:1])
    finally:
        model.generate = spy.original
    # Nucleus sampling (top_p < 1) goes through the NucleusSampler: greedy generate takes the tokens it draws.
    call = spy.calls[0]
    (sampler,) = call["logits_processor"]
    assert call["do_sample"] is False and isinstance(sampler, NucleusSampler)
    assert (sampler.temperature, sampler.top_p, call["max_new_tokens"]) == (3.0, 0.99, 6)


def test_prepare_tokenizer_pads_with_eos_when_there_is_no_pad_token_and_needs_an_eos(tokenizer):
    prepared = prepare_tokenizer(tokenizer_for(ROWS))
    assert (prepared.pad_token, prepared.pad_token_id) == ("<pad>", tokenizer.pad_token_id)  # kept when there is one

    no_pad = tokenizer_for(ROWS)
    no_pad.pad_token = None
    assert prepare_tokenizer(no_pad) is no_pad
    assert (no_pad.pad_token, no_pad.pad_token_id) == ("</s>", no_pad.eos_token_id)

    no_eos = tokenizer_for(ROWS)
    no_eos.pad_token = no_eos.eos_token = None
    with pytest.raises(ValueError, match="The tokenizer has no EOS token"):
        prepare_tokenizer(no_eos)


def test_load_records_reads_save_to_disk_folders(tmp_path):
    Dataset.from_list(ROWS).save_to_disk(tmp_path / "dataset")
    assert load_records(str(tmp_path / "dataset")).to_list() == ROWS

    splits = DatasetDict({"train": Dataset.from_list(ROWS[:5]), "validation": Dataset.from_list(ROWS[5:])})
    splits.save_to_disk(tmp_path / "splits")
    assert load_records(str(tmp_path / "splits")).to_list() == ROWS[:5]
    assert load_records(str(tmp_path / "splits"), split="validation").to_list() == ROWS[5:]
    with pytest.raises(DataError, match=r"splits: no split 'test' \(splits: \['train', 'validation'\]\)"):
        load_records(str(tmp_path / "splits"), split="test")
