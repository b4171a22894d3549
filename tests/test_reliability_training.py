"""Reliability of a training run: exact resuming, interrupted checkpoints, failing critics, non-finite losses.

Every case here is listed in docs/reliability.md with what happens; keep the two in step.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import warnings
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import torch
from conftest import LocalEndpoint, code_rows, quiet_refiner_config, reveal_feedback, tokenizer_for
from datasets import Dataset
from transformers import TrainerCallback

from refiner_trl import RefinerConfig, RefinerTrainer
from refiner_trl.checkpoints import is_complete_checkpoint, last_complete_checkpoint
from refiner_trl.critics import CriticError, StatefulCritic
from refiner_trl.critics.llm import LLMCritic
from refiner_trl.critics.state import load_critic_state
from refiner_trl.generators import OpenAIChatGenerator
from refiner_trl.modeling import build_tiny_model

SECRET = "sk-reliability-do-not-leak-5678"


@pytest.fixture(scope="module")
def rows() -> list[dict[str, str]]:
    return code_rows(8, seed=0)


@pytest.fixture(scope="module")
def tokenizer(rows):
    return tokenizer_for(code_rows(32, seed=0))


def tiny_model(tokenizer, architecture: str = "causal", seed: int = 0):
    """A tiny model whose weights are large enough for its loss to feel every token of the prompt."""
    model = build_tiny_model(architecture, tokenizer, hidden_size=32, num_layers=1, seed=seed)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(std=0.3)
    return model


def make_args(output_dir: Path, **overrides) -> RefinerConfig:
    values = {
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "num_hypotheses": 2,
        "num_refinement_turns": 2,
        "max_new_tokens": 4,
    }
    return quiet_refiner_config(output_dir, **{**values, **overrides})


class OracleCritic:
    """The code task's oracle, recording the hypotheses it is asked about."""

    def __init__(self):
        self.hypotheses: list[list[str]] = []

    def critique(self, prompts, hypotheses, references=None):
        self.hypotheses.append(list(hypotheses))
        return [reveal_feedback(h, r) for h, r in zip(hypotheses, references)]


class NoisyCritic:
    """A stateful critic: the oracle, but a seeded RNG replaces some feedback with noise (a noisy-teacher setup).

    Its feedback depends on the RNG's position, so a resumed run matches an uninterrupted one only if the RNG state is
    saved with the checkpoint and given back.
    """

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.hypotheses: list[list[str]] = []
        self.feedback: list[list[str]] = []

    def critique(self, prompts, hypotheses, references=None):
        self.hypotheses.append(list(hypotheses))
        self.feedback.append(
            [
                reveal_feedback(h, r) if self.rng.random() < 0.2 else f"Check item {self.rng.randrange(1000)}."
                for h, r in zip(hypotheses, references)
            ]
        )
        return self.feedback[-1]

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


class RecordingTrainer(RefinerTrainer):
    """Records the hypothesis picks of every turn with the global step they were drawn at."""

    def _pick(self, num_examples, rng):
        picks = super()._pick(num_examples, rng)
        self.__dict__.setdefault("picks", []).append((self.state.global_step, picks))
        return picks


class Interrupted(Exception):
    """Stands for the kill of a job."""


def losses_by_step(trainer) -> dict[int, tuple[float, float, float]]:
    return {
        entry["step"]: (entry["loss"], entry["turn_0/loss"], entry["turn_1/loss"])
        for entry in trainer.state.log_history
        if "loss" in entry
    }


