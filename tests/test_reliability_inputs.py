"""Bad input is refused before training, with one clear error naming the field, row, key or file.

Every case here is listed in docs/reliability.md with what happens; keep the two in step.
"""

from __future__ import annotations

import warnings

import pytest
from conftest import code_rows, tokenizer_for
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerConfig, RefinerTrainer
from refiner_trl.data import DataError
from refiner_trl.modeling import build_tiny_model
from refiner_trl.tasks import get_task


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for(code_rows(16, seed=0))


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1)


CRITIC = CallableCritic(lambda prompts, hypotheses, references: ["No error."] * len(hypotheses))
GOOD = [{"prompt": "Item 1: what is its code?", "completion": "a b c"}] * 2


def config(tmp_path, **overrides) -> RefinerConfig:
    return RefinerConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, **overrides)


def as_dataset(rows):
    return rows if rows is None or isinstance(rows, Dataset) else Dataset.from_list(rows)


def make_trainer(model, tokenizer, tmp_path, train=GOOD, eval_dataset=None, critic=CRITIC, **overrides):
    if isinstance(eval_dataset, dict):
        eval_dataset = {key: as_dataset(rows) for key, rows in eval_dataset.items()}
    else:
        eval_dataset = as_dataset(eval_dataset)
    return RefinerTrainer(
        model,
        config(tmp_path, **overrides),
        critic=critic,
        train_dataset=as_dataset(train),
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
    )


# --- datasets given to the trainer --------------------------------------------------------------------------------

# The train_dataset cases of tests/test_trainer.py::test_bad_datasets_are_refused_before_training (missing column,
# empty completion, int prompt, None prompt in row 1, empty dataset) are not repeated here.
BAD_DATASETS = [
    ({"train": [{"question": "a", "completion": "b"}]}, r"train_dataset has no 'prompt' column \(columns: \["),
    ({"train": [{"prompt": "a", "completion": " \n\t"}]}, r"train_dataset, row 0: 'completion' is empty"),
    ({"train": [*GOOD, {"prompt": "a", "completion": None}]}, r"train_dataset, row 2: 'completion' must be a string"),
    (
        {"train": [{"prompt": [{"role": "user", "content": "hi"}], "completion": "a"}]},
        r"train_dataset, row 0: 'completion' is a str, but row 0's prompt is a conversation",
    ),
    ({"train": [{"prompt": "a", "completion": 7}]}, r"row 0: 'completion' must be a string, got int"),
    ({"eval_dataset": [{"prompt": "a"}]}, r"eval_dataset has no 'completion' column"),
    ({"eval_dataset": []}, r"eval_dataset is empty"),
    (
        {"eval_dataset": {"mwp": GOOD, "ood": [*GOOD, {"prompt": "", "completion": "b"}]}},
        r"eval_dataset\['ood'\], row 2: 'prompt' is empty",
    ),
]


@pytest.mark.parametrize(("datasets", "message"), BAD_DATASETS, ids=[f"dataset{i}" for i in range(len(BAD_DATASETS))])
def test_bad_datasets_name_the_dataset_row_and_field(model, tokenizer, tmp_path, datasets, message):
    with pytest.raises(DataError, match=message):
        make_trainer(model, tokenizer, tmp_path, **datasets)


def test_missing_pieces_are_named(model, tokenizer, tmp_path):
    with pytest.raises(TypeError, match=r"needs a `critic` with a `critique\(prompts, hypotheses, references\)`"):
        make_trainer(model, tokenizer, tmp_path, critic=lambda p, h, r: h)  # a bare function is not a critic
    with pytest.raises(ValueError, match="needs a `train_dataset`"):
        make_trainer(model, tokenizer, tmp_path, train=None)
    with pytest.raises(ValueError, match="needs `processing_class`"):
        RefinerTrainer(model, config(tmp_path), critic=CRITIC, train_dataset=Dataset.from_list(GOOD))


