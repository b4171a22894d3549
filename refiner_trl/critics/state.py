"""The critic's state saved in a REFINER run's checkpoints, and given back on resuming.

The critic's state ([`~refiner_trl.critics.StatefulCritic`]) is JSON written atomically into the checkpoint before the
Trainer's files; the Trainer writes `trainer_state.json` last, so that file vouches for the critic's state too
([`~refiner_trl.checkpoints.is_complete_checkpoint`]).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..report import write_text
from .base import Critic, CriticError


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
