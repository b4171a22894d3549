"""Behaviour every task shares: lookup, oracle critic, perturbations, critic data, synthetic data."""

import json
import random

import pytest

from refiner_trl.critics import NO_ERROR, Critic, checked_critique
from refiner_trl.data import DataError, validate_prompt_completion
from refiner_trl.tasks import TASKS, get_task
from refiner_trl.templates import render_critic_input


@pytest.fixture(scope="module")
def synthetic():
    return {name: get_task(name).synthetic(n=60, seed=3) for name in TASKS}


def test_get_task_knows_the_three_tasks():
    assert TASKS == ("mwp", "snlr", "moral_stories")
    assert [get_task(name).name for name in TASKS] == list(TASKS)


def test_unknown_task_lists_the_names():
    with pytest.raises(ValueError, match="mwp, snlr, moral_stories"):
        get_task("gsm8k")


@pytest.mark.parametrize("name", TASKS)
def test_synthetic_is_prompt_completion_deterministic_and_varied(name, synthetic):
    task = get_task(name)
    data = synthetic[name]
    validate_prompt_completion(data)
    assert data.to_list() == task.synthetic(n=60, seed=3).to_list()
    assert data.to_list() != task.synthetic(n=60, seed=4).to_list()
    assert len(set(data["prompt"])) > 40
    assert len(set(data["completion"])) > 10


@pytest.mark.parametrize("name", TASKS)
def test_gold_scores_perfectly(name, synthetic):
    scores = get_task(name).score(synthetic[name]["completion"], synthetic[name])
    assert scores, "a task must report metrics"
    for metric, value in scores.items():
        if not metric.endswith("_rows"):
            assert value == pytest.approx(1.0), metric


@pytest.mark.parametrize("name", TASKS)
def test_oracle_is_a_critic_that_says_no_error_on_gold(name, synthetic):
    critic = get_task(name).oracle_critic()
    assert isinstance(critic, Critic)
    data = synthetic[name]
    feedback = checked_critique(critic, data["prompt"], data["completion"], data["completion"])
    assert feedback == [NO_ERROR] * len(data)


@pytest.mark.parametrize("name", TASKS)
def test_oracle_needs_references(name):
    critic = get_task(name).oracle_critic()
    with pytest.raises(ValueError, match="references"):
        critic.critique(["x"], ["z"], None)
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        critic.critique(["x", "y"], ["z", "z"], ["z"])


CASES = [(name, kind) for name in TASKS for kind in get_task(name).perturbation_types]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_each_perturbation_is_named_by_the_oracle(name, kind, synthetic):
    task = get_task(name)
    golds = synthetic[name]["completion"]
    rng = random.Random(0)
    made = 0
    for gold in golds:
        try:
            bad, feedback = task.perturb(gold, rng, kind=kind, others=golds)
        except ValueError:
            continue  # this gold admits no error of this kind (e.g. a one-step equation has none to drop)
        made += 1
        assert bad != gold
        assert task.diagnose(bad, gold) == feedback
        assert task.feedback_type(feedback) == kind
        assert task.oracle_critic().critique(["x"], [bad], [gold]) == [feedback]
    assert made >= len(golds) // 3


@pytest.mark.parametrize("name", TASKS)
def test_perturb_rejects_an_unknown_kind(name):
    with pytest.raises(ValueError, match="Unknown"):
        get_task(name).perturb("anything", random.Random(0), kind="typo")


@pytest.mark.parametrize("name", TASKS)
def test_feedback_type_of_no_error_and_noise(name):
    task = get_task(name)
    assert task.feedback_type(NO_ERROR) == "no_error"
    assert task.feedback_type(" no error ") == "no_error"
    assert task.feedback_type("lorem ipsum") == "unknown"


@pytest.mark.parametrize("name", TASKS)
def test_critic_dataset_has_gold_and_named_negatives(name, synthetic):
    task = get_task(name)
    data = synthetic[name]
    critic = task.build_critic_dataset(data, seed=1, negatives_per_example=2)
    assert critic.to_list() == task.build_critic_dataset(data, seed=1, negatives_per_example=2).to_list()
    validate_prompt_completion(critic)
    rows = critic.to_list()
    gold_rows = [r for r in rows if r["completion"] == NO_ERROR]
    assert [r["prompt"] for r in gold_rows] == [
        render_critic_input(p, c) for p, c in zip(data["prompt"], data["completion"])
    ]
    negatives = [r for r in rows if r["completion"] != NO_ERROR]
    assert len(negatives) >= len(data)
    assert {r["feedback_type"] for r in negatives} == set(task.perturbation_types)
    gold = None
    for row in rows:  # each row's gold example comes first, then its negatives
        prompt, _, rest = row["prompt"].partition("\nHypothesis: ")
        hypothesis = rest.removesuffix("\nFeedback:")
        if row["completion"] == NO_ERROR:
            gold = hypothesis
            continue
        assert task.diagnose(hypothesis, gold) == row["completion"]
        assert task.feedback_type(row["completion"]) == row["feedback_type"]


def test_tasks_without_a_hub_default_ask_for_a_path():
    for name in ("mwp", "snlr"):
        with pytest.raises(ValueError, match="path="):
            get_task(name).load("train")


def test_moral_stories_reads_the_hub_by_default(monkeypatch):
    import refiner_trl.tasks.base as base

    calls = []

    def fake_load_records(source, split="train", subset=None):
        calls.append((source, split, subset))
        return [
            {"situation": "s", "intention": "i", "immoral_action": "a", "norm": "It's good to x.", "moral_action": "m"}
        ]

    monkeypatch.setattr(base, "load_records", fake_load_records)
    data = get_task("moral_stories").load("validation")
    get_task("moral_stories").load("train", path="demelin/moral_stories")  # as a recipe's train_path names it
    subset = "gen-norm$actions+context-norm_distance"
    assert calls == [("demelin/moral_stories", "validation", subset), ("demelin/moral_stories", "train", subset)]
    assert data[0]["completion"] == "It's good to x."


def test_a_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        get_task("mwp").load(path=str(tmp_path / "missing.json"))


def test_jsonl_and_json_load_the_same(tmp_path):
    rows = [{"fact": "Bob is big and red.", "rules": ["If Bob is big, then Bob is old."],
             "explanations": "#0: Bob is big #1: Bob is old ", "consequents": "Bob is old"}] * 2  # fmt: skip
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    task = get_task("snlr")
    assert task.load(path=str(tmp_path / "a.json")).to_list() == task.load(path=str(tmp_path / "a.jsonl")).to_list()
