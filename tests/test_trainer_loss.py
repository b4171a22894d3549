"""RefinerTrainer's loss against the model's own: the causal shift, the encoder-decoder decoder inputs, the cut of long
completions, how turns are combined, and gradient accumulation over micro-batches of different lengths (the token
mean of the accumulated batch, as TRL's)."""

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


SGD = {"optim": "sgd", "learning_rate": 1.0, "max_grad_norm": 0.0, "warmup_steps": 0, "lr_scheduler_type": "constant"}


def test_gradient_accumulation_averages_over_the_completion_tokens_of_the_accumulated_batch(tmp_path):
    """As TRL's SFT trainer and transformers: a step's loss is the mean over all completion tokens of its
    micro-batches, so an update with micro-batches of different lengths (one code word against six) is that of one
    larger batch, and differs from the mean of the micro-batches' own means."""
    rows = rows_of_lengths(1, 1, 6, 6)
    tokenizer = tokenizer_for(code_rows(16, seed=0) + rows)
    prompts, completions = [r["prompt"] for r in rows], [r["completion"] for r in rows]

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
            **SGD,
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
    torch.testing.assert_close(trained(2, 2), token_mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(trained(4, 1), token_mean, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("aggregation", ["mean", "sum"])
def test_two_accumulated_batches_of_4_train_as_one_batch_of_8_over_refinement_turns(
    architecture, aggregation, tmp_path
):
    """With T = 2 turns, `gradient_accumulation_steps=2` and batch 4 give the loss and gradients of batch 8: each
    turn's token count covers the whole accumulated batch. Exploration is made deterministic (fixed hypotheses) so
    that both runs see the same refine prompts."""
    rows = rows_of_lengths(1, 2, 3, 4, 5, 6, 7, 8)
    tokenizer = tokenizer_for(code_rows(16, seed=0) + rows)

    def trained(batch_size: int, accumulation: int) -> tuple[float, torch.Tensor]:
        model = build_tiny_model(architecture, tokenizer, seed=0)
        before = torch.cat([p.detach().flatten() for p in model.parameters()])
        trainer = make_trainer(
            model, tokenizer, rows, tmp_path / f"{batch_size}x{accumulation}", per_device_train_batch_size=batch_size,
            gradient_accumulation_steps=accumulation, num_refinement_turns=2, turn_loss_aggregation=aggregation, **SGD,
        )  # fmt: skip
        k = trainer.args.num_hypotheses
        trainer._sample = lambda generator, prompts: [f"a {len(p) % 5} b" for p in prompts for _ in range(k)]
        loss = trainer.train().training_loss
        return loss, before - torch.cat([p.detach().flatten() for p in model.parameters()])  # lr 1: the gradient

    loss_8, gradient_8 = trained(8, 1)
    loss_4x2, gradient_4x2 = trained(4, 2)
    assert loss_4x2 == pytest.approx(loss_8, abs=1e-5)
    torch.testing.assert_close(gradient_4x2, gradient_8, rtol=1e-5, atol=1e-5)
    assert gradient_8.abs().max() > 1e-3  # a real update was compared
