"""The model card saved with a REFINER model: TRL's card (name, paper, citation, tags) with the base model, the data
and the critic, written offline and read back. (The recipe's card is checked after a recipe run in
test_refinement_logs.py.)"""

from __future__ import annotations

from conftest import quiet_refiner_config, reveal_feedback
from datasets import Dataset
from huggingface_hub import ModelCard

from refiner_trl import CallableCritic, RefinerTrainer
from refiner_trl.model_card import is_hub_id, save_model_card


def trainer_for(tiny, tmp_path):
    model, tokenizer, rows = tiny
    args = quiet_refiner_config(tmp_path / "refiner-out", max_steps=1, per_device_train_batch_size=4, max_new_tokens=4)
    critic = CallableCritic(lambda p, hypotheses, refs: [reveal_feedback(h, r) for h, r in zip(hypotheses, refs)])
    trainer = RefinerTrainer(
        model, args, critic=critic, train_dataset=Dataset.from_list(rows), processing_class=tokenizer
    )
    trainer.train()
    return trainer


def test_the_card_names_refiner_its_citation_the_base_model_the_data_and_the_critic(tiny, tmp_path):
    trainer = trainer_for(tiny, tmp_path)
    path = save_model_card(trainer, "tiny seq2seq model", "moral_stories", "oracle", synthetic_seed=3)
    assert path == tmp_path / "refiner-out" / "README.md"
    card = ModelCard.load(path)
    text = card.text
    assert "# Model Card for refiner-out" in text
    assert "trained with REFINER" in text and "huggingface.co/papers/2304.01904" in text
    assert "@inproceedings{paul2024refiner" in text  # the REFINER citation, then TRL's
    assert "vonwerra2020trl" in text
    assert "| base model | `tiny seq2seq model` |" in text
    assert "| training data | `synthetic moral_stories rows (seed 3)` |" in text
    assert "| critic | the task's oracle" in text
    assert "| turns T (`num_refinement_turns`) | 3 |" in text and "| steps | 1 |" in text
    assert "[None]" not in text  # TRL's sentence for a Hub base model is replaced
    assert "## Quick start" in text and f'ModelGenerator("{tmp_path / "refiner-out"}"' in text  # REFINER's, ...
    assert "pipeline(" not in text  # ... not TRL's chat pipeline
    assert {"trl", "refiner", "moral_stories", "refiner-trl"} <= set(card.data.tags)
    assert card.data.base_model is None


def test_hub_names_are_linked_and_become_the_base_model(tiny, tmp_path):
    trainer = trainer_for(tiny, tmp_path)
    model_id, dataset_id = "HuggingFaceTB/SmolLM2-135M-Instruct", "demelin/moral_stories"
    critic = tmp_path / "critic-ms"  # a critic folder: local, so named as it is
    critic.mkdir()
    path = save_model_card(trainer, model_id, "moral_stories", str(critic), dataset=dataset_id)
    card = ModelCard.load(path)
    assert card.data.base_model == model_id and card.data.datasets == dataset_id
    assert f"[{model_id}](https://huggingface.co/{model_id})" in card.text
    assert f"[{dataset_id}](https://huggingface.co/datasets/{dataset_id})" in card.text
    assert f"| critic | `{critic}` |" in card.text


def test_hub_ids_are_not_local_paths(tmp_path):
    assert is_hub_id("demelin/moral_stories") and not is_hub_id("tiny seq2seq model") and not is_hub_id(None)
    (tmp_path / "owner").mkdir()
    (tmp_path / "owner" / "model").mkdir()
    assert not is_hub_id(str(tmp_path / "owner" / "model")) and not is_hub_id("../data/train.json")
