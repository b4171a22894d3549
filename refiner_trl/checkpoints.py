"""Checkpoints of a run: which are complete (a manifest written last), which to resume from, the output folder.

A checkpoint is complete when every file it holds is whole. [`CheckpointManifestCallback`] (every trainer of this
package has it) writes `checkpoint-manifest.json` last at each save: every file of the checkpoint and its size. A
checkpoint with a manifest is complete when each listed file is there with its size; one without (written by another
trainer, or killed in the moment between the Trainer's last file and the manifest) when its `trainer_state.json`,
which the Trainer writes after its other files, parses and its weights and `.pt`/`.pth` files are whole (a
safetensors file as long as its header says, a torch zip file with its central directory). The critic's state saved
in each checkpoint is [`refiner_trl.critics.state`]'s.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import warnings
import zipfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .report import write_text

MANIFEST_NAME = "checkpoint-manifest.json"
"""The file written last into each checkpoint: `{"files": {relative path: size in bytes}}`."""

_TRUE_WORDS = {"true", "yes", "1", "last", "latest"}
_FALSE_WORDS = {"false", "no", "0", "none", ""}


def checkpoint_folders(output_dir: str | Path) -> list[Path]:
    """The `checkpoint-<step>` folders of `output_dir`, oldest step first (other names are ignored)."""
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    if not Path(output_dir).is_dir():
        return []
    folders = [
        path for path in Path(output_dir).glob(f"{prefix}*") if path.is_dir() and path.name[len(prefix) :].isdigit()
    ]
    return sorted(folders, key=lambda path: int(path.name[len(prefix) :]))


def write_manifest(checkpoint: str | Path) -> Path:
    """Record every file of `checkpoint` and its size in its manifest, atomically; call it after every other file.

    Args:
        checkpoint (`str` or `Path`):
            The checkpoint folder.
    """
    folder = Path(checkpoint)
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.startswith(".")
    }
    return write_text(folder / MANIFEST_NAME, json.dumps({"files": files}, indent=1) + "\n")


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why `checkpoint` is not a complete checkpoint (naming the file at fault), or `None` when it is.

    Args:
        checkpoint (`str` or `Path`):
            The checkpoint folder.
    """
    folder = Path(checkpoint)
    if not folder.is_dir():
        return "no such folder"
    manifest = folder / MANIFEST_NAME
    if manifest.exists():
        try:
            files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
            listed = {str(name): int(size) for name, size in files.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return f"{MANIFEST_NAME} is not readable"
        for name, size in listed.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if path.stat().st_size != size:
                return f"{name} has {path.stat().st_size} bytes, its manifest says {size} (cut short or rewritten)"
        return None
    try:
        json.loads((folder / TRAINER_STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"no readable {TRAINER_STATE_NAME} (cut short while being written)"
    for path in sorted(folder.rglob("*")):
        problem = _file_problem(path) if path.is_file() else None
        if problem is not None:
            return f"{path.relative_to(folder).as_posix()} {problem}"
    return None


def _file_problem(path: Path) -> str | None:
    """Whether a checkpoint file without a manifest is whole, for the formats whose structure says so."""
    if path.suffix == ".safetensors":
        size = path.stat().st_size
        try:
            with open(path, "rb") as file:
                (header_size,) = struct.unpack("<Q", file.read(8))
                if header_size > size - 8:
                    return "is cut short (its header runs past the end of the file)"
                header = json.loads(file.read(header_size))
        except (OSError, ValueError, struct.error):
            return "is cut short (no readable header)"
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
        if 8 + header_size + max(ends, default=0) > size:
            return "is cut short (its tensors run past the end of the file)"
    elif path.suffix in (".pt", ".pth", ".bin") and path.stat().st_size > 0:
        # torch.save writes a zip file; a cut one has lost its central directory, at the end.
        if not zipfile.is_zipfile(path):
            return "is cut short (not a whole torch file)"
    return None


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a complete checkpoint folder (see [`checkpoint_problem`]).

    Args:
        path (`str` or `Path`):
            The checkpoint folder.
    """
    return checkpoint_problem(path) is None


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete `checkpoint-<step>` folder in `output_dir`, warning which newer ones were skipped and why.

    Args:
        output_dir (`str` or `Path`):
            The run's output folder.

    Returns:
        `str` or `None`: the checkpoint's path, or `None` when `output_dir` holds no complete checkpoint.
    """
    skipped = []
    for path in reversed(checkpoint_folders(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            if skipped:
                warnings.warn(
                    f"Skipping incomplete checkpoint(s) {', '.join(name for name, _ in skipped)} "
                    f"({'; '.join(f'{name}: {why}' for name, why in skipped)}); resuming from {path.name}.",
                    stacklevel=3,
                )
            return str(path)
        skipped.append((path.name, problem))
    if skipped:
        warnings.warn(
            f"No complete checkpoint in {output_dir}: {'; '.join(f'{name}: {why}' for name, why in skipped)}.",
            stacklevel=3,
        )
    return None


def resume_request(value: str | bool | None) -> bool | str | None:
    """What `--resume_from_checkpoint` asks for: `True` (the newest complete checkpoint), a path, or `None`.

    Args:
        value (`str`, `bool` or `None`):
            As the command line or the YAML gives it: `true`, `yes`, `1`, `last`, `latest` mean `True`; `false`,
            `no`, `0`, `none` and the empty string mean `None`.
    """
    if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
        return True if value.strip().lower() in _TRUE_WORDS else None
    return None if value is False else value


def resolve_resume_from_checkpoint(value: str | bool | None, output_dir: str | Path) -> str | None:
    """The checkpoint a recipe resumes from, for `--resume_from_checkpoint` as the command line gives it.

    `true` (also `yes`, `1`, `last`, `latest`, or `True`) means the newest complete checkpoint of `output_dir`, as
    TRL's scripts resume; when `output_dir` holds none (a first run, or a run killed while writing its first
    checkpoint) the run starts at step 0 with a warning, so that one command serves the first run and every restart.
    `false`, `no`, `0`, `none` or unset: no resuming. Anything else is a checkpoint folder, which must be complete.

    Args:
        value (`str`, `bool` or `None`):
            `TrainingArguments.resume_from_checkpoint`.
        output_dir (`str` or `Path`):
            The run's output folder.

    Returns:
        `str` or `None`: the checkpoint folder to pass to `trainer.train(resume_from_checkpoint=...)`, or `None`.

    Raises:
        `ValueError`: a path that is not a complete checkpoint, naming the file at fault.
    """
    value = resume_request(value)
    if value is None:
        return None
    if value is True:
        checkpoint = last_complete_checkpoint(output_dir)
        if checkpoint is None:
            warnings.warn(
                f"--resume_from_checkpoint true: {output_dir} holds no complete checkpoint; starting at step 0.",
                stacklevel=2,
            )
        return checkpoint
    problem = checkpoint_problem(value)
    if problem is not None:
        raise ValueError(
            f"--resume_from_checkpoint {value} is not a complete checkpoint: {problem}. Pass another checkpoint, "
            "or --resume_from_checkpoint true for the newest complete one in output_dir."
        )
    return str(value)


def check_output_dir(output_dir: str | Path, resuming: bool, overwrite: bool) -> None:
    """Refuse to start a run afresh into an `output_dir` that holds checkpoints of an earlier run, unless told to.

    Without the check, a rerun of the same command would start at step 0 and write over the earlier run's
    checkpoints one by one. With `overwrite`, the earlier `checkpoint-<step>` folders are deleted first (with a
    warning), so that a later `--resume_from_checkpoint true` cannot pick one of them; nothing else is touched.

    Args:
        output_dir (`str` or `Path`):
            The run's output folder.
        resuming (`bool`):
            Whether the run resumes from a checkpoint (then the folder is meant to hold checkpoints).
        overwrite (`bool`):
            `overwrite_output_dir`: start afresh over the earlier checkpoints.

    Raises:
        `FileExistsError`: `output_dir` holds checkpoints, and the run neither resumes nor overwrites.
    """
    if resuming:
        return
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise FileExistsError(f"output_dir {output_dir} is a file; choose a folder")
    folders = checkpoint_folders(output_dir)
    if not folders:
        return
    names = ", ".join(path.name for path in folders[-3:]) + (", ..." if len(folders) > 3 else "")
    if not overwrite:
        raise FileExistsError(
            f"output_dir {output_dir} already holds checkpoints of an earlier run ({names}). Pass "
            "--resume_from_checkpoint true to go on from the newest complete one, --overwrite_output_dir true to "
            "start again over them (they are deleted), or another --output_dir."
        )
    warnings.warn(
        f"overwrite_output_dir: deleting the earlier run's checkpoints in {output_dir} ({names}).", stacklevel=2
    )
    for path in folders:
        shutil.rmtree(path)


class CheckpointManifestCallback(TrainerCallback):
    """Writes each checkpoint's manifest ([`write_manifest`]) after the trainer saved it (`on_save`, which the
    Trainer calls once the checkpoint's files are written), on the process that saves; removes the manifest of a
    checkpoint about to be written again, so that a kill while it is rewritten does not leave a stale one.

    Works with any `transformers.Trainer` (`RefinerTrainer` has it; `refiner_trl.supervised.train_supervised` gives
    it to the `SFTTrainer` and `Seq2SeqTrainer` of the warm start and the critic).
    """

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._drop_stale(args, state, control)

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._drop_stale(args, state, control)

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process has written its files (RNG state, critic state, DeepSpeed shards)
        folder = self._folder(args, state)
        if args.should_save and folder.is_dir():
            write_manifest(folder)

    def _drop_stale(self, args: Any, state: Any, control: Any) -> None:
        if control.should_save and args.should_save:
            stale = self._folder(args, state) / MANIFEST_NAME
            if stale.exists():
                os.remove(stale)

    @staticmethod
    def _folder(args: Any, state: Any) -> Path:
        return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
