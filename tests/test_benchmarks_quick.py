"""The benchmarks' `--quick` modes run end to end, so that the scripts cannot rot; their outputs exist and parse."""

from __future__ import annotations

import gzip
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_quick(script: str, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """Run `benchmarks/<script> --quick` as a subprocess, one torch thread (the CPU is shared), synthetic data only."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", "--threads", "1", "--data-dir", "none"]
    command += ["--output-dir", str(output_dir), *extra]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def check_outputs(output_dir: Path, name: str) -> dict[str, Any]:
    data = json.loads((output_dir / f"{name}.json").read_text(encoding="utf-8"))
    assert (output_dir / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    markdown = (output_dir / f"{name}.md").read_text(encoding="utf-8")
    assert markdown.startswith("# ") and "|---" in markdown.replace(":---", "---")
    assert data["quick"] is True and data["machine"]["nproc"] >= 1
    return data


@pytest.mark.slow
def test_learning_quick_runs_the_recipes_and_reads_their_results(tmp_path):
    result = run_quick("learning.py", tmp_path, "--variant", "sum:turn_loss_aggregation=sum")
    data = check_outputs(tmp_path, "learning")
    (pipeline,) = data["pipelines"]
    assert (pipeline["task"], pipeline["architecture"], pipeline["data"]) == ("mwp", "causal", "synthetic")
    assert set(pipeline["evaluations"]) == {"baseline", "sum"}
    folder = tmp_path / "mwp-causal" / "seed-0"
    for arm, evaluation in pipeline["evaluations"].items():
        # What the benchmark read is the evaluate recipe's own results.json.
        assert evaluation == json.loads((folder / f"evaluate-{arm}" / "results.json").read_text(encoding="utf-8"))
        runs = {run["name"]: run for run in evaluation["runs"]}
        assert set(runs) == {"none", "trained", "oracle"} and evaluation["num_examples"] == 8
        for run in runs.values():
            assert all(0.0 <= scores[evaluation["primary_metric"]] <= 1.0 for scores in run["by_turn"])
    # The variant's key reached the REFINER recipe; the baseline started from the warm start's weights.
    command = json.loads((folder / "sum" / "recipe_done.json").read_text(encoding="utf-8"))["command"]
    assert command[command.index("--turn_loss_aggregation") + 1] == "sum"
    assert str(folder / "warm") in json.loads((folder / "baseline" / "recipe_done.json").read_text())["command"]
    assert all(seconds > 0 for seconds in pipeline["seconds"].values())
    assert [row["arm"] for row in data["summary"]] == ["baseline", "sum"] and "+ oracle critic" in result.stdout

    again = run_quick("learning.py", tmp_path, "--variant", "sum:turn_loss_aggregation=sum", "--resume")
    assert again.stdout.count("done in an earlier run") == 6  # warm, baseline, sum, critic, 2 evaluations


@pytest.mark.slow
def test_step_cost_quick_reads_the_trainers_time_logs(tmp_path):
    run_quick("step_cost.py", tmp_path, "--profile")
    data = check_outputs(tmp_path, "step_cost")
    assert set(data["models"]) == {"tiny-seq2seq", "tiny-causal"}
    for model in data["models"].values():
        cells = model["cells"]
        assert set(cells) == {"k=1 T=1", "k=1 T=2", "k=2 T=2", "supervised", "explore_last_turn k=2 T=2",
                              "profile k=2 T=2"}  # fmt: skip
        for name, cell in cells.items():
            assert cell["measured_steps"] == 2 and 0 < cell["step_cpu"] and 0 < cell["step"]
            if name == "supervised":
                assert not any(key.startswith("time/") for key in cell)  # the supervised trainer logs no time/*
                continue
            parts = [cell[f"time/{part}"] for part in ("generate", "critique", "forward", "forward_backward")]
            assert all(math.isfinite(part) and part >= 0 for part in parts)
            assert cell["time/forward"] <= cell["time/forward_backward"] <= cell["step"]
            assert cell["overhead"] == pytest.approx(cell["step"] / (parts[0] + parts[1] + parts[3]))
        # T = 1 explores nothing by default (its only turn is the last); explore_last_turn samples it too.
        assert cells["k=1 T=1"]["time/generate"] == 0.0 and cells["k=2 T=2"]["time/generate"] > 0
        assert cells["explore_last_turn k=2 T=2"]["time/generate"] > 0
        operators = cells["profile k=2 T=2"]["operators"]
        assert operators and all(op["operator"] and 0 <= op["share"] <= 1 for op in operators)


def test_peer_ratio_quick_times_grpo_and_refiner_at_the_same_k(tmp_path):
    result = run_quick("peer_ratio.py", tmp_path)
    data = json.loads((tmp_path / "peer_ratio.json").read_text(encoding="utf-8"))
    assert data["quick"] is True and data["settings"]["k"] == 2 and data["settings"]["turns"] == 2
    grpo, refiner = data["grpo"], data["refiner"]
    assert (grpo["trainer"], refiner["trainer"]) == ("GRPOTrainer", "RefinerTrainer")
    for cell in (grpo, refiner):
        assert cell["measured_steps"] == data["settings"]["repeats"] == 2
        assert cell["step"] > 0 and cell["step_cpu"] > 0
    assert refiner["time/generate"] > 0  # T = 2 explores its first turn, as GRPO generates once a step
    assert data["ratio"] == pytest.approx(refiner["step"] / grpo["step"])
    assert data["ratio_cpu"] == pytest.approx(refiner["step_cpu"] / grpo["step_cpu"])
    markdown = (tmp_path / "peer_ratio.md").read_text(encoding="utf-8")
    assert f"Ratio REFINER / GRPO: {data['ratio']:.3f}" in markdown and markdown in result.stdout


PHASES = [
    "warm_start", "critic_samples", "baseline", "critic_perturbations", "critic", "refiner", "refiner_critic",
    "evaluate_baseline", "evaluate_refiner", "evaluate_refiner_critic",
]  # fmt: skip
CRITICS = ["none", "perturbation_critic", "critic", "decision_oracle", "oracle"]
PHASES_SCRIPTS = {
    "warm_start": "train_generator.py",
    "critic_samples": "sample_critic_data.py",
    "baseline": "train_generator.py",
    "critic_perturbations": "train_critic.py",
    "critic": "train_critic.py",
    "refiner": "train_mwp.py",
    "refiner_critic": "train_mwp.py",
    "evaluate_baseline": "evaluate.py",
    "evaluate_refiner": "evaluate.py",
    "evaluate_refiner_critic": "evaluate.py",
}


@pytest.mark.slow
def test_pretrained_quick_runs_every_phase_as_a_recipe_resumes_and_collects(tmp_path):
    """`benchmarks/pretrained.py --quick`: every phase is a recipe run on a tiny model; `--resume` runs none again;
    the tables come from the evaluations' `results.json` and the targets from their per-row files."""
    from refiner_trl.tasks import get_task

    runs, docs = tmp_path / "runs", tmp_path / "docs"
    command = [sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), "--quick", "--output-dir", str(runs)]
    command += ["--docs-dir", str(docs)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}

    def run(*extra: str) -> str:
        result = subprocess.run([*command, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        return result.stdout

    run()
    for phase in PHASES:
        done = json.loads((runs / phase / "recipe_done.json").read_text())
        assert done["command"][1].endswith(f"recipes/{PHASES_SCRIPTS[phase]}"), phase
    assert (runs / "critic_samples" / "generator_samples.jsonl").stat().st_size > 0
    for critic in ("critic", "critic_perturbations"):
        calibration = json.loads((runs / critic / "calibration.json").read_text())
        assert calibration["false_alarm"] <= calibration["max_false_alarm"]
    summary = json.loads((docs / "pretrained.json").read_text())
    assert set(summary["results"]) == {"baseline", "refiner", "refiner_critic"}
    task = get_task("mwp")
    rows = task.synthetic(n=24, seed=1)  # the quick evaluation's rows: synthetic_eval_size 24, synthetic_seed + 1
    for arm, result in summary["results"].items():
        assert [critic_run["name"] for critic_run in result["runs"]] == CRITICS
        for critic_run in result["runs"]:
            with gzip.open(docs / "pretrained_rows" / f"{arm}.{critic_run['name']}.jsonl.gz", "rt") as handle:
                finals = [json.loads(line)["hypotheses"][-1] for line in handle]
            expected = critic_run["by_turn"][-1][summary["metric"]]
            assert task.score(finals, rows)[summary["metric"]] == pytest.approx(expected)
    assert [t["target"] for t in summary["targets"]][:3] == [
        "REFINER + trained critic >= baseline + 10",
        "REFINER + oracle >= baseline + 20",
        "REFINER + oracle >= baseline + oracle + 5",
    ]
    assert (docs / "pretrained.png").read_bytes()[:8] == PNG_MAGIC

    stamps = {phase: (runs / phase / "recipe_done.json").stat().st_mtime_ns for phase in PHASES}
    again = run("--resume")
    assert all(f"{phase}: done" in again for phase in PHASES)
    assert stamps == {phase: (runs / phase / "recipe_done.json").stat().st_mtime_ns for phase in PHASES}


RELEASE_VAL = ROOT.parent / "shared" / "data" / "refiner-paper" / "mwp" / "val.json"
COMMITTED_ROWS = ROOT / "docs" / "benchmarks" / "pretrained_rows"


@pytest.mark.skipif(
    not RELEASE_VAL.is_file() or not (COMMITTED_ROWS / "refiner.none.jsonl.gz").is_file(),
    reason="needs the release's val.json (../shared) and the committed rows of the pretrained benchmark",
)
def test_the_committed_rows_give_the_committed_table_with_the_tasks_scorer():
    """docs/benchmarks/pretrained.json's cells, recomputed from the committed per-row files with the MWP scorer."""
    from refiner_trl.tasks import get_task

    task = get_task("mwp")
    rows = task.load("validation", path=str(RELEASE_VAL))
    summary = json.loads((ROOT / "docs" / "benchmarks" / "pretrained.json").read_text())
    for arm in ("baseline", "refiner"):
        for run in summary["results"][arm]["runs"]:
            with gzip.open(COMMITTED_ROWS / f"{arm}.{run['name']}.jsonl.gz", "rt") as handle:
                finals = [json.loads(line)["hypotheses"][-1] for line in handle]
            assert len(finals) == len(rows) == 1000
            score = task.score(finals, rows)["equation_accuracy"]
            assert score == pytest.approx(run["by_turn"][-1]["equation_accuracy"]), (arm, run["name"])
