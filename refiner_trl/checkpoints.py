"""Checkpoints of a REFINER run: which ones are complete.

The Trainer writes `trainer_state.json` last, so a checkpoint whose `trainer_state.json` parses is whole. The critic's
state saved in each checkpoint is [`refiner_trl.critics.state`]'s.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


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
