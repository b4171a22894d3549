"""README.md keeps the generated RefinerConfig reference and the commands a new user runs."""

from __future__ import annotations

from pathlib import Path

from refiner_trl.config_reference import config_reference, replace_reference

README = Path(__file__).resolve().parents[1] / "README.md"


def test_config_reference_matches_the_dataclass():
    text = README.read_text()
    assert replace_reference(text) == text, "run: python -m refiner_trl.config_reference --write README.md"
    assert "`num_hypotheses`" in config_reference() and "`refine_template`" in config_reference()


def test_readme_names_the_commands_that_exist():
    text = README.read_text()
    root = README.parent
    for script in (
        "recipes/train_ms.py",
        "recipes/train_generator.py",
        "recipes/train_critic.py",
        "recipes/evaluate.py",
        "benchmarks/step_cost.py",
        "benchmarks/learning.py",
        "docs/benchmarks.md",
    ):
        assert script in text and (root / script).is_file(), script
    assert "python -m pytest -q" in text
