"""A model is evaluated with the refine templates it was trained with: `RefinerTrainer` saves them with the model,
`recipes/evaluate.py` and the training recipes' evaluation read them back, and explicit ones override them."""

from __future__ import annotations

import json

import pytest
from conftest import load_recipe, quiet_refiner_config

from refiner_trl import RefinerTrainer, evaluation
from refiner_trl.builders import load_task_data
from refiner_trl.evaluation import evaluation_templates
from refiner_trl.modeling import build_tiny_model, train_tokenizer
from refiner_trl.script_args import CriticArguments, EvaluationArguments, ModelArguments, TaskArguments
from refiner_trl.templates import (
    REFINE_FEEDBACK_TEMPLATE,
    REFINE_TEMPLATE,
    RUN_TEMPLATES_FILE,
    load_run_templates,
)

CUSTOM = "Problem: {prompt}\nTried: {hypothesis}\nCritic: {feedback}\nAgain:"


@pytest.fixture
def trained_folder(tmp_path):
    """A tiny MWP generator trained one REFINER step with the custom refine template, saved by the trainer."""
    task, rows, _ = load_task_data(TaskArguments(task="mwp", synthetic_train_size=8))
    tokenizer = train_tokenizer(task.tokenizer_texts(rows, CUSTOM), vocab_size=400)
    model = build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0)
    args = quiet_refiner_config(
        tmp_path / "run", max_steps=1, per_device_train_batch_size=4, num_hypotheses=2, num_refinement_turns=2,
        max_new_tokens=4, refine_template=CUSTOM, chat_template_kwargs={"flag": True},
    )  # fmt: skip
    trainer = RefinerTrainer(model, args, critic=task.oracle_critic(), train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(tmp_path / "model"))
    return tmp_path / "model"


def test_the_trainer_saves_the_templates_it_trained_with(trained_folder):
    saved = json.loads((trained_folder / RUN_TEMPLATES_FILE).read_text())
    assert saved == {
        "refine_template": CUSTOM,
        "refine_feedback_template": REFINE_FEEDBACK_TEMPLATE,
        "chat_template_kwargs": {"flag": True},
    }
    assert load_run_templates(trained_folder) == saved
    assert load_run_templates(trained_folder.parent / "elsewhere") == {} == load_run_templates(None)


def test_explicit_templates_override_the_trained_ones_which_override_the_defaults(trained_folder):
    trained = load_run_templates(trained_folder)
    assert evaluation_templates(EvaluationArguments(), trained)["refine_template"] == CUSTOM
    assert evaluation_templates(EvaluationArguments(), {})["refine_template"] == REFINE_TEMPLATE
    explicit = EvaluationArguments(eval_refine_template="{prompt}|{hypothesis}|{feedback}")
    templates = evaluation_templates(explicit, trained)
    assert templates["refine_template"] == "{prompt}|{hypothesis}|{feedback}"
    assert templates["chat_template_kwargs"] == {"flag": True}


def test_a_saved_template_file_without_the_placeholders_is_refused_naming_it(tmp_path):
    (tmp_path / RUN_TEMPLATES_FILE).write_text(json.dumps({"refine_template": "{prompt} only"}))
    with pytest.raises(ValueError, match=rf"{RUN_TEMPLATES_FILE}: refine_template must use the placeholders"):
        load_run_templates(tmp_path)


@pytest.mark.parametrize("explicit", [None, "{prompt}|{hypothesis}|{feedback}"])
def test_evaluate_recipe_refines_with_the_models_own_template(trained_folder, tmp_path, monkeypatch, explicit):
    calls = []
    refine = evaluation.refine

    def recording_refine(generator, critic, prompts, **kwargs):
        calls.append(kwargs)
        return refine(generator, critic, prompts, **kwargs)

    monkeypatch.setattr(evaluation, "refine", recording_refine)
    recipe = load_recipe("evaluate")
    result = recipe.main(
        TaskArguments(task="mwp", synthetic_train_size=1, synthetic_eval_size=3),
        ModelArguments(model_name_or_path=str(trained_folder), torch_num_threads=1),
        CriticArguments(critic="oracle"),
        EvaluationArguments(eval_max_turns=1, eval_oracle_max_turns=1, eval_max_new_tokens=4,
                            eval_refine_template=explicit),
        recipe.EvaluateArguments(output_dir=str(tmp_path / "eval"), progress=False, device="cpu"),
    )  # fmt: skip
    expected = explicit or CUSTOM
    assert [call["refine_template"] for call in calls] == [expected, expected]  # generator alone, + oracle
    assert result.templates["refine_template"] == expected
    report = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert report["templates"]["refine_template"] == expected
