"""The evaluation of one learning-benchmark pipeline: the baseline and REFINER refined with no critic, the trained
critic, the oracle and the detection-only critic; the most frequent training answer; the trained critic's quality on
held-out critic data and its verdicts on REFINER's turn-0 hypotheses against the oracle's."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from learning import Settings


class Recorder:
    """Wraps a generator or critic and keeps the answer of its first call (turn 0 of `refine`).

    Args:
        inner (`Generator` or `Critic`):
            The generator or critic called.
    """

    def __init__(self, inner: Any):
        self.inner = inner
        self.first: tuple[list[str], list[str]] | None = None

    def generate(self, prompts: Sequence[str]) -> list[str]:
        texts = self.inner.generate(prompts)
        if self.first is None:
            self.first = (list(prompts), list(texts))
        return texts

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        feedback = self.inner.critique(prompts, hypotheses, references)
        if self.first is None:
            self.first = (list(hypotheses), list(feedback))
        return feedback


class DetectionCritic:
    """The trained critic's decision (error or not) with the oracle's text when both see an error.

    Where the trained critic says "no error" the answer is its own; where it names an error, the oracle's feedback
    replaces it, unless the oracle finds none (a false alarm keeps the trained critic's text). So this critic is as
    good at *finding* errors as the trained one and as good at *describing* them as the oracle.

    Args:
        trained (`Critic`):
            The trained critic.
        oracle (`Critic`):
            The task's oracle critic.
    """

    def __init__(self, trained: Any, oracle: Any):
        self.trained, self.oracle = trained, oracle

    def critique(
        self, prompts: Sequence[str], hypotheses: Sequence[str], references: Sequence[str] | None = None
    ) -> list[str]:
        from refiner_trl.critics import is_no_error

        decided = self.trained.critique(prompts, hypotheses, references)
        told = self.oracle.critique(prompts, hypotheses, references)
        return [d if is_no_error(d) or is_no_error(o) else o for d, o in zip(decided, told)]


def _verdicts_on_turn0(task: Any, critic_first: Any, oracle_first: Any) -> dict[str, float]:
    """How the trained critic's verdicts on REFINER's turn-0 hypotheses compare with the oracle's."""
    from refiner_trl.critics import is_no_error

    if critic_first is None or oracle_first is None:
        return {}
    critic_hyps, critic_feedback = critic_first
    oracle_hyps, oracle_feedback = oracle_first
    if critic_hyps != oracle_hyps:  # both should have read the same z_0; refuse to compare otherwise
        return {}
    wrong = [not is_no_error(f) for f in oracle_feedback]
    flagged = [not is_no_error(f) for f in critic_feedback]
    n_wrong, n_right = sum(wrong), len(wrong) - sum(wrong)
    both = [i for i in range(len(wrong)) if wrong[i] and flagged[i]]
    return {
        "num": len(wrong),
        "oracle_error_rate": n_wrong / len(wrong) if wrong else float("nan"),
        "critic_flag_rate": sum(flagged) / len(flagged) if flagged else float("nan"),
        # recall: of the hypotheses the oracle finds wrong, the share the trained critic flags
        "detection_recall": sum(f for f, w in zip(flagged, wrong) if w) / n_wrong if n_wrong else float("nan"),
        # false alarms: of the hypotheses the oracle accepts, the share the trained critic flags
        "false_alarm_rate": sum(f for f, w in zip(flagged, wrong) if not w) / n_right if n_right else float("nan"),
        "detection_precision": sum(wrong[i] for i in range(len(wrong)) if flagged[i]) / sum(flagged)
        if sum(flagged)
        else float("nan"),
        # of the hypotheses both find wrong, the share where the trained critic names the oracle's error type
        "type_agreement": sum(
            task.feedback_type(critic_feedback[i]) == task.feedback_type(oracle_feedback[i]) for i in both
        )
        / len(both)
        if both
        else float("nan"),
    }


def majority_scores(task: Any, train: Any, evaluation: Any) -> dict[str, Any]:
    """The score of answering every evaluation row with the most frequent training completion (no model).

    Args:
        task (`Task`):
            The task (its `score`).
        train (`Dataset`):
            The training rows.
        evaluation (`Dataset`):
            The evaluation rows.
    """
    answer = Counter(train["completion"]).most_common(1)[0][0]
    return {"final": task.score([answer] * len(evaluation), evaluation), "answer": answer}


def evaluate(
    task: Any,
    models: dict[str, Any],
    tokenizer: Any,
    train: Any,
    evaluation: Any,
    critic_heldout: Any,
    settings: Settings,
    max_new_tokens: int,
) -> dict[str, Any]:
    """Every row of the results on the evaluation rows, the trained critic's quality on held-out critic data, and its
    verdicts on REFINER's turn-0 hypotheses against the oracle's.

    Args:
        task (`Task`):
            The task.
        models (`dict`):
            The trained `baseline`, `refiner` and `critic` ([`train_models`]).
        tokenizer (`PreTrainedTokenizerBase`):
            Their tokenizer.
        train (`Dataset`):
            The training rows (for the most-frequent-answer row).
        evaluation (`Dataset`):
            The evaluation rows.
        critic_heldout (`Dataset`):
            Held-out critic rows (`evaluate_critic`).
        settings (`Settings`):
            The sizes (`eval_turns`, lengths).
        max_new_tokens (`int`):
            The generators' length.

    Returns:
        The record's `results`, `critic_heldout`, `critic_on_refiner_turn0` and `examples_trained_critic`.
    """
    from refiner_trl import ModelCritic, ModelGenerator
    from refiner_trl.critic_eval import evaluate_critic
    from refiner_trl.evaluation import evaluate_refinement

    def model_generator(model: Any) -> ModelGenerator:
        return ModelGenerator(
            model.eval(),
            tokenizer,
            max_prompt_length=settings.max_prompt_length,
            max_new_tokens=max_new_tokens,
            batch_size=64,
        )

    trained_critic = ModelCritic(
        models["critic"].eval(),
        tokenizer,
        max_prompt_length=settings.max_prompt_length,
        max_new_tokens=settings.critic_max_new_tokens,
        batch_size=64,
    )
    oracle = task.oracle_critic()
    recorded_trained, recorded_oracle = Recorder(trained_critic), Recorder(oracle)
    turns = settings.eval_turns
    baseline_result = evaluate_refinement(
        task, model_generator(models["baseline"]), evaluation, {"none": None, "oracle": oracle}, max_turns=turns,
        progress=False,
    )  # fmt: skip
    critics = {
        "none": None,
        "trained": recorded_trained,
        "oracle": recorded_oracle,
        "detect": DetectionCritic(trained_critic, oracle),
    }
    refiner_result = evaluate_refinement(
        task, model_generator(models["refiner"]), evaluation, critics, max_turns=turns, progress=False
    )
    critic_quality = evaluate_critic(trained_critic, task, critic_heldout)

    def run_of(result: Any, name: str) -> dict[str, Any]:
        run = next(r for r in result.runs if r.name == name)
        return {"final": run.final, "by_turn": run.by_turn, "refine": run.refine}

    return {
        "results": {
            "majority": majority_scores(task, train, evaluation),
            "baseline": run_of(baseline_result, "none"),
            "baseline_oracle": run_of(baseline_result, "oracle"),
            "refiner_alone": run_of(refiner_result, "none"),
            "refiner_trained": run_of(refiner_result, "trained"),
            "refiner_oracle": run_of(refiner_result, "oracle"),
            "refiner_detect": run_of(refiner_result, "detect"),
        },
        "critic_heldout": {k: v for k, v in critic_quality.items() if k != "predictions"},
        "critic_on_refiner_turn0": _verdicts_on_turn0(task, recorded_trained.first, recorded_oracle.first),
        "examples_trained_critic": next(r for r in refiner_result.runs if r.name == "trained").examples[:3],
    }
