"""Security: no text is ever run as code, remote code only when asked, safe loaders for YAML and checkpoints.

Every case here is listed in docs/reliability.md with what happens; keep the two in step.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import transformers
import transformers.trainer
from conftest import code_rows, tokenizer_for
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerConfig, RefinerTrainer
from refiner_trl.builders import load_model
from refiner_trl.critics import ModelCritic
from refiner_trl.generators import ModelGenerator
from refiner_trl.modeling import build_tiny_model
from refiner_trl.script_args import ModelArguments

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("refiner_trl", "recipes", "benchmarks")

BUILTINS_THAT_RUN_TEXT = {"eval", "exec", "compile", "__import__"}
UNSAFE_CALLS = {
    ("pickle", "load"),
    ("pickle", "loads"),
    ("marshal", "load"),
    ("marshal", "loads"),
    ("dill", "load"),
    ("dill", "loads"),
    ("shelve", "open"),
    ("os", "system"),
    ("os", "popen"),
    ("yaml", "unsafe_load"),
    ("yaml", "unsafe_load_all"),
    ("yaml", "full_load"),
    ("yaml", "full_load_all"),
}


def imported_names(tree: ast.AST) -> dict[str, tuple[str, ...]]:
    """What each imported name stands for: `import pickle as p` gives `p -> ("pickle",)`, `from pickle import loads
    as l` gives `l -> ("pickle", "loads")`. Scopes are not told apart: a name imported anywhere counts everywhere."""
    names: dict[str, tuple[str, ...]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    names[alias.asname] = tuple(alias.name.split("."))
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = (*node.module.split("."), alias.name)
    return names


def called_name(func: ast.expr, names: dict[str, tuple[str, ...]]) -> tuple[str, ...] | None:
    """The dotted name an expression resolves to through the imports (`p.loads` -> `("pickle", "loads")`)."""
    parts: list[str] = []
    while isinstance(func, ast.Attribute):
        parts.insert(0, func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    return (*names.get(func.id, (func.id,)), *parts)


def unsafe_calls(source: str) -> list[str]:
    """The calls in `source` that run text as code or deserialise it unsafely, as `line: description`.

    Calls are resolved through the file's imports, so `from pickle import loads; loads(x)` and
    `import pickle as p; p.loads(x)` are found as `pickle.loads()`.
    """
    tree = ast.parse(source)
    names = imported_names(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (name := called_name(node.func, names)) is None:
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        if name[0] == "builtins":
            name = name[1:]
        if len(name) == 1 and name[0] in BUILTINS_THAT_RUN_TEXT:
            found.append(f"{node.lineno}: {name[0]}()")
        if len(name) != 2:
            continue
        dotted = ".".join(name)
        if name in UNSAFE_CALLS:
            found.append(f"{node.lineno}: {dotted}()")
        elif name in {("yaml", "load"), ("yaml", "load_all")}:
            loader = called_name(keywords["Loader"], names) if "Loader" in keywords else None
            if loader not in {("yaml", "SafeLoader"), ("yaml", "CSafeLoader")}:
                found.append(f"{node.lineno}: {dotted}() without Loader=yaml.SafeLoader")
        elif name == ("torch", "load"):
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{node.lineno}: torch.load() without weights_only=True")
        elif name[0] == "subprocess":
            shell = keywords.get("shell")
            if not (shell is None or (isinstance(shell, ast.Constant) and shell.value is False)):
                found.append(f"{node.lineno}: {dotted}(shell=...)")
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            if isinstance(node.value, ast.Constant) and node.value.value is True:
                found.append(f"{node.value.lineno}: trust_remote_code=True hard-coded")
    return found


def test_the_scanner_finds_each_unsafe_pattern():
    planted = """
eval("1 + 1")
exec(text)
compile(text, "<x>", "exec")
pickle.loads(blob)
os.system("ls")
yaml.load(stream)
yaml.load(stream, Loader=yaml.FullLoader)
yaml.unsafe_load(stream)
torch.load(path)
torch.load(path, weights_only=False)
subprocess.run(cmd, shell=True)
AutoModel.from_pretrained(name, trust_remote_code=True)
"""
    assert len(unsafe_calls(planted)) == 12
    aliased = """
