"""The calibrated critic: the "No error." score, the threshold with bounded false alarms, saved and applied."""

from __future__ import annotations

import math

import pytest
import torch

from refiner_trl.critic_calibration import Calibration, calibrate, completion_logprobs
from refiner_trl.critics import NO_ERROR
from refiner_trl.modeling import build_tiny_model, train_tokenizer

TEXTS = ["2 + 3 = 5", "No error.", "The operator in #0 is incorrect.", "Hypothesis: x Feedback:"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300)


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_the_score_is_the_models_own_log_probability_batched_or_not(architecture, tokenizer):
    model = build_tiny_model(architecture, tokenizer, hidden_size=32, num_layers=1, seed=0).eval()
    prompts = ["2 + 3 = 5\nHypothesis: x\nFeedback:", "4 * 2 =\nHypothesis: a much longer hypothesis here\nFeedback:"]
    batched = completion_logprobs(model, tokenizer, prompts, NO_ERROR, batch_size=2)
    for prompt, score in zip(prompts, batched):
        # Reference: the model's own mean cross-entropy of the completion + EOS, one unpadded row.
        completion = tokenizer(NO_ERROR, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        prompt_ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            if architecture == "causal":
                ids = torch.tensor([prompt_ids + completion])
                labels = torch.tensor([[-100] * len(prompt_ids) + completion])
                loss = model(input_ids=ids, labels=labels).loss
            else:
                loss = model(input_ids=torch.tensor([prompt_ids]), labels=torch.tensor([completion])).loss
        assert score == pytest.approx(-loss.item() * len(completion), abs=1e-4)


def test_the_threshold_keeps_false_alarms_within_the_bound():
    # Right hypotheses score high, wrong ones low, with overlap.
    right = [-0.1, -0.2, -0.3, -0.5, -0.9, -1.5, -2.0, -2.2, -3.0, -4.0]
    wrong = [-0.4, -1.0, -2.1, -2.5, -3.5, -5.0, -6.0, -7.0]
    calibration = calibrate(right + wrong, [False] * len(right) + [True] * len(wrong), max_false_alarm=0.2)
    # 20% of 10 right ones: at most 2 flagged (-4.0, -3.0), so the threshold is the third-lowest right score.
    assert calibration.threshold == -2.2
    assert calibration.false_alarm == pytest.approx(0.2)
    assert calibration.recall == pytest.approx(5 / 8)  # -2.5 ... -7.0 are below -2.2
    assert (calibration.num_right, calibration.num_wrong) == (10, 8)
    wins = sum((w < r) + 0.5 * (w == r) for w in wrong for r in right)
    assert calibration.auc == pytest.approx(wins / 80)
    thresholds = [p["threshold"] for p in calibration.curve]
    assert thresholds == sorted(thresholds) and thresholds[-1] == math.inf
    for key in ("recall", "false_alarm"):  # the curve is monotone
        values = [p[key] for p in calibration.curve]
        assert values == sorted(values) and values[-1] == 1.0


def test_a_loose_bound_flags_everything_and_one_class_alone_is_refused():
    everything = calibrate([-1.0, -2.0, -3.0], [False, True, True], max_false_alarm=1.0)
    assert everything.threshold == math.inf and everything.recall == everything.false_alarm == 1.0
    with pytest.raises(ValueError, match="both right and wrong"):
        calibrate([-1.0, -2.0], [True, True])


def test_the_calibration_is_saved_and_read_back(tmp_path):
    calibration = calibrate([-1.0, -2.0, -3.0, -4.0], [False, False, True, True], max_false_alarm=0.0)
    calibration.save(tmp_path)
    assert (tmp_path / "calibration_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert Calibration.load(tmp_path) == calibration
    assert Calibration.load(tmp_path / "nothing") is None
    (tmp_path / "calibration.json").write_text('{"threshold": 1}')
    with pytest.raises(ValueError, match=r"calibration\.json: not a critic calibration"):
        Calibration.load(tmp_path)
