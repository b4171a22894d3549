"""A critic whose false alarms are bounded: score the "No error." answer, flag an error only when it is unlikely.

A critic trained on data where most hypotheses are wrong learns that prior and, decoding greedily, flags almost every
hypothesis. Its log-probability of [`NO_ERROR`] still ranks right hypotheses above wrong ones, so a threshold on it,
chosen on held-out generator samples, turns it into a critic whose false-alarm rate is known. [`calibrate`] picks the
threshold, [`Calibration`] is saved next to the critic (`calibration.json`, with the recall / false-alarm curve and
its plot) and [`~refiner_trl.critics.ModelCritic`] applies it whenever it loads that folder.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..report import write_json

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CALIBRATION_FILE = "calibration.json"
"""The file a calibrated critic's folder holds; [`~refiner_trl.critics.ModelCritic`] reads it."""


def completion_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completion: str,
    max_prompt_length: int | None = None,
    batch_size: int = 32,
) -> list[float]:
    """The log-probability of one `completion` (then EOS) after each prompt, as the critic was trained to write it.

    The rows are encoded as in training ([`~refiner_trl.data.encode_prompt_completion`]: prompt, completion tokenized
    alone, EOS) and scored by the loss engine ([`~refiner_trl.losses.completion_loss_sums`]: logits at the completion
    positions only). One forward per `batch_size` prompts, no gradient.

    Args:
        model (`PreTrainedModel`):
            A seq2seq or causal language model.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        prompts (`Sequence[str]`):
            The critic inputs, rendered.
        completion (`str`):
            The answer to score, e.g. [`NO_ERROR`].
        max_prompt_length (`int`, *optional*):
            Longer prompts keep their end.
        batch_size (`int`, *optional*, defaults to `32`):
            Prompts per forward.
    """
    import torch

    from ..data import encode_prompt_completion
    from ..losses import completion_loss_sums
    from ..modeling import is_encoder_decoder

    encoder_decoder = is_encoder_decoder(model)
    scores: list[float] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        # The loss engine's own encoding: causal rows left-padded, so that only the completion's logits are computed.
        batch, _ = encode_prompt_completion(
            tokenizer,
            chunk,
            [completion] * len(chunk),
            max_prompt_length,
            None,
            encoder_decoder,
            left_pad=not encoder_decoder,
        )
        with torch.no_grad():
            losses = completion_loss_sums(model, {key: value.to(model.device) for key, value in batch.items()})
        scores.extend((-losses).tolist())
    return scores


@dataclass
class Calibration:
    """The "No error." threshold of a critic and how it was chosen.

    A hypothesis is flagged as wrong when the critic's log-probability of [`NO_ERROR`] is below `threshold`.

    Args:
        threshold (`float`):
            The log-probability below which an error is reported (`inf`: always).
        max_false_alarm (`float`):
            The bound on false alarms the threshold was chosen for.
        recall (`float`):
            Share of the held-out wrong hypotheses flagged at `threshold`.
        false_alarm (`float`):
            Share of the held-out right hypotheses flagged at `threshold`.
        num_wrong (`int`), num_right (`int`):
            Held-out hypotheses of each kind.
        auc (`float`):
            Probability that a wrong hypothesis scores below a right one (ties count half).
        curve (`list[dict]`):
            `{"threshold", "recall", "false_alarm"}` at every distinct score, thresholds increasing.
    """

    threshold: float
    max_false_alarm: float
    recall: float
    false_alarm: float
    num_wrong: int
    num_right: int
    auc: float
    curve: list[dict[str, float]] = field(default_factory=list)

    def save(self, folder: str | Path) -> Path:
        """Write `calibration.json` into `folder` (atomically) and the curve's plot beside it."""
        path = write_json(Path(folder) / CALIBRATION_FILE, asdict(self))
        plot_curve(self, Path(folder) / "calibration_curve.png")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> Calibration | None:
        """The calibration saved in `folder`, or `None` when it has none."""
        path = Path(folder) / CALIBRATION_FILE
        if not path.is_file():
            return None
        values = json.loads(path.read_text(encoding="utf-8"))
        infinite = lambda value: math.inf if value is None else float(value)  # noqa: E731 (JSON writes inf as null)
        try:
            values["threshold"] = infinite(values["threshold"])
            values["curve"] = [{**point, "threshold": infinite(point["threshold"])} for point in values["curve"]]
            return cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a critic calibration ({error})") from None


