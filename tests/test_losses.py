"""The completion loss engine: rows grouped by length into a few forwards compute the loss of one right-padded
forward with every position's logits (`reference_turn_losses`), gradients included."""

from __future__ import annotations

import pytest
import torch
from conftest import quiet_refiner_config
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerTrainer
from refiner_trl.losses import length_groups, reference_turn_losses

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
    # The reference: one right-padded forward with every position's logits.
    single = reference_turn_losses(model, tokenizer, turn_prompts, completions, 512, 256)
    single.sum().backward()
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=1e-5)
    for grouped_grad, parameter in zip(grouped_grads, model.parameters()):
        torch.testing.assert_close(grouped_grad, parameter.grad, atol=1e-5, rtol=1e-5)
    assert trainer._metrics["train"]["turn_2/loss"] == [pytest.approx(float(single[2].detach()))]
