"""RefinerTrainer's loss against the model's own: the causal shift, the encoder-decoder decoder inputs, the cut of long
completions, how turns are combined, and how gradient accumulation averages micro-batches of different lengths."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import code_rows, quiet_refiner_config, tokenizer_for
from datasets import Dataset
from torch.utils.data import DataLoader

from refiner_trl import CallableCritic, RefinerTrainer
from refiner_trl.modeling import build_tiny_model

WRONG = CallableCritic(lambda prompts, hypotheses, references: ["Wrong."] * len(hypotheses))


def rows_of_lengths(*lengths: int) -> list[dict[str, str]]:
    """One row per length: a completion of that many code words."""
    return [code_rows(1, seed=index, length=length)[0] for index, length in enumerate(lengths)]


def model_loss(model, tokenizer, prompts, completions, max_completion_length=None) -> torch.Tensor:
    """The model's own `model(labels=...)` loss, the mean over every completion token of the rows.

    Built without the project's encoding: each row goes through the model alone (no padding), with the completion +
    EOS cut to `max_completion_length` as its labels, and the rows' means are weighted by their token counts.
    """
    total, count = 0.0, 0
    for prompt, completion in zip(prompts, completions):
        prompt_ids = tokenizer(prompt)["input_ids"]
        labels = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        labels = labels[:max_completion_length]
        if model.config.is_encoder_decoder:
            output = model(input_ids=torch.tensor([prompt_ids]), labels=torch.tensor([labels]))
        else:
            output = model(
                input_ids=torch.tensor([prompt_ids + labels]), labels=torch.tensor([[-100] * len(prompt_ids) + labels])
            )
        total, count = total + output.loss * len(labels), count + len(labels)
    return total / count


def make_trainer(model, tokenizer, rows, tmp_path, **values) -> RefinerTrainer:
    settings = {"per_device_train_batch_size": 4, "max_steps": 1, "num_hypotheses": 2, "max_new_tokens": 4, **values}
    return RefinerTrainer(
        model,
        quiet_refiner_config(tmp_path / "out", **settings),
        critic=WRONG,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


@pytest.mark.parametrize("max_completion_length", [None, 2])
def test_turn_losses_are_the_models_own_loss_on_the_same_rows(architecture, max_completion_length, tmp_path):
    rows = rows_of_lengths(1, 4, 2)
    tokenizer = tokenizer_for(code_rows(16, seed=0) + rows)
    model = build_tiny_model(architecture, tokenizer, seed=0, initializer_range=0.2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(model, tokenizer, rows, tmp_path, max_completion_length=max_completion_length)
    cut = any("2 completions exceed max_completion_length=2" in str(w.message) for w in caught)
    assert cut == (max_completion_length is not None)  # 4 words + EOS and 2 words + EOS are cut to 2 tokens
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    refine_prompts = [f"{p}\nPrevious answer: a b\nFeedback: Wrong.\nRefined answer:" for p in prompts]

    losses = trainer._turn_losses(model, [prompts, refine_prompts], completions, "train")
    with torch.no_grad():
        expected = [
            model_loss(model, tokenizer, turn, completions, max_completion_length)
            for turn in (prompts, refine_prompts)
        ]
    torch.testing.assert_close(losses.detach(), torch.stack(expected), rtol=1e-5, atol=1e-6)
    assert trainer._metrics["train"]["turn_1/loss"] == [pytest.approx(expected[1].item(), rel=1e-5)]
    if max_completion_length is not None:  # the cut changes the loss: the uncut one is another number
        uncut = model_loss(model, tokenizer, prompts, completions).item()
        assert losses[0].item() != pytest.approx(uncut, rel=1e-3)


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_turn_loss_aggregation_combines_the_turn_losses(aggregation, tmp_path):
    rows = code_rows(4, seed=0)
    tokenizer = tokenizer_for(rows)
    model = build_tiny_model("causal", tokenizer, seed=0)
    trainer = make_trainer(model, tokenizer, rows, tmp_path, num_refinement_turns=3, turn_loss_aggregation=aggregation)
    model.train()
    loss = trainer.compute_loss(
        model, {"prompt": [r["prompt"] for r in rows], "completion": [r["completion"] for r in rows]}
    )

    turn_losses = [trainer._metrics["train"][f"turn_{turn}/loss"][-1] for turn in range(3)]
    expected = sum(turn_losses) if aggregation == "sum" else sum(turn_losses) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_accumulation_averages_the_micro_batch_means(tmp_path):
    """The trainer's promise: a step's loss is the mean over its micro-batches of each micro-batch's mean over its
    completion tokens, as with a larger batch only when the micro-batches hold as many tokens. Here they do not (one
    code word against six), so the update must match that average and differ from the larger batch's token mean."""
    rows = rows_of_lengths(1, 1, 6, 6)
    tokenizer = tokenizer_for(code_rows(16, seed=0) + rows)
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]
    sgd = {
        "optim": "sgd",
        "learning_rate": 1.0,
        "max_grad_norm": 0.0,
        "warmup_steps": 0,
        "lr_scheduler_type": "constant",
    }

    def trained(batch_size: int, accumulation: int) -> torch.Tensor:
        model = build_tiny_model("seq2seq", tokenizer, seed=0)
        trainer = make_trainer(
            model,
            tokenizer,
            rows,
            tmp_path / f"{batch_size}x{accumulation}",
            per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation,
            num_refinement_turns=1,
            **sgd,
        )
        trainer.get_train_dataloader = lambda: DataLoader(  # in order: micro-batch 1 short, micro-batch 2 long
            trainer.train_dataset, batch_size=batch_size, collate_fn=trainer.data_collator
        )
        trainer.train()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    def stepped(loss_of) -> torch.Tensor:
        model = build_tiny_model("seq2seq", tokenizer, seed=0)
        loss_of(model).backward()
        return torch.cat([(p - p.grad).detach().flatten() for p in model.parameters()])

    micro_batch_mean = stepped(
        lambda m: (
            (
                model_loss(m, tokenizer, prompts[:2], completions[:2])
                + model_loss(m, tokenizer, prompts[2:], completions[2:])
            )
            / 2
        )
    )
    token_mean = stepped(lambda m: model_loss(m, tokenizer, prompts, completions))
    assert not torch.allclose(micro_batch_mean, token_mean, rtol=1e-4, atol=1e-5)  # the two averages differ here
    torch.testing.assert_close(trained(2, 2), micro_batch_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trained(4, 1), token_mean, rtol=1e-4, atol=1e-5)
