"""Checkpoints of a REFINER run: which ones are complete, and the critic's state saved in each.

The Trainer writes `trainer_state.json` last, so a checkpoint whose `trainer_state.json` parses is whole. The critic's
state ([`~refiner_trl.critics.StatefulCritic`]) is JSON written atomically into the checkpoint before the Trainer's
files, so that the same file vouches for it too.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .critics import Critic, CriticError
from .report import write_text


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a checkpoint folder whose `trainer_state.json`, written last by the Trainer, is readable.

    Args:
        path (`str` or `Path`):
            The checkpoint folder.
    """
    try:
        json.loads((Path(path) / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-<step>` folder in `output_dir`, warning about newer incomplete ones.

    Args:
        output_dir (`str` or `Path`):
            The run's output folder.

    Returns:
        `str` or `None`: the checkpoint's path, or `None` when `output_dir` holds no complete checkpoint.
    """
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    folders = sorted(
        (int(path.name[len(prefix) :]), path)
        for path in Path(output_dir).glob(f"{prefix}*")
        if path.is_dir() and path.name[len(prefix) :].isdigit()
    )
    skipped = []
    for _, path in reversed(folders):
        if is_complete_checkpoint(path):
            if skipped:
                warnings.warn(
                    f"Skipping incomplete checkpoint(s) {', '.join(skipped)} (no readable {TRAINER_STATE_NAME}: "
                    f"cut short while being written); resuming from {path.name}.",
                    stacklevel=3,
                )
            return str(path)
        skipped.append(path.name)
    return None


def critic_state_file(checkpoint: str | Path, world_size: int, process_index: int) -> Path:
    """The file of a process's critic state in `checkpoint`: `critic_state.json`, or one per process.

    Args:
        checkpoint (`str` or `Path`):
            The checkpoint folder.
        world_size (`int`):
            How many processes train; with more than one, each saves its own critic's state.
        process_index (`int`):
            This process's index.
    """
    name = "critic_state.json" if world_size <= 1 else f"critic_state_{process_index}.json"
    return Path(checkpoint) / name


def save_critic_state(
    critic: Critic, checkpoint: str | Path, global_step: int, world_size: int, process_index: int
) -> None:
    """Write the critic's `state_dict()` as JSON into `checkpoint`, atomically; stateless critics write nothing.

    Args:
        critic ([`~refiner_trl.critics.Critic`]):
            The critic; it has state when it has `state_dict`.
        checkpoint (`str` or `Path`):
            The checkpoint folder (created when missing).
        global_step (`int`):
            The step being saved, named in the error.
        world_size (`int`):
            How many processes train (see [`critic_state_file`]).
        process_index (`int`):
            This process's index.

    Raises:
        [`~refiner_trl.critics.CriticError`]: when `state_dict()` raises or returns something that is not JSON data.
    """
    if not callable(getattr(critic, "state_dict", None)):
        return
    where = f"{type(critic).__name__}.state_dict() at global step {global_step}"
    try:
        text = json.dumps(critic.state_dict(), allow_nan=False)
    except Exception as error:
        raise CriticError(f"{where} must return JSON data for the checkpoint: {error!r}") from error
    write_text(critic_state_file(checkpoint, world_size, process_index), text)


def load_critic_state(critic: Critic, checkpoint: str | Path, world_size: int, process_index: int) -> None:
    """Give the critic back the state saved in `checkpoint`, warning when the critic and checkpoint disagree.

    A stateful critic (one with `load_state_dict`) and a checkpoint without its state file, or a stateless critic and
    a checkpoint with one, are warned about; the critic keeps its current state.

    Args:
        critic ([`~refiner_trl.critics.Critic`]):
            The critic to restore.
        checkpoint (`str` or `Path`):
            The checkpoint folder training resumes from.
        world_size (`int`):
            How many processes train (see [`critic_state_file`]).
        process_index (`int`):
            This process's index.

    Raises:
        [`~refiner_trl.critics.CriticError`]: when `load_state_dict` raises on the saved state.
    """
    path = critic_state_file(checkpoint, world_size, process_index)
    stateful = callable(getattr(critic, "load_state_dict", None))
    if not path.is_file():
        if stateful:
            warnings.warn(
                f"{checkpoint} holds no {path.name}: the critic resumes with its current state.", stacklevel=3
            )
        return
    if not stateful:
        warnings.warn(
            f"{checkpoint} holds a {path.name}, but the critic has no load_state_dict; it is ignored.", stacklevel=3
        )
        return
    try:
        critic.load_state_dict(json.loads(path.read_text(encoding="utf-8")))
    except Exception as error:
        raise CriticError(f"{type(critic).__name__}.load_state_dict failed on {path}: {error!r}") from error
