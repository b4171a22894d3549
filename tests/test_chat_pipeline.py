"""The chat format end to end: the warm start trains on conversations through TRL's `SFTTrainer`, with the rendering
the REFINER trainer's loss and the evaluation's generation read; the chat recipes chain warm start, REFINER and
evaluation on a tiny chat model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CHAT_TEMPLATE, as_conversation, chat_tokenizer_for, code_rows, load_recipe
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


# ------------------------------------------------------------------------------------------------ the recipes' chain

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
CHAIN = (  # (recipe, its YAML file, what it parses, its own overrides)
    ("train_generator", "generator_mwp_smollm2_chat.yaml", "GENERATOR_ARGUMENTS", ["--max_steps", "2"]),
    ("train_refiner", "mwp_smollm2_chat.yaml", "REFINER_ARGUMENTS", ["--max_steps", "2", "--max_new_tokens", "6"]),
    ("evaluate", "evaluate_mwp_smollm2_chat.yaml", "EVALUATE_ARGUMENTS", ["--device", "cpu", "--progress", "false"]),
)


def tiny_chat_model_folder(folder: Path) -> Path:
    """A tiny causal model whose tokenizer knows the MWP task's texts and has a chat template, saved to `folder`."""
    from refiner_trl.builders import load_task_data
    from refiner_trl.modeling import train_tokenizer
    from refiner_trl.script_args import TaskArguments
    from refiner_trl.templates import REFINE_FEEDBACK_TEMPLATE

    task, rows, _ = load_task_data(TaskArguments(task="mwp", synthetic_train_size=64))
    texts = task.tokenizer_texts(rows)
    texts += [f"<s>user\n{p}</s><s>assistant\n{c}</s>" for p, c in zip(rows["prompt"], rows["completion"])]
    texts += [REFINE_FEEDBACK_TEMPLATE + " Write the refined equation. user assistant"] * 20
    tokenizer = train_tokenizer(texts, vocab_size=500)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_chat_recipes_warm_start_train_refiner_and_evaluate_with_the_runs_templates(tmp_path, monkeypatch):
    """generator_mwp_smollm2_chat -> mwp_smollm2_chat -> evaluate_mwp_smollm2_chat on a tiny chat model, two steps
    each: every step reads conversations, and every evaluation's refine turns use the templates of the model it
    evaluates (the warm start's defaults, then the REFINER YAML's feedback message, read back from the saved model)."""
    import yaml

    from refiner_trl import evaluation
    from refiner_trl.recipe_parser import parse_recipe_args
    from refiner_trl.templates import REFINE_FEEDBACK_TEMPLATE, RUN_TEMPLATES_FILE

    calls = []
    refine = evaluation.refine

    def recording_refine(generator, critic, prompts, **kwargs):
        calls[-1].append({"conversations": all(isinstance(p, list) for p in prompts), **kwargs})
        return refine(generator, critic, prompts, **kwargs)

    monkeypatch.setattr(evaluation, "refine", recording_refine)
    model = tiny_chat_model_folder(tmp_path / "tiny-chat")
    common = ["--synthetic_train_size", "16", "--synthetic_eval_size", "4", "--eval_max_new_tokens", "6"]
    common += ["--torch_num_threads", "1"]
    results = []
    for name, yaml_file, arguments, extra in CHAIN:
        recipe = load_recipe(name)
        output = tmp_path / name
        argv = ["--config", str(RECIPES / yaml_file), "--model_name_or_path", str(model), "--output_dir", str(output)]
        if name != "evaluate":
            argv += ["--per_device_train_batch_size", "4", "--logging_steps", "1", "--report_to", "none"]
        calls.append([])
        results.append(recipe.main(*parse_recipe_args(getattr(recipe, arguments), [*argv, *common, *extra])))
        assert (output / "results.json").is_file()
        model = output  # the next step starts from (or evaluates) this one's model

    trained = yaml.safe_load((RECIPES / "mwp_smollm2_chat.yaml").read_text())["refine_feedback_template"]
    assert trained != REFINE_FEEDBACK_TEMPLATE
    saved = json.loads((tmp_path / "train_refiner" / RUN_TEMPLATES_FILE).read_text())
    assert saved["refine_feedback_template"] == trained and saved["chat_template_kwargs"] == {}
    assert not (tmp_path / "train_generator" / RUN_TEMPLATES_FILE).exists()  # the warm start has no refine turn
    expected = [REFINE_FEEDBACK_TEMPLATE, trained, trained]
    for step, feedback_template, result in zip(calls, expected, results):
        assert step and all(call["conversations"] for call in step)
        assert {call["refine_feedback_template"] for call in step} == {feedback_template}
        assert result.templates["refine_feedback_template"] == feedback_template
        assert [run.label for run in result.runs] == ["generator alone", "+ oracle critic (T=2)"]
