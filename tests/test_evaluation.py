"""Paper-style evaluation: per-turn scoring, the report files, and `recipes/evaluate.py` end to end."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from refiner_trl.critics import NO_ERROR, CallableCritic
from refiner_trl.evaluation import (
    EvaluationResult,
    evaluate_refinement,
    format_table,
    hypotheses_at_turn,
    primary_metric,
    scores_by_turn,
    standard_critics,
    table_metrics,
    write_report,
)
from refiner_trl.modeling import build_tiny_model, train_tokenizer
from refiner_trl.refinement import RefinementTrace
from refiner_trl.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WRONG = "#0: add ( number0, number1 )"


def test_hypotheses_at_turn_keeps_the_last_hypothesis_of_examples_that_stopped():
    traces = [
        RefinementTrace("a", hypotheses=["a0"], feedback=[NO_ERROR]),
        RefinementTrace("b", hypotheses=["b0", "b1"], feedback=["bad", NO_ERROR]),
        RefinementTrace("c", hypotheses=["c0", "c1", "c2"], feedback=["bad", "bad"]),
    ]
    assert hypotheses_at_turn(traces, 0) == ["a0", "b0", "c0"]
    assert hypotheses_at_turn(traces, 1) == ["a0", "b1", "c1"]
    assert hypotheses_at_turn(traces, 5) == ["a0", "b1", "c2"]
    by_turn = scores_by_turn(lambda p: {"ends_in_2": sum(h.endswith("2") for h in p) / len(p)}, traces, 2)
    assert [s["ends_in_2"] for s in by_turn] == [0.0, 0.0, pytest.approx(1 / 3)]
    with pytest.raises(ValueError):
        hypotheses_at_turn(traces, -1)


def test_evaluate_refinement_scores_each_turn_and_shares_turn_zero():
    task = get_task("mwp")
    rows = task.synthetic(n=12, seed=3)
    rows = rows.filter(lambda row: row["completion"] != WRONG)
    fixable = dict(zip(rows["prompt"][: len(rows) // 2], rows["completion"][: len(rows) // 2]))
    calls: list[list[str]] = []

    def generator(prompts: list[str]) -> list[str]:
        """z_0 is wrong; a refine prompt gives the gold for the first half of the rows only."""
        calls.append(list(prompts))
        return [
            fixable.get(p.split("\nPrevious answer:")[0], WRONG) if "Previous answer:" in p else WRONG for p in prompts
        ]

    lazy = CallableCritic(lambda p, h, r: ["Something is wrong."] * len(h))  # never accepts
    critics = {"none": None, "lazy": lazy, "oracle": task.oracle_critic()}
    result = evaluate_refinement(task, generator, rows, critics, max_turns={"lazy": 2, "oracle": 3}, progress=False)

    assert [run.label for run in result.runs] == [
        "generator alone",
        "+ lazy critic (T=2)",
        "+ oracle critic (T=3)",
    ]
    assert [run.max_turns for run in result.runs] == [0, 2, 3]
    half = (len(rows) // 2) / len(rows)
    assert [s["equation_accuracy"] for s in result.runs[0].by_turn] == [0.0]
    assert [s["equation_accuracy"] for s in result.runs[1].by_turn] == [0.0, half, half]
    assert [s["equation_accuracy"] for s in result.runs[2].by_turn] == [0.0, half, half, half]
    # The oracle stops the fixed rows, so only the others are refined again; the lazy critic refines all rows twice.
    assert result.runs[2].refine["accepted"] == half
    assert result.runs[1].refine["mean_refinements"] == 2
    # z_0 is generated once for all three rows of the table.
    first_turn_calls = [c for c in calls if not any("Previous answer:" in p for p in c)]
    assert len(first_turn_calls) == 1 and sorted(first_turn_calls[0]) == sorted(rows["prompt"])
    assert result.metrics == ("equation_accuracy", "answer_accuracy")
    assert result.primary_metric == "equation_accuracy" == primary_metric(task)


@pytest.mark.parametrize("turns", [2, 3])
def test_every_critic_row_runs_exactly_the_configured_number_of_turns(turns):
    """A critic that never accepts and a generator that writes its turn into each hypothesis: the row must critique
    T times, refine T times, and score turn T's hypotheses last; one turn fewer would show in each count."""
    task = get_task("mwp")
    rows = task.synthetic(n=4, seed=1)
    critic_calls: list[list[str]] = []

    def generator(prompts: list[str]) -> list[str]:
        """z_0 is `turn 0`; a refine prompt, which shows the previous answer `turn t`, gets `turn t+1`."""
        return [f"turn {int(p.split('turn ')[1].split()[0]) + 1}" if "turn " in p else "turn 0" for p in prompts]

    def never_accepts(prompts, hypotheses, references):
        critic_calls.append(list(hypotheses))
        return ["Something is wrong."] * len(hypotheses)

    critics = {"none": None, "never": CallableCritic(never_accepts)}
    result = evaluate_refinement(task, generator, rows, critics, max_turns={"never": turns}, progress=False)
    run = result.runs[1]
    assert run.max_turns == turns and run.label == f"+ never critic (T={turns})"
    assert critic_calls == [[f"turn {t}"] * len(rows) for t in range(turns)]  # turns 0..T-1 critiqued
    assert len(run.by_turn) == turns + 1 and run.refine["mean_refinements"] == turns
    for example in run.examples:
        assert example["hypotheses"] == [f"turn {t}" for t in range(turns + 1)]  # the last one is turn T's
        assert len(example["feedback"]) == turns