def test_rows_over_the_length_limits_are_counted_in_one_warning_per_dataset(model, tokenizer, tmp_path):
    long_completion = {"prompt": "Item 2: what is its code?", "completion": " ".join(["a"] * 40)}
    long_prompt = {"prompt": "word " * 60, "completion": "a"}
    train = [*GOOD, long_completion, long_completion, long_prompt]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_trainer(
            model,
            tokenizer,
            tmp_path,
            train=train,
            eval_dataset=[long_prompt, *GOOD],
            max_prompt_length=32,
            max_completion_length=8,
        )
    messages = [str(w.message) for w in caught if "exceed" in str(w.message)]
    assert len(messages) == 2
    assert messages[0].startswith("train_dataset: 1 of 5 prompts exceed max_prompt_length=32")
    assert "and 2 completions exceed max_completion_length=8 (they are cut)" in messages[0]
    assert messages[1].startswith("eval_dataset: 1 of 3 prompts exceed max_prompt_length=32")
    assert "and 0 completions" in messages[1]


# --- the training configuration -----------------------------------------------------------------------------------

BAD_CONFIGS = [
    ({"num_hypotheses": 0}, ValueError, "num_hypotheses must be at least 1, got 0"),
    ({"num_refinement_turns": 0}, ValueError, "num_refinement_turns must be at least 1"),
    ({"hypothesis_selection": "best"}, ValueError, r"hypothesis_selection must be one of \('random', 'first', 'f"),
    ({"turn_loss_aggregation": "max"}, ValueError, "turn_loss_aggregation must be one of"),
    ({"nonfinite_loss": "ignore"}, ValueError, r"nonfinite_loss must be one of \('raise', 'skip'\), got 'ignore'"),
    ({"max_prompt_length": 0}, ValueError, "max_prompt_length must be at least 1 or None, got 0"),
    ({"max_completion_length": -1}, ValueError, "max_completion_length must be at least 1 or None"),
    ({"max_new_tokens": 0}, ValueError, "max_new_tokens must be at least 1"),
    ({"temperature": 0.0}, ValueError, "temperature must be positive"),
    ({"top_p": 1.5}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"refine_template": "{prompt} {hypothesis}"}, ValueError, "refine_template must use the placeholders"),
    ({"refine_template": "{prompt} {hypothesis} {feedback} {answer}"}, ValueError, r"it uses \['answer', "),
    ({"num_hypothesis": 4}, TypeError, "unexpected keyword argument 'num_hypothesis'"),
]


@pytest.mark.parametrize(
    ("values", "error", "message"), BAD_CONFIGS, ids=[next(iter(case[0])) for case in BAD_CONFIGS]
)
def test_bad_configs_name_the_field(tmp_path, values, error, message):
    with pytest.raises(error, match=message):
        config(tmp_path, **values)


# --- YAML recipes -------------------------------------------------------------------------------------------------


@pytest.fixture
def parse(tmp_path):
    from conftest import parse_refiner_args

    def parse_yaml(text: str, *cli: str):
        path = tmp_path / "recipe.yaml"
        path.write_text(text)
        return parse_refiner_args(None, ["--config", str(path), "--output_dir", str(tmp_path), *cli])

    return parse_yaml


def test_yaml_recipes_refuse_unknown_and_malformed_keys(parse, capsys):
    import yaml

    good = "tiny_architecture: causal\nnum_hypotheses: 2\n"
    assert parse(good)[-1].num_hypotheses == 2
    with pytest.raises(
        ValueError, match=r"unknown key 'num_hypothesis' in .*recipe.yaml \(did you mean 'num_hypotheses'"
    ):
        parse(good + "num_hypothesis: 3\n")
    with pytest.raises(ValueError, match=r"unknown option '--learning_rat'"):
        parse(good, "--learning_rat", "1e-4")
    with pytest.raises(yaml.YAMLError, match=r"recipe.yaml\", line 3"):
        parse(good + "max_steps: [1\n")
    with pytest.raises(ValueError, match="must hold a YAML mapping"):
        parse("- num_hypotheses\n- 2\n")
    with pytest.raises(SystemExit):
        parse(good.replace("2", "two"))
    assert "argument --num_hypotheses/--num-hypotheses: invalid int value: 'two'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="num_hypotheses must be at least 1, got 0"):
        parse(good.replace("2", "0"))


