"""The recipes in `recipes/`: every YAML file parses with its recipe, misspelt keys fail by name, the CLI overrides the
YAML file, and every tiny recipe trains, saves, evaluates and prints the table (as a subprocess, for a few steps)."""

from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
import torch
import yaml
from conftest import load_recipe, parse_refiner_args
from trl import TrlParser

from refiner_trl.builders import load_model, load_task_data
from refiner_trl.recipe_parser import parse_recipe_args, read_config

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes"
YAML_FILES = sorted(RECIPES.rglob("*.yaml"))
TINY_REFINER = {"train_ms.py": "ms_tiny.yaml", "train_mwp.py": "mwp_tiny.yaml", "train_snlr.py": "snlr_tiny.yaml"}
PREFIX_RECIPES = {"generator": "train_generator.py", "critic": "train_critic.py", "evaluate": "evaluate.py"}
# A few steps on a few rows: enough to go through training, saving and the evaluation table.
FEW_STEPS = ["--max_steps", "2", "--synthetic_train_size", "32", "--max_eval_samples", "6", "--logging_steps", "1"]


def recipe_of(path: Path) -> Path:
    """The script a YAML file is for: the one of the commented command that runs this file, else by name prefix."""
    this = f"--config recipes/{path.relative_to(RECIPES).as_posix()}"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and (match := re.search(r"recipes/(\w+\.py) +" + re.escape(this) + r"\b", line)):
            return RECIPES / match.group(1)
    prefix = path.stem.split("_")[0]
    return RECIPES / PREFIX_RECIPES.get(prefix, f"train_{prefix}.py")


class Parsed(Exception):
    """Raised in place of training, carrying what the recipe's parser returned."""


def parse_with_recipe(script: Path, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple:
    """Run `script` as `__main__` with `argv` and stop it right after `TrlParser.parse_args_and_config`."""
    original = TrlParser.parse_args_and_config

    def parse_then_stop(self, *args, **kwargs):
        raise Parsed(original(self, *args, **kwargs))

    monkeypatch.setattr(TrlParser, "parse_args_and_config", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(script), *argv])
    monkeypatch.syspath_prepend(str(RECIPES))  # as when the script runs: train_ms.py imports train_refiner
    with pytest.raises(Parsed) as stopped:
        runpy.run_path(str(script), run_name="__main__")
    return stopped.value.args[0]


def as_plain(value):
    return value.value if isinstance(value, Enum) else value


def test_the_recipes_have_yaml_files():
    names = {path.name for path in YAML_FILES}
    assert {"ms_tiny.yaml", "mwp_tiny.yaml", "snlr_tiny.yaml", "ms.yaml", "mwp.yaml", "snlr.yaml"} <= names
    assert any(name.startswith("generator_") for name in names)


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(RECIPES)))
def test_every_yaml_file_parses_with_its_recipe(path, monkeypatch):
    script = recipe_of(path)
    assert script.is_file(), (
        f"{path.name}: no recipe {script.name} (name it in a leading `# ... recipes/x.py` comment)"
    )
    config = read_config(str(path))
    argv = ["--config", str(path)]
    if (config.get("bf16") or config.get("fp16")) and not torch.cuda.is_available():
        argv += ["--use_cpu", "true"]  # GPU recipes: TrainingArguments refuses bf16 on a CPU-only machine otherwise
    parsed = parse_with_recipe(script, argv, monkeypatch)

    # Every key of the file reached a dataclass with the file's value.
    for key, raw in config.items():
        if key == "env" or not isinstance(raw, (bool, int, float, str)):
            continue
        owners = [obj for obj in parsed if hasattr(obj, key)]
        assert owners, f"{path.name}: {key!r} reached no dataclass"
        value = as_plain(getattr(owners[-1], key))
        if isinstance(value, float) and not isinstance(raw, bool):
            assert value == pytest.approx(float(raw)), key
        elif isinstance(value, (bool, int, str)):
            assert value == raw, key


@pytest.mark.parametrize("path", [p for p in YAML_FILES if recipe_of(p).name in {*TINY_REFINER, "train_generator.py"}])
def test_yaml_files_of_these_recipes_name_their_command(path):
    """The recipes' YAML files say how to run them, and the command names the file itself."""
    head = "\n".join(line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("#"))
    assert f"--config recipes/{path.relative_to(RECIPES).as_posix()}" in head, path.name


