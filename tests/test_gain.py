"""The paired gain of a critic row over the generator alone: per-row differences and their bootstrap interval."""

from __future__ import annotations

import pytest

from refiner_trl.evaluation import CriticRun, EvaluationResult
from refiner_trl.gain import format_gains, paired_gain
from refiner_trl.tasks import get_task


def test_a_hand_computed_gain_and_its_interval():
    alone = [0.0, 1.0, 0.0, 1.0, 0.5]
    refined = [1.0, 1.0, 1.0, 1.0, 0.5]  # two rows gain 1, three gain nothing
    gain = paired_gain(alone, refined)
    assert gain["mean"] == pytest.approx(0.4) and gain["rows"] == 5
    assert 0.0 <= gain["low"] <= 0.4 <= gain["high"] <= 1.0
    same = paired_gain([0.25] * 10, [0.75] * 10)  # every row gains the same: no spread
    assert (same["mean"], same["low"], same["high"]) == (0.5, 0.5, 0.5)
    assert paired_gain(alone, refined) == gain  # seeded
    with pytest.raises(ValueError, match="must be paired"):
        paired_gain([0.0], [1.0, 1.0])


def test_the_gain_table_scores_each_row_of_each_run():
    task = get_task("mwp")
    rows = task.synthetic(n=2, seed=0).to_list()
    gold = [row["completion"] for row in rows]
    alone = [gold[0], "#0: add ( number0, number0 )"]  # 1 right of 2
    oracle = gold  # 2 right of 2
    runs = [
        CriticRun("none", "generator alone", 0, [{}], examples=[{"final": z} for z in alone]),
        CriticRun("oracle", "+ oracle critic (T=3)", 3, [{}], examples=[{"final": z} for z in oracle]),
    ]
    result = EvaluationResult("mwp", ("equation_accuracy",), "equation_accuracy", 2, runs)
    table = format_gains(task, result, rows)
    assert "| + oracle critic (T=3) − generator alone | +50.0 | [+0.0, +100.0] | 2 |" in table
