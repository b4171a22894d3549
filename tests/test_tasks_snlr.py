"""sNLR: chains, the oracle's feedback, loading, metrics and the solvability of the synthetic examples."""

import json
import re
from pathlib import Path

import pytest

from refiner_trl.critics import NO_ERROR
from refiner_trl.data import DataError
from refiner_trl.tasks import get_task
from refiner_trl.tasks.snlr import consequent_of, normalize_step, split_steps, step_role
from refiner_trl.tasks.snlr_synthetic import CATEGORIES, SYNONYMS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "refiner-paper"
TASK = get_task("snlr")
GOLD = "#0: intelligent is smart #1: poppy is plant #2: poppy is smart #3: poppy is happy"
ROW = {
    "fact": "The poppy is intelligent and quick.",
    "rules": [
        "If a plant is boring or weak, then the plant is beautiful.",
        "If a plant is smart, then the plant is happy.",
    ],
    "explanations": GOLD + " ",
    "consequents": "The poppy is happy",
}


def test_chains_split_and_format():
    assert split_steps(" #0: poppy is plant  #1:poppy is strong ") == ["poppy is plant", "poppy is strong"]
    assert split_steps("poppy is strong") == ["poppy is strong"]
    assert consequent_of(GOLD) == "poppy is happy"
    assert consequent_of("#0: The argument is invalid!! ") == "nothing"
    assert normalize_step("The Poppy is  happy.") == "poppy is happy"
    assert [step_role(normalize_step(s), "poppy") for s in split_steps(GOLD)[:-1]] == ["implicit", "implicit", "link"]


@pytest.mark.parametrize(
    ("hypothesis", "feedback", "kind"),
    [
        (GOLD + "  ", NO_ERROR, "no_error"),
        ("#0: poppy is plant #1: intelligent is smart #2: poppy is smart #3: The poppy is happy.",
         NO_ERROR, "no_error"),
        ("#0: intelligent is smart #1: poppy is plant #2: poppy is smart #3: poppy is sad",
         "Step #3 is not a valid inference.", "invalid_step"),
        ("#0: intelligent is smart #1: poppy is plant #2: poppy is red #3: poppy is happy",
         "Step #2 is not a valid inference.", "invalid_step"),
        (GOLD + " #4: poppy is blue", "Step #4 is not a valid inference.", "invalid_step"),
        ("#0: intelligent is smart #1: poppy is plant #2: poppy is happy", "A link step is missing.", "missing_link"),
        ("#0: poppy is plant #1: poppy is smart #2: poppy is happy",
         "An implicit-knowledge step is missing.", "missing_implicit"),
        ("#0: poppy is smart #1: poppy is happy", "An implicit-knowledge step is missing.", "missing_implicit"),
        ("#0: intelligent is smart #1: poppy is plant #2: poppy is smart", "The conclusion is missing.",
         "missing_conclusion"),
        ("#0: poppy is red #1: poppy is happy",
         "Step #0 is not a valid inference; an implicit-knowledge step is missing; a link step is missing.",
         "invalid_step"),
        ("", "An implicit-knowledge step is missing; a link step is missing; the conclusion is missing.",
         "missing_implicit"),
    ],
)  # fmt: skip
def test_diagnose_names_each_error(hypothesis, feedback, kind):
    assert TASK.diagnose(hypothesis, GOLD) == feedback
    assert TASK.feedback_type(feedback) == kind


def test_invalid_argument_chains_admit_no_perturbation():
    import random

    with pytest.raises(ValueError, match="No snlr perturbation"):
        TASK.perturb("#0: The argument is invalid!!", random.Random(0))
    assert TASK.diagnose("#0: poppy is red", "#0: The argument is invalid!!") == "Step #0 is not a valid inference."


def test_load_json_rules_as_list_or_string(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([ROW]))
    (tmp_path / "b.jsonl").write_text(json.dumps({**ROW, "rules": " ".join(ROW["rules"])}))
    data = TASK.load(path=str(tmp_path / "a.json"))
    assert data.to_list() == TASK.load(path=str(tmp_path / "b.jsonl")).to_list()
    assert data[0] == {
        "prompt": "Fact: The poppy is intelligent and quick.\nRules: If a plant is boring or weak, then the plant is "
        "beautiful. If a plant is smart, then the plant is happy.\nInference steps:",
        "completion": GOLD,
        "consequent": "The poppy is happy",
    }


