"""The benchmarks' shared skeleton: options and settings, quiet training, data and tiny models, and the driver that
writes a run's JSON, markdown and PNG (or re-renders them from an earlier run's JSON).

`_machine` describes the machine of a run, `_measurements` summarises repeated measurements."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import typing
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from refiner_trl.report import write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "refiner-paper"
"""The REFINER release's processed data, when the checkout sits next to `../shared` (never required)."""


def quiet() -> None:
    """Silence the progress bars, warnings and info logs of transformers, datasets and accelerate."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    for name in ("accelerate", "DeepSpeed", "deepspeed", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def set_threads(threads: int | None) -> int:
    """Use `threads` torch threads (default: torch's own choice) and return the number in use.

    Args:
        threads (`int`, *optional*):
            The number of torch threads; `None` or `0` leaves torch's choice.
    """
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def train_quietly(trainer: Any, *callbacks: Any) -> Any:
    """Train without the per-log prints of `PrinterCallback` (a benchmark prints its own summary); return `trainer`.

    Args:
        trainer (`transformers.Trainer`):
            A trainer, not trained yet.
        *callbacks (`TrainerCallback`):
            More callbacks, e.g. a step timer.
    """
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    for callback in callbacks:
        trainer.add_callback(callback)
    trainer.train()
    return trainer


# ---------------------------------------------------------------------------------------------------- options


def add_common_arguments(
    parser: argparse.ArgumentParser,
    default_output: str,
    default_seeds: Sequence[int],
    resume_help: str | None = None,
    render: bool = False,
) -> None:
    """The options every benchmark has: `--quick`, `--output-dir`, `--seeds`, `--threads`; `--resume` and `--render`
    for those that have them.

    Args:
        parser (`argparse.ArgumentParser`):
            The benchmark's parser.
        default_output (`str`):
            The default `--output-dir`.
        default_seeds (`Sequence[int]`):
            The seeds used without `--seeds` (for the help text).
        resume_help (`str`, *optional*):
            The help of `--resume`; no `--resume` when `None`.
        render (`bool`, *optional*, defaults to `False`):
            Whether there is `--render JSON` (re-render the markdown and plot of an earlier run).
    """
    parser.add_argument("--quick", action="store_true", help="A tiny run of a few minutes (CI runs it).")
    parser.add_argument("--output-dir", default=default_output, help="Where the JSON, markdown and PNG go.")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help=f"Seeds (default {' '.join(map(str, default_seeds))})."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per process (default: torch's choice). On a CPU shared with other jobs, 1 is far "
        "faster than oversubscribed threads.",
    )
    if resume_help is not None:
        parser.add_argument("--resume", action="store_true", help=resume_help)
    if render:
        parser.add_argument(
            "--render", metavar="JSON", default=None, help="Only write the markdown and plot of an earlier run's JSON."
        )


def add_data_dir_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """`--data-dir`: the release's data (default [`DEFAULT_DATA_DIR`]); `none` for synthetic rows, see [`data_dir`].

    Args:
        parser (`argparse.ArgumentParser`):
            The benchmark's parser.
        help (`str`):
            The option's help text.
    """
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help=help)


def data_dir(value: str) -> Path | None:
    """The folder of a `--data-dir` value; `None` (synthetic rows) for `none`.

    Args:
        value (`str`):
            The option's value.
    """
    return None if value.lower() == "none" else Path(value)


def add_settings_arguments(parser: argparse.ArgumentParser, settings_class: type) -> None:
    """One `--<field>` option a field of the `settings_class` dataclass (`None` by default: keep the field's value).

    The type comes from the field's annotation: `int`, `float`, `int | None` (an `int` option) or `list[int]` (one or
    more values).

    Args:
        parser (`argparse.ArgumentParser`):
            The benchmark's parser.
        settings_class (`type`):
            A dataclass of sizes and step counts.
    """
    hints = typing.get_type_hints(settings_class)
    for field in dataclasses.fields(settings_class):
        kind, nargs = hints[field.name], None
        if typing.get_origin(kind) is list:
            kind, nargs = typing.get_args(kind)[0], "+"
        elif typing.get_args(kind):  # `X | None`: an option of type X
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        name = f"--{field.name.replace('_', '-')}"
        parser.add_argument(name, type=kind, nargs=nargs, default=None, help=f"Override {field.name}.")


def settings_from_args(args: argparse.Namespace, default: Any) -> Any:
    """A copy of the `default` settings with every field that `args` sets (not `None`) replaced.

    Args:
        args (`argparse.Namespace`):
            The parsed options; fields it lacks or leaves `None` keep their default.
        default (dataclass instance):
            The settings of the run (`QUICK` or the full run's).
    """
    overrides = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(default)
        if getattr(args, field.name, None) is not None
    }
    return dataclasses.replace(default, **overrides)


def command_line(argv: Sequence[str] | None) -> str:
    """The command that ran the benchmark, as written in its JSON and markdown.

    Args:
        argv (`Sequence[str]`, *optional*):
            The arguments `main` was called with; `None`: the process's own.
    """
    return "python " + " ".join([Path(sys.argv[0]).as_posix(), *(sys.argv[1:] if argv is None else argv)])


# ------------------------------------------------------------------------------------------- data and models


def task_data(
    task_name: str, data_dir: Path | None, synthetic_train: int, synthetic_eval: int, max_eval: int | None
) -> tuple[Any, Any, Any, str]:
    """The task and its training and evaluation rows: the paper's release when present, else synthetic rows.

    Real data: `train.json` for training and the first `max_eval` rows of `val.json` for evaluation. Synthetic:
    `synthetic_train` rows with seed 0 and `synthetic_eval` rows with seed 1 (a different draw).

    Args:
        task_name (`str`):
            The task's name (`get_task`).
        data_dir (`Path`, *optional*):
            The release's folder (`<data_dir>/<task>/train.json`, `val.json`); `None`: synthetic rows.
        synthetic_train (`int`):
            Synthetic training rows.
        synthetic_eval (`int`):
            Synthetic evaluation rows.
        max_eval (`int`, *optional*):
            At most this many evaluation rows.

    Returns:
        `(task, train_rows, eval_rows, source)`, `source` being `"release"` or `"synthetic"`.
    """
    from refiner_trl.tasks import get_task

    task = get_task(task_name)
    folder = None if data_dir is None else Path(data_dir) / task_name
    if folder is not None and (folder / "train.json").is_file() and (folder / "val.json").is_file():
        train = task.load(path=str(folder / "train.json"))
        evaluation = task.load(path=str(folder / "val.json"))
        source = "release"
    else:
        train = task.synthetic(n=synthetic_train, seed=0)
        evaluation = task.synthetic(n=synthetic_eval, seed=1)
        source = "synthetic"
    if max_eval is not None and len(evaluation) > max_eval:
        evaluation = evaluation.select(range(max_eval))
    return task, train, evaluation, source


def tiny_model(
    architecture: str, texts: list[str], vocab_size: int, hidden_size: int, num_layers: int, seed: int
) -> tuple[Any, Any]:
    """A byte-level BPE tokenizer trained on `texts` and a tiny model with random weights built from a config.

    Args:
        architecture (`str`):
            `"seq2seq"` or `"causal"`.
        texts (`list[str]`):
            The tokenizer's training texts (e.g. `Task.tokenizer_texts`).
        vocab_size (`int`):
            The tokenizer's vocabulary size.
        hidden_size (`int`):
            The model's hidden size.
        num_layers (`int`):
            Its layers (per stack).
        seed (`int`):
            The seed of its weights.

    Returns:
        `(model, tokenizer)`.
    """
    from refiner_trl.modeling import build_tiny_model, train_tokenizer

    tokenizer = train_tokenizer(texts, vocab_size=vocab_size)
    model = build_tiny_model(architecture, tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    return model, tokenizer


def completion_length(tokenizer: Any, completions: Sequence[str], quantile: float, eos: bool = False) -> int:
    """The `quantile` of the completions' lengths in tokens (the lower one: no interpolation).

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer.
        completions (`Sequence[str]`):
            The gold completions.
        quantile (`float`):
            In [0, 1], e.g. `0.95`.
        eos (`bool`, *optional*, defaults to `False`):
            Whether to count the EOS token that ends every completion.
    """
    ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    lengths = sorted(len(row) + int(eos) for row in ids)
    return lengths[int(quantile * (len(lengths) - 1))]


# ----------------------------------------------------------------------------------------------------- driver


@dataclasses.dataclass
class Outputs:
    """A benchmark's files in `output_dir`: `<name>.json` (the run), `<name>.md` (its tables), `<name>.png` (its plot).

    Args:
        name (`str`):
            The files' stem, e.g. `"step_cost"`.
        output_dir (`Path`):
            Their folder.
        format_markdown (`Callable[[dict], str]`):
            The run's data -> the markdown.
        plot (`Callable[[dict, Path], Path]`):
            The run's data and the PNG's path -> the PNG written.
        complete (`Callable[[dict], None]`, *optional*):
            Fills what is derived from the data (e.g. a summary) before any file is written.
    """

    name: str
    output_dir: Path
    format_markdown: Callable[[dict[str, Any]], str]
    plot: Callable[[dict[str, Any], Path], Path]
    complete: Callable[[dict[str, Any]], None] | None = None

    @property
    def json_path(self) -> Path:
        """`<output_dir>/<name>.json`."""
        return self.output_dir / f"{self.name}.json"

    def earlier(self, resume: bool) -> dict[str, Any]:
        """The JSON of an earlier run in `output_dir` when `resume` and there is one, else `{}`.

        Args:
            resume (`bool`):
                The `--resume` option.
        """
        return json.loads(self.json_path.read_text(encoding="utf-8")) if resume and self.json_path.is_file() else {}

    def save(self, data: dict[str, Any]) -> Path:
        """Complete `data` and write it to `<name>.json` (strict JSON, atomically).

        Args:
            data (`dict`):
                The run so far.
        """
        if self.complete is not None:
            self.complete(data)
        return write_json(self.json_path, data)

    def finish(self, data: dict[str, Any], write_data: bool = True) -> dict[str, Any]:
        """Write the JSON (when `write_data`), the markdown and the plot; print the markdown; return `data`.

        Args:
            data (`dict`):
                The whole run.
            write_data (`bool`, *optional*, defaults to `True`):
                Whether to write `<name>.json` too (`False` when re-rendering an earlier run's JSON).
        """
        if write_data:
            self.save(data)
        elif self.complete is not None:
            self.complete(data)
        markdown = self.format_markdown(data)
        write_text(self.output_dir / f"{self.name}.md", markdown)
        self.plot(data, self.output_dir / f"{self.name}.png")
        print()
        print(markdown)
        print(f"Written to {self.output_dir}/{self.name}.{{json,md,png}}", flush=True)
        return data


def drive(args: argparse.Namespace, outputs: Outputs, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a benchmark: with `--render JSON`, only re-render that JSON's markdown and plot into `outputs`; else
    silence the libraries ([`quiet`]), `measure()` and write every output file.

    Args:
        args (`argparse.Namespace`):
            The parsed options (`render` is read when present).
        outputs (`Outputs`):
            The benchmark's files.
        measure (`Callable[[], dict]`):
            Runs the benchmark and returns its data (it may `outputs.save` partial results on the way).
    """
    if getattr(args, "render", None):
        data = json.loads(Path(args.render).read_text(encoding="utf-8"))
        return outputs.finish(data, write_data=False)
    quiet()
    return outputs.finish(measure())
