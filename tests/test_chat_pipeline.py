"""The chat format end to end: the warm start trains on conversations through TRL's `SFTTrainer`, with the rendering
the REFINER trainer's loss and the evaluation's generation read; the chat recipes chain warm start, REFINER and
evaluation on a tiny chat model."""

from __future__ import annotations

import pytest
import torch
from conftest import CHAT_TEMPLATE, as_conversation, chat_tokenizer_for, code_rows
from datasets import Dataset

from refiner_trl.chat import refine_prompt, render_generation_prompts
from refiner_trl.losses import CompletionEncoder
from refiner_trl.modeling import build_tiny_model
from refiner_trl.supervised import SupervisedConfig, train_supervised


@pytest.fixture(params=["tiny", pytest.param("smollm2", marks=pytest.mark.slow)])
def chat_tokenizer(request):
    """The tiny chat tokenizer, or SmolLM2-135M-Instruct's real tokenizer and chat template."""
    if request.param == "tiny":
        return chat_tokenizer_for(code_rows(8, seed=0))
    from transformers import AutoTokenizer

    from refiner_trl.modeling import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2_path")))


def sft_config(tmp_path, **values) -> SupervisedConfig:
    defaults = dict(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, save_strategy="no", seed=0)
    return SupervisedConfig(**{**defaults, **values})


def chat_rows() -> list[dict]:
    """Conversations of one user message, and refine turns: the conversation continued as REFINER continues it."""
    rows = [as_conversation(r) for r in code_rows(6, seed=1)]
    refined = [
        {**r, "prompt": refine_prompt(r["prompt"], "a b", "c d", refine_feedback_template="Fix: {feedback}")}
        for r in rows[:3]
    ]
    return rows + refined


def test_warm_start_trains_on_the_tokens_of_the_refiner_loss_and_of_generation(chat_tokenizer, tmp_path):
    """SFTTrainer's own conversational path gives every row the tokens RefinerTrainer's loss encodes, and its prompt
    is exactly what generation (evaluation, exploration) tokenizes: one chat rendering across the three."""
    tokenizer = chat_tokenizer
    rows = chat_rows()
    model = build_tiny_model("causal", tokenizer, seed=0)
    trainer = train_supervised(model, tokenizer, Dataset.from_list(rows), sft_config(tmp_path), train=False)
    trained = trainer.train_dataset

    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    batch, _ = CompletionEncoder(tokenizer, None, None, encoder_decoder=False).encode(prompts, completions)
    generation = tokenizer(render_generation_prompts(tokenizer, prompts), add_special_tokens=False)["input_ids"]
    for i, row in enumerate(trained):
        keep = batch["attention_mask"][i].bool()
        ids, labels = batch["input_ids"][i][keep].tolist(), batch["labels"][i][keep]
        assert row["input_ids"] == ids, i
        assert row["labels"] == labels.tolist(), i  # the loss on the completion's tokens only, as RefinerTrainer's
        start = next(j for j, label in enumerate(row["labels"]) if label != -100)
        assert row["input_ids"][:start] == generation[i], i
        assert tokenizer.decode(row["input_ids"][start:]).startswith(rows[i]["completion"][0]["content"])


def test_warm_start_passes_chat_template_kwargs_to_the_template(tmp_path):
    tokenizer = chat_tokenizer_for(code_rows(8, seed=0))
    # Every message's content after a tag the caller sets (prefix-preserving, as `enable_thinking` templates are).
    tokenizer.chat_template = "{% if tag is not defined %}{% set tag = '' %}{% endif %}" + CHAT_TEMPLATE.replace(
        "{{ message['content'] }}", "{{ tag }}{{ message['content'] }}"
    )
    rows = Dataset.from_list(chat_rows()[:2])
    model = build_tiny_model("causal", tokenizer, seed=0)
    args = sft_config(tmp_path, chat_template_kwargs={"tag": "a"})
    trained = train_supervised(model, tokenizer, rows, args, train=False).train_dataset
    expected = render_generation_prompts(tokenizer, rows["prompt"], {"tag": "a"})
    assert expected[0].startswith("<s>user\na")
    first = trained[0]
    prompt = first["input_ids"][: next(j for j, label in enumerate(first["labels"]) if label != -100)]
    assert prompt == tokenizer(expected[0], add_special_tokens=False)["input_ids"]


def test_warm_start_learns_conversations(tmp_path):
    tokenizer = chat_tokenizer_for(code_rows(8, seed=0))
    rows = Dataset.from_list([as_conversation(r) for r in code_rows(8, seed=0)])
    model = build_tiny_model("causal", tokenizer, seed=0)
    args = sft_config(tmp_path, max_steps=30, learning_rate=1e-2, per_device_train_batch_size=8, logging_steps=1)
    trainer = train_supervised(model, tokenizer, rows, args)
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < 0.5 * losses[0]


def test_seq2seq_warm_start_renders_conversations_as_the_refiner_trainer(tmp_path):
    tokenizer = chat_tokenizer_for(code_rows(8, seed=0))
    rows = chat_rows()[:4]
    model = build_tiny_model("seq2seq", tokenizer, seed=0)
    trainer = train_supervised(model, tokenizer, Dataset.from_list(rows), sft_config(tmp_path), train=False)
    batch = trainer.data_collator(rows)
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    expected, _ = CompletionEncoder(tokenizer, 512, 256, encoder_decoder=True).encode(prompts, completions)
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(batch[key], expected[key]), key
