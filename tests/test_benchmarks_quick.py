"""The benchmarks' `--quick` modes run end to end, so that the scripts cannot rot; their outputs exist and parse."""

from __future__ import annotations

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


def run_quick(script: str, output_dir: Path) -> subprocess.CompletedProcess:
    """Run `benchmarks/<script> --quick` with one torch thread (the CPU is shared) and synthetic data only."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / script),
        "--quick",
        "--threads",
        "1",
        "--data-dir",
        "none",
        "--output-dir",
        str(output_dir),
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def numbers(value: Any) -> list[float]:
    """Every number in a JSON value (booleans excluded)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, dict):
        return [n for item in value.values() for n in numbers(item)]
    if isinstance(value, list):
        return [n for item in value for n in numbers(item)]
    return []


def check_outputs(output_dir: Path, name: str) -> dict[str, Any]:
    data = json.loads((output_dir / f"{name}.json").read_text(encoding="utf-8"))
    assert (output_dir / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    markdown = (output_dir / f"{name}.md").read_text(encoding="utf-8")
    assert markdown.startswith("# ") and "|---" in markdown.replace(":---", "---")
    assert data["quick"] is True and data["machine"]["nproc"] >= 1
    return data


@pytest.mark.slow
def test_learning_quick(tmp_path):
    result = run_quick("learning.py", tmp_path)
    data = check_outputs(tmp_path, "learning")
    assert "REFINER + trained critic" in result.stdout
    pipelines = data["pipelines"]
    assert {(p["task"], p["architecture"]) for p in pipelines} == {
        (task, arch) for task in ("mwp", "snlr") for arch in ("seq2seq", "causal")
    }
    for pipeline in pipelines:
        assert pipeline["data"] == "synthetic"
        for row in ("baseline", "refiner_alone", "refiner_trained", "refiner_oracle", "refiner_detect"):
            value = pipeline["results"][row]["final"][pipeline["primary_metric"]]
            assert isinstance(value, float) and 0.0 <= value <= 1.0
        assert pipeline["steps"]["baseline_total"] == pipeline["steps"]["refiner_total"]
        assert all(math.isfinite(n) for n in numbers(pipeline["seconds"]))
    assert len(data["summary"]) == 4


@pytest.mark.slow
def test_step_cost_quick(tmp_path):
    run_quick("step_cost.py", tmp_path)
    data = check_outputs(tmp_path, "step_cost")
    for architecture in ("seq2seq", "causal"):
        entry = data["results"][architecture]
        assert entry["grid"], architecture
        for cell in entry["grid"]:
            assert cell["measured_steps"] >= 1
            assert all(math.isfinite(cell[name]) for name in ("step", "generate", "forward", "backward", "optimizer"))
            assert cell["step"] > 0 and cell["overhead"] >= 0.5
            if cell["turns"] == 1:  # the only turn is the last: nothing is sampled or critiqued by default
                assert cell["generate"] == 0.0 and cell["critique"] == 0.0
        comparison = entry["comparison"]
        assert comparison["refiner_over_supervised"] > 0 and comparison["per_example_over_refiner"] > 0
        assert comparison["explore_last_turn"]["generate"] > 0 and comparison["refiner"]["generate"] > 0
        inference = entry["inference"]
        # Early stopping never generates more than running all turns.
        work = inference["function_generator"]
        assert work["early_stopping"]["prompts_generated"] <= work["all_turns"]["prompts_generated"]
        assert (
            inference["model_generator"]["early_stopping"]["prompts_generated"]
            <= (inference["model_generator"]["all_turns"]["prompts_generated"])
        )


@pytest.mark.slow
def test_pretrained_benchmark_quick_trains_every_arm_resumes_and_evaluates_again(tmp_path):
    """`benchmarks/pretrained.py --quick` (a tiny model in place of SmolLM2): every phase, then `--resume` trains
    nothing, and `--evaluate-only` evaluates the saved models again on fewer rows."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    base = [sys.executable, str(ROOT / "benchmarks" / "pretrained.py"), "--quick", "--threads", "1"]
    base += ["--output-dir", str(tmp_path), "--train-file", "none", "--eval-file", "none"]
    arms = ["--arms", "refiner", "refiner_flagged", "--critics", "critic", "critic_samples"]

    def run(*extra: str) -> str:
        result = subprocess.run([*base, *extra], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        return result.stdout

    first = run(*arms)
    data = check_outputs(tmp_path, "pretrained")
    evaluations = data["evaluations"]["0"]
    assert set(evaluations) == {"baseline-4-2", "refiner", "refiner_flagged"}
    assert set(evaluations["refiner"]["runs"]) == {"none", "oracle", "trained", "trained_samples", "decision_only"}
    assert set(evaluations["baseline-4-2"]["runs"]) == {"none", "oracle", "trained", "trained_samples"}
    assert set(evaluations["refiner"]["critic_on_turn0"]) == {"critic", "critic_samples"}
    for record in evaluations.values():
        for run_record in record["runs"].values():
            low, high = run_record["interval"]
            assert len(run_record["correct"]) == data["num_eval"] == 8
            assert 0 <= low <= run_record["final"] <= high <= 1
    critic_samples = json.loads((tmp_path / "seed-0" / "critic_samples" / "done.json").read_text())
    assert (
        critic_samples["sources"]["generator"] > 0
        and "generator" not in json.loads((tmp_path / "seed-0" / "critic" / "done.json").read_text())["sources"]
    )
    assert "already done" not in first

    again = run(*arms, "--resume")
    assert all(f"seed 0: {phase} already done" in again for phase in ("refiner", "refiner_flagged", "critic"))
    assert all(f"seed 0: {arm} already evaluated" in again for arm in evaluations)
    again_data = json.loads((tmp_path / "pretrained.json").read_text())
    assert (
        again_data["evaluations"]["0"]["refiner"]["runs"]["none"]["correct"]
        == evaluations["refiner"]["runs"]["none"]["correct"]
    )

    run(*arms, "--evaluate-only", "--max-eval", "4")
    assert json.loads((tmp_path / "pretrained.json").read_text())["num_eval"] == 4


def test_pretrained_report_targets_are_paired_differences_against_the_arms_own_baseline(monkeypatch):
    """The targets table compares each REFINER arm with the baseline of its own warm start, row by row."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import pretrained_report

    def run(correct):
        return {"correct": correct}

    baseline = {"runs": {"none": run([0, 0, 1, 0]), "oracle": run([0, 1, 1, 0])}, "warm_steps": 6}
    other_baseline = {"runs": {"none": run([1, 1, 1, 1]), "oracle": run([1, 1, 1, 1])}, "warm_steps": 2}
    refiner = {
        "runs": {"none": run([0, 0, 1, 0]), "oracle": run([1, 1, 1, 0]), "decision_only": run([1, 0, 1, 0])},
        "warm_steps": 6,
    }
    data = {"evaluations": {"0": {"baseline-6-4": baseline, "baseline-2-8": other_baseline, "refiner": refiner}}}
    rows = {row[2]: row for row in pretrained_report.target_rows(data, rounds=200)}
    assert set(rows) == {
        "+ oracle - baseline-6-4 alone",
        "+ oracle - baseline-6-4 + oracle",
        "+ oracle - + decision_only",
    }
    assert rows["+ oracle - baseline-6-4 alone"][4:] == ["+50.0", rows["+ oracle - baseline-6-4 alone"][5], "yes"]
    assert (
        rows["+ oracle - baseline-6-4 + oracle"][4] == "+25.0" and rows["+ oracle - baseline-6-4 + oracle"][6] == "yes"
    )
    assert rows["+ oracle - + decision_only"][3] == "–" and rows["+ oracle - + decision_only"][4] == "+25.0"
    low, high = rows["+ oracle - baseline-6-4 alone"][5].strip("[]").split(", ")
    assert float(low) <= 50.0 <= float(high)
    refiner["warm_steps"] = 3  # no baseline from that warm start: no rows, rather than a comparison with another one
    assert pretrained_report.target_rows(data, rounds=200) == []
