"""Two processes on this CPU train with DDP over gloo, each drawing its own hypothesis picks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_two_processes_train_with_ddp_and_draw_different_picks(tmp_path):
    # `accelerate launch --cpu --num_processes 2` would start one process; --multi_gpu with use_cpu=True starts two.
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        str(HERE / "ddp_train.py"), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]

    records = [json.loads((tmp_path / f"process_{i}.json").read_text()) for i in range(2)]
    assert [r["process_index"] for r in records] == [0, 1]
    assert all(r["num_processes"] == 2 and r["distributed_type"] == "DistributedType.MULTI_CPU" for r in records)
    assert all(len(r["picks"]) == 2 * 2 for r in records)  # 2 steps × 2 explored turns (T = 3)
    assert records[0]["picks"] != records[1]["picks"]
    # Logged losses are reduced across processes, so both processes log the same values: one a step, each positive.
    assert [len(r["losses"]) for r in records] == [2, 2]
    assert all(loss > 0 for loss in records[0]["losses"])
    assert records[0]["losses"] == pytest.approx(records[1]["losses"])
    # DDP reduced the gradients of every weight, so both processes hold the same weights after training.
    assert records[0]["weights"] == records[1]["weights"]
