"""Moral Stories: reading norms, the oracle's feedback, both source layouts and the metrics."""

import json
import math
import random
from pathlib import Path

import pytest
import sacrebleu

from refiner_trl.critics import NO_ERROR
from refiner_trl.data import DataError
from refiner_trl.tasks import get_task
from refiner_trl.tasks.moral_norms import flip_judgment, parse_norm

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "refiner-paper"
TASK = get_task("moral_stories")
NORM = "You should help others when they're in danger."
HUB_ROW = {
    "ID": "3GU1",
    "norm": NORM,
    "situation": "Brian notices his neighbor's house is on fire.",
    "intention": "Brian wants to keep the fire from spreading to his house.",
    "moral_action": "Brian drags his hose next door and puts out the fire.",
    "moral_consequence": "The neighbor thanks Brian.",
    "immoral_action": "Brian sprays the flames on his own property with his hose.",
    "immoral_consequence": "The neighbor's house burns down.",
    "label": "1",
}
ACTOR_ROW = {
    "id": "3GU1",
    "actor_input": "<|SIT|> Brian notices his neighbor's house is on fire. <|INT|> Brian wants to keep the fire from "
    "spreading to his house. <|I_ACT|> Brian sprays the flames on his own property with his hose. <|NRM|>",
    "actor_output": f"{NORM} <|M_ACT|> Brian drags his hose next door and puts out the fire.",
}


@pytest.mark.parametrize(
    ("norm", "polarity", "concept"),
    [
        ("It's rude to cut in line.", -1, "cut in line"),
        ("It is good to help others.", 1, "help others"),
        ("It’s considered rude to stare.", -1, "stare"),
        ("You shouldn't lie to your friends.", -1, "lie to your friends"),
        ("People should not litter.", -1, "litter"),
        ("It's wrong not to help others.", 1, "help others"),
        ("It's not okay to steal.", -1, "steal"),
        ("You're expected to tip waiters.", 1, "tip waiters"),
        ("Don't be late.", -1, "be late"),
        ("Stealing is wrong.", -1, "stealing"),
        ("Studying is a productive way to spend time.", None, "studying is a productive way to spend time"),
    ],
)
def test_parse_norm(norm, polarity, concept):
    assert parse_norm(norm) == (polarity, concept)


@pytest.mark.parametrize(
    "norm",
    ["It's rude to cut in line.", "It is not okay to steal.", NORM, "You shouldn't lie.", "You must not yell.",
     "Kids are expected to do chores."],
)  # fmt: skip
def test_flip_judgment_reverses_polarity_and_keeps_the_concept(norm):
    polarity, concept = parse_norm(norm)
    flipped = flip_judgment(norm, random.Random(0))
    assert parse_norm(flipped) == (-polarity, concept)
    assert TASK.diagnose(flipped, norm) == "Contradiction: the norm's judgment is reversed."


def test_flip_judgment_declines_forms_it_cannot_rewrite():
    assert flip_judgment("Studying is a productive way to spend time.", random.Random(0)) is None


@pytest.mark.parametrize(
    ("hypothesis", "feedback", "kind"),
    [
        (NORM.lower(), NO_ERROR, "no_error"),
        ("It's good to help others when they are in danger.", NO_ERROR, "no_error"),
        ("It's wrong to help others when they're in danger.", "Contradiction: the norm's judgment is reversed.",
         "contradiction"),
        ("You shouldn't help others when they're in danger <|M_ACT|> Brian walks away.",
         "Contradiction: the norm's judgment is reversed.", "contradiction"),
        ("It's good to keep your lawn tidy.", "Semantic misalignment: the norm is about the wrong concept.",
         "semantic_misalignment"),
        ("", "Semantic misalignment: the norm is about the wrong concept.", "semantic_misalignment"),
    ],
)  # fmt: skip
def test_diagnose_names_each_error(hypothesis, feedback, kind):
    assert TASK.diagnose(hypothesis, NORM) == feedback
    assert TASK.feedback_type(feedback) == kind


def test_antonym_in_the_concept_is_a_contradiction():
    feedback = TASK.diagnose(
        "You should be careless around your friend's things.", "You should be careful around your friend's things."
    )
    assert TASK.feedback_type(feedback) == "contradiction"


def test_semantic_misalignment_borrows_another_norm():
    others = ["It's good to keep your lawn tidy.", NORM]
    bad, feedback = TASK.perturb(NORM, random.Random(0), kind="semantic_misalignment", others=others)
    assert bad == others[0]
    assert TASK.feedback_type(feedback) == "semantic_misalignment"
    bad, _ = TASK.perturb(NORM, random.Random(0), kind="semantic_misalignment")  # the built-in pool
    assert bad != NORM


