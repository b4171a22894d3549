"""Supervised prompt -> completion training: SFTTrainer (causal, completion-only) and Seq2SeqTrainer (seq2seq)."""

from __future__ import annotations

import pytest
from datasets import Dataset
from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainingArguments
from trl import SFTConfig, SFTTrainer

from refiner_trl import RefinerConfig
from refiner_trl.data import LABEL_PAD
from refiner_trl.generation import generate_texts
from refiner_trl.modeling import build_tiny_model, train_tokenizer
from refiner_trl.supervised import (
    PromptCompletionCollator,
    SupervisedConfig,
    convert_args,
    tokenize_for_sft,
    train_supervised,
)

# A lookup table: the completion cannot be read off the prompt, so the model must learn it.
TABLE = {
    "apple": "red fruit",
    "sky": "blue air",
    "grass": "green leaf",
    "coal": "black rock",
    "snow": "white ice",
    "sun": "yellow star",
}


@pytest.fixture(scope="module")
def table():
    rows = [{"prompt": f"What is {key}? Answer:", "completion": value} for key, value in TABLE.items()]
    tokenizer = train_tokenizer([f"{r['prompt']} {r['completion']}" for r in rows] * 4, vocab_size=300)
    return Dataset.from_list(rows * 8), tokenizer


def tiny_args(tmp_path, **overrides) -> SupervisedConfig:
    values = dict(
        output_dir=str(tmp_path),
        max_steps=60,
        per_device_train_batch_size=8,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        logging_steps=10,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    return SupervisedConfig(**{**values, **overrides})


def test_sft_data_masks_the_prompt_and_ends_with_eos(table):
    rows, tokenizer = table
    tokenized = tokenize_for_sft(rows.select(range(2)), tokenizer, None, None)
    assert tokenized.column_names == ["input_ids", "completion_mask"]
    for row, encoded in zip(rows, tokenized):
        prompt = tokenizer(row["prompt"])["input_ids"]
        completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        assert encoded["input_ids"] == prompt + completion + [tokenizer.eos_token_id]
        assert encoded["completion_mask"] == [0] * len(prompt) + [1] * (len(completion) + 1)


def test_sft_prompt_truncation_keeps_the_end(table):
    rows, tokenizer = table
    with pytest.warns(UserWarning, match="1 prompt"):
        tokenized = tokenize_for_sft(rows.select(range(1)), tokenizer, 3, None)
    prompt = tokenizer(rows[0]["prompt"])["input_ids"]
    assert tokenized[0]["input_ids"][:3] == prompt[-3:]


def test_causal_sft_learns_completions_only(table, tmp_path):
    rows, tokenizer = table
    model = build_tiny_model("causal", tokenizer, hidden_size=64, seed=0)
    trainer = train_supervised(model, tokenizer, rows, tiny_args(tmp_path))
    assert isinstance(trainer, SFTTrainer)
    assert trainer.args.completion_only_loss is True and trainer.args.max_length is None
    # SFTTrainer turned the completion mask into labels: -100 on the prompt, the completion and EOS trained.
    first = trainer.train_dataset[0]
    prompt_length = len(tokenizer(rows[0]["prompt"])["input_ids"])
    assert first["labels"][:prompt_length] == [LABEL_PAD] * prompt_length
    assert first["labels"][prompt_length:] == first["input_ids"][prompt_length:]
    assert first["labels"][-1] == tokenizer.eos_token_id
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < 0.3 * losses[0], losses
    texts, _ = generate_texts(model.eval(), tokenizer, [f"What is {k}? Answer:" for k in TABLE])
    assert sum(text == value for text, value in zip(texts, TABLE.values())) >= 5, texts


def test_seq2seq_learns_with_seq2seq_trainer(table, tmp_path):
    rows, tokenizer = table
    model = build_tiny_model("seq2seq", tokenizer, hidden_size=64, seed=0)
    trainer = train_supervised(model, tokenizer, rows, tiny_args(tmp_path), eval_dataset=rows.select(range(6)))
    assert isinstance(trainer, Seq2SeqTrainer) and isinstance(trainer.data_collator, PromptCompletionCollator)
    assert trainer.args.learning_rate == 3e-3
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert losses[-1] < 0.3 * losses[0], losses
    assert trainer.evaluate()["eval_loss"] < 0.5
    texts, _ = generate_texts(model.eval(), tokenizer, [f"What is {k}? Answer:" for k in TABLE])
    assert sum(text == value for text, value in zip(texts, TABLE.values())) >= 5, texts


def test_convert_args_keeps_shared_fields_and_drops_the_others(tmp_path):
    refiner = RefinerConfig(output_dir=str(tmp_path), learning_rate=1e-4, num_hypotheses=7, report_to=[])
    sft = convert_args(refiner, SFTConfig, completion_only_loss=True)
    assert isinstance(sft, SFTConfig) and sft.learning_rate == 1e-4 and sft.completion_only_loss is True
    assert not hasattr(sft, "num_hypotheses")
    # A plain TrainingArguments' defaults win over SFTConfig's (no bf16, no gradient checkpointing).
    assert sft.gradient_checkpointing is False and not sft.bf16
    given = SFTConfig(output_dir=str(tmp_path), eos_token="</s>", bf16=False, report_to=[])
    assert isinstance(convert_args(given, Seq2SeqTrainingArguments), Seq2SeqTrainingArguments)
    assert convert_args(given, SFTConfig).eos_token == "</s>"  # `to_dict` hides `*_token` values; the copy keeps them.
    assert isinstance(convert_args(TrainingArguments(str(tmp_path), report_to=[]), SFTConfig), SFTConfig)


def test_seq2seq_counts_truncation_and_collates_with_the_shared_encoding(table, tmp_path):
    rows, tokenizer = table
    model = build_tiny_model("seq2seq", tokenizer, hidden_size=32, num_layers=1, seed=0)
    with pytest.warns(UserWarning, match=f"train_dataset: {len(rows)} prompt"):
        trainer = train_supervised(model, tokenizer, rows, tiny_args(tmp_path), max_prompt_length=3, train=False)
    batch = trainer.data_collator([rows[0], rows[1]])
    prompt = tokenizer(rows[0]["prompt"])["input_ids"]
    completion = tokenizer(rows[0]["completion"], add_special_tokens=False)["input_ids"]
    assert batch["input_ids"][0].tolist() == prompt[-3:]
    assert batch["labels"][0].tolist()[: len(completion) + 1] == completion + [tokenizer.eos_token_id]
