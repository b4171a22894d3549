"""The refine turns must learn to use the feedback: codes that cannot be guessed, feedback that reveals them."""

from __future__ import annotations

import pytest
from conftest import as_conversation, chat_tokenizer_for, code_rows, reveal_feedback, tokenizer_for
from datasets import Dataset

from refiner_trl import CallableCritic, ModelGenerator, RefinerConfig, RefinerTrainer, refine
from refiner_trl.modeling import build_tiny_model

STEPS, BATCH = 300, 32


@pytest.mark.slow
@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_refine_turn_learns_to_use_feedback(tmp_path, conversational):
    # Every training row is new, so a prompt's code can only be read from the feedback, never memorised.
    train, test = code_rows(STEPS * BATCH, seed=1, length=1), code_rows(100, seed=2, length=1)
    # Conversational: the same rows as chat turns, and the refine turn a continued conversation.
    tokenizer = chat_tokenizer_for(train) if conversational else tokenizer_for(train)
    as_format = as_conversation if conversational else dict
    model = build_tiny_model("causal", tokenizer, seed=0, initializer_range=0.1)
    oracle = CallableCritic(
        lambda prompts, hypotheses, refs: [reveal_feedback(h, r) for h, r in zip(hypotheses, refs)]
    )
    args = RefinerConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=BATCH,
        max_steps=STEPS,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        num_hypotheses=2,
        num_refinement_turns=2,
        max_new_tokens=3,
        logging_steps=50,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    rows = Dataset.from_list([as_format(r) for r in train])
    RefinerTrainer(model, args, critic=oracle, train_dataset=rows, processing_class=tokenizer).train()

    traces = refine(
        ModelGenerator(model.eval(), tokenizer, max_new_tokens=3),
        oracle,
        [as_format(r)["prompt"] for r in test],
        references=[r["completion"] for r in test],
        max_turns=1,
    )
    gold = [r["completion"] for r in test]
    turn0 = sum(t.hypotheses[0] == g for t, g in zip(traces, gold)) / len(gold)
    refined = sum(t.final == g for t, g in zip(traces, gold)) / len(gold)
    # Chance is 1 in 20 at turn 0; the refine turn can read the answer from the feedback.
    assert turn0 <= 0.25, turn0
    assert refined >= 0.8, (turn0, refined)
