"""RefinerTrainer on tiny seq2seq and causal models: the loop, the picks, the loss, LoRA, logs and model card."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import SpyTrainer, code_rows, quiet_refiner_config, reveal_feedback, tokenizer_for
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerConfig, RefinerTrainer
from refiner_trl.critics import CriticError, is_no_error
from refiner_trl.data import DataError
from refiner_trl.modeling import build_tiny_model


class RecordingCritic:
    """The oracle of the code task, recording every batch it is asked about."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[str], list[str]]] = []
        self.feedback: list[list[str]] = []

    def critique(self, prompts, hypotheses, references=None):
        self.calls.append((prompts, hypotheses, references))
        self.feedback.append([reveal_feedback(h, r) for h, r in zip(hypotheses, references)])
        return self.feedback[-1]


def make_args(tmp_path, **overrides) -> RefinerConfig:
    values = {
        "per_device_train_batch_size": 4,
        "max_steps": 3,
        "num_hypotheses": 3,
        "num_refinement_turns": 2,
        "max_new_tokens": 6,
    }
    return quiet_refiner_config(tmp_path / "out", **{**values, **overrides})


def test_loop_feeds_feedback_into_refine_turns(tiny, tmp_path):
    model, tokenizer, rows = tiny
    critic = RecordingCritic()
    forward_inputs: list[torch.Tensor] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: forward_inputs.append(kwargs["input_ids"]) if module.training else None,
        with_kwargs=True,
    )
    # One loss forward per step, so that its rows are all turns' in order (test_step_speedups checks the groups).
    args = make_args(tmp_path, max_loss_forwards=1)
    trainer = SpyTrainer(model, args, critic=critic, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()

    batch, turns, steps = args.per_device_train_batch_size, args.num_refinement_turns, args.max_steps
    # One batched critique per explored turn (all but the last): batch_size hypotheses each, decoded text, with the
    # gold references.
    explored = turns - 1
    assert len(critic.calls) == steps * explored
    assert all(len(hypotheses) == batch for _, hypotheses, _ in critic.calls)
    assert all(isinstance(h, str) for _, hypotheses, _ in critic.calls for h in hypotheses)
    gold = {r["prompt"]: r["completion"] for r in rows}
    assert all([gold[p] for p in prompts] == refs for prompts, _, refs in critic.calls)
    # One training forward per step over all turns; the turn-1 rows carry the feedback on turn 0's picks.
    assert len(forward_inputs) == steps
    for step, input_ids in enumerate(forward_inputs):
        assert input_ids.shape[0] == batch * turns
        refine_rows = tokenizer.batch_decode(input_ids[batch:], skip_special_tokens=True)
        for text, feedback, hypothesis in zip(
            refine_rows, critic.feedback[step * explored], critic.calls[step * explored][1]
        ):
            assert f"Feedback: {feedback}" in text
            assert f"Previous answer: {hypothesis}" in text

    # One log entry per step (logging_steps=1), with the values of that step.
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == steps
    k = args.num_hypotheses
    for step, entry in enumerate(logged):
        feedback = critic.feedback[step * explored]
        assert entry["turn_0/no_error"] == pytest.approx(sum(map(is_no_error, feedback)) / batch)
        samples = trainer.samples[step * explored][1]
        distinct = [len(set(samples[i * k : (i + 1) * k])) / k for i in range(batch)]
        assert entry["turn_0/distinct_hypotheses"] == pytest.approx(sum(distinct) / batch)
        assert entry["loss"] == pytest.approx((entry["turn_0/loss"] + entry["turn_1/loss"]) / 2, rel=1e-4)
        assert entry["truncated_prompts"] == 0.0
        assert entry["time/generate"] > 0 and entry["time/critique"] > 0
        assert entry["time/step"] >= entry["time/forward_backward"] > entry["time/forward"] > 0
        assert "turn_1/no_error" not in entry  # the last turn builds no prompt, so it is not explored


@pytest.mark.parametrize(("turns", "explore_last_turn"), [(1, False), (1, True), (2, True)])
def test_the_last_turn_is_explored_only_when_asked(tiny, tmp_path, turns, explore_last_turn):
    model, tokenizer, rows = tiny
    critic = RecordingCritic()
    args = make_args(tmp_path, max_steps=2, num_refinement_turns=turns, explore_last_turn=explore_last_turn)
    trainer = RefinerTrainer(
        model, args, critic=critic, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()

    explored = turns if explore_last_turn else turns - 1
    assert len(critic.calls) == args.max_steps * explored
    logged = [entry for entry in trainer.state.log_history if "turn_0/loss" in entry]
    assert len(logged) == args.max_steps
    for entry in logged:
        assert (f"turn_{turns - 1}/no_error" in entry) == explore_last_turn
        assert (entry["time/generate"] > 0) == (explored > 0)


@pytest.mark.parametrize("turns", [1, 2])
def test_evaluation_computes_the_multi_turn_loss_and_explores_like_training(tiny, tmp_path, turns):
    model, tokenizer, rows = tiny
    critic = RecordingCritic()
    dataset = Dataset.from_list(rows)
    args = make_args(tmp_path, num_refinement_turns=turns, per_device_eval_batch_size=4)
    trainer = RefinerTrainer(
        model, args, critic=critic, train_dataset=dataset, eval_dataset=dataset, processing_class=tokenizer
    )
    metrics = trainer.evaluate()

    batches = -(-len(rows) // args.per_device_eval_batch_size)
    assert len(critic.calls) == batches * (turns - 1)
    turn_losses = [metrics[f"eval_turn_{t}/loss"] for t in range(turns)]
    assert all(loss > 0 for loss in turn_losses)
    assert metrics["eval_loss"] == pytest.approx(sum(turn_losses) / turns, rel=1e-5)
    assert ("eval_turn_0/no_error" in metrics) == (turns > 1)


def run_with_seed(tiny_rows, tokenizer, architecture, tmp_path, seed):
    model = build_tiny_model(architecture, tokenizer, seed=0)
    args = make_args(tmp_path / str(seed), seed=seed)
    trainer = SpyTrainer(
        model, args, critic=RecordingCritic(), train_dataset=Dataset.from_list(tiny_rows), processing_class=tokenizer
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer.picks, losses


def test_same_seed_same_picks_and_losses(tiny, architecture, tmp_path):
    _, tokenizer, rows = tiny
    picks_a, losses_a = run_with_seed(rows, tokenizer, architecture, tmp_path / "a", seed=3)
    picks_b, losses_b = run_with_seed(rows, tokenizer, architecture, tmp_path / "b", seed=3)
    picks_c, _ = run_with_seed(rows, tokenizer, architecture, tmp_path / "c", seed=4)
    assert picks_a == picks_b
    assert losses_a == losses_b
    assert picks_a != picks_c


def test_lora_trains_only_adapter_weights(tmp_path):
    from peft import LoraConfig

    rows = code_rows(16, seed=0)
    tokenizer = tokenizer_for(rows)
    model = build_tiny_model("causal", tokenizer, seed=0)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    args = make_args(tmp_path, learning_rate=1e-2)
    trainer = RefinerTrainer(
        model,
        args,
        critic=RecordingCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainable = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    lora_before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(lora_before[name], after[name]) for name in lora_before)
    for name, value in before.items():
        peft_name = next(
            n for n in after if n.endswith(name.replace(".weight", ".base_layer.weight")) or n.endswith(name)
        )
        assert torch.equal(value, after[peft_name].detach()), name


def test_long_prompts_are_counted_and_reported_once(tmp_path):
    rows = code_rows(8, seed=0)
    rows[0]["prompt"] = "word " * 200
    tokenizer = tokenizer_for(rows)
    model = build_tiny_model("causal", tokenizer, seed=0)
    args = make_args(tmp_path, max_prompt_length=32, max_steps=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = RefinerTrainer(
            model, args, critic=RecordingCritic(), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
        )
        trainer.train()
    messages = [str(w.message) for w in caught if "max_prompt_length" in str(w.message)]
    assert any("1 of 8 prompts exceed max_prompt_length=32" in m for m in messages)
    assert sum("This warning is shown once" in m for m in messages) == 1
    assert max(e.get("truncated_prompts", 0) for e in trainer.state.log_history) > 0


def test_model_card_names_refiner(tiny, tmp_path):
    model, tokenizer, rows = tiny
    args = make_args(tmp_path, max_steps=1)
    trainer = RefinerTrainer(
        model, args, critic=RecordingCritic(), train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.create_model_card(model_name="tiny-refiner")
    card = (tmp_path / "out" / "README.md").read_text()
    assert "REFINER" in card and "2304.01904" in card and "refiner" in card


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"prompt": "a", "answer": "b"}], "no 'completion' column"),
        ([{"prompt": "a", "completion": ""}], "row 0: 'completion' is empty"),
        ([{"prompt": 3, "completion": "c"}, {"prompt": 4, "completion": "d"}], "row 0: 'prompt' must be a string"),
        (
            [{"prompt": "a", "completion": "b"}, {"prompt": None, "completion": "c"}],
            "row 1: 'prompt' must be a string",
        ),
        ([], "train_dataset is empty"),
    ],
)
def test_bad_datasets_are_refused_before_training(tmp_path, rows, message):
    tokenizer = tokenizer_for(code_rows(4, seed=0))
    model = build_tiny_model("causal", tokenizer)
    with pytest.raises(DataError, match=message):
        RefinerTrainer(
            model,
            make_args(tmp_path),
            critic=RecordingCritic(),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )


def test_a_critic_with_the_wrong_answer_count_is_named(tiny, tmp_path):
    model, tokenizer, rows = tiny
    critic = CallableCritic(lambda prompts, hypotheses, references: ["No error."])
    trainer = RefinerTrainer(
        model, make_args(tmp_path), critic=critic, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    with pytest.raises(CriticError, match=r"expected 4, got 1 \(global step 0, turn 0\)"):
        trainer.train()


def test_config_rejects_a_template_without_feedback(tmp_path):
    with pytest.raises(ValueError, match="refine_template"):
        make_args(tmp_path, refine_template="{prompt} {hypothesis}")