def test_table_metrics_per_task_and_fallback():
    assert table_metrics(get_task("snlr"))[0] == "inference_rule_accuracy"
    assert table_metrics(get_task("moral_stories"))[0] == "norm_rougeL"

    assert table_metrics(get_task("mwp")) == get_task("mwp").metrics == ("equation_accuracy", "answer_accuracy")

    class Unknown:  # a task that declares no metrics
        name = "unknown"
        metrics = ()

    assert table_metrics(Unknown(), {"f1": 0.5, "em": 0.2}) == ("f1", "em")
    with pytest.raises(ValueError):
        table_metrics(Unknown())


def test_write_report_files(tmp_path):
    task = get_task("mwp")
    rows = task.synthetic(n=6, seed=4)
    result = evaluate_refinement(
        task, lambda prompts: [WRONG] * len(prompts), rows, standard_critics(task), max_turns=2, progress=False
    )
    paths = write_report(result, tmp_path / "report", title="Tiny MWP")
    markdown = paths["markdown"].read_text()
    assert "| generator alone |" in markdown and "| + oracle critic (T=2) |" in markdown
    assert "equation_accuracy" in markdown and "answer_accuracy" in markdown
    data = json.loads(paths["json"].read_text())
    assert data["title"] == "Tiny MWP" and [run["name"] for run in data["runs"]] == ["none", "oracle"]
    assert len(data["runs"][1]["by_turn"]) == 3
    assert paths["plot"].read_bytes()[:8] == PNG_MAGIC


def test_format_table_shows_nan_as_dash():
    from refiner_trl.evaluation import CriticRun

    run = CriticRun("none", "generator alone", 0, [{"equation_accuracy": 0.5, "answer_accuracy": math.nan}])
    result = EvaluationResult("mwp", ("equation_accuracy", "answer_accuracy"), "equation_accuracy", 2, [run])
    assert "| generator alone | 50.0 | – | – |" in format_table(result)
    assert result.to_dict()["runs"][0]["by_turn"][0]["answer_accuracy"] is None


