"""`LLMCritic`: the critique prompt, answers mapped to feedback, against a real `transformers serve` in training and
in evaluation, and `openai:<model>` critics configured from a recipe's YAML."""

from __future__ import annotations

import doctest
import json
import runpy
import sys
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from conftest import LocalEndpoint, code_rows, quiet_refiner_config, tokenizer_for
from datasets import Dataset

import refiner_trl.critics.llm as llm_critic_module
from refiner_trl import RefinerTrainer
from refiner_trl.critics import NO_ERROR, load_critic
from refiner_trl.critics.llm import LLM_CRITIC_TEMPLATE, LLMCritic, answer_to_feedback, means_no_error
from refiner_trl.evaluation import evaluate_refinement, evaluation_critics, format_table, standard_critics
from refiner_trl.generators import CallableGenerator, GeneratorError, OpenAIChatGenerator
from refiner_trl.modeling import build_tiny_model
from refiner_trl.script_args import CriticArguments, EvaluationArguments
from refiner_trl.tasks import get_task
from refiner_trl.tasks.mwp import MWPTask

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-llm-critic-do-not-leak-9012"
CRITIC_MAX_TOKENS = 8

NO_ERROR_IN_OTHER_WORDS = [
    "No error.",
    "no errors found",
    "Looks correct to me.",
    "The answer is correct.",
    "I don't see any mistakes.",
    "Nothing is wrong here.",
    "Correct!",
    "Yes.",
    "It's right.",
    "There are no errors in the equation.",
    "  Feedback: No issues.  ",
    '"No error"',
    "**No mistakes.**\nThe equation multiplies, then subtracts.",
]
ERRORS = [
    "The operator in #0 is incorrect.",
    "No error in #0, but the operator in #1 is incorrect.",
    "The answer is not correct.",
    "Incorrect.",
    "An operation is missing.",
    "Step #1 is not a valid inference.",
    "Contradiction: the norm's judgment is reversed.",
    "It isn't right.",
    "The correct answer is 26.",
    "The right number is 5.",
    "Yes, the second number in #0 is incorrect.",
]


@pytest.mark.parametrize("answer", NO_ERROR_IN_OTHER_WORDS)
def test_an_answer_that_says_no_error_in_other_words_is_no_error(answer):
    assert answer_to_feedback(answer, get_task("mwp")) == NO_ERROR


@pytest.mark.parametrize("answer", ERRORS)
def test_an_answer_that_names_an_error_is_kept(answer):
    assert not means_no_error(answer, get_task("mwp"))
    assert answer_to_feedback(f"Feedback: {answer}\nBecause the story says otherwise.") == answer


class Recorder:
    """A generator that records its prompts and answers with `answers(prompts)`, or delegates to `generator`."""

    def __init__(self, answers=None, generator=None):
        self.answers, self.generator = answers, generator
        self.calls: list[tuple[list, list[str]]] = []

    def generate(self, prompts):
        texts = self.generator.generate(prompts) if self.generator else self.answers(list(prompts))
        self.calls.append((list(prompts), list(texts)))
        return texts


def test_the_critique_prompt_names_the_task_errors_and_maps_answers():
    task = get_task("mwp")
    answers = ["Looks right, no mistakes.", "The operator in #0 is incorrect.", "Feedback: Missing operation."]
    recorder = Recorder(lambda prompts: answers[: len(prompts)])
    critic = LLMCritic(recorder, task=task)
    x = "Tom has number0 apples and buys number1 more.\nNumbers: number0=3, number1=2\nEquation:"
    feedback = critic.critique([x] * 3, ["#0: add ( number0, number1 )", "#0: subtract ( number0, number1 )", "z"])
    assert feedback == [NO_ERROR, "The operator in #0 is incorrect.", "Missing operation."]  # (empty: an error)
    ((prompts, _),) = recorder.calls  # one batched call
    first = prompts[0]
    assert x in first and "#0: add ( number0, number1 )" in first
    assert '- wrong operator: e.g. "The operator in #' in first and "- missing operation" in first
    assert f'exactly "{NO_ERROR}"' in first
    assert "for reference" not in first  # not reference-guided


def test_a_reference_guided_critic_shows_the_reference_and_needs_it():
    recorder = Recorder(lambda prompts: ["fine"] * len(prompts))
    critic = LLMCritic(recorder, task=get_task("snlr"), use_references=True)
    assert critic.critique(["x"], ["z"], ["the gold z"]) == [NO_ERROR]
    assert "A correct answer, for reference:\nthe gold z" in recorder.calls[0][0][0]
    with pytest.raises(ValueError, match="one reference per hypothesis"):
        critic.critique(["x"], ["z"])


