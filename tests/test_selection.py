"""Errors to learn from: `hypothesis_selection="flagged"` and critic data from a generator's own samples."""

from __future__ import annotations

import pytest
from conftest import code_rows, quiet_refiner_config, tokenizer_for
from datasets import Dataset

from refiner_trl import RefinerTrainer
from refiner_trl.critics import NO_ERROR
from refiner_trl.modeling import build_tiny_model
from refiner_trl.tasks import get_task
from refiner_trl.templates import render_refine_prompt

K = 4


def parity_feedback(hypothesis: str) -> str:
    """A critic's verdict that depends on the hypothesis alone: an error in every text of even length."""
    return f"Wrong: {hypothesis}" if len(hypothesis) % 2 == 0 else NO_ERROR


class ParityCritic:
    """Flags the hypotheses of even length and records every call."""

    def __init__(self):
        self.calls: list[tuple[list[str], list[str], list[str]]] = []

    def critique(self, prompts, hypotheses, references=None):
        self.calls.append((list(prompts), list(hypotheses), list(references)))
        return [parity_feedback(h) for h in hypotheses]


class RefinePromptTrainer(RefinerTrainer):
    """Records the turn-1 prompts of every training step (the refine prompts built from the picks)."""

    def _turn_losses(self, model, turn_prompts, completions, mode, *args):
        if mode == "train":
            self.__dict__.setdefault("refine_prompts", []).append(list(turn_prompts[1]))
        return super()._turn_losses(model, turn_prompts, completions, mode, *args)


def train(tmp_path, name: str, max_steps: int = 2, resume: str | None = None, **options) -> RefinePromptTrainer:
    rows = code_rows(16, seed=0)
    tokenizer = tokenizer_for(rows)
    args = quiet_refiner_config(
        tmp_path / name,
        max_steps=max_steps,
        per_device_train_batch_size=8,
        num_hypotheses=K,
        num_refinement_turns=2,
        max_new_tokens=5,
        hypothesis_selection="flagged",
        **options,
    )
    trainer = RefinePromptTrainer(
        build_tiny_model("causal", tokenizer, seed=0),
        args,
        critic=ParityCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_flagged_critiques_all_k_and_picks_a_hypothesis_the_critic_flags(tmp_path):
    trainer = train(tmp_path, "run")
    calls, refine_prompts = trainer.critic.calls, trainer.refine_prompts
    assert len(calls) == len(refine_prompts) == 2  # one critique call per step (T - 1 = 1 explored turn)
    mixed = 0
    for (prompts, hypotheses, references), built in zip(calls, refine_prompts):
        assert len(hypotheses) == 8 * K
        for example, refine_prompt in enumerate(built):
            group = hypotheses[example * K : (example + 1) * K]
            assert prompts[example * K : (example + 1) * K] == [prompts[example * K]] * K  # prompt-major, k adjacent
            assert len(set(references[example * K : (example + 1) * K])) == 1
            flagged = [h for h in group if parity_feedback(h) != NO_ERROR]
            mixed += 0 < len(flagged) < K
            candidates = flagged or group
            x = prompts[example * K]
            assert refine_prompt in {render_refine_prompt(x, h, parity_feedback(h)) for h in candidates}
    assert mixed > 0, "no group mixed flagged and unflagged hypotheses: the test could not tell the picks apart"


def test_flagged_picks_are_seeded_and_survive_resuming(tmp_path):
    first = train(tmp_path, "a", max_steps=3, save_strategy="steps", save_steps=1)
    again = train(tmp_path, "b", max_steps=3)
    assert again.refine_prompts == first.refine_prompts
    other_seed = train(tmp_path, "c", max_steps=3, seed=1)
    assert other_seed.refine_prompts != first.refine_prompts
    resumed = train(tmp_path, "a", max_steps=3, resume=str(tmp_path / "a" / "checkpoint-1"))
    assert resumed.refine_prompts == first.refine_prompts[1:]  # steps 2 and 3, exactly as in the unbroken run


def test_flagged_is_a_documented_choice_and_others_are_refused(tmp_path):
    from refiner_trl.config import RefinerConfig

    assert '`"flagged"`' in RefinerConfig.__doc__
    with pytest.raises(ValueError, match=r"hypothesis_selection must be one of \('random', 'first', 'flagged'\)"):
        quiet_refiner_config(tmp_path, hypothesis_selection="worst")


def test_critic_data_takes_a_generators_samples_labelled_by_the_oracle():
    task = get_task("mwp")
    rows = task.synthetic(n=3, seed=0)
    golds = rows["completion"]
    wrong = golds[1]  # another problem's equation: wrong for row 0 unless it happens to be the same
    assert wrong != golds[0]
    samples = [[golds[0], wrong, wrong, golds[0] + " "], [], [golds[0]]]
    data = task.build_critic_dataset(rows, seed=0, negatives_per_example=1, generator_samples=samples)
    plain = task.build_critic_dataset(rows, seed=0, negatives_per_example=1)
    generated = data.filter(lambda row: row["source"] == "generator")
    # Row 0: the gold is not added again and a repeated sample once; row 2's sample is row 0's gold.
    assert len(data) == len(plain) + len(generated) and len(generated) == 3
    assert (
        set(plain["source"]) == {"gold", "perturbation"}
        and plain["completion"] == data.filter(lambda row: row["source"] != "generator")["completion"]
    )
    oracle = task.oracle_critic()
    expected = oracle.critique(["", "", ""], [wrong, golds[0] + " ", golds[0]], [golds[0], golds[0], golds[2]])
    assert generated["completion"] == expected
    assert expected[0] != NO_ERROR and expected[2] != NO_ERROR
    assert generated["feedback_type"] == [task.feedback_type(f) for f in expected]
    with pytest.raises(ValueError, match="generator_samples has 2 lists for 3 rows"):
        task.build_critic_dataset(rows, generator_samples=[[], []])