@pytest.mark.parametrize("field", ["fact", "rules", "explanations", "consequents"])
def test_missing_field_names_field_and_row(tmp_path, field):
    path = tmp_path / "snlr.json"
    broken = dict(ROW)
    del broken[field]
    path.write_text(json.dumps([ROW, broken]))
    with pytest.raises(DataError, match=rf"row 1: field '{field}'"):
        TASK.load(path=str(path))


def test_score_reads_the_consequent_off_the_last_step():
    rows = TASK.from_records(
        [ROW, ROW, {**ROW, "explanations": "#0: The argument is invalid!!", "consequents": "Nothing"}]
    )
    predictions = [GOLD, "#0: poppy is smart #1: poppy is happy", "#0: the argument is invalid"]
    assert TASK.score(predictions, rows) == {
        "inference_rule_accuracy": pytest.approx(2 / 3),
        "consequent_accuracy": 1.0,
    }
    assert TASK.score(["#0: poppy is sad", "", "#0: poppy is happy"], rows) == {
        "inference_rule_accuracy": 0.0,
        "consequent_accuracy": 0.0,
    }


def _solve(fact: str, rules: list[str]) -> set[str]:
    """Forward chaining over the synthetic grammar: the attributes the fact's entity has or derives."""
    entity, *words = re.fullmatch(r"(?:The )?(\w+) is (\w+) and (\w+)\.", fact).groups()
    kinds = {entity} | {c for c, members in CATEGORIES.items() if entity in members}
    held = {SYNONYMS.get(w, w) for w in words}
    parsed = []
    for rule in rules:
        subject, premises, conclusion = re.fullmatch(
            r"If (?:an? )?(\w+) is (.+), then (?:the )?\w+ is (\w+)\.", rule
        ).groups()
        connective = "and" if " and " in premises else "or"
        parsed.append((subject, premises.split(f" {connective} "), connective, conclusion))
    changed = True
    while changed:
        changed = False
        for subject, premises, connective, conclusion in parsed:
            fires = (all if connective == "and" else any)(p in held for p in premises)
            if subject in kinds and fires and conclusion not in held:
                held.add(conclusion)
                changed = True
    return held - {SYNONYMS.get(w, w) for w in words}


def test_synthetic_examples_are_solvable_chains_of_two_to_four_steps():
    rows = TASK.synthetic(n=300, seed=0).to_list()
    lengths = {len(split_steps(r["completion"])) for r in rows if consequent_of(r["completion"]) != "nothing"}
    assert lengths == {2, 3, 4}
    invalid = 0
    for r in rows:
        fact, rules = re.search(r"Fact: (.*)\nRules: (.*)\n", r["prompt"]).groups()
        derived = _solve(fact, re.findall(r"If .*?\.", rules))
        if consequent_of(r["completion"]) == "nothing":
            invalid += 1
            assert not derived, r
        else:
            assert consequent_of(r["completion"]).split(" is ")[1] in derived, r
            assert normalize_step(r["consequent"]) == consequent_of(r["completion"])
    assert 10 <= invalid <= 60


@pytest.mark.skipif(not (SHARED / "snlr").is_dir(), reason="the REFINER release data is not at ../shared")
@pytest.mark.parametrize("split", ["train", "val"])
def test_release_chains_load_score_and_have_the_roles_the_data_names(split):
    path = SHARED / "snlr" / f"{split}.json"
    data = TASK.load(path=str(path))
    raw = json.loads(path.read_text())
    assert TASK.score(data["completion"], data) == {"inference_rule_accuracy": 1.0, "consequent_accuracy": 1.0}
    for source in raw[:1000]:
        steps = [normalize_step(s) for s in split_steps(source["explanations"])]
        implicit = {normalize_step(s) for s in source["implicit_knowledge"]}
        entity = steps[-1].split(" is ")[0]
        assert [step_role(s, entity) == "implicit" for s in steps[:-1]] == [s in implicit for s in steps[:-1]]
