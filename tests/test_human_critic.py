"""A person as critic: feedback read line by line from a terminal (here, a pipe)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

import refiner_trl
from refiner_trl.critics import NO_ERROR, Critic, CriticError, checked_critique
from refiner_trl.critics.human import HumanCritic

REPO_ROOT = Path(refiner_trl.__file__).resolve().parents[1]

# The package's __init__ imports the trainer (torch, transformers, peft: many seconds on a busy machine); this script
# needs none of it, so it registers the package without running __init__ and imports only the modules it uses.
SCRIPT = """
import json, sys, types
package = types.ModuleType("refiner_trl")
package.__path__ = [sys.argv[1]]
sys.modules["refiner_trl"] = package
from refiner_trl.critics import CriticError
from refiner_trl.critics.human import HumanCritic
from refiner_trl.refinement import refine

def generator(prompts):
    return ["3 - 2" if "Feedback:" in p else "3 + 2" for p in prompts]

traces = refine(generator, HumanCritic(), ["Tom has 3 apples and eats 2.", "Ann has 3 pens and buys 2."], max_turns=2)
try:  # the input is used up: one more question must fail clearly
    HumanCritic().critique(["x"], ["z"])
    eof_error = None
except CriticError as error:
    eof_error = str(error)
rows = [{"hypotheses": t.hypotheses, "feedback": t.feedback, "accepted": t.accepted} for t in traces]
print(json.dumps({"traces": rows, "eof_error": eof_error}))
"""


def test_refine_with_a_person_at_a_pipe():
    """A whole refinement with a person answering on stdin, then one more question after the input ended."""
    # Turn 1: the operator of example 0 is wrong, example 1 is fine (empty line); turn 2: the refinement is fine.
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(REPO_ROOT / "refiner_trl")],
        input="The operator is wrong.\n\n   \n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["traces"] == [
        {"hypotheses": ["3 + 2", "3 - 2"], "feedback": ["The operator is wrong.", NO_ERROR], "accepted": True},
        {"hypotheses": ["3 + 2"], "feedback": [NO_ERROR], "accepted": True},
    ]
    assert output["eof_error"] == "HumanCritic: input ended (EOF) before the feedback for hypothesis 1 of 1"
    # What the person saw went to stderr: x and the hypothesis, numbered within each batch.
    assert "[1/2] Input:\nTom has 3 apples and eats 2.\nHypothesis:\n3 + 2\n" in result.stderr
    assert "[1/1] Input:\nTom has 3 apples and eats 2.\nHypothesis:\n3 - 2\n" in result.stderr
    assert result.stderr.count("Feedback (empty line = no error): ") == 4


def test_streams_in_process():
    shown = io.StringIO()
    critic = HumanCritic(io.StringIO("  Step #1 is missing.  \n\n"), shown, show_reference=True)
    assert isinstance(critic, Critic)
    feedback = checked_critique(critic, ["x1", "x2"], ["z1", "z2"], ["r1", "r2"])
    assert feedback == ["Step #1 is missing.", NO_ERROR]
    assert "Reference:\nr2\n" in shown.getvalue()
    hidden = io.StringIO()
    HumanCritic(io.StringIO("\n"), hidden).critique(["x"], ["z"], ["gold"])
    assert "gold" not in hidden.getvalue() and "Hypothesis:\nz\n" in hidden.getvalue()
    with pytest.raises(CriticError, match="hypothesis 1 of 1"):
        HumanCritic(io.StringIO(""), io.StringIO()).critique(["x"], ["z"])