import pickle as p
import subprocess as sp
import builtins
from pickle import loads
from marshal import load as read_code
from os import system
from yaml import load as yaml_load, FullLoader
from torch import load as torch_load
p.loads(blob)
loads(blob)
read_code(stream)
system("ls")
yaml_load(stream, Loader=FullLoader)
torch_load(path)
sp.run(cmd, shell=True)
builtins.eval(text)
"""
    assert unsafe_calls(aliased) == [
        "10: pickle.loads()",
        "11: pickle.loads()",
        "12: marshal.load()",
        "13: os.system()",
        "14: yaml.load() without Loader=yaml.SafeLoader",
        "15: torch.load() without weights_only=True",
        "16: subprocess.run(shell=...)",
        "17: eval()",
    ]
    fine = """
from re import compile
from yaml import SafeLoader, load
import torch as t
model.eval()
re.compile("x")
compile("x")
yaml.safe_load(stream)
yaml.load(stream, Loader=yaml.SafeLoader)
load(stream, Loader=SafeLoader)
torch.load(path, weights_only=True)
t.load(path, weights_only=True)
subprocess.run(["git", "status"], check=True)
AutoModel.from_pretrained(name, trust_remote_code=trust_remote_code)
"""
    assert unsafe_calls(fine) == []


def test_no_code_of_ours_runs_text_or_loads_unsafely():
    files = [path for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))]
    assert len(files) > 10
    problems = [f"{path.relative_to(ROOT)}:{found}" for path in files for found in unsafe_calls(path.read_text())]
    assert problems == []


def test_the_trainer_we_build_on_loads_checkpoints_with_weights_only():
    """Resuming goes through transformers' Trainer: each of its `torch.load` calls must pass `weights_only=True`."""
    source = inspect.getsource(transformers.trainer)
    assert source.count("torch.load(") >= 3
    assert [problem for problem in unsafe_calls(source) if "torch.load" in problem] == []


# --- remote code --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    tokenizer = tokenizer_for(code_rows(16, seed=0))
    path = tmp_path_factory.mktemp("tiny")
    build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def remote_code_flags(monkeypatch) -> list[tuple[str, object]]:
    """Records the `trust_remote_code` of every `from_pretrained` call of the Auto classes."""
    flags: list[tuple[str, object]] = []
    for cls in (
        transformers.AutoConfig,
        transformers.AutoTokenizer,
        transformers.AutoModelForCausalLM,
        transformers.AutoModelForSeq2SeqLM,
    ):
        original = cls.from_pretrained

        def spy(*args, _original=original, _name=cls.__name__, **kwargs):
            flags.append((_name, kwargs.get("trust_remote_code", "<not passed>")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    return flags


def test_remote_code_is_off_unless_set_and_passed_through(saved_model, remote_code_flags, tmp_path):
    rows = Dataset.from_list(code_rows(4, seed=0))
    critic = CallableCritic(lambda prompts, hypotheses, references: ["No error."] * len(hypotheses))

    args = RefinerConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    model_args = ModelArguments(model_name_or_path=str(saved_model))
    assert args.model_init_kwargs is None and model_args.trust_remote_code is False
    RefinerTrainer(str(saved_model), args, critic=critic, train_dataset=rows)
    ModelCritic(str(saved_model))
    ModelGenerator(str(saved_model))
    load_model(model_args, [])
    loaded = {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}
    assert {name for name, _ in remote_code_flags} == loaded
    assert {flag for _, flag in remote_code_flags} == {False}  # passed, and off, in every call

    remote_code_flags.clear()
    trusted = RefinerConfig(
        output_dir=str(tmp_path), report_to=[], use_cpu=True, model_init_kwargs={"trust_remote_code": True}
    )
    RefinerTrainer(str(saved_model), trusted, critic=critic, train_dataset=rows)
    ModelCritic(str(saved_model), trust_remote_code=True)
    load_model(ModelArguments(model_name_or_path=str(saved_model), trust_remote_code=True), [])
    assert {name for name, _ in remote_code_flags} == loaded
    assert {flag for _, flag in remote_code_flags} == {True}


# --- YAML ---------------------------------------------------------------------------------------------------------


def test_a_yaml_recipe_cannot_construct_python_objects(tmp_path):
    import yaml

    from refiner_trl import recipe_parser

    marker = tmp_path / "pwned"
    path = tmp_path / "recipe.yaml"
    path.write_text(f'tiny_architecture: causal\nnum_hypotheses: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object/apply:os.system"):
        recipe_parser.read_config(str(path))
    assert not marker.exists()
