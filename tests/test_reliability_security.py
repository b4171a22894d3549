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
from refiner_trl.critics import ModelCritic
from refiner_trl.generators import ModelGenerator
from refiner_trl.modeling import build_tiny_model
from refiner_trl.recipe_args import ModelArguments

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


def unsafe_calls(source: str) -> list[str]:
    """The calls in `source` that run text as code or deserialise it unsafely, as `line: description`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        keywords = {k.arg: k.value for k in node.keywords}
        func = node.func
        if isinstance(func, ast.Name) and func.id in BUILTINS_THAT_RUN_TEXT:
            found.append(f"{node.lineno}: {func.id}()")
        if not (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)):
            continue
        call = (func.value.id, func.attr)
        if call in UNSAFE_CALLS:
            found.append(f"{node.lineno}: {'.'.join(call)}()")
        elif call in {("yaml", "load"), ("yaml", "load_all")}:
            loader = keywords.get("Loader")
            if not (isinstance(loader, ast.Attribute) and loader.attr in {"SafeLoader", "CSafeLoader"}):
                found.append(f"{node.lineno}: yaml.{func.attr}() without Loader=yaml.SafeLoader")
        elif call == ("torch", "load"):
            weights_only = keywords.get("weights_only")
            if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                found.append(f"{node.lineno}: torch.load() without weights_only=True")
        elif func.value.id == "subprocess":
            shell = keywords.get("shell")
            if not (shell is None or (isinstance(shell, ast.Constant) and shell.value is False)):
                found.append(f"{node.lineno}: subprocess.{func.attr}(shell=...)")
    for node in ast.walk(ast.parse(source)):
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
    fine = """
model.eval()
re.compile("x")
yaml.safe_load(stream)
yaml.load(stream, Loader=yaml.SafeLoader)
torch.load(path, weights_only=True)
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
    assert args.trust_remote_code is False
    RefinerTrainer(str(saved_model), args, critic=critic, train_dataset=rows)
    ModelCritic(str(saved_model))
    ModelGenerator(str(saved_model))
    ModelArguments(model_name_or_path=str(saved_model)).load([])
    loaded = {"AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"}
    assert {name for name, _ in remote_code_flags} == loaded
    assert {flag for _, flag in remote_code_flags} == {False}  # passed, and off, in every call

    remote_code_flags.clear()
    trusted = RefinerConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, trust_remote_code=True)
    RefinerTrainer(str(saved_model), trusted, critic=critic, train_dataset=rows)
    ModelCritic(str(saved_model), trust_remote_code=True)
    assert {name for name, _ in remote_code_flags} == loaded
    assert {flag for _, flag in remote_code_flags} == {True}


# --- YAML ---------------------------------------------------------------------------------------------------------


def test_a_yaml_recipe_cannot_construct_python_objects(tmp_path):
    import yaml

    recipes_common = pytest.importorskip("refiner_trl.recipes_common")
    marker = tmp_path / "pwned"
    path = tmp_path / "recipe.yaml"
    path.write_text(f'tiny_architecture: causal\nnum_hypotheses: !!python/object/apply:os.system ["touch {marker}"]\n')
    with pytest.raises(yaml.constructor.ConstructorError, match="python/object/apply:os.system"):
        recipes_common.read_config(str(path))
    assert not marker.exists()
