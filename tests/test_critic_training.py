"""Critic training: the shipped tiny recipe learns to name MWP errors, and the saved critic drives `refine`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import load_recipe

from refiner_trl.critic_eval import score_critic_predictions
from refiner_trl.critics import NO_ERROR, ModelCritic, is_no_error
from refiner_trl.generators import CallableGenerator
from refiner_trl.recipe_parser import parse_recipe_args
from refiner_trl.refinement import refine
from refiner_trl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]


def test_score_critic_predictions_splits_no_error_and_error_rows():
    task = get_task("mwp")
    rows = [
        {"completion": NO_ERROR, "feedback_type": "no_error"},
        {"completion": NO_ERROR, "feedback_type": "no_error"},
        {"completion": "The operator in #1 is incorrect.", "feedback_type": "wrong_operator"},
        {"completion": "An operation is missing.", "feedback_type": "missing_operation"},
    ]
    predictions = ["no error", "There is an extra operation.", "The operator in #0 is incorrect.", "garbage"]
    result = score_critic_predictions(task, predictions, rows)
    assert result["exact_match"] == 0.0  # "no error" is the right verdict but not the exact text
    assert result["no_error_accuracy"] == 0.5 and result["false_alarm_rate"] == 0.5
    assert result["error_type_accuracy"] == 0.5  # right type (wrong step) counts; "garbage" does not
    assert result["type_accuracy"] == {"missing_operation": 0.0, "no_error": 0.5, "wrong_operator": 1.0}
    assert result["counts"] == {"missing_operation": 1, "no_error": 2, "wrong_operator": 1}
    with pytest.raises(ValueError):
        score_critic_predictions(task, predictions[:2], rows)


@pytest.mark.slow
def test_tiny_critic_learns_to_name_mwp_errors_and_drives_refine(tmp_path):
    recipe = load_recipe("train_critic")
    config = str(ROOT / "recipes" / "critic_mwp_tiny.yaml")
    args = parse_recipe_args(recipe.CRITIC_ARGUMENTS, ["--config", config, "--output_dir", str(tmp_path / "critic")])
    report = recipe.main(*args)

    # Held-out synthetic critic data (another seed): the critic must both accept gold equations and name errors.
    saved = json.loads((tmp_path / "critic" / "critic_eval.json").read_text())
    assert saved["no_error_accuracy"] == report["no_error_accuracy"]
    print({k: report[k] for k in ("exact_match", "no_error_accuracy", "error_type_accuracy", "type_accuracy")})
    assert report["no_error_accuracy"] > 0.5, report
    assert report["error_type_accuracy"] > 0.5, report
    assert sum(report["type_accuracy"][kind] > 0.5 for kind in get_task("mwp").perturbation_types) >= 2, report

    # The saved critic (loaded from disk) gives the feedback in `refine`.
    task = get_task("mwp")
    critic = ModelCritic(str(tmp_path / "critic"), max_new_tokens=24)
    rows = task.synthetic(n=12, seed=7)
    rng = random.Random(0)
    bad = {p: task.perturb(gold, rng)[0] for p, gold in zip(rows["prompt"], rows["completion"])}
    gold = dict(zip(rows["prompt"], rows["completion"]))

    def generator(prompts: list[str]) -> list[str]:
        """A wrong equation first; the gold one when refining."""
        return [gold[p.split("\nPrevious answer:")[0]] if "Previous answer:" in p else bad[p] for p in prompts]

    traces = refine(CallableGenerator(generator), critic, rows["prompt"], max_turns=1, final_critique=True)
    first = critic.critique(rows["prompt"], [trace.hypotheses[0] for trace in traces])
    assert [trace.feedback[0] for trace in traces] == first  # the feedback is the critic's, not a reference's
    assert all(task.feedback_type(text) != "unknown" for trace in traces for text in trace.feedback)
    flagged = [trace for trace in traces if not is_no_error(trace.feedback[0])]
    assert len(flagged) >= len(traces) // 2  # most wrong equations are flagged, and those get refined
    assert all(trace.hypotheses[1] == gold[trace.prompt] for trace in flagged)


@pytest.mark.slow
def test_a_refiner_recipe_trains_and_evaluates_with_a_trained_critic(tmp_path, monkeypatch):
    """`--critic <folder>`: the critic the training turns and the table's trained-critic row hear is that model's."""
    critic_dir, refiner_dir = tmp_path / "critic", tmp_path / "refiner"
    critic_recipe = load_recipe("train_critic")
    critic_argv = ["--config", str(ROOT / "recipes" / "critic_mwp_tiny.yaml"), "--output_dir", str(critic_dir)]
    critic_argv += ["--max_steps", "20", "--synthetic_train_size", "32", "--synthetic_eval_size", "4"]
    critic_recipe.main(*parse_recipe_args(critic_recipe.CRITIC_ARGUMENTS, critic_argv))

    calls: list[tuple[list[str], list[str], list[str]]] = []
    critique = ModelCritic.critique

    def recorded(self, prompts, hypotheses, references=None):
        feedback = critique(self, prompts, hypotheses, references)
        calls.append((list(prompts), list(hypotheses), feedback))
        return feedback

    monkeypatch.setattr(ModelCritic, "critique", recorded)
    argv = ["--config", str(ROOT / "recipes" / "mwp_tiny.yaml"), "--output_dir", str(refiner_dir)]
    argv += ["--critic", str(critic_dir), "--max_steps", "2", "--synthetic_train_size", "32"]
    argv += ["--max_eval_samples", "4", "--eval_max_turns", "1", "--eval_oracle_max_turns", "1"]
    argv += ["--max_new_tokens", "12", "--eval_max_new_tokens", "12"]
    recipe = load_recipe("train_refiner")
    result = recipe.main(*parse_recipe_args(recipe.REFINER_ARGUMENTS, argv, task="mwp"))

    # Training: 2 steps of one explored turn (T = 2), each on a batch of 16 of the 32 training rows.
    training, evaluation = calls[:2], calls[2:]
    assert [len(hypotheses) for _, hypotheses, _ in training] == [16, 16]
    assert [run.label for run in result.runs] == ["generator alone", "+ trained critic (T=1)", "+ oracle critic (T=1)"]
    # The table's trained row: its feedback is what the saved critic, loaded again, writes for those hypotheses.
    trained = result.runs[1]
    assert evaluation and sum(len(hypotheses) for _, hypotheses, _ in evaluation) >= 4
    again = ModelCritic(str(critic_dir), max_new_tokens=32)
    for example in trained.examples:
        first = critique(again, [example["prompt"]], [example["hypotheses"][0]])
        assert example["feedback"][0] == first[0]
    assert "\n| + trained critic (T=1) | " in (refiner_dir / "results.md").read_text(encoding="utf-8")
