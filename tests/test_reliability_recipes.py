"""A recipe run as a user runs it: killed while it writes a checkpoint, a file of its newest checkpoint cut, the
same command rerun, a model folder not fetched yet, a negative learning rate. Every case is a row of
docs/reliability.md.

The recipe is `recipes/train_mwp.py` with `recipes/mwp_tiny.yaml`, shrunk on the command line to 4 steps that save
after each; it runs in this process (as `python recipes/train_mwp.py ...` would), so a fault is planted by replacing
one of the Trainer's save methods.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import RECIPES, load_recipe, parse_refiner_args
from transformers import Trainer

from refiner_trl.checkpoints import MANIFEST_NAME, checkpoint_problem, last_complete_checkpoint

SHRINK = [
    "--synthetic_train_size", "32",
    "--per_device_train_batch_size", "4",
    "--max_new_tokens", "6",
    "--max_completion_length", "16",
    "--max_steps", "4",
    "--save_strategy", "steps",
    "--save_steps", "1",
    "--logging_steps", "1",
    "--warmup_steps", "1",
    "--evaluate_after_training", "false",
    "--disable_tqdm", "true",
]  # fmt: skip


class Killed(BaseException):
    """Stands in for SIGKILL: not an `Exception`, so nothing on the way catches it."""


def run(output_dir: Path, *extra: str) -> None:
    """`python recipes/train_mwp.py --config recipes/mwp_tiny.yaml` shrunk, into `output_dir`."""
    argv = ["--config", str(RECIPES / "mwp_tiny.yaml"), *SHRINK, "--output_dir", str(output_dir), *extra]
    load_recipe("train_refiner").main(*parse_refiner_args("mwp", argv))


def losses(output_dir: Path) -> list[tuple[int, float]]:
    """The loss of every step, from the final checkpoint's log history (a resumed run's holds the earlier steps)."""
    state = json.loads((output_dir / "checkpoint-4" / "trainer_state.json").read_text())
    return [(entry["step"], entry["loss"]) for entry in state["log_history"] if "loss" in entry]


def assert_same_losses(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [step for step, _ in got] == [step for step, _ in expected] == [1, 2, 3, 4]
    assert [loss for _, loss in got] == pytest.approx([loss for _, loss in expected], abs=1e-6)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[tuple[int, float]]:
    output_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run(output_dir)
    return losses(output_dir)


def test_a_run_killed_while_it_writes_a_checkpoint_resumes_to_the_same_losses(tmp_path, uninterrupted, monkeypatch):
    output_dir = tmp_path / "run"
    save_rng_state = Trainer._save_rng_state

    def killed_at_step_3(self, folder):
        if self.state.global_step == 3:  # weights and optimizer written, RNG and trainer state not
            raise Killed
        save_rng_state(self, folder)

    monkeypatch.setattr(Trainer, "_save_rng_state", killed_at_step_3)
    with pytest.raises(Killed):
        run(output_dir)
    monkeypatch.undo()
    assert {"model.safetensors", "optimizer.pt"} <= {p.name for p in (output_dir / "checkpoint-3").iterdir()}
    assert (
        checkpoint_problem(output_dir / "checkpoint-3")
        == "no readable trainer_state.json (cut short while being written)"
    )
    assert (output_dir / "checkpoint-2" / MANIFEST_NAME).is_file()  # written last at each save

    with pytest.raises(
        FileExistsError, match=r"already holds checkpoints of an earlier run .*resume_from_checkpoint true"
    ):
        run(output_dir)  # the same command again, without resuming: refused, nothing written over
    with pytest.warns(
        UserWarning, match=r"Skipping incomplete checkpoint\(s\) checkpoint-3 .*resuming from checkpoint-2"
    ):
        run(output_dir, "--resume_from_checkpoint", "true")
    assert_same_losses(losses(output_dir), uninterrupted)


@pytest.mark.parametrize("cut", ["model.safetensors", "optimizer.pt"])
def test_a_cut_file_in_the_newest_checkpoint_is_skipped_naming_it(tmp_path, uninterrupted, cut, monkeypatch):
    output_dir = tmp_path / "run"
    save_checkpoint = Trainer._save_checkpoint

    def stop_after_step_3(self, model, trial):
        save_checkpoint(self, model, trial)
        if self.state.global_step == 3:
            self.control.should_training_stop = True  # so that checkpoint-3 is the newest

    monkeypatch.setattr(Trainer, "_save_checkpoint", stop_after_step_3)
    run(output_dir, "--save_total_limit", "2")
    monkeypatch.undo()
    path = output_dir / "checkpoint-3" / cut
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size // 2)

    with pytest.warns(
        UserWarning, match=rf"Skipping incomplete checkpoint\(s\) checkpoint-3 .checkpoint-3: {cut} has"
    ):
        assert last_complete_checkpoint(output_dir) == str(output_dir / "checkpoint-2")
    (output_dir / "checkpoint-3" / MANIFEST_NAME).unlink()  # without a manifest, the file's structure tells
    assert checkpoint_problem(output_dir / "checkpoint-3").startswith(f"{cut} is cut short")
    with pytest.raises(ValueError, match=rf"checkpoint-3 is not a complete checkpoint: {cut} is cut short"):
        run(output_dir, "--resume_from_checkpoint", str(output_dir / "checkpoint-3"))
    with pytest.warns(UserWarning, match=rf"checkpoint-3: {cut} is cut short.*resuming from checkpoint-2"):
        run(output_dir, "--resume_from_checkpoint", "true")
    assert_same_losses(losses(output_dir), uninterrupted)


def test_a_rerun_overwrites_only_when_told_and_resume_true_starts_a_fresh_folder(tmp_path, uninterrupted):
    output_dir = tmp_path / "run"
    with pytest.warns(UserWarning, match=r"holds no complete checkpoint; starting at step 0"):
        run(output_dir, "--resume_from_checkpoint", "true", "--max_steps", "1")  # the first run of a requeued job
    (output_dir / "notes.txt").write_text("mine")
    with pytest.warns(
        UserWarning, match=r"overwrite_output_dir: deleting the earlier run's checkpoints .*checkpoint-1"
    ):
        run(output_dir, "--overwrite_output_dir", "true")
    assert_same_losses(losses(output_dir), uninterrupted)
    assert (output_dir / "notes.txt").read_text() == "mine"  # only checkpoint folders are deleted


def test_a_model_folder_not_fetched_yet_says_how_to_fetch_it(tmp_path):
    missing = tmp_path / "outputs" / "pretrained" / "smollm2-135m-instruct"
    with pytest.raises(FileNotFoundError) as caught:
        run(tmp_path / "run", "--model_name_or_path", str(missing))
    message = str(caught.value)
    assert message.startswith(f"model_name_or_path: {missing} does not exist")
    assert f"python -m refiner_trl.pretrained fetch smollm2-135m-instruct --output-dir {missing}" in message
    with pytest.raises(FileNotFoundError, match=r"fetch NAME --output-dir .*convert FILE.gguf"):
        run(tmp_path / "run", "--model_name_or_path", "outputs-that-are-not/here/model")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("where", ["yaml", "command line"])
def test_a_negative_learning_rate_is_refused_before_any_folder_is_made(tmp_path, where):
    output_dir = tmp_path / "run"
    if where == "yaml":
        recipe = tmp_path / "recipe.yaml"
        text = (RECIPES / "mwp_tiny.yaml").read_text()
        assert "learning_rate: 3.0e-3" in text
        recipe.write_text(text.replace("learning_rate: 3.0e-3", "learning_rate: -1e-3"))
        argv = ["--config", str(recipe), "--output_dir", str(output_dir)]
    else:
        argv = [
            "--config",
            str(RECIPES / "mwp_tiny.yaml"),
            "--learning_rate=-1e-3",  # as `--learning_rate -1e-3`, argparse would take -1e-3 for an option
            "--output_dir",
            str(output_dir),
        ]
    with pytest.raises(ValueError, match=r"learning_rate must be at least 0, got -0\.001"):
        parse_refiner_args("mwp", argv)
    assert not output_dir.exists()


def test_the_manifest_lists_the_checkpoints_files_and_a_copy_stays_complete(tmp_path):
    # A checkpoint copied elsewhere (mtimes change, sizes do not) is complete.
    source = tmp_path / "source"
    run(source, "--max_steps", "1")
    copy = tmp_path / "copy"
    shutil.copytree(source, copy)
    assert checkpoint_problem(copy / "checkpoint-1") is None
    manifest = json.loads((copy / "checkpoint-1" / MANIFEST_NAME).read_text())
    assert {"model.safetensors", "optimizer.pt", "trainer_state.json", "rng_state.pth"} <= set(manifest["files"])
