"""The two speed-ups of a step: shared-prompt sampling (each prompt prefilled once for its k samples) and the loss
forward split into length groups. Both must leave what is computed unchanged."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from conftest import code_rows, quiet_refiner_config, tokenizer_for
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerTrainer
from refiner_trl.data import encode_prompts
from refiner_trl.length_groups import length_groups
from refiner_trl.modeling import build_tiny_model, generate_texts, prefill_shared_prompts

PROMPTS = [
    "Item 1: what is its code?",
    "Item 222222: what is its code? Answer with the code of the item, please, and nothing else.",
    "Item 3?",
    "Item 1: what is its code?",  # a repeated prompt shares the prefill too
]


def single_forward_turn_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    turn_prompts: list[list[str]],
    completions: list[str],
    max_prompt_length: int | None,
    max_completion_length: int | None,
    encoder_decoder: bool,
    decoder_start_token_id: int | None = None,
) -> torch.Tensor:
    """The per-turn losses as computed before length groups: one right-padded forward over every turn's rows, with
    the logits of every position: the reference the trainer's grouped forward is checked against.

    Args:
        model (`torch.nn.Module`):
            The model.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        turn_prompts (`list[list[str]]`):
            Each turn's prompts, one per example.
        completions (`list[str]`):
            The gold completions, one per example (the same in every turn).
        max_prompt_length (`int`, *optional*):
            Prompts are cut to this many tokens.
        max_completion_length (`int`, *optional*):
            Completions are cut to this many tokens.
        encoder_decoder (`bool`):
            Whether the model is an encoder-decoder.
        decoder_start_token_id (`int`, *optional*):
            An encoder-decoder's first decoder token.

    Returns:
        `torch.Tensor`: one mean token loss per turn.
    """
    from refiner_trl.data import LABEL_PAD, encode_prompt_completion
    from refiner_trl.trainer import _shift_right

    num_turns, batch_size = len(turn_prompts), len(completions)
    batch, _ = encode_prompt_completion(
        tokenizer,
        [p for prompts in turn_prompts for p in prompts],
        completions * num_turns,
        max_prompt_length,
        max_completion_length,
        encoder_decoder,
    )
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    labels = batch.pop("labels")
    if encoder_decoder:
        batch["decoder_input_ids"] = _shift_right(labels, decoder_start_token_id, tokenizer.pad_token_id)
        logits = model(**batch, use_cache=False).logits
    else:
        logits = model(**batch, use_cache=False).logits[:, :-1]
        labels = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD, reduction="none"
    ).view(num_turns, batch_size, -1)
    mask = (labels != LABEL_PAD).view(num_turns, batch_size, -1)
    return token_losses.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)


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
    import refiner_trl.modeling as modeling

    monkeypatch.setattr(modeling, "_WARNED_UNSHARED", set())
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


# ------------------------------------------------------------------------------------------- length groups


def test_length_groups_cut_where_padding_is_least():
    lengths = [(10,), (50,), (11,), (52,), (12,), (49,)]
    assert length_groups(lengths, 1) == [[0, 1, 2, 3, 4, 5]]
    assert length_groups(lengths, 2) == [[0, 2, 4], [1, 3, 5]]
    # A third group would save 3 x 1 + 3 x 2 = 9 of 192 tokens (< 5%): not worth a forward.
    assert length_groups(lengths, 4) == [[0, 2, 4], [1, 3, 5]]
    # Without a least saving, the count is min(max_groups, rows) whatever the lengths (as processes need).
    assert len(length_groups(lengths, 4, min_saving=0.0)) == 4
    assert length_groups([(7,)] * 3, 8, min_saving=0.0) == [[0], [1], [2]]
    # Two padded dimensions (encoder, decoder): cost is rows x (longest encoder row + longest decoder row).
    assert length_groups([(5, 20), (40, 3), (6, 21), (41, 2)], 2) == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="max_groups"):
        length_groups(lengths, 0)


def test_grouped_loss_forward_equals_single_forward(tiny, architecture, tmp_path):
    model, tokenizer, rows = tiny
    rows = rows[:4]
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    # Rows of very different lengths: turn 0 short, turn 1 long and uneven, turn 2 in between.
    long_refines = [
        f"{p}\nPrevious answer: {'x ' * (3 + 4 * i)}\nFeedback: The code is {c}"
        for i, (p, c) in enumerate(zip(prompts, completions))
    ]
    turn_prompts = [prompts, long_refines, [f"{p}\nPrevious answer: a b\nFeedback: no" for p in prompts]]
    critic = CallableCritic(lambda prompts, hyps, refs: ["No error."] * len(hyps))
    args = quiet_refiner_config(tmp_path, max_loss_forwards=4)
    trainer = RefinerTrainer(
        model, args, critic=critic, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    model = trainer.model
    forwards = []
    handle = model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    grouped = trainer._turn_losses(model, turn_prompts, completions, "train")
    handle.remove()
    assert len(forwards) > 1  # the rows were split into several forwards
    grouped.sum().backward()
    grouped_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # The loss before length groups (one right-padded forward with every position's logits) is the reference.
    single = single_forward_turn_losses(
        model, tokenizer, turn_prompts, completions, 512, 256, architecture == "seq2seq",
        getattr(model.config, "decoder_start_token_id", None),
    )  # fmt: skip
    single.sum().backward()
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=1e-5)
    for grouped_grad, parameter in zip(grouped_grads, model.parameters()):
        torch.testing.assert_close(grouped_grad, parameter.grad, atol=1e-5, rtol=1e-5)
    assert trainer._metrics["train"]["turn_2/loss"] == [pytest.approx(float(single[2].detach()))]
