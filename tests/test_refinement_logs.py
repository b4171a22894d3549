"""The refine-turn table (`log_refinements`): rows per turn, the rich console table (and none without rich), and the
tables trackio and wandb store, read back from their local files after a 3-step run of the main recipe."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import quiet_refiner_config, reveal_feedback
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerTrainer
from refiner_trl.refinement_logs import COLUMNS, NOT_SAMPLED, refinement_rows

ROOT = Path(__file__).resolve().parent.parent


def oracle(prompts, hypotheses, references):
    return [reveal_feedback(h, r) for h, r in zip(hypotheses, references)]


def train(tiny, tmp_path, **overrides):
    model, tokenizer, rows = tiny
    values = {"per_device_train_batch_size": 4, "max_steps": 2, "num_hypotheses": 2, "max_new_tokens": 4}
    args = quiet_refiner_config(tmp_path / "out", **{**values, **overrides})
    dataset = Dataset.from_list(rows)
    trainer = RefinerTrainer(
        model, args, critic=CallableCritic(oracle), train_dataset=dataset, eval_dataset=dataset.select(range(4)),
        processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    trainer.evaluate()
    return trainer


def test_rows_follow_each_example_turn_by_turn():
    turn_prompts = [["x0", "x1"], ["x0 z0 f0", "x1 z1 f1"], ["x0 z0' f0'", "x1 z1' f1'"]]
    explored = [(["z0", "z1"], ["f0", "f1"]), (["z0'", "z1'"], ["f0'", "f1'"])]
    rows = refinement_rows(turn_prompts, explored, ["g0", "g1"], num_examples=1)
    assert [(r["example"], r["turn"], r["prompt"], r["hypothesis"], r["feedback"], r["gold"]) for r in rows] == [
        (0, 0, "x0", "z0", "f0", "g0"),
        (0, 1, "x0 z0 f0", "z0'", "f0'", "g0"),
        (0, 2, "x0 z0' f0'", NOT_SAMPLED, "", "g0"),  # the last turn's prompt, trained on but not sampled
    ]
    conversation = [{"role": "user", "content": "x0"}]
    rows = refinement_rows([[conversation]], [(["z0"], ["f0"])], [[{"role": "assistant", "content": "g0"}]], 2)
    assert (rows[0]["prompt"], rows[0]["gold"]) == ("x0", "g0")  # conversations as their text


def test_the_console_shows_each_turn_in_training_and_evaluation(tiny, tmp_path, capsys):
    pytest.importorskip("rich")
    trainer = train(tiny, tmp_path, log_refinements=True, num_refinements_to_log=1, num_refinement_turns=3)
    out = capsys.readouterr().out
    assert "Refine turns, step 1 (train)" in out and "Refine turns, step 2 (train)" in out
    assert "Refine turns, step 2 (eval)" in out
    for heading in ("Prompt", "Hypothesis", "Feedback", "Gold"):
        assert heading in out
    assert "The code is" in out or "No error." in out  # the oracle's feedback
    assert "…" in out and "Previous answer:" in out  # a refine turn's prompt, after the dataset prompt
    assert not trainer._refinement_log.rows["train"] and not trainer._refinement_log.rows["eval"]


def test_nothing_is_printed_when_off_or_without_rich(tiny, tmp_path, capsys, monkeypatch):
    train(tiny, tmp_path / "off")
    assert "Refine turns" not in capsys.readouterr().out
    for name in [name for name in sys.modules if name == "rich" or name.startswith("rich.")] + ["rich"]:
        monkeypatch.setitem(sys.modules, name, None)  # `import rich` now raises ImportError
    train(tiny, tmp_path / "no-rich", log_refinements=True)
    assert "Refine turns" not in capsys.readouterr().out


def run_main_recipe(output_dir: Path, env: dict[str, str], report_to: str) -> subprocess.CompletedProcess:
    """3 steps of the README's main job, logging every step with the refine-turn table to `report_to`."""
    command = [
        sys.executable, "recipes/train_ms.py", "--config", "recipes/ms_tiny.yaml", "--output_dir", str(output_dir),
        "--max_steps", "3", "--logging_steps", "1", "--synthetic_train_size", "48", "--max_eval_samples", "4",
        "--evaluate_after_training", "false", "--report_to", report_to, "--log_refinements", "true",
        "--num_refinements_to_log", "2", "--disable_tqdm", "true", "--eval_strategy", "steps", "--eval_steps", "3",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


@pytest.mark.slow
def test_trackio_stores_the_table_of_every_logging_step_and_the_recipe_saves_a_model_card(tmp_path):
    pytest.importorskip("trackio")
    env = {"TRACKIO_DIR": str(tmp_path / "trackio"), "TRACKIO_PROJECT": "refine-turns"}
    run_main_recipe(tmp_path / "out", {**env, "TRACKIO_STORAGE_MODE": "sqlite"}, "trackio")
    card = (tmp_path / "out" / "README.md").read_text(encoding="utf-8")  # saved with the model, offline
    assert "# Model Card for out" in card and "@inproceedings{paul2024refiner" in card
    assert "| base model | `tiny seq2seq model` |" in card and "| critic | the task's oracle" in card
    assert "| training data | `synthetic moral_stories rows (seed 0)` |" in card and "| steps | 3 |" in card
    # Read back through trackio's own storage, in a process that sees this TRACKIO_DIR (trackio reads it at import).
    reader = (
        "import json\nfrom trackio.sqlite_storage import SQLiteStorage\n"
        "project = SQLiteStorage.get_projects()[0]\nrun = SQLiteStorage.get_runs(project)[0]\n"
        "logs = SQLiteStorage.get_logs(project, run)\n"
        "print(json.dumps([log for log in logs if {'refinements', 'eval_refinements'} & set(log)], default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", reader], capture_output=True, text=True, timeout=120, env={**os.environ, **env}
    )
    assert result.returncode == 0, result.stderr[-4000:]
    logs = json.loads(result.stdout)
    train = [log["refinements"] for log in logs if "refinements" in log]
    evaluation = [log["eval_refinements"] for log in logs if "eval_refinements" in log]
    assert len(train) == 3 and len(evaluation) == 1  # one table per logging step, and the evaluation's at step 3
    assert evaluation[0]["_type"] == "trackio.table" and len(evaluation[0]["_value"]) == 4
    table = train[-1]
    assert table["_type"] == "trackio.table"
    rows = table["_value"]
    assert [(row["example"], row["turn"]) for row in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]  # T = 2
    assert set(COLUMNS) <= set(rows[0])
    assert rows[0]["step"] == 3 and rows[0]["prompt"].startswith("Situation:")
    assert rows[0]["feedback"] and rows[1]["hypothesis"] == NOT_SAMPLED
    assert "Previous answer:" in rows[1]["prompt"] and rows[0]["gold"] == rows[1]["gold"]


@pytest.mark.slow
def test_wandb_offline_stores_the_table(tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true", "WANDB_PROJECT": "refine"}
    run_main_recipe(tmp_path / "out", env, "wandb")
    tables = sorted((tmp_path / "wandb").glob("offline-run-*/files/media/table/refinements_*.table.json"))
    assert len(tables) == 3, list((tmp_path / "wandb").rglob("*"))[:50]
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == list(COLUMNS)
    assert len(table["data"]) == 4 and table["data"][0][COLUMNS.index("prompt")].startswith("Situation:")
