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


# TODO(lead): the lead rewrites the pretrained benchmark as a driver over the recipes, and these two tests with it
# (`benchmarks/_common.py`, `_machine.py` and `_measurements.py`, which its files import, are gone).
@pytest.mark.skip(reason="TODO(lead): benchmarks/pretrained*.py is being rebuilt over the recipes")
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


@pytest.mark.skip(reason="TODO(lead): benchmarks/pretrained*.py is being rebuilt over the recipes")
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
