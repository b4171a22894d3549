"""Conversational (chat) datasets: RefinerTrainer, refine, ModelGenerator and ModelCritic on TRL's chat format."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    CHAT_TEMPLATE,
    SpyTrainer,
    as_conversation,
    chat_tokenizer_for,
    code_rows,
    quiet_refiner_config,
)
from datasets import Dataset
from test_trainer import RecordingCritic
from tokenizers import processors

from refiner_trl import ModelCritic, ModelGenerator, RefinerTrainer, refine
from refiner_trl.chat import plain_text, refine_prompt
from refiner_trl.data import DataError
from refiner_trl.modeling import build_tiny_model
from refiner_trl.templates import REFINE_FEEDBACK_TEMPLATE, render_critic_input


def record_generate_inputs(model) -> list[list[list[int]]]:
    """Wrap `model.generate` to record each call's prompts as token ids, without their padding."""
    calls: list[list[list[int]]] = []
    generate = model.generate

    def recording(*args, **kwargs):
        ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
        # A causal model's k rows per prompt come in already repeated (its prompts are prefilled once): one each.
        k = (
            1
            if "num_return_sequences" in kwargs
            else len(ids) // len({tuple(r[m.bool()].tolist()) for r, m in zip(ids, mask)})
        )
        calls.append([row[m.bool()].tolist() for row, m in zip(ids[::k], mask[::k])])
        return generate(*args, **kwargs)

    model.generate = recording
    return calls


def chat_ids(tokenizer, messages, generation_prompt: bool) -> list[int]:
    """The chat template applied by the tokenizer itself: the reference the trainer's inputs must equal."""
    return tokenizer.apply_chat_template(
        messages, add_generation_prompt=generation_prompt, tokenize=True, return_dict=False
    )


@pytest.fixture
def chat_rows():
    return code_rows(8, seed=0)


@pytest.fixture
def bos_chat_tokenizer(chat_rows):
    """The tiny chat tokenizer, made to add BOS when it tokenizes text, as Llama's does: the chat renders hold their
    BOS already, so tokenizing them with special tokens would double it."""
    tokenizer = chat_tokenizer_for(chat_rows)
    bos = (tokenizer.bos_token, tokenizer.bos_token_id)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[bos])
    assert tokenizer("x")["input_ids"][0] == tokenizer.bos_token_id
    return tokenizer


@pytest.fixture(params=["tiny", pytest.param("smollm2", marks=pytest.mark.slow)])
def chat_tokenizer(request):
    """The tiny chat tokenizer that adds BOS, or SmolLM2-135M-Instruct's real tokenizer and chat template."""
    if request.param == "tiny":
        return request.getfixturevalue("bos_chat_tokenizer")
    from transformers import AutoTokenizer

    from refiner_trl.modeling import prepare_tokenizer

    return prepare_tokenizer(AutoTokenizer.from_pretrained(request.getfixturevalue("smollm2_path")))