def calibrate(scores: Sequence[float], is_wrong: Sequence[bool], max_false_alarm: float = 0.2) -> Calibration:
    """Choose the highest threshold whose false alarms on the right hypotheses stay within `max_false_alarm`.

    Args:
        scores (`Sequence[float]`):
            The critic's log-probability of [`NO_ERROR`] for each held-out hypothesis.
        is_wrong (`Sequence[bool]`):
            Whether each hypothesis is wrong (the oracle's verdict).
        max_false_alarm (`float`, *optional*, defaults to `0.2`):
            The bound on the share of right hypotheses flagged.
    """
    if len(scores) != len(is_wrong):
        raise ValueError(f"{len(scores)} scores for {len(is_wrong)} verdicts")
    if not 0.0 <= max_false_alarm <= 1.0:
        raise ValueError(f"max_false_alarm must be in [0, 1], got {max_false_alarm}")
    wrong = sorted(s for s, w in zip(scores, is_wrong) if w)
    right = sorted(s for s, w in zip(scores, is_wrong) if not w)
    if not wrong or not right:
        raise ValueError(
            f"calibration needs both right and wrong hypotheses; got {len(right)} right and {len(wrong)} wrong"
        )
    curve = [
        {"threshold": t, "recall": _below(wrong, t), "false_alarm": _below(right, t)}
        for t in sorted(set(scores)) + [math.inf]
    ]
    best = max((point for point in curve if point["false_alarm"] <= max_false_alarm), key=lambda p: p["threshold"])
    return Calibration(
        threshold=best["threshold"],
        max_false_alarm=max_false_alarm,
        recall=best["recall"],
        false_alarm=best["false_alarm"],
        num_wrong=len(wrong),
        num_right=len(right),
        auc=_auc(wrong, right),
        curve=curve,
    )


def _below(sorted_scores: list[float], threshold: float) -> float:
    from bisect import bisect_left

    return bisect_left(sorted_scores, threshold) / len(sorted_scores)


def _auc(wrong: list[float], right: list[float]) -> float:
    from bisect import bisect_left, bisect_right

    wins = sum(
        len(right) - bisect_right(right, w) + 0.5 * (bisect_right(right, w) - bisect_left(right, w)) for w in wrong
    )
    return wins / (len(wrong) * len(right))


def plot_curve(calibration: Calibration, path: str | Path) -> Path:
    """Plot recall against false alarms over all thresholds, with the chosen operating point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(4.5, 4))
    axis.plot([p["false_alarm"] for p in calibration.curve], [p["recall"] for p in calibration.curve], lw=1.5)
    axis.plot([0, 1], [0, 1], ls=":", color="grey", lw=1)
    axis.scatter([calibration.false_alarm], [calibration.recall], color="crimson", zorder=3)
    axis.axvline(calibration.max_false_alarm, ls="--", color="crimson", lw=0.8)
    axis.set_xlabel("false alarms (right hypotheses flagged)")
    axis.set_ylabel("recall (wrong hypotheses flagged)")
    axis.set_title(f"critic calibration: AUC {calibration.auc:.2f}, {calibration.num_wrong}+{calibration.num_right}")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def calibration_summary(calibration: Calibration) -> dict[str, Any]:
    """The calibration without its curve, for reports."""
    return {key: value for key, value in asdict(calibration).items() if key != "curve"}