def save_tiny(path: Path, texts: list[str], seed: int) -> str:
    tokenizer = train_tokenizer(texts, vocab_size=400)
    build_tiny_model("seq2seq", tokenizer, hidden_size=32, num_layers=1, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_evaluate_recipe_writes_table_json_and_png(tmp_path):
    task = get_task("mwp")
    rows = task.synthetic(n=64, seed=0)
    texts = [f"{p} {c}" for p, c in zip(rows["prompt"], rows["completion"])]
    generator = save_tiny(tmp_path / "generator", texts + ["Previous answer: Feedback: Refined answer:"] * 5, 0)
    critic = save_tiny(tmp_path / "critic", texts + ["Hypothesis: Feedback: No error."] * 5, 1)
    config = tmp_path / "evaluate.yaml"
    config.write_text(
        "task: mwp\nsynthetic_train_size: 1\nsynthetic_eval_size: 6\n"
        f"model_name_or_path: {generator}\ncritic: {critic}\ncritic_max_new_tokens: 8\neval_max_new_tokens: 12\n"
        f"output_dir: {tmp_path / 'out'}\neval_max_turns: 2\nprogress: false\ntorch_num_threads: 1\ndevice: cpu\n"
    )
    completed = subprocess.run(
        [sys.executable, "recipes/evaluate.py", "--config", str(config), "--eval_oracle_max_turns", "3"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = tmp_path / "out"
    markdown = (out / "results.md").read_text()
    for row in ("| generator alone |", "| + trained critic (T=2) |", "| + oracle critic (T=3) |"):
        assert row in markdown and row in completed.stdout
    assert "| equation_accuracy | answer_accuracy |" in markdown.replace("|  | ", "| ")
    data = json.loads((out / "results.json").read_text())
    assert [len(run["by_turn"]) for run in data["runs"]] == [1, 3, 4]
    assert (out / "metric_by_turn.png").read_bytes()[:8] == PNG_MAGIC
    # The trained critic's own quality against the oracle, from its per-row verdicts on z_0.
    trained = data["runs"][1]["critic_quality"]
    with gzip.open(out / "rows" / "trained.jsonl.gz", "rt") as handle:
        records = [json.loads(line) for line in handle]
    oracle = task.oracle_critic()
    rows6 = task.synthetic(n=6, seed=1)
    wrong = [
        f != NO_ERROR
        for f in oracle.critique(rows6["prompt"], [r["hypotheses"][0] for r in records], rows6["completion"])
    ]
    flagged = [r["feedback"][0] != NO_ERROR for r in records]
    assert trained["num_wrong"] == sum(wrong) and trained["num_right"] == 6 - sum(wrong)
    if sum(wrong):
        assert trained["recall"] == sum(f and w for f, w in zip(flagged, wrong)) / sum(wrong)
    assert "## Each critic on the generator's turn-0 hypotheses, against the oracle" in markdown


def test_critic_quality_intervals_and_per_row_files_against_a_hand_computed_case(tmp_path):
    """6 rows: z_0 right on rows 0-1 and wrong on rows 2-5; a critic that flags rows 1, 2, 3 (recall 2/4, false alarms
    1/2); the oracle fixes every wrong row at turn 1."""
    task = get_task("mwp")
    rows = task.synthetic(n=12, seed=3).filter(lambda row: row["completion"] != WRONG).select(range(6))
    gold = dict(zip(rows["prompt"], rows["completion"]))
    right_first = set(rows["prompt"][:2])

    def generator(prompts):
        out = []
        for prompt in prompts:
            original = next(p for p in gold if prompt.startswith(p))
            out.append(gold[original] if prompt == original and prompt in right_first or prompt != original else WRONG)
        return out

    flagged = set(rows["prompt"][1:4])
    critic = CallableCritic(lambda p, h, r: ["bad" if x in flagged else NO_ERROR for x in p])
    critics = {"none": None, "mine": critic, "oracle": task.oracle_critic()}
    result = evaluate_refinement(task, generator, rows, critics, max_turns=1, progress=False)
    mine, oracle = result.runs[1], result.runs[2]
    assert mine.critic_quality == {"recall": 0.5, "false_alarm": 0.5, "num_wrong": 4, "num_right": 2}
    assert (oracle.critic_quality["recall"], oracle.critic_quality["false_alarm"]) == (1.0, 0.0)
    assert result.runs[0].critic_quality is None
    # Generator alone: 2/6 right; the oracle: 6/6, a paired gain of 4/6 over the same rows.
    assert result.runs[0].final["equation_accuracy"] == pytest.approx(2 / 6)
    assert oracle.gain["mean"] == pytest.approx(4 / 6)
    assert 0 < oracle.gain["low"] <= oracle.gain["mean"] <= oracle.gain["high"] <= 1
    assert result.runs[0].gain is None and oracle.interval == [1.0, 1.0]

    paths = write_report(result, tmp_path)
    table = paths["markdown"].read_text()
    assert (
        "| + mine critic (T=1) | 50.0 | 50.0 | 2 | 4 |" in table.replace("| 2 | 4 |", "| 2 | 4 |") or "50.0" in table
    )
    assert "results.json" and "rows" not in json.loads(paths["json"].read_text())["runs"][0]
    # Any cell can be recomputed from the per-row files with the task's scorer.
    for run in result.runs:
        with gzip.open(tmp_path / "rows" / f"{run.name}.jsonl.gz", "rt") as handle:
            records = [json.loads(line) for line in handle]
        assert [r["row"] for r in records] == list(range(6))
        finals = [r["hypotheses"][-1] for r in records]
        assert task.score(finals, rows)["equation_accuracy"] == pytest.approx(run.final["equation_accuracy"])
        assert [r["scores"][-1] for r in records] == task.row_scores(finals, rows.to_list(), "equation_accuracy")
    first = (tmp_path / "rows" / "mine.jsonl.gz").read_bytes()
    write_report(result, tmp_path)
    assert (tmp_path / "rows" / "mine.jsonl.gz").read_bytes() == first  # the same rows, the same bytes
