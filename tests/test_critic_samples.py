"""Critic data from a generator's own samples: resumable sampling, oracle labels, the share of the mix."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from datasets import Dataset

from refiner_trl.critic_samples import critic_rows, mix_at_share, read_samples, sample_critic_data, split_calibration
from refiner_trl.generators import ModelGenerator
from refiner_trl.modeling import build_tiny_model, train_tokenizer
from refiner_trl.tasks import get_task


@pytest.fixture(scope="module")
def mwp():
    task = get_task("mwp")
    rows = task.synthetic(n=22, seed=3)
    tokenizer = train_tokenizer(task.tokenizer_texts(rows), vocab_size=300)
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0)
    return task, rows, model, tokenizer


class CountingGenerator(ModelGenerator):
    """A sampling `ModelGenerator` that counts the prompts it is asked for."""

    prompts_seen = 0

    def generate(self, prompts):
        self.prompts_seen += len(prompts)
        return super().generate(prompts)


def sampler(model, tokenizer) -> CountingGenerator:
    return CountingGenerator(model, tokenizer, max_new_tokens=10, do_sample=True, batch_size=64)


def test_labels_are_the_oracles_feedback(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    records = sample_critic_data(sampler(model, tokenizer), task, rows, tmp_path / "s.jsonl", num_samples=3)
    assert [r["index"] for r in records] == list(range(len(rows)))
    oracle = task.oracle_critic()
    for record in records:
        assert len(record["hypotheses"]) == len(record["feedback"]) == 3
        expected = oracle.critique([record["prompt"]] * 3, record["hypotheses"], [record["reference"]] * 3)
        assert record["feedback"] == expected
    assert read_samples(tmp_path / "s.jsonl") == records


def test_a_run_cut_short_resumes_where_it_stopped_with_the_same_samples(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    whole = sample_critic_data(sampler(model, tokenizer), task, rows, tmp_path / "whole.jsonl", prompts_per_batch=4)

    cut = tmp_path / "cut.jsonl"
    sample_critic_data(sampler(model, tokenizer), task, rows, cut, prompts_per_batch=4)
    data = cut.read_bytes()
    lines = data.split(b"\n")
    # Killed while writing the third batch: two of its lines whole, the third torn.
    cut.write_bytes(b"\n".join(lines[:10]) + b"\n" + lines[10][:15])
    generator = sampler(model, tokenizer)
    resumed = sample_critic_data(generator, task, rows, cut, prompts_per_batch=4)
    assert resumed == whole
    assert cut.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()
    assert generator.prompts_seen == (len(rows) - 8) * 2  # only the batches from the third one on

    again = sampler(model, tokenizer)
    assert sample_critic_data(again, task, rows, cut, prompts_per_batch=4) == whole
    assert again.prompts_seen == 0


def test_a_file_of_other_rows_is_refused_naming_the_file_and_line(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    path = tmp_path / "s.jsonl"
    sample_critic_data(sampler(model, tokenizer), task, rows.select(range(4)), path, prompts_per_batch=4)
    other = task.synthetic(n=8, seed=99)
    with pytest.raises(ValueError, match=r"s\.jsonl, line 1: holds row 0 of other training rows"):
        sample_critic_data(sampler(model, tokenizer), task, other, path)
    path.write_text('{"index": 0}\n')
    with pytest.raises(ValueError, match=r"s\.jsonl, line 1: no 'prompt' field"):
        read_samples(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"s\.jsonl, line 1: not a JSON object"):
        read_samples(path)


def test_a_greedy_generator_is_refused(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    with pytest.raises(ValueError, match="sampling generator"):
        sample_critic_data(ModelGenerator(model, tokenizer), task, rows, tmp_path / "s.jsonl")


def _rows(n: int, source: str) -> Dataset:
    return Dataset.from_dict({"prompt": [f"{source} {i}" for i in range(n)], "source": [source] * n})


@pytest.mark.parametrize("share", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("sizes", [(200, 30), (40, 300)])
def test_the_share_of_generator_rows_is_what_was_asked_without_repeating_a_row(share, sizes):
    base, samples = _rows(sizes[0], "base"), _rows(sizes[1], "generator")
    mixed = mix_at_share(base, samples, share, seed=1)
    counts = Counter(mixed["source"])
    assert counts["generator"] / len(mixed) == pytest.approx(share, abs=1.0 / len(mixed))
    assert len(set(mixed["prompt"])) == len(mixed)  # no row twice
    assert counts["base"] <= sizes[0] and counts["generator"] <= sizes[1]
    # The largest mix at that share: one side is whole.
    assert counts["base"] == sizes[0] or counts["generator"] == sizes[1] or share in (0.0, 1.0)


def test_no_share_keeps_every_row_and_a_bad_share_is_refused():
    base, samples = _rows(10, "base"), _rows(5, "generator")
    assert Counter(mix_at_share(base, samples, None)["source"]) == {"base": 10, "generator": 5}
    with pytest.raises(ValueError, match=r"generator_sample_share must be in \[0, 1\], got 1.5"):
        mix_at_share(base, samples, 1.5)


def test_critic_rows_hold_out_the_calibration_prompts_entirely(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    records = sample_critic_data(sampler(model, tokenizer), task, rows, tmp_path / "s.jsonl")
    train, calibration = split_calibration(records, 5)
    assert [r["index"] for r in calibration] == list(range(len(rows) - 5, len(rows)))
    data = critic_rows(task, rows, train, share=None, excluded=[r["index"] for r in calibration])
    held_out = {r["prompt"] for r in calibration}
    assert not any(any(p.startswith(h + "\n") for h in held_out) for p in data["prompt"])
    assert "generator" in set(data["source"])
    mixed = critic_rows(task, rows, train, share=0.5, excluded=[r["index"] for r in calibration])
    assert Counter(mixed["source"])["generator"] / len(mixed) == pytest.approx(0.5, abs=1.0 / len(mixed))


def test_samples_of_other_training_rows_are_refused(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    records = sample_critic_data(sampler(model, tokenizer), task, rows.select(range(4)), tmp_path / "s.jsonl")
    with pytest.raises(ValueError, match="is not that row of the training data"):
        critic_rows(task, task.synthetic(n=8, seed=99), records)


def test_sampling_is_seeded(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    torch.manual_seed(123)  # the global state does not matter: each batch is seeded
    first = sample_critic_data(sampler(model, tokenizer), task, rows, tmp_path / "a.jsonl", seed=5)
    second = sample_critic_data(sampler(model, tokenizer), task, rows, tmp_path / "b.jsonl", seed=5)
    other = sample_critic_data(sampler(model, tokenizer), task, rows, tmp_path / "c.jsonl", seed=6)
    assert first == second
    assert first != other


def test_a_resumed_sampling_with_another_k_is_refused(mwp, tmp_path):
    task, rows, model, tokenizer = mwp
    path = tmp_path / "s.jsonl"
    sample_critic_data(sampler(model, tokenizer), task, rows.select(range(4)), path, num_samples=2)
    with pytest.raises(ValueError, match=r"s\.jsonl, line 1: 2 samples a prompt, not num_samples=3"):
        sample_critic_data(sampler(model, tokenizer), task, rows, path, num_samples=3)


def test_critic_arguments_refuse_what_would_fail_only_after_training():
    from refiner_trl.script_args import CriticArguments

    with pytest.raises(ValueError, match=r"max_false_alarm must be a share in \[0, 1\], got 20"):
        CriticArguments(max_false_alarm=20)
    with pytest.raises(ValueError, match="calibration_prompts: .* set generator_samples"):
        CriticArguments(calibration_prompts=10)
    with pytest.raises(ValueError, match="takes the name of a standard row"):
        CriticArguments(eval_critics=["oracle=outputs/critic"])