def make_trainer(model, tokenizer, rows, tmp_path, critic=None, trainer_class=RefinerTrainer, **overrides):
    values = {
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "num_hypotheses": 2,
        "num_refinement_turns": 2,
        "explore_last_turn": True,
        "max_new_tokens": 4,
        **overrides,
    }
    args = quiet_refiner_config(tmp_path / "out", **values)
    return trainer_class(
        model,
        args,
        critic=critic or RecordingCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


# ------------------------------------------------------------------------------------------------ training


def test_refine_turn_samples_from_the_chat_template_of_the_continued_conversation(chat_rows, chat_tokenizer, tmp_path):
    tokenizer = chat_tokenizer
    model = build_tiny_model("causal", tokenizer, seed=0)
    calls = record_generate_inputs(model)
    rows = [as_conversation(r) for r in chat_rows]
    critic = RecordingCritic()
    trainer = make_trainer(model, tokenizer, rows, tmp_path, critic, max_steps=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    assert not [w for w in caught if "prefix-preserving" in str(w.message)]  # both templates are

    # Turn 0 samples from the dataset conversations, turn 1 from each conversation continued with the picked
    # hypothesis (assistant) and the feedback message (user): exactly the chat template's tokens, one BOS each.
    prompts, picked, refs = critic.calls[0]
    by_content = {r["prompt"][0]["content"]: r for r in rows}
    batch = [by_content[p] for p in prompts]
    turn0, turn1 = calls
    assert turn0 == [chat_ids(tokenizer, r["prompt"], True) for r in batch]
    feedback = critic.feedback[0]
    expected = [
        chat_ids(
            tokenizer,
            [
                *r["prompt"],
                {"role": "assistant", "content": z},
                {"role": "user", "content": REFINE_FEEDBACK_TEMPLATE.format(feedback=f)},
            ],
            True,
        )
        for r, z, f in zip(batch, picked, feedback)
    ]
    assert turn1 == expected
    # The critic reads text: the prompt's content and the completion's, never the template's markup.
    assert len(batch) == 4 and all(isinstance(p, str) and "<s>" not in p for p in prompts)
    assert refs == [r["completion"][0]["content"] for r in batch]


def test_loss_is_the_gold_completion_given_the_rendered_conversation_only(chat_rows, chat_tokenizer, tmp_path):
    tokenizer = chat_tokenizer
    model = build_tiny_model("causal", tokenizer, seed=0)
    rows = [as_conversation(r) for r in chat_rows[:3]]
    trainer = make_trainer(model, tokenizer, rows, tmp_path)
    refine_turn = [
        refine_prompt(r["prompt"], "a b", "The code is c d", refine_feedback_template="{feedback}") for r in rows
    ]
    turn_prompts = [[r["prompt"] for r in rows], refine_turn]
    completions = [r["completion"] for r in rows]
    model.eval()
    with torch.no_grad():
        losses = trainer._turn_losses(model, turn_prompts, completions, "eval")

        # The reference: the chat template of the whole conversation, the loss on the completion's tokens alone
        # (the assistant's content and the template's end of turn, EOS here).
        for turn, prompts in enumerate(turn_prompts):
            total, count = 0.0, 0
            for prompt, completion in zip(prompts, completions):
                full = chat_ids(tokenizer, prompt + completion, False)
                start = len(chat_ids(tokenizer, prompt, True))
                assert full[:start] == chat_ids(tokenizer, prompt, True)
                assert tokenizer.decode(full[start:]).startswith(completion[0]["content"] + tokenizer.eos_token)
                logits = model(input_ids=torch.tensor([full])).logits[0, :-1]
                token_losses = F.cross_entropy(logits, torch.tensor(full[1:]), reduction="none")[start - 1 :]
                total, count = total + token_losses.sum().item(), count + len(token_losses)
            assert losses[turn].item() == pytest.approx(total / count, rel=1e-4)


def test_same_seed_gives_the_same_picks_and_losses_as_the_rendered_standard_rows(chat_rows, tmp_path):
    tokenizer = chat_tokenizer_for(chat_rows)
    conversational = [as_conversation(r) for r in chat_rows]
    # The same rows in the standard format: the rendered prompt, and a refine template that writes what the chat
    # template writes for the continued conversation.
    standard = [
        {
            "prompt": tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False),
            "completion": r["completion"][0]["content"],
        }
        for r in conversational
    ]
    refine_template = "{prompt}{hypothesis}</s><s>user\nFeedback: {feedback}</s><s>assistant\n"
    runs = {}
    for name, rows in (("standard", standard), ("conversational", conversational)):
        model = build_tiny_model("causal", tokenizer, seed=0)
        critic = RecordingCritic()
        trainer = make_trainer(
            model,
            tokenizer,
            rows,
            tmp_path / name,
            critic,
            trainer_class=SpyTrainer,
            num_refinement_turns=3,
            max_steps=3,
            learning_rate=1e-2,
            refine_template=refine_template,
            refine_feedback_template="Feedback: {feedback}",
        )
        trainer.train()
        losses = [{k: v for k, v in log.items() if k.endswith("loss")} for log in trainer.state.log_history[:-1]]
        runs[name] = (trainer.picks, [c[1] for c in critic.calls], losses)
    assert runs["standard"] == runs["conversational"]
    assert len(runs["standard"][0]) == 3 * 3 and len(runs["standard"][2]) == 3


def test_prefix_preserving_template_gives_no_warning_and_one_that_is_not_is_warned_once(chat_rows, tmp_path):
    tokenizer = chat_tokenizer_for(chat_rows)
    rows = [as_conversation(r) for r in chat_rows]
    model = build_tiny_model("causal", tokenizer, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(model, tokenizer, rows, tmp_path / "a").train()
    assert not [w for w in caught if "prefix-preserving" in str(w.message)]

    # The generation prompt opens an empty thought that the rendered prompt + completion drops (as Gemma's does).
    tokenizer.chat_template = CHAT_TEMPLATE.replace("<s>assistant\n{% endif %}", "<s>assistant\n: {% endif %}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(model, tokenizer, rows, tmp_path / "b").train()
    messages = [str(w.message) for w in caught if "prefix-preserving" in str(w.message)]
    assert len(messages) == 1 and "': '" in messages[0], messages


# ------------------------------------------------------------------------------------------------ bad input


def bad_rows(chat_rows, fault: str) -> list[dict]:
    rows = [as_conversation(r) for r in chat_rows[:3]]
    if fault == "mixed":
        return [{**r, "completion": r["completion"][0]["content"]} for r in rows]
    if fault == "image part":  # every row's content as parts (one column kind), row 1's an image
        rows = [{"prompt": as_parts(r["prompt"]), "completion": as_parts(r["completion"])} for r in rows]
        rows[1]["prompt"] = [{"role": "user", "content": [{"type": "image", "image": "cat.png"}]}]
        return rows
    if fault == "no role":
        return [{**r, "prompt": [{"content": m["content"]} for m in r["prompt"]]} for r in rows]
    row = dict(rows[1])
    if fault == "no content":
        row["prompt"] = [*row["prompt"][:-1], {"role": "user"}]
    elif fault == "tool role":
        row["prompt"] = [{"role": "tool", "content": "42"}, *row["prompt"]]
    elif fault == "ends with assistant":
        row["prompt"] = [*row["prompt"], {"role": "assistant", "content": "a"}]
    elif fault == "two completions":
        row["completion"] = row["completion"] * 2
    elif fault == "empty completion":
        row["completion"] = [{"role": "assistant", "content": " "}]
    elif fault in ("empty user content", "blank user content"):
        row["prompt"] = [{"role": "user", "content": "" if fault == "empty user content" else "   "}]
    return [rows[0], row, rows[2]]


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("mixed", r"train_dataset, row 0: 'completion' is a str, but row 0's prompt is a conversation"),
        ("no role", r"train_dataset, row 0, 'prompt', message 0: no 'role'"),
        ("no content", r"train_dataset, row 1, 'prompt', message 0: no 'content'"),
        ("tool role", r"train_dataset, row 1, 'prompt', message 0: role 'tool' is not one of system, user, assistant"),
        ("ends with assistant", r"train_dataset, row 1, 'prompt': the last message must be the user's"),
        ("two completions", r"train_dataset, row 1: 'completion' must hold one assistant message, got 2"),
        ("empty completion", r"train_dataset, row 1, 'completion', message 0: 'content' is empty"),
        ("empty user content", r"train_dataset, row 1, 'prompt', message 0: 'content' of the user's message is empty"),
        ("blank user content", r"train_dataset, row 1, 'prompt', message 0: 'content' of the user's message is empty"),
        ("image part", r"train_dataset, row 1, 'prompt', message 0, part 0: expected a text part .*text only"),
    ],
)
def test_bad_conversational_rows_fail_before_training_naming_row_and_field(chat_rows, tmp_path, fault, message):
    tokenizer = chat_tokenizer_for(chat_rows)
    model = build_tiny_model("causal", tokenizer, seed=0)
    with pytest.raises(DataError, match=message):
        make_trainer(model, tokenizer, bad_rows(chat_rows, fault), tmp_path)


PARTS_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(
    "{{ message['content'] }}",
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{% endif %}",
)
"""[`CHAT_TEMPLATE`] reading content given as a string or as a list of text parts, as multimodal-ready templates do."""


def as_parts(messages):
    """Each message's content split into two text parts."""
    return [
        {**m, "content": [{"type": "text", "text": m["content"][:3]}, {"type": "text", "text": m["content"][3:]}]}
        for m in messages
    ]


def test_content_given_as_text_parts_trains_as_the_same_text(chat_rows, tmp_path):
    tokenizer = chat_tokenizer_for(chat_rows)
    tokenizer.chat_template = PARTS_CHAT_TEMPLATE
    rows = [as_conversation(r) for r in chat_rows]
    parts = [{"prompt": as_parts(r["prompt"]), "completion": as_parts(r["completion"])} for r in rows]
    assert plain_text(parts[0]["prompt"]) == chat_rows[0]["prompt"]  # what the critic reads
    losses, critics = [], []
    for data in (rows, parts):
        critic = RecordingCritic()
        trainer = make_trainer(build_tiny_model("causal", tokenizer, seed=0), tokenizer, data, tmp_path, critic)
        trainer.train()
        losses.append([log["loss"] for log in trainer.state.log_history if "loss" in log])
        critics.append(critic.calls)
    assert losses[0] == losses[1] and critics[0] == critics[1]  # TRL renders the parts as the text they hold


def test_conversational_rows_need_a_tokenizer_with_a_chat_template(chat_rows, tmp_path):
    tokenizer = chat_tokenizer_for(chat_rows)
    tokenizer.chat_template = None
    model = build_tiny_model("causal", tokenizer, seed=0)
    rows = [as_conversation(r) for r in chat_rows]
    with pytest.raises(DataError, match=r"train_dataset, row 0, 'prompt' is a conversation, but the tokenizer has no"):
        make_trainer(model, tokenizer, rows, tmp_path)
    with pytest.raises(DataError, match=r"ModelGenerator.generate: prompts\[0\] is a conversation, but the tokenizer"):
        ModelGenerator(model, tokenizer).generate([rows[0]["prompt"]])


# ------------------------------------------------------------------------------------------------ inference


def test_refine_sends_the_continued_conversation_and_the_critic_reads_text(chat_rows, chat_tokenizer):
    tokenizer = chat_tokenizer
    model = build_tiny_model("causal", tokenizer, seed=0)
    calls = record_generate_inputs(model)
    rows = [as_conversation(r) for r in chat_rows[:3]]
    critic = RecordingCritic()
    traces = refine(
        ModelGenerator(model, tokenizer, max_new_tokens=4),
        critic,
        [r["prompt"] for r in rows],
        references=[r["completion"] for r in rows],
        max_turns=1,
        refine_feedback_template="Fix it: {feedback}",
    )
    assert calls[0] == [chat_ids(tokenizer, r["prompt"], True) for r in rows]
    continued = [
        [*r["prompt"], {"role": "assistant", "content": t.hypotheses[0]}, {"role": "user", "content": f"Fix it: {f}"}]
        for r, t, f in zip(rows, traces, critic.feedback[0])
    ]
    assert calls[1] == [chat_ids(tokenizer, c, True) for c in continued]
    assert critic.calls[0][0] == [plain_text(r["prompt"]) for r in rows] == [r["prompt"] for r in chat_rows[:3]]
    assert critic.calls[0][2] == [r["completion"] for r in chat_rows[:3]]


def test_model_critic_as_a_chat_model_reads_its_input_as_a_user_message(chat_rows, bos_chat_tokenizer):
    tokenizer = bos_chat_tokenizer
    model = build_tiny_model("causal", tokenizer, seed=0)
    calls = record_generate_inputs(model)
    critic = ModelCritic(model, tokenizer, max_new_tokens=3, use_chat_template=True)
    feedback = critic.critique(["Item 1: what is its code?"], ["a b c"])
    text = render_critic_input("Item 1: what is its code?", "a b c")
    assert calls == [[chat_ids(tokenizer, [{"role": "user", "content": text}], True)]]
    assert len(feedback) == 1 and isinstance(feedback[0], str)


def test_model_generator_refuses_a_mix_of_strings_and_conversations(chat_rows):
    tokenizer = chat_tokenizer_for(chat_rows)
    generator = ModelGenerator(build_tiny_model("causal", tokenizer, seed=0), tokenizer)
    with pytest.raises(
        DataError, match=r"prompts\[1\]: expected a list of messages|prompts\[1\]: expected a non-empty"
    ):
        generator.generate([[{"role": "user", "content": "x"}], "y"])
    with pytest.raises(DataError, match=r"prompts\[1\]: expected a string like prompt 0, got list"):
        generator.generate(["y", [{"role": "user", "content": "x"}]])


def test_task_rows_as_conversations_score_and_refine_as_the_standard_rows():
    from refiner_trl.builders import load_task_data
    from refiner_trl.evaluation import evaluate_refinement, standard_critics
    from refiner_trl.script_args import TaskArguments

    args = dict(task="mwp", synthetic_train_size=4, synthetic_eval_size=6)
    task, _, standard = load_task_data(TaskArguments(**args))
    _, _, chat = load_task_data(TaskArguments(**args, conversational=True))
    assert chat["prompt"] == [[{"role": "user", "content": p}] for p in standard["prompt"]]
    assert chat["answer"] == standard["answer"]
    gold = dict(zip(standard["prompt"], standard["completion"]))

    REFINED = "\nPrevious answer:"  # noqa: N806 (the refine template's marker)

    def generator(prompts):
        # Wrong at turn 0, right in a refine turn (a continued conversation, or a string from the refine template).
        answers = []
        for p in prompts:
            x, refined = (p[0]["content"], len(p) > 1) if isinstance(p, list) else (p.split(REFINED)[0], REFINED in p)
            answers.append(gold[x] if refined else "x")
        return answers

    chat_result, standard_result = (
        evaluate_refinement(task, generator, rows, standard_critics(task), max_turns=1, progress=False)
        for rows in (chat, standard)
    )
    oracle = [run for run in chat_result.runs if run.name == "oracle"][0]
    assert oracle.by_turn[0]["equation_accuracy"] == 0.0 and oracle.by_turn[1]["equation_accuracy"] == 1.0
    assert [(r.by_turn, r.refine) for r in chat_result.runs] == [(r.by_turn, r.refine) for r in standard_result.runs]


def test_chat_module_examples_run():
    import doctest

    from refiner_trl import chat as chat_module

    result = doctest.testmod(chat_module)
    assert result.attempted >= 3 and result.failed == 0