def test_a_task_can_supply_its_own_critique_prompt_and_bad_templates_are_named():
    class TerseMWP(MWPTask):
        critique_template = "Check {hypothesis} for {prompt}; say {no_error} if fine."

    recorder = Recorder(lambda prompts: ["No error"] * len(prompts))
    assert LLMCritic(recorder, task=TerseMWP()).critique(["2+3"], ["5"]) == [NO_ERROR]
    assert recorder.calls[0][0] == [f"Check 5 for 2+3; say {NO_ERROR} if fine."]
    with pytest.raises(ValueError, match=r"must use \{prompt\} and \{hypothesis\}.*\['hypothesis'\]"):
        LLMCritic(recorder, template="Is {hypothesis} right?")
    with pytest.raises(ValueError, match=r"\['colour', 'hypothesis', 'prompt'\]"):
        LLMCritic(recorder, template="{prompt} {hypothesis} {colour}")
    with pytest.raises(ValueError, match="needs a critique template with {reference}"):
        LLMCritic(recorder, template="{prompt} {hypothesis}", use_references=True)
    assert "{reference}" in LLM_CRITIC_TEMPLATE


def test_a_wrong_number_of_answers_is_named():
    critic = LLMCritic(CallableGenerator(lambda prompts: ["No error."]))
    with pytest.raises(GeneratorError, match=r"expected 2, got 1 \(LLMCritic\)"):
        critic.critique(["a", "b"], ["1", "2"])


class ContentServer(LocalEndpoint):
    """Answers every chat request with `content` as the message's content, whatever JSON value it is."""

    def __init__(self, content):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                message = {"role": "assistant", "content": content}
                payload = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": message}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

        super().__init__(Handler)


