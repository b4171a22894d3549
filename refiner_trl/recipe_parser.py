"""How the recipes in `recipes/` read their arguments: TRL's `TrlParser` plus a check for misspelt keys.

`--config recipe.yaml` and command-line overrides fill the recipe's dataclasses as in TRL's own scripts; a key of the
YAML file or an option of the command line that no dataclass has raises a `ValueError` naming it, the file, and the
closest known key (TRL would name neither the file nor a suggestion, and argparse would take `--learning_rat` for
`--learning_rate`); a key the YAML file sets twice is refused with both its lines (PyYAML keeps the last one).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Hashable, Sequence
from typing import Any

import yaml
from trl import TrlParser


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's `SafeLoader`, which keeps the last of two equal keys without a word, refusing them instead."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, Hashable) and key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is set twice, on lines {first_line[key]} and {line}", key_node.start_mark
                )
            if isinstance(key, Hashable):
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def read_config(path: str) -> dict[str, Any]:
    """Read a YAML recipe with `yaml.safe_load`'s loader; it must hold a mapping, and set each key once.

    Args:
        path (`str`):
            The YAML file.

    Raises:
        `yaml.YAMLError`: a key set twice in one mapping (naming the key and both lines), or malformed YAML.
    """
    with open(path, encoding="utf-8") as file:
        loader = _UniqueKeyLoader(file)  # what `yaml.safe_load` does, with the SafeLoader subclass
        try:
            config = loader.get_single_data()
        finally:
            loader.dispose()
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a YAML mapping of argument names to values, got {type(config).__name__}")
    return config


def parse_recipe_args(
    dataclass_types: Sequence[type], argv: Sequence[str] | None = None, task: str | None = None
) -> tuple[Any, ...]:
    """Parse `--config recipe.yaml` and command-line overrides into the dataclasses, as TRL's scripts do.

    This is [`~trl.TrlParser.parse_args_and_config`] with one addition: a key or option that no dataclass has raises a
    `ValueError` naming it (and the file) with the closest known key.

    Args:
        dataclass_types (`Sequence[type]`):
            The argument dataclasses, e.g. `recipes/train_refiner.py`'s `REFINER_ARGUMENTS`.
        argv (`Sequence[str]`, *optional*):
            The arguments; defaults to `sys.argv[1:]`.
        task (`str`, *optional*):
            The task a task-specific recipe trains (`recipes/train_mwp.py`: `"mwp"`): the default of the `task`
            field, and a `task` set to another one raises `ValueError`.

    Returns:
        `tuple`: one instance of each dataclass, in the order of `dataclass_types`.

    Example:

    ```python
    >>> from refiner_trl import RefinerConfig
    >>> from refiner_trl.script_args import CriticArguments, EvaluationArguments, ModelArguments, TaskArguments
    >>> task_args, model_args, critic_args, eval_args, args = parse_recipe_args(
    ...     (TaskArguments, ModelArguments, CriticArguments, EvaluationArguments, RefinerConfig),
    ...     ["--config", "recipes/ms_tiny.yaml", "--learning_rate", "1e-4"],
    ... )
    >>> task_args.task, args.learning_rate
    ('moral_stories', 0.0001)
    ```
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    config_path, cli = _split_config(argv)
    parser = TrlParser(dataclass_types)

    options = {s: a.dest for s, a in parser._option_string_actions.items()}
    for token in cli:
        name = token.split("=", 1)[0]
        if name.startswith("--") and name not in options:
            raise ValueError(f"unknown option {name!r}{_suggest(name, sorted(options))}")
    if config_path is not None:
        known = sorted({a.dest for a in parser._actions if a.dest != "help"} | {"env"})
        for key in read_config(config_path):
            if key not in known:
                raise ValueError(f"unknown key {key!r} in {config_path}{_suggest(str(key), known)}")

    if task is not None:
        parser.set_defaults(task=task)
    parsed = tuple(parser.parse_args_and_config(cli if config_path is None else ["--config", config_path, *cli]))
    chosen = next((obj.task for obj in parsed if hasattr(obj, "task")), task)
    if task is not None and chosen != task:
        raise ValueError(
            f"This recipe trains the {task!r} task, but the arguments set task: {chosen!r}. "
            f"Remove the `task` key, or run the recipe of the {chosen!r} task."
        )
    return parsed


def _suggest(name: str, known: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _split_config(argv: list[str]) -> tuple[str | None, list[str]]:
    """The `--config` path and the other arguments, accepting `--config path` and `--config=path`."""
    for index, token in enumerate(argv):
        if token == "--config":
            if index + 1 >= len(argv):
                raise ValueError("--config needs the path of a YAML file")
            return argv[index + 1], argv[:index] + argv[index + 2 :]
        if token.startswith("--config="):
            return token.split("=", 1)[1], argv[:index] + argv[index + 1 :]
    return None, argv
