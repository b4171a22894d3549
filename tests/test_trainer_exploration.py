"""RefinerTrainer's exploration: each example's k samples stay its own, the sampling settings reach `generate`, and
the picks are drawn from a generator seeded per micro-batch and mode."""

from __future__ import annotations

import pytest
import torch
from conftest import GenerateSpy, SpyTrainer, code_rows, quiet_refiner_config, tokenizer_for
from datasets import Dataset

from refiner_trl.generation import NucleusSampler, generate_texts
from refiner_trl.modeling import build_tiny_model
from refiner_trl.templates import render_refine_prompt


class HypothesisCritic:
    """Feedback that quotes the hypothesis, so that a hypothesis critiqued for the wrong example shows."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def critique(self, prompts, hypotheses, references=None):
        self.calls.append((list(prompts), list(hypotheses), list(references)))
        return [f"You wrote {h!r} for {p[:12]!r}." for p, h in zip(prompts, hypotheses)]


@pytest.fixture
def rows():
    return code_rows(16, seed=0)


@pytest.fixture
def tokenizer(rows):
    return tokenizer_for(rows)


def spy_trainer(architecture, tokenizer, rows, tmp_path, critic=None, **values) -> SpyTrainer:
    settings = {
        "per_device_train_batch_size": 4,
        "max_steps": 2,
        "num_hypotheses": 3,
        "num_refinement_turns": 3,
        "max_new_tokens": 6,
        "top_p": 1.0,
        **values,
    }
    return SpyTrainer(
        build_tiny_model(architecture, tokenizer, seed=0),
        quiet_refiner_config(tmp_path / "out", **settings),
        critic=critic or HypothesisCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )


def test_each_example_critiques_and_refines_its_own_samples(architecture, tokenizer, rows, tmp_path):
    critic = HypothesisCritic()
    trainer = spy_trainer(architecture, tokenizer, rows, tmp_path, critic)
    trainer.train()

    k, explored = trainer.args.num_hypotheses, trainer.args.num_explored_turns
    assert len(critic.calls) == len(trainer.samples) == len(trainer.picks) == trainer.args.max_steps * explored
    gold = {r["prompt"]: r["completion"] for r in rows}
    for call, ((prompts, hypotheses, references), (sampled_prompts, samples), picks) in enumerate(
        zip(critic.calls, trainer.samples, trainer.picks)
    ):
        step, turn = divmod(call, explored)
        turn_prompts = trainer.turn_prompts[step]
        assert sampled_prompts == turn_prompts[turn]  # a turn samples from its own prompts
        groups = [samples[i * k : (i + 1) * k] for i in range(len(prompts))]
        # The check below needs samples that tell the examples apart: no example may share a sample with another.
        assert all(not set(a) & set(b) for i, a in enumerate(groups) for b in groups[i + 1 :]), groups
        assert hypotheses == [groups[i][j] for i, j in enumerate(picks)]  # example i gets its i-th group
        assert prompts == turn_prompts[0]  # the critic reads the dataset prompts, whatever the turn
        feedback = [f"You wrote {h!r} for {p[:12]!r}." for p, h in zip(prompts, hypotheses)]
        expected = [
            render_refine_prompt(p, h, f, trainer.args.refine_template)
            for p, h, f in zip(prompts, hypotheses, feedback)
        ]
        assert turn_prompts[turn + 1] == expected
        assert references == [gold[p] for p in prompts]


def test_first_selection_critiques_the_first_sample_of_each_example(tokenizer, rows, tmp_path):
    critic = HypothesisCritic()
    trainer = spy_trainer("causal", tokenizer, rows, tmp_path, critic, hypothesis_selection="first")
    trainer.train()

    k = trainer.args.num_hypotheses
    assert len(critic.calls) == 4
    for (_, hypotheses, _), (_, samples) in zip(critic.calls, trainer.samples):
        assert hypotheses == samples[::k]
    assert trainer.picks == [[0] * 4] * 4


@pytest.mark.parametrize("architecture", ["seq2seq", "causal"])
def test_the_sampling_settings_reach_generate(architecture, tokenizer, rows, tmp_path):
    trainer = spy_trainer(
        architecture,
        tokenizer,
        rows,
        tmp_path,
        max_steps=1,
        num_hypotheses=5,
        num_refinement_turns=2,
        temperature=0.7,
        top_p=0.8,
        top_k=7,
        max_new_tokens=4,
    )
    spy = GenerateSpy(trainer.model)
    trainer.train()

    # One batched call for all rows; any later call continues the rows that have not ended, from their cache.
    call = spy.calls[0]
    assert all(later["cache"] is not None for later in spy.calls[1:])
    # Nucleus sampling through the NucleusSampler, which draws the tokens (greedy generate takes them), for both
    (sampler,) = call["logits_processor"]
    assert call["do_sample"] is False and isinstance(sampler, NucleusSampler)
    assert (sampler.temperature, sampler.top_p, sampler.top_k) == (0.7, 0.8, 7)
    if len(spy.calls) == 1:  # no row ended early: all 20 rows of each new token were drawn by it
        assert sampler.rows > 0 and sampler.rows % (4 * 5) == 0
    assert call["max_new_tokens"] == 4
    # Each prompt encoded once (a causal prefill, an encoder pass), its k rows repeated after: k rows per prompt go in
    assert "num_return_sequences" not in call and call["input_ids"].shape[0] == 4 * 5
    assert ("encoder_outputs" in call) == (architecture == "seq2seq")
    rows_out, length = call["output_shape"]
    assert rows_out == 4 * 5  # k samples of each of the batch's 4 prompts
    prompt_length = 0 if architecture == "seq2seq" else call["input_ids"].shape[1]
    assert length - prompt_length <= 4 + (architecture == "seq2seq")  # + the decoder start token


@pytest.mark.parametrize(
    ("settings", "all_alike"),
    [({"top_k": 1}, True), ({"top_p": 1e-6}, True), ({"top_k": 0, "top_p": 1.0, "temperature": 5.0}, False)],
)
def test_top_k_and_top_p_shape_the_samples(settings, all_alike, tokenizer, rows, tmp_path):
    """Keeping only the likeliest token makes the k samples of a prompt equal (one distinct of k); free sampling at a
    high temperature from a random model makes them differ."""
    trainer = spy_trainer("causal", tokenizer, rows, tmp_path, max_steps=1, num_refinement_turns=2, **settings)
    trainer.train()

    k = trainer.args.num_hypotheses
    distinct = [entry["turn_0/distinct_hypotheses"] for entry in trainer.state.log_history if "loss" in entry]
    if all_alike:
        assert distinct == [pytest.approx(1 / k)]
    else:
        assert distinct == [pytest.approx(1.0)]


def test_generate_texts_keeps_the_samples_of_a_prompt_adjacent(tokenizer, rows):
    """With top-k 1, every sample of a prompt is that prompt's greedy text, in prompt order, k in a row."""
    model = build_tiny_model("causal", tokenizer, seed=0, initializer_range=0.2).eval()
    prompts = [r["prompt"] for r in rows[:4]]
    greedy = [generate_texts(model, tokenizer, [p], max_new_tokens=6)[0][0] for p in prompts]
    assert len(set(greedy)) == len(prompts)  # the check needs prompts whose greedy texts differ
    samples, _ = generate_texts(
        model, tokenizer, prompts, max_new_tokens=6, do_sample=True, num_return_sequences=3, top_k=1
    )
    assert samples == [text for text in greedy for _ in range(3)]