def test_misspelt_yaml_key_fails_naming_it_the_file_and_the_fix(tmp_path, monkeypatch):
    text = (RECIPES / "ms_tiny.yaml").read_text(encoding="utf-8")
    assert re.search(r"^learning_rate:", text, flags=re.M)
    bad = tmp_path / "bad.yaml"
    bad.write_text(re.sub(r"^learning_rate:", "learnig_rate:", text, flags=re.M), encoding="utf-8")
    message = rf"unknown key 'learnig_rate' in {re.escape(str(bad))} \(did you mean 'learning_rate'\?\)"
    with pytest.raises(ValueError, match=message):
        parse_refiner_args("moral_stories", ["--config", str(bad)])
    # The recipe itself stops there, before loading anything.
    monkeypatch.setattr(sys, "argv", [str(RECIPES / "train_ms.py"), "--config", str(bad)])
    monkeypatch.syspath_prepend(str(RECIPES))
    with pytest.raises(ValueError, match=message):
        runpy.run_path(str(RECIPES / "train_ms.py"), run_name="__main__")


def test_key_with_no_close_match_is_named_without_a_guess(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tiny_architecture: seq2seq\nzzzz_qqqq: 3\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown key 'zzzz_qqqq' in .*bad\.yaml$"):
        parse_refiner_args("moral_stories", ["--config", str(bad)])


def test_a_key_set_twice_is_refused_naming_the_key_and_both_lines(tmp_path):
    import yaml

    bad = tmp_path / "bad.yaml"
    bad.write_text("tiny_architecture: seq2seq\n# a comment\nmax_steps: 5\nlearning_rate: 1.0\nmax_steps: 7\n")
    with pytest.raises(yaml.YAMLError, match=r"key 'max_steps' is set twice, on lines 3 and 5") as error:
        parse_refiner_args("moral_stories", ["--config", str(bad)])
    assert str(bad) in str(error.value)  # and the file
    nested = tmp_path / "nested.yaml"  # a key twice inside a nested mapping too; the same key in two mappings is fine
    nested.write_text("model_init_kwargs:\n  dtype: float32\n  dtype: bfloat16\n")
    with pytest.raises(yaml.YAMLError, match=r"key 'dtype' is set twice, on lines 2 and 3"):
        read_config(str(nested))
    fine = tmp_path / "fine.yaml"
    fine.write_text("a: {x: 1}\nb: {x: 2}\n")
    assert read_config(str(fine)) == {"a": {"x": 1}, "b": {"x": 2}}


def test_misspelt_or_abbreviated_command_line_option_fails_naming_it():
    config = ["--config", str(RECIPES / "ms_tiny.yaml")]
    with pytest.raises(ValueError, match=r"unknown option '--learnig_rate' \(did you mean '--learning_rate'\?\)"):
        parse_refiner_args("moral_stories", [*config, "--learnig_rate", "1e-4"])
    # argparse alone would take a prefix for the whole option name.
    with pytest.raises(ValueError, match=r"unknown option '--learning_rat'"):
        parse_refiner_args("moral_stories", [*config, "--learning_rat", "1e-4"])


def test_command_line_overrides_the_yaml_file():
    path = RECIPES / "ms_tiny.yaml"
    config = read_config(str(path))
    task, model, critic, recipe, args = parse_refiner_args("moral_stories", ["--config", str(path)])
    assert args.learning_rate == pytest.approx(float(config["learning_rate"]))
    assert args.max_steps == config["max_steps"] and args.num_hypotheses == config["num_hypotheses"]

    overrides = ["--learning_rate", "1.5e-4", "--max_steps", "7", "--no_evaluate_after_training"]
    task, model, critic, recipe, args = parse_refiner_args("moral_stories", ["--config", str(path), *overrides])
    assert args.learning_rate == pytest.approx(1.5e-4) and args.max_steps == 7
    assert recipe.evaluate_after_training is False
    assert args.num_hypotheses == config["num_hypotheses"]  # not overridden: the file's value
    assert (task.task, model.tiny_architecture) == ("moral_stories", config["tiny_architecture"])


def test_model_on_the_command_line_replaces_the_yaml_files_tiny_model():
    path = RECIPES / "ms_tiny.yaml"
    with pytest.warns(UserWarning, match=r"model_name_or_path \(outputs/g\) replaces tiny_architecture \(seq2seq\)"):
        _, model, *_ = parse_refiner_args(
            "moral_stories", ["--config", str(path), "--model_name_or_path", "outputs/g"]
        )
    assert (model.model_name_or_path, model.tiny_architecture) == ("outputs/g", None)


def test_recipe_refuses_another_task():
    with pytest.raises(ValueError, match=r"trains the 'moral_stories' task, but the arguments set task: 'mwp'"):
        parse_refiner_args("moral_stories", ["--config", str(RECIPES / "mwp_tiny.yaml")])
    with pytest.raises(ValueError, match=r"task: 'snlr'"):
        parse_refiner_args("mwp", ["--config", str(RECIPES / "mwp_tiny.yaml"), "--task", "snlr"])
    task, *_ = parse_refiner_args("mwp", ["--config", str(RECIPES / "mwp_tiny.yaml")])
    assert task.task == "mwp"


def test_the_synthetic_seed_is_not_the_samplers_data_seed(monkeypatch):
    config = ["--config", "recipes/critic_mwp_tiny.yaml"]
    task, *_, training = parse_with_recipe(
        RECIPES / "train_critic.py", [*config, "--synthetic_seed", "5"], monkeypatch
    )
    assert (task.synthetic_seed, training.data_seed) == (5, None)
    task, *_, training = parse_with_recipe(RECIPES / "train_critic.py", [*config, "--data_seed", "7"], monkeypatch)
    assert (task.synthetic_seed, training.data_seed) == (0, 7)


def test_parse_recipe_args_without_config_uses_the_command_line_only():
    task, model, _, _, args = parse_recipe_args(
        load_recipe("train_generator").GENERATOR_ARGUMENTS,
        ["--task", "snlr", "--tiny_architecture", "causal", "--output_dir", "x"],
    )
    assert (task.task, model.tiny_architecture, args.output_dir) == ("snlr", "causal", "x")


# ------------------------------------------------------------------------------------------- runs (subprocess)


def run_recipe(script: str, yaml_file: str, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, f"recipes/{script}", "--config", f"recipes/{yaml_file}", *FEW_STEPS]
    command += ["--output_dir", str(output_dir), *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def assert_report(result: subprocess.CompletedProcess, output_dir: Path) -> dict:
    """The table was printed last, and the report files were written."""
    tail = result.stdout[result.stdout.rindex("| generator alone |") - 400 :]
    assert re.search(r"^\| generator alone \|", tail, flags=re.M)
    assert re.search(r"^\| \+ oracle critic \(T=\d\) \|", tail, flags=re.M)
    for name in ("results.md", "results.json", "metric_by_turn.png", "config.json"):
        assert (output_dir / name).is_file(), name
    report = json.loads((output_dir / "results.json").read_text(encoding="utf-8"))
    assert [run["label"] for run in report["runs"]][0] == "generator alone"
    assert report["num_examples"] == 6
    return report


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(TINY_REFINER))
def test_tiny_refiner_recipe_trains_saves_and_prints_the_table(script, tmp_path):
    result = run_recipe(script, TINY_REFINER[script], tmp_path / "out")
    report = assert_report(result, tmp_path / "out")
    assert report["task"] == {"train_ms.py": "moral_stories", "train_mwp.py": "mwp", "train_snlr.py": "snlr"}[script]
    assert "it/s" in result.stderr or "s/it" in result.stderr  # the progress bars


@pytest.mark.slow
def test_tiny_generator_recipe_saves_a_model_that_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refiner_trl.generators import ModelGenerator

    output_dir = tmp_path / "generator"
    result = run_recipe("train_generator.py", "generator_mwp_tiny.yaml", output_dir)
    report = assert_report(result, output_dir)
    # The saved model is the one the report evaluated: it writes the report's turn-0 hypotheses again, greedily, with
    # the recipe's generation settings.
    config = read_config(str(RECIPES / "generator_mwp_tiny.yaml"))
    generator = ModelGenerator(
        AutoModelForCausalLM.from_pretrained(output_dir),
        AutoTokenizer.from_pretrained(output_dir),
        max_prompt_length=config["eval_max_prompt_length"],
        max_new_tokens=config["eval_max_new_tokens"],
    )
    examples = report["runs"][0]["examples"]
    assert len(examples) == 5
    assert generator.generate([e["prompt"] for e in examples]) == [e["hypotheses"][0] for e in examples]
    # ... and it was saved after training: its weights are not the ones the recipe started from (rebuilt here the way
    # the recipe builds them, from the same arguments and seed).
    argv = ["--config", str(RECIPES / "generator_mwp_tiny.yaml"), *FEW_STEPS, "--output_dir", str(output_dir)]
    task_args, model_args, _, _, args = parse_recipe_args(load_recipe("train_generator").GENERATOR_ARGUMENTS, argv)
    task, train_rows, _ = load_task_data(task_args)
    texts = task.tokenizer_texts(train_rows)
    initial = load_model(model_args, texts, args.seed)[0].state_dict()
    saved = generator.model.state_dict()
    assert set(saved) == set(initial)
    assert not all(torch.equal(saved[name], initial[name]) for name in initial)
    assert yaml.safe_load((RECIPES / "generator_mwp_tiny.yaml").read_text())["tiny_architecture"] == "causal"
