"""MWP: the equation parser and executor, the oracle's feedback, loading and metrics."""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refiner_trl.critics import NO_ERROR
from refiner_trl.data import DataError
from refiner_trl.tasks import get_task
from refiner_trl.tasks.mwp_equations import (
    MAX_EQUATION_CHARS,
    EquationError,
    execute_equation,
    normalize_equation,
    parse_equation,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "refiner-paper"
TASK = get_task("mwp")
GOLD = "#0: multiply ( number1, number2 ) | #1: subtract ( number0, #0 )"


def row(**overrides):
    base = {
        "Body": "Ann has number0 apples . She gives number1 bags of number2 apples away .",
        "Question": "How many apples are left ?",
        "Numbers": "20.0 3.0 4.0",
        "Linear_Formula": "#0: multiply ( number1, number2 ) | #1: substract ( number0, #0 ) |  EOS",
        "Answer": "8.0",
    }
    return {**base, **overrides}


# ------------------------------------------------------------------------------------------------ executor
@pytest.mark.parametrize(
    ("equation", "numbers", "value"),
    [
        ("#0: multiply ( number1, number2 ) | #1: substract ( number0, #0 ) |  EOS", [20, 3, 4], 8.0),
        ("#0: add ( number0, number1 ) |  <END>", [1.5, 2], 3.5),
        ("#0:divide(number0,number1)", [9, 4], 2.25),
        (
            "#0: subtract ( number1, number0 ) | #1: divide ( #0, number0 ) | #2: multiply ( #1, 100.0 ) |",
            [50, 75],
            50.0,
        ),
        ("#0: multiply ( number0, 0.01 ) EOS", [300], 3.0),
        ("#0: ADD ( NUMBER0, number0 )", [2], 4.0),
    ],
)
def test_execute(equation, numbers, value):
    assert execute_equation(equation, numbers) == pytest.approx(value)


@pytest.mark.parametrize(
    ("equation", "numbers", "message"),
    [
        ("", [], "empty"),
        ("EOS", [], "empty"),
        ("#0: add ( number0 )", [1], "expected ','"),
        ("#1: add ( number0, number1 )", [1, 2], "label '#0'"),
        ("#0: add ( number0, number1 ) #1: add ( #0, number0 )", [1, 2], "expected '|'"),
        ("#0: add ( number0, number1 ) | junk", [1, 2], "label '#1'"),
        ("#0: add ( +, number1 )", [1, 2], "unknown operand '\\+'"),
        ("#0: power ( number0, number1 )", [1, 2], "unknown operator 'power'"),
        ("#0: add ( number0, number5 )", [1, 2], "has 2 numbers"),
        ("#0: add ( #0, number0 )", [1], "not an earlier step"),
        ("#0: divide ( number0, number1 )", [1, 0], "divides by zero"),
        ("#0: multiply ( number0, number0 )", [1e200], "non-finite"),
        ("#0: add ( number0, number1 )", [math.inf, 1], "non-finite"),
        ("number0 <END>", [8], "label '#0'"),
        ("#0: add ( number0, number1 )" + " " * MAX_EQUATION_CHARS, [1, 2], "longer than"),
    ],
)
def test_execute_reports_errors(equation, numbers, message):
    with pytest.raises(EquationError, match=message):
        execute_equation(equation, numbers)


def test_normalize_drops_terminator_spacing_case_and_spelling():
    train = "#0: multiply ( number1, number2 ) | #1: substract ( number0, #0 ) |  EOS"
    val = "#0:  multiply(number1,number2) | #1: SUBSTRACT ( number0, #0 ) |  <END>"
    assert normalize_equation(train) == normalize_equation(val) == GOLD
    assert normalize_equation("  Not AN   equation EOS ") == "not an equation"


TOKENS = ["#0", "#1", "#12", ":", "(", ")", ",", "|", " ", "add", "divide", "substract", "number0", "number1",
          "number99", "3.5", "0", ".", "EOS", "<END>", "+", "#", "\n", "ß", "1" * 40]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # correctness: no deadline
@given(text=st.text(max_size=300))
def test_fuzz_random_text_raises_only_equation_errors(text):
    for fn in (lambda: parse_equation(text), lambda: execute_equation(text, [1.0, 0.0, 2.5])):
        try:
            fn()
        except EquationError:
            pass


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # correctness: no deadline
@given(parts=st.lists(st.sampled_from(TOKENS), max_size=60), numbers=st.lists(st.floats(), max_size=3))
def test_fuzz_near_equations_raise_only_equation_errors(parts, numbers):
    text = "".join(parts)
    try:
        value = execute_equation(text, numbers)
    except EquationError:
        return
    assert math.isfinite(value)
    assert normalize_equation(normalize_equation(text)) == normalize_equation(text)


# The one test about time: a parse of a longest input takes about 35 ms on a busy 2-core CPU (measured), so the 2 s
# deadline fails on a parser that backtracks exponentially, not on a slow machine.
@settings(max_examples=20, deadline=2000)
@given(text=st.text(alphabet="#0:(,| ", min_size=MAX_EQUATION_CHARS - 5, max_size=MAX_EQUATION_CHARS))
def test_fuzz_long_inputs_finish_quickly(text):
    try:
        parse_equation(text)
    except EquationError:
        pass


def test_non_text_is_an_equation_error():
    with pytest.raises(EquationError):
        parse_equation(None)


# ------------------------------------------------------------------------------------------------ oracle
@pytest.mark.parametrize(
    ("hypothesis", "feedback", "kind"),
    [
        (GOLD + " |  EOS", NO_ERROR, "no_error"),
        ("#0: multiply ( number2, number1 ) | #1: subtract ( number0, #0 )", NO_ERROR, "no_error"),
        ("#0: multiply ( number0, number2 ) | #1: subtract ( number0, #0 )",
         "The first number in #0 is incorrect.", "wrong_number"),
        ("#0: multiply ( number1, number2 ) | #1: subtract ( number0, number1 )",
         "The second number in #1 is incorrect.", "wrong_number"),
        ("#0: multiply ( number1, number2 ) | #1: add ( number0, #0 )",
         "The operator in #1 is incorrect.", "wrong_operator"),
        ("#0: divide ( number1, number2 ) | #1: subtract ( #0, number0 )",
         "The operator in #0 is incorrect; the first number in #1 is incorrect; the second number in #1 is incorrect.",
         "wrong_operator"),
        ("#0: multiply ( number1, number2 )", "An operation is missing.", "missing_operation"),
        (GOLD + " | #2: add ( #1, number0 )", "There is an extra operation.", "extra_operation"),
        ("multiply number1 by number2", "The equation is malformed.", "malformed"),
    ],
)  # fmt: skip
def test_diagnose_names_each_error(hypothesis, feedback, kind):
    assert TASK.diagnose(hypothesis, GOLD) == feedback
    assert TASK.feedback_type(feedback) == kind


def test_diagnose_when_the_reference_is_not_an_equation():
    assert TASK.diagnose("#0: add ( number0, number1 )", "number0 <END>") == "The equation is incorrect."
    assert TASK.diagnose("number0 <END>", "number0  EOS") == NO_ERROR


def test_missing_operation_rewires_references():
    import random

    for seed in range(20):
        bad, _ = TASK.perturb(GOLD, random.Random(seed), kind="missing_operation")
        assert bad in ("#0: subtract ( number0, number1 )", "#0: multiply ( number1, number2 )")


# ------------------------------------------------------------------------------------------------ data
def test_load_json_with_string_or_list_numbers(tmp_path):
    (tmp_path / "train.json").write_text(json.dumps([row()]))  # train.json: a string, EOS
    (tmp_path / "test.json").write_text(json.dumps([row(Numbers=[20.0, 3.0, 4.0], Linear_Formula=GOLD + " | <END>")]))
    data = TASK.load(path=str(tmp_path / "train.json"))
    assert data.column_names == ["prompt", "completion", "numbers", "answer"]
    assert data.to_list() == TASK.load(path=str(tmp_path / "test.json")).to_list()
    assert data["completion"] == [GOLD]
    assert data["numbers"] == [[20.0, 3.0, 4.0]]
    assert data[0]["prompt"] == (
        "Ann has number0 apples . She gives number1 bags of number2 apples away . How many apples are left ?\n"
        "Numbers: number0=20, number1=3, number2=4\nEquation:"
    )


@pytest.mark.parametrize("field", ["Body", "Question", "Numbers", "Linear_Formula", "Answer"])
def test_missing_field_names_field_and_row(tmp_path, field):
    broken = row()
    del broken[field]
    path = tmp_path / "mwp.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [row(), row(), broken]))
    with pytest.raises(DataError, match=rf"row 2: field '{field}'"):
        TASK.load(path=str(path))


def test_bad_numbers_and_answers_name_the_row():
    with pytest.raises(DataError, match="row 1: field 'Numbers'"):
        TASK.from_records([row(), row(Numbers="3 apples")])
    with pytest.raises(DataError, match="row 0: field 'Answer'"):
        TASK.from_records([row(Answer="eight")])


def test_score_counts_answers_only_where_the_gold_executes():
    rows = TASK.from_records([row(), row(), row(Answer="9.0")])  # the last gold does not give its Answer
    predictions = [
        GOLD,  # exact
        "#0: multiply ( number2, number1 ) | #1: subtract ( number0, #0 )",  # same value, other order
        GOLD,
    ]
    assert TASK.score(predictions, rows) == {
        "equation_accuracy": pytest.approx(2 / 3),
        "answer_accuracy": 1.0,
        "answer_rows": 2.0,
    }
    scores = TASK.score(["#0: add ( number0, number1 )", "garbage", GOLD], rows.to_list())
    assert scores["equation_accuracy"] == pytest.approx(1 / 3)
    assert scores["answer_accuracy"] == 0.0


def test_score_needs_one_prediction_per_row():
    with pytest.raises(ValueError, match="2 predictions for 1 rows"):
        TASK.score([GOLD, GOLD], TASK.from_records([row()]))


def test_synthetic_problems_have_one_to_three_operations_and_mask_their_numbers():
    data = TASK.synthetic(n=200, seed=0)
    lengths = {len(parse_equation(c)) for c in data["completion"]}
    assert lengths == {1, 2, 3}
    for example in data:
        assert len(example["numbers"]) == example["prompt"].count("number") // 2
        assert execute_equation(example["completion"], example["numbers"]) == example["answer"]


# ------------------------------------------------------------------------------------------------ real data
def _prefix_is_nested(equation: str) -> bool:
    tokens = equation.split()
    return len(tokens) > 1 and tokens[1] in "+-*/"


@pytest.mark.skipif(not (SHARED / "mwp").is_dir(), reason="the REFINER release data is not at ../shared")
def test_gold_equations_of_the_release_execute_to_their_answers():
    from refiner_trl.tasks.mwp_equations import answers_match

    shares = {}
    for split in ("train", "val"):
        raw = json.loads((SHARED / "mwp" / f"{split}.json").read_text())
        data = TASK.load(path=str(SHARED / "mwp" / f"{split}.json"))
        assert len(data) == len(raw)
        scores = TASK.score(data["completion"], data)
        assert scores["equation_accuracy"] == 1.0
        shares[split] = scores["answer_rows"] / len(data)
        for source, completion, numbers, answer in zip(raw, data["completion"], data["numbers"], data["answer"]):
            try:
                ok = answers_match(execute_equation(completion, numbers), answer)
            except EquationError:
                ok = False
            if split == "val" and not ok:
                # val.json's Linear_Formula was converted wrongly from prefix `Equation`s whose first operand is an
                # operation ("- + n0 n1 n2" became "subtract ( n0, n1 ) | add ( #0, n2 )") or whose second operand
                # is one ("- n0 + n1 n2" became "subtract ( +, n1 ) ..."); one row is the bare "number0 <END>".
                assert any(o in source["Equation"] for o in "+-*/") or source["Linear_Formula"] == "number0 <END>"
    assert shares["train"] == pytest.approx(3088 / 3099)  # 11 rows whose Answer is rounded or wrong in the data
    assert shares["val"] == pytest.approx(831 / 1000)