# --- tasks and data files -----------------------------------------------------------------------------------------


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"Unknown task 'gsm8k'; choose one of: mwp, snlr, moral_stories"):
        get_task("gsm8k")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.jsonl", '{"a": 1}\n{"a": 2\n', r"bad.jsonl, line 2: not valid JSON"),
        ("bad.json", '[{"a": 1}, {"a": ]', r"bad.json: not valid JSON"),
        ("list.jsonl", '{"a": 1}\n[1, 2]\n', r"list.jsonl, row 1: expected a JSON object, got list"),
        ("empty.jsonl", "\n\n", r"empty.jsonl: holds no rows"),
        ("empty.json", "[]", r"empty.json: holds no rows"),
        ("missing.jsonl", None, r"missing.jsonl: no such file"),
    ],
)
def test_bad_data_files_name_the_file_and_line(tmp_path, name, text, message):
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    with pytest.raises(DataError, match=message):
        get_task("snlr").load(path=str(path))


CHAT_ROW = {"prompt": [{"role": "user", "content": "Item 2?"}], "completion": [{"role": "assistant", "content": "b"}]}
TEXT_ROW = {"prompt": "Item 1?", "completion": "a"}
MIXED_FIX = "a dataset is either standard .strings. or conversational .lists of role/content messages., not both"


@pytest.mark.parametrize(
    ("name", "rows", "message"),
    [
        (
            "mixed.jsonl",
            [TEXT_ROW, TEXT_ROW, CHAT_ROW],
            rf"mixed.jsonl, line 3: 'prompt' is a list, but line 1 has a string; {MIXED_FIX}",
        ),
        (
            "mixed.json",
            [CHAT_ROW, TEXT_ROW],
            rf"mixed.json, row 1: 'prompt' is a string, but row 0 has a list; {MIXED_FIX}",
        ),
        (
            "kinds.jsonl",
            [{**TEXT_ROW, "id": "x"}, TEXT_ROW, {**TEXT_ROW, "id": 1}],
            r"kinds.jsonl, line 3: 'id' is a number, but line 1 has a string; give every row",
        ),
    ],
)
def test_string_and_conversational_rows_mixed_in_a_file_name_the_file_and_line(tmp_path, name, rows, message):
    import json

    from refiner_trl.data import load_records

    path = tmp_path / name
    text = json.dumps(rows) if name.endswith(".json") else "\n".join(json.dumps(r) for r in rows) + "\n\n"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        load_records(str(path))


def test_string_and_conversational_rows_mixed_in_a_list_name_the_row():
    from refiner_trl.data import rows_to_dataset

    with pytest.raises(
        DataError, match=rf"train rows, row 2: 'completion' is a list, but row 0 has a string; {MIXED_FIX}"
    ):
        rows_to_dataset([TEXT_ROW, TEXT_ROW, {**TEXT_ROW, "completion": CHAT_ROW["completion"]}], "train rows")
    parts = {"role": "user", "content": [{"type": "text", "text": "x"}]}
    with pytest.raises(DataError, match=r"train rows: the rows do not fit one table \(ArrowInvalid: cannot mix list"):
        rows_to_dataset([CHAT_ROW, {**CHAT_ROW, "prompt": [parts]}], "train rows")
    assert rows_to_dataset([{**TEXT_ROW, "n": 1}, {**TEXT_ROW, "n": 2.5}], "rows")["n"] == [1.0, 2.5]  # as before