@pytest.mark.parametrize(
    "content, error, message",
    [
        ("", GeneratorError, r"LLMCritic: the LLM's answer for hypothesis 0 is empty \(2 of 2 empty\).*max_tokens"),
        ("   \n", GeneratorError, r"answer for hypothesis 0 is empty"),
        (None, GeneratorError, r"prompt 0 failed .*message\.content is null, not text \(finish_reason 'stop'\)"),
        (7, GeneratorError, r"prompt 0 failed .*message\.content is int, not text"),
    ],
)
def test_an_empty_null_or_numeric_answer_is_a_clear_error(content, error, message, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = ContentServer(content)
    try:
        generator = OpenAIChatGenerator("m", base_url=server.base_url, timeout=5.0, max_retries=0, max_workers=1)
        with pytest.raises(error, match=message):
            LLMCritic(generator).critique(["2 + 3 =", "1 + 1 ="], ["5", "2"])
    finally:
        server.close()


# --- against the real server ----------------------------------------------------------------------------------------


def served_critic(server, task, **kwargs) -> tuple[LLMCritic, Recorder]:
    generator = OpenAIChatGenerator(
        server.model, base_url=server.base_url, max_tokens=CRITIC_MAX_TOKENS, max_retries=0, timeout=60.0
    )
    recorder = Recorder(generator=generator)
    return LLMCritic(recorder, task=task, **kwargs), recorder


def test_critique_against_transformers_serve(transformers_server, served_answer):
    task = get_task("mwp")
    rows = task.synthetic(n=3, seed=5)
    hypotheses = [rows[0]["completion"], "#0: add ( number0, number1 )", "#0: multiply ( number1, number0 )"]
    critic, recorder = served_critic(transformers_server, task, use_references=True)
    feedback = critic.critique(rows["prompt"], hypotheses, rows["completion"])
    ((prompts, answers),) = recorder.calls  # one batch of three concurrent requests
    assert answers == [served_answer(p, CRITIC_MAX_TOKENS) for p in prompts]  # in order, one per hypothesis
    assert len(set(answers)) == 3
    assert feedback == [answer_to_feedback(a, task) for a in answers]
    assert all(isinstance(f, str) for f in feedback)


def test_refiner_trainer_trains_two_steps_with_an_llm_critic(transformers_server, tmp_path):
    rows = code_rows(8, seed=0)
    tokenizer = tokenizer_for(code_rows(32, seed=0))
    critic, recorder = served_critic(transformers_server, None)
    args = quiet_refiner_config(
        tmp_path,
        per_device_train_batch_size=2,
        max_steps=2,
        num_hypotheses=1,
        num_refinement_turns=2,
        max_new_tokens=4,
    )
    trainer = RefinerTrainer(
        build_tiny_model("causal", tokenizer, hidden_size=32, num_layers=1, seed=0),
        args,
        critic=critic,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.train()
    assert trainer.state.global_step == 2
    assert [len(prompts) for prompts, _ in recorder.calls] == [2, 2]  # one critique of the batch per step
    assert all("Proposed answer:" in p for prompts, _ in recorder.calls for p in prompts)
    logged = [entry for entry in trainer.state.log_history if "turn_0/no_error" in entry]
    assert len(logged) == 2 and all(0.0 <= entry["turn_0/no_error"] <= 1.0 for entry in logged)


def test_the_evaluation_table_gets_an_llm_critic_row(transformers_server):
    task = get_task("mwp")
    rows = task.synthetic(n=3, seed=1)
    critic, recorder = served_critic(transformers_server, task)
    generator = CallableGenerator(lambda prompts: ["#0: add ( number0, number1 )"] * len(prompts))
    result = evaluate_refinement(task, generator, rows, standard_critics(task, llm_critic=critic), 1, progress=False)
    table = format_table(result)
    labels = [line.split("|")[1].strip() for line in table.splitlines()[2:]]
    assert labels == ["generator alone", "+ LLM critic (T=1)", "+ oracle critic (T=1)"]
    llm_run = result.runs[1]
    (_, answers), *_ = recorder.calls
    expected = sum(answer_to_feedback(a, task) != NO_ERROR for a in answers) / len(answers)
    assert llm_run.refine["mean_refinements"] == pytest.approx(expected)


def test_openai_critics_from_the_recipe_arguments(monkeypatch):
    monkeypatch.setenv("MY_CRITIC_KEY", SECRET)
    arguments = CriticArguments(
        critic="openai:gpt-4o-mini",
        critic_base_url="http://127.0.0.1:9/v1",
        critic_api_key_env="MY_CRITIC_KEY",
        critic_reference_guided=True,
        critic_max_new_tokens=12,
    )
    critic = load_critic(arguments.critic, get_task("mwp"), arguments)
    assert isinstance(critic, LLMCritic) and critic.use_references
    generator = critic.generator
    assert (generator.model, generator.url, generator.api_key_env) == (
        "gpt-4o-mini",
        "http://127.0.0.1:9/v1/chat/completions",
        "MY_CRITIC_KEY",
    )
    assert generator.max_tokens == 12 and SECRET not in repr(vars(generator))
    table = evaluation_critics(get_task("mwp"), arguments, EvaluationArguments())  # the LLM row, no trained critic
    assert list(table) == ["none", "LLM", "oracle"] and table["LLM"].generator.model == "gpt-4o-mini"
    with pytest.raises(ValueError, match=r"critic: 'openai: ' names no model"):
        load_critic("openai: ", get_task("mwp"))
    with pytest.raises(ValueError, match=r"llm_critic: 'outputs/critic' must be openai:<model>"):
        evaluation_critics(get_task("mwp"), CriticArguments(llm_critic="outputs/critic"), EvaluationArguments())


def test_evaluate_recipe_adds_the_llm_critic_row_from_its_yaml(transformers_server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLM_CRITIC_TEST_KEY", SECRET)  # sent to the server, which ignores it
    out = tmp_path / "out"
    config = tmp_path / "evaluate.yaml"
    config.write_text(
        "task: mwp\nsynthetic_train_size: 1\nsynthetic_eval_size: 2\ncritic: oracle\n"
        f"llm_critic: openai:{transformers_server.model}\ncritic_base_url: {transformers_server.base_url}\n"
        f"critic_api_key_env: LLM_CRITIC_TEST_KEY\ncritic_max_new_tokens: {CRITIC_MAX_TOKENS}\ncritic_max_retries: 0\n"
        f"model_name_or_path: {transformers_server.model}\neval_max_new_tokens: 4\neval_max_turns: 1\n"
        "eval_oracle_max_turns: 1\n"
        f"output_dir: {out}\nprogress: false\ndevice: cpu\n"
    )
    monkeypatch.setattr(sys, "argv", ["evaluate.py", "--config", str(config)])
    runpy.run_path(str(ROOT / "recipes" / "evaluate.py"), run_name="__main__")
    printed = capsys.readouterr()
    markdown = (out / "results.md").read_text()
    for row in ("| generator alone |", "| + LLM critic (T=1) |", "| + oracle critic (T=1) |"):
        assert row in markdown and row in printed.out
    data = json.loads((out / "results.json").read_text())
    assert [run["name"] for run in data["runs"]] == ["none", "LLM", "oracle"]
    assert not any(SECRET in text for text in (printed.out, printed.err, markdown, json.dumps(data)))


def test_docstring_examples():
    results = doctest.testmod(llm_critic_module)
    assert results.attempted >= 3 and results.failed == 0
