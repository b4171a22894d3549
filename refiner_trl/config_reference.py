"""The YAML reference of [`RefinerConfig`]'s own fields, generated from the dataclass and its docstring.

`python -m refiner_trl.config_reference` prints the markdown table that README.md holds between the
`config-reference` markers; `--write README.md` replaces it there. A test fails when the two differ.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from transformers import TrainingArguments

from .config import RefinerConfig, SupervisedConfig

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"


def _descriptions(docstring: str) -> dict[str, str]:
    """Map each documented parameter to its description, joined into one line."""
    descriptions: dict[str, str] = {}
    current = None
    for line in docstring.splitlines():
        match = re.match(r"^ {8}(\w+) \(`", line)
        if match:
            current = match.group(1)
            descriptions[current] = ""
        elif current and line.startswith(" " * 12):
            descriptions[current] = f"{descriptions[current]} {line.strip()}".strip()
        elif line.strip():
            current = None
    return descriptions


def config_reference() -> str:
    """Markdown table of the fields RefinerConfig adds to or changes from `TrainingArguments`."""
    descriptions = {**_descriptions(SupervisedConfig.__doc__ or ""), **_descriptions(RefinerConfig.__doc__ or "")}
    base = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]
    for field in dataclasses.fields(RefinerConfig):
        if field.name.startswith("_") or (field.name in base and base[field.name] == field.default):
            continue
        default = repr(field.default).replace("|", "\\|").replace("\n", "\\n")
        text = (descriptions.get(field.name) or field.metadata.get("help", "")).replace("|", "\\|")
        rows.append(f"| `{field.name}` | `{default}` | {text} |")
    return "\n".join(rows)


def replace_reference(text: str) -> str:
    """Return `text` with the block between the markers replaced by the current reference."""
    if START not in text or END not in text:
        raise ValueError(f"the markers {START} and {END} are missing")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{config_reference()}\n{END}{tail}"


def main() -> None:
    """Print the reference, or write it into a file between the markers."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="file whose reference block to replace (e.g. README.md)")
    path = parser.parse_args().write
    if path is None:
        print(config_reference())
    else:
        path.write_text(replace_reference(path.read_text()))


if __name__ == "__main__":
    main()