def test_picks_are_seeded_per_micro_batch_and_differ_between_training_and_evaluation(tokenizer, rows, tmp_path):
    def run(seed):
        trainer = spy_trainer(
            "causal",
            tokenizer,
            rows,
            tmp_path / str(seed),
            seed=seed,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            per_device_eval_batch_size=8,
            num_refinement_turns=2,
        )
        trainer.evaluate(Dataset.from_list(rows))  # at global step 0, like the first training micro-batches
        trainer.train()
        return trainer

    trainer = run(seed=0)
    positions = [(mode, position) for mode, position, _ in trainer.seeds]
    expected = [("eval", (0, 0)), ("eval", (0, 1)), *[("train", (s, m)) for s in (0, 1) for m in (0, 1)]]
    assert positions == expected
    seeds = [seed for *_, seed in trainer.seeds]
    assert len(set(seeds)) == len(seeds)  # eval (0, 0) and train (0, 0) too
    # Each call's picks are the draws of its generator.
    k = trainer.args.num_hypotheses
    for seed, picks in zip(seeds, trainer.picks):
        assert picks == torch.randint(k, (len(picks),), generator=torch.Generator().manual_seed(seed)).tolist()

    again, other = run(seed=0), run(seed=1)
    assert again.seeds == trainer.seeds and again.picks == trainer.picks
    assert not {seed for *_, seed in other.seeds} & set(seeds)


def test_a_dict_of_eval_datasets_names_each_sets_metrics(tokenizer, tmp_path):
    """As transformers names the loss `eval_<key>_loss`, the trainer's metrics are `eval_<key>_<metric>`."""
    easy = Dataset.from_list(code_rows(4, seed=1, length=1))
    hard = Dataset.from_list(code_rows(4, seed=2, length=6))
    trainer = spy_trainer(
        "causal",
        tokenizer,
        code_rows(8, seed=0),
        tmp_path,
        num_refinement_turns=2,
        per_device_eval_batch_size=4,
    )
    trainer.eval_dataset = {"easy": easy, "hard": hard}
    metrics = trainer.evaluate()

    assert not [key for key in metrics if key.startswith("eval_turn_")]
    for key, dataset in (("easy", easy), ("hard", hard)):
        alone = trainer.evaluate(dataset)
        turn_losses = [metrics[f"eval_{key}_turn_{t}/loss"] for t in range(2)]
        assert metrics[f"eval_{key}_loss"] == pytest.approx(sum(turn_losses) / 2, rel=1e-5)
        assert turn_losses[0] == pytest.approx(alone["eval_turn_0/loss"], rel=1e-5)  # turn 0 does not sample
        assert metrics[f"eval_{key}_turn_0/no_error"] == 0.0  # the critic never writes "No error."
    assert metrics["eval_easy_turn_0/loss"] != pytest.approx(metrics["eval_hard_turn_0/loss"], rel=1e-3)