def test_hub_and_actor_layouts_load_the_same_rows(tmp_path):
    (tmp_path / "hub.jsonl").write_text(json.dumps(HUB_ROW) + "\n" + json.dumps(HUB_ROW))
    (tmp_path / "actor.json").write_text(json.dumps([ACTOR_ROW, ACTOR_ROW]))
    hub = TASK.load(path=str(tmp_path / "hub.jsonl"))
    assert hub.to_list() == TASK.load(path=str(tmp_path / "actor.json")).to_list()
    assert hub[0] == {
        "prompt": "Situation: Brian notices his neighbor's house is on fire.\nIntention: Brian wants to keep the fire "
        "from spreading to his house.\nImmoral action: Brian sprays the flames on his own property with his hose."
        "\nNorm:",
        "completion": NORM,
        "moral_action": "Brian drags his hose next door and puts out the fire.",
    }


@pytest.mark.parametrize("field", ["situation", "intention", "immoral_action", "norm"])
def test_missing_hub_field_names_field_and_row(tmp_path, field):
    broken = dict(HUB_ROW)
    del broken[field]
    (tmp_path / "ms.json").write_text(json.dumps([HUB_ROW, HUB_ROW, broken]))
    with pytest.raises(DataError, match=rf"row 2: field '{field}'"):
        TASK.load(path=str(tmp_path / "ms.json"))


def test_broken_actor_rows_name_field_and_row():
    with pytest.raises(DataError, match="row 1: field 'actor_output'"):
        TASK.from_records([ACTOR_ROW, {**ACTOR_ROW, "actor_output": ""}])
    no_intention = ACTOR_ROW["actor_input"].replace("<|INT|>", "")
    with pytest.raises(DataError, match=r"row 0: field 'actor_input' has no <\|INT\|> marker"):
        TASK.from_records([{**ACTOR_ROW, "actor_input": no_intention}])


def test_score_norms_and_actions():
    rows = TASK.from_records([HUB_ROW, {**HUB_ROW, "norm": "It's rude to cut in line."}])
    predicted = ["It's good to help others when they are in danger.", "It's kind to cut in line."]
    scores = TASK.score(predicted, rows)
    assert set(scores) == {"norm_rougeL", "norm_bleu", "no_error_share"}
    # ROUGE-L F1 per norm, averaged: 6 of 11 and of 9 stemmed words in order (F1 0.6), then 6 of 7 and of 7.
    assert scores["norm_rougeL"] == pytest.approx((0.6 + 6 / 7) / 2)
    # Corpus BLEU over all norms (not a mean of sentence scores), on sacrebleu's scale / 100.
    corpus = sacrebleu.corpus_bleu(predicted, [[NORM, "It's rude to cut in line."]]).score / 100
    assert scores["norm_bleu"] == pytest.approx(corpus) and 0.3 < corpus < 0.4
    assert scores["no_error_share"] == 0.5
    with_actions = TASK.score([f"{NORM} <|M_ACT|> {HUB_ROW['moral_action']}", "It's rude to cut in line."], rows)
    assert with_actions["norm_rougeL"] == pytest.approx(1.0)
    assert with_actions["no_error_share"] == 1.0
    assert with_actions["action_rougeL"] == pytest.approx(0.5)  # the second prediction has no action
    # Every n-gram of the one action matches, but the corpus of actions is half as long as the references': BLEU is
    # the brevity penalty exp(1 - 2).
    assert with_actions["action_bleu"] == pytest.approx(math.exp(-1))


@pytest.mark.skipif(not (SHARED / "moral_stories").is_dir(), reason="the REFINER release data is not at ../shared")
def test_oracle_agrees_with_the_release_critic_data():
    data = TASK.load(path=str(SHARED / "moral_stories" / "actor_dev.json"))
    assert len(data) == 1000
    critic = json.loads((SHARED / "moral_stories" / "critic_dev.json").read_text())
    assert [squash(r["norm"]) for r in critic] == data["completion"]

    def share(pairs, kind):
        return sum(TASK.feedback_type(TASK.diagnose(h, r)) == kind for h, r in pairs) / len(pairs)

    paraphrases = [(o, r["norm"]) for r in critic for o in r["other_norms"]]
    wrong_concepts = [(f, r["norm"]) for r in critic for f in r["fake_norms"]]
    anti = [(r["anti_norm"], r["norm"]) for r in critic if r["anti_norm"]]
    assert share(paraphrases, "no_error") > 0.95
    assert share(wrong_concepts, "semantic_misalignment") > 0.95
    # Some of the release's "anti norms" mean the same as the norm ("It's wrong not to help ..."); most reverse it.
    assert share(anti, "contradiction") > 0.8


def squash(text):
    return " ".join(text.split())
