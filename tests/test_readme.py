"""README.md keeps the generated RefinerConfig reference and the commands a new user runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

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
        "recipes/mwp_smollm2.yaml",
        "recipes/evaluate_mwp_smollm2.yaml",
    ):
        assert script in text and (root / script).is_file(), script
    assert "python -m pytest -q" in text
    assert "python -m refiner_trl.pretrained fetch smollm2-135m-instruct" in text


def python_blocks(text: str) -> list[str]:
    """The README's ```python blocks, in order."""
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.slow
def test_the_readmes_python_examples_run_as_written(tmp_path, smollm2_path):
    """The README's Python blocks, in order, as one script (a later block uses the names of an earlier one), run
    from a folder where the fetch command's `outputs/pretrained/smollm2-135m-instruct` is the fetched model."""
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 2 and "RefinerTrainer(" in blocks[0]
    (tmp_path / "outputs" / "pretrained").mkdir(parents=True)
    (tmp_path / "outputs" / "pretrained" / "smollm2-135m-instruct").symlink_to(smollm2_path, target_is_directory=True)
    script = tmp_path / "readme_blocks.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + "\n".join(blocks), encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"the README's Python blocks failed:\n{result.stderr[-3000:]}"
    assert (tmp_path / "out").is_dir()  # the plugin example trained in its output_dir
