"""The calibrated critic: the "No error." score, the threshold with bounded false alarms, saved and applied."""

from __future__ import annotations

import math

import pytest
import torch

from refiner_trl.critics import NO_ERROR, ModelCritic
from refiner_trl.critics.calibration import Calibration, calibrate, completion_logprobs
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


def _flag_everything() -> Calibration:
    return Calibration(
        threshold=math.inf, max_false_alarm=1.0, recall=1.0, false_alarm=1.0, num_wrong=1, num_right=1, auc=0.5
    )


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_a_flagged_input_gets_feedback_with_no_error_barred_as_its_first_token(architecture, tokenizer):
    model = build_tiny_model(architecture, tokenizer, hidden_size=32, num_layers=1, seed=0)
    first = tokenizer(NO_ERROR, add_special_tokens=False)["input_ids"][0]
    head = model.get_output_embeddings()
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)  # "No error."'s first token wins
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[first] = 100.0
    model.lm_head = biased
    inputs = ["2 + 3 =\nHypothesis: 6\nFeedback:", "4 * 2 =\nHypothesis: 8\nFeedback:"]
    greedy = ModelCritic(model, tokenizer, max_new_tokens=3)
    calibrated = ModelCritic(model, tokenizer, max_new_tokens=3, calibration=_flag_everything())
    first_text = tokenizer.decode([first])
    # Greedy writes that token at each of its 3 positions; barred at the first, the calibrated critic at most twice.
    assert [text.count(first_text) for text in greedy.critique_rendered(inputs)] == [3, 3]
    seen = []  # the bar holds for the whole call: rows stay in one `generate` (its first position is the bar's)
    original = calibrated.generator.generate
    calibrated.generator.generate = lambda prompts: (
        seen.append((calibrated.generator.drop_finished, model.generation_config.begin_suppress_tokens))
        or original(prompts)
    )
    assert all(text.count(first_text) <= 2 for text in calibrated.critique_rendered(inputs))
    assert seen == [(False, [first])]
    assert model.generation_config.begin_suppress_tokens is None and calibrated.generator.drop_finished  # restored


def test_the_saved_threshold_is_applied_whenever_the_folder_is_loaded(tokenizer, tmp_path):
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    inputs = [f"{a} + {b} =\nHypothesis: {a + b}\nFeedback:" for a in range(4) for b in range(3)]
    scores = ModelCritic(str(tmp_path), max_new_tokens=3).no_error_logprobs(inputs)
    threshold = sorted(scores)[len(scores) // 2]
    calibrate_on = [s - 1.0 for s in scores] + [s + 1.0 for s in scores]  # chosen so that the threshold is the median
    calibration = calibrate(calibrate_on, [True] * len(scores) + [False] * len(scores), max_false_alarm=0.0)
    calibration.threshold = threshold
    calibration.save(tmp_path)

    critic = ModelCritic(str(tmp_path), max_new_tokens=3)
    assert critic.calibration == Calibration.load(tmp_path)
    calls = []
    original = critic.generator.generate
    critic.generator.generate = lambda prompts: calls.append(list(prompts)) or original(prompts)
    feedback = critic.critique_rendered(inputs)
    below = [i for i, s in enumerate(scores) if s < threshold]
    assert calls == [[inputs[i] for i in below]]  # only the flagged inputs are decoded
    assert [i for i, f in enumerate(feedback) if f == NO_ERROR] == [i for i, s in enumerate(scores) if s >= threshold]
    assert ModelCritic(str(tmp_path), use_calibration=False).calibration is None