# --- resuming -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["causal", "seq2seq"])
def test_resume_after_a_kill_while_checkpointing_matches_an_uninterrupted_run(tmp_path, rows, tokenizer, architecture):
    """Run A trains 3 steps and saves after each. While it writes checkpoint-2, the files on disk are copied aside
    (a kill at that moment would leave exactly those). A new trainer, with a fresh model and a critic seeded
    differently, resumes from that copy: it must skip the cut-short checkpoint-2, resume from checkpoint-1, and match
    run A step by step at steps 2 and 3: losses, hypothesis picks, sampled hypotheses and the critic's feedback."""
    assert isinstance(NoisyCritic(0), StatefulCritic)
    dataset = Dataset.from_list(rows)
    run_dir, killed_dir = tmp_path / "run", tmp_path / "killed"
    options = {"max_steps": 3, "save_strategy": "steps", "save_steps": 1}

    critic_a = NoisyCritic(seed=7)
    run_a = RecordingTrainer(
        tiny_model(tokenizer, architecture),
        make_args(run_dir, **options),
        critic=critic_a,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    save_rng_state = run_a._save_rng_state

    def save_rng_state_and_copy_what_a_kill_would_leave(output_dir):
        if run_a.state.global_step == 2:  # the weights and the optimizer are on disk, the RNG and the state are not
            shutil.copytree(run_dir / "checkpoint-1", killed_dir / "checkpoint-1")
            shutil.copytree(output_dir, killed_dir / "checkpoint-2")
        save_rng_state(output_dir)

    run_a._save_rng_state = save_rng_state_and_copy_what_a_kill_would_leave
    run_a.train()

    partial, complete = killed_dir / "checkpoint-2", killed_dir / "checkpoint-1"
    assert (partial / "model.safetensors").is_file() and (partial / "optimizer.pt").is_file()
    assert not is_complete_checkpoint(partial) and is_complete_checkpoint(complete)
    # Weights as safetensors and critic state as JSON; no pickled weights (pytorch_model.bin).
    names = {p.name for p in complete.iterdir()}
    assert {"model.safetensors", "critic_state.json", "rng_state.pth", "trainer_state.json"} <= names
    assert "pytorch_model.bin" not in names

    critic_c = NoisyCritic(seed=12345)  # a different seed: only the restored state can make it match run A
    run_c = RecordingTrainer(
        tiny_model(tokenizer, architecture, seed=1),  # different weights: only the loaded ones can match run A
        make_args(killed_dir, **options),
        critic=critic_c,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    with pytest.warns(UserWarning, match="Skipping incomplete checkpoint\\(s\\) checkpoint-2.*from checkpoint-1"):
        run_c.train(resume_from_checkpoint=True)

    losses_a, losses_c = losses_by_step(run_a), losses_by_step(run_c)
    assert sorted(losses_c) == [1, 2, 3]  # step 1 from the checkpoint's log history, steps 2-3 computed again
    for step in (2, 3):
        assert losses_c[step] == pytest.approx(losses_a[step], abs=1e-6), step
    assert run_c.picks == [pick for pick in run_a.picks if pick[0] >= 1]  # same picks, same steps, same turns
    # Steps 2-3 are critic calls 1-2 (T = 2: one explored turn a step): same sampled hypotheses, same noisy feedback.
    assert len(critic_a.hypotheses) == 3 and len(critic_c.hypotheses) == 2
    assert critic_c.hypotheses == critic_a.hypotheses[1:]
    assert critic_c.feedback == critic_a.feedback[1:]
    assert is_complete_checkpoint(partial)  # written again, in full, by the resumed run


def test_only_complete_checkpoints_are_resumed_from(tmp_path, rows, tokenizer):
    def checkpoint(name: str, state: str | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "scheduler.pt").write_bytes(b"")  # no manifest: an empty file is taken as it is
        if state is not None:
            (folder / "trainer_state.json").write_text(state)
        return folder

    checkpoint("checkpoint-2", '{"global_step": 2}')
    checkpoint("checkpoint-10", '{"global_step": 10}')
    checkpoint("checkpoint-11", '{"global_st')  # killed while trainer_state.json was written
    checkpoint("checkpoint-12", None)  # killed before it
    checkpoint("checkpoint-final", '{"global_step": 0}')  # not a step: ignored
    checkpoint("checkpoint-13-tmp", '{"global_step": 13}')  # nor this
    with pytest.warns(UserWarning, match="checkpoint-12, checkpoint-11 .checkpoint-12: no readable trainer_state"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-10")  # by step, not by name

    trainer = RefinerTrainer(
        tiny_model(tokenizer),
        make_args(tmp_path / "empty"),
        critic=OracleCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    with pytest.raises(ValueError, match="No complete checkpoint to resume from"):
        trainer.train(resume_from_checkpoint=True)
    with pytest.raises(ValueError, match="checkpoint-12 is not a complete checkpoint: no readable trainer_state"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-12"))
    (tmp_path / "checkpoint-10" / "model.safetensors").write_bytes(b"\x08\x00")  # a weights file cut short
    with pytest.raises(ValueError, match=r"checkpoint-10 is not a complete checkpoint: model\.safetensors"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-10"))
    assert trainer.state.global_step == 0  # refused before anything was loaded


def test_critic_state_that_is_not_json_fails_before_the_checkpoint_is_written(tmp_path, rows, tokenizer):
    class SetStateCritic(OracleCritic):
        def state_dict(self):
            return {"seen": {"a", "b"}}

        def load_state_dict(self, state):
            pass

    trainer = RefinerTrainer(
        tiny_model(tokenizer),
        make_args(tmp_path, max_steps=1, save_strategy="steps", save_steps=1, num_refinement_turns=1),
        critic=SetStateCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    with pytest.raises(CriticError, match=r"SetStateCritic.state_dict\(\) at global step 1 must return JSON data"):
        trainer.train()
    assert not (tmp_path / "checkpoint-1").exists()


def test_critic_state_mismatches_warn_and_bad_state_is_named(tmp_path):
    """Unit-level: what `train(resume_from_checkpoint=...)` does with the critic's state file before training."""
    checkpoint = tmp_path / "checkpoint-3"
    checkpoint.mkdir()
    stateful = NoisyCritic(seed=0)
    with pytest.warns(UserWarning, match="holds no critic_state.json: the critic resumes with its current state"):
        load_critic_state(stateful, str(checkpoint), world_size=1, process_index=0)
    (checkpoint / "critic_state.json").write_text('{"rng": "not a state"}')
    with pytest.raises(CriticError, match="NoisyCritic.load_state_dict failed on .*critic_state.json"):
        load_critic_state(stateful, str(checkpoint), world_size=1, process_index=0)
    with pytest.warns(UserWarning, match="the critic has no load_state_dict; it is ignored"):
        load_critic_state(OracleCritic(), str(checkpoint), world_size=1, process_index=0)


# --- failing critics ----------------------------------------------------------------------------------------------


class FlakyCritic(OracleCritic):
    """The oracle until global step `step`, turn `turn`; there it fails in the way named by `fault`."""

    def __init__(self, trainer_state, fault: str, step: int, turn: int):
        super().__init__()
        self.trainer_state, self.fault, self.step, self.turn = trainer_state, fault, step, turn

    def critique(self, prompts, hypotheses, references=None):
        feedback = super().critique(prompts, hypotheses, references)
        turn = (len(self.hypotheses) - 1) % 2  # two turns per step
        if (self.trainer_state().global_step, turn) != (self.step, self.turn):
            return feedback
        if self.fault == "raises":
            raise RuntimeError("critic backend down")
        if self.fault == "wrong_count":
            return feedback[:-1]
        if self.fault == "none_item":
            return [None, *feedback[1:]]
        if self.fault == "bytes_item":
            return [b"No error.", *feedback[1:]]
        if self.fault == "not_a_list":
            return "No error."
        raise AssertionError(self.fault)


@pytest.mark.parametrize(
    ("fault", "step", "turn", "message"),
    [
        ("raises", 1, 1, r"critique raised RuntimeError\('critic backend down'\) \(global step 1, turn 1\)"),
        ("wrong_count", 0, 0, r"one feedback per hypothesis: expected 2, got 1 \(global step 0, turn 0\)"),
        ("none_item", 0, 0, r"returned NoneType at index 0, feedback must be text \(global step 0, turn 0\)"),
        ("bytes_item", 0, 1, r"returned bytes at index 0, feedback must be text \(global step 0, turn 1\)"),
        ("not_a_list", 0, 0, r"expected 2, got str \(global step 0, turn 0\)"),
    ],
    ids=["raises", "wrong_count", "none_item", "bytes_item", "not_a_list"],
)
def test_a_failing_critic_stops_the_run_naming_the_step_and_leaves_checkpoints_whole(
    tmp_path, rows, tokenizer, fault, step, turn, message
):
    """Checkpoints are saved after every step; the failing step leaves none, and the earlier ones stay whole."""
    trainer = RefinerTrainer(
        tiny_model(tokenizer),
        make_args(tmp_path, max_steps=3, save_strategy="steps", save_steps=1, num_refinement_turns=3),
        critic=OracleCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    trainer.critic = FlakyCritic(lambda: trainer.state, fault, step, turn)
    with pytest.raises(CriticError, match=message):
        trainer.train()
    assert trainer.state.global_step == step
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == [f"checkpoint-{n}" for n in range(1, step + 1)]
    for n in range(1, step + 1):
        checkpoint = tmp_path / f"checkpoint-{n}"
        assert is_complete_checkpoint(checkpoint) and (checkpoint / "model.safetensors").is_file()
        assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == n


class HangingServer(LocalEndpoint):
    """An OpenAI-compatible endpoint that accepts requests and never answers (until closed)."""

    def __init__(self):
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                server.requests += 1
                server.release.wait()

        super().__init__(Handler)


def test_an_endpoint_critic_that_times_out_is_retried_then_named(tmp_path, rows, tokenizer, monkeypatch, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    server = HangingServer()
    try:
        generator = OpenAIChatGenerator("critic-llm", base_url=server.base_url, timeout=0.2, max_retries=1)
        trainer = RefinerTrainer(
            tiny_model(tokenizer),
            make_args(tmp_path, max_steps=1, num_refinement_turns=2, num_hypotheses=1),
            critic=LLMCritic(generator),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        with caplog.at_level(logging.DEBUG), pytest.raises(CriticError) as caught:
            trainer.train()
    finally:
        server.close()
    message = str(caught.value)
    assert "LLMCritic.critique raised GeneratorError" in message
    assert "failed after 2 attempt(s)" in message and "timed out" in message
    assert message.endswith("(global step 0, turn 0)")
    assert server.requests == 4  # both prompts of the batch, each tried twice
    assert SECRET not in message and SECRET not in caplog.text


# --- non-finite losses --------------------------------------------------------------------------------------------


def poison_logits_at(model, trainer_state, step: int, kind: str, eos_token_id: int) -> None:
    """At global step `step`, the training forward's logits become NaN (`"nan"`), or -inf for the EOS token that ends
    every gold completion (`"inf"`: an infinite cross-entropy). Both stay tied to the weights, as overflow is."""

    def hook(module, args, output):
        if module.training and trainer_state().global_step == step:
            if kind == "nan":
                output.logits = output.logits * float("nan")
            else:
                eos = torch.tensor([eos_token_id], device=output.logits.device)
                output.logits = output.logits.index_fill(-1, eos, float("-inf"))
        return output

    model.register_forward_hook(hook)


@pytest.mark.parametrize("kind", ["nan", "inf"])
def test_a_nonfinite_loss_stops_the_run_naming_the_step(tmp_path, rows, tokenizer, kind):
    model = tiny_model(tokenizer)
    trainer = RefinerTrainer(
        model,
        make_args(tmp_path, max_steps=3, num_refinement_turns=1),
        critic=OracleCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    poison_logits_at(model, lambda: trainer.state, 1, kind, tokenizer.eos_token_id)
    with pytest.raises(FloatingPointError, match=rf"Non-finite training loss {kind} at global step 1, micro-batch 0"):
        trainer.train()
    assert trainer.state.global_step == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())  # never stepped with it


class Snapshots(TrainerCallback):
    def __init__(self):
        self.weights: dict[int, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = torch.cat([p.detach().flatten().clone() for p in model.parameters()])


def test_skip_gives_a_nonfinite_micro_batch_no_gradient_and_counts_it(tmp_path, rows, tokenizer):
    model = tiny_model(tokenizer)
    snapshots = Snapshots()
    args = make_args(
        tmp_path,
        max_steps=3,
        num_refinement_turns=1,
        nonfinite_loss="skip",
        optim="sgd",
        learning_rate=0.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
    )
    trainer = RefinerTrainer(
        model,
        args,
        critic=OracleCritic(),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=[snapshots],
    )
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    poison_logits_at(model, lambda: trainer.state, 1, "nan", tokenizer.eos_token_id)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    skipped = "Skipping a micro-batch with a non-finite training loss at global step 1, micro-batch 0"
    assert any(skipped in str(w.message) for w in caught)
    assert trainer.state.global_step == 3
    # Step 1 trains, step 2 (computed at global step 1) is skipped with zero gradients, step 3 trains again.
    assert not torch.equal(before, snapshots.weights[1])
    assert torch.equal(snapshots.weights[1], snapshots.weights[2])
    assert not torch.equal(snapshots.weights[2], snapshots.weights[3])
    assert torch.isfinite(snapshots.weights[3]).all()
    logs = {entry["step"]: entry for entry in trainer.state.log_history if "loss" in entry}
    assert [logs[step]["skipped_batches"] for step in (1, 2, 3)] == [0.0, 1.0, 0.0]
    assert all(math.isfinite(logs[step]["loss"]) for step in (1, 2, 3))  # logging_nan_inf_filter keeps it out
