"""Prompt-completion data: loading from the Hub or local files, checking, and encoding for both architectures."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_dataset

PROMPT = "prompt"
COMPLETION = "completion"
LABEL_PAD = -100
CHAT_ROLES = ("system", "user", "assistant")
"""The message roles of a conversational prompt-completion row."""


class DataError(ValueError):
    """Raised for data a trainer or task cannot use; the message names the file, row or field."""


def load_records(source: str, split: str = "train", subset: str | None = None) -> Dataset:
    """Load rows from a local `.json` / `.jsonl` file, a local folder saved with `save_to_disk`, or a Hub dataset.

    A local JSON file may hold a list of objects or one object per line. Hub loading needs network access;
    these machines have none, so tests pass local files.

    Args:
        source (`str`):
            A path, or a Hub dataset id such as `"demelin/moral_stories"`.
        split (`str`, *optional*, defaults to `"train"`):
            The split to read from a Hub dataset or a saved `DatasetDict` folder (ignored for JSON files).
        subset (`str`, *optional*):
            The Hub dataset's configuration name.
    """
    path = Path(source)
    if path.is_dir():
        from datasets import load_from_disk

        loaded = load_from_disk(str(path))
        if not hasattr(loaded, "keys"):
            return loaded
        if split not in loaded:
            raise DataError(f"{source}: no split {split!r} (splits: {sorted(loaded)})")
        return loaded[split]
    if path.suffix in {".json", ".jsonl"} or path.exists():
        if not path.is_file():
            raise DataError(f"{source}: no such file")
        rows, places = _read_json_rows(path)
        return rows_to_dataset(rows, str(path), places)
    return load_dataset(source, subset, split=split)


def _read_json_rows(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The rows of a JSON or JSONL file, and where each one is (`row <index>` or `line <number>`)."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}: not valid JSON ({error})") from error
        places = [f"row {index}" for index in range(len(rows))]
    else:
        rows, places = [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DataError(f"{path}, line {number}: not valid JSON ({error})") from error
            places.append(f"line {number}")
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{path}, row {index}: expected a JSON object, got {type(row).__name__}")
    if not rows:
        raise DataError(f"{path}: holds no rows")
    return rows, places


def rows_to_dataset(rows: Sequence[dict[str, Any]], source: str, places: Sequence[str] | None = None) -> Dataset:
    """`Dataset.from_list(rows)`, with a [`DataError`] naming the row and field where rows disagree on a field's kind
    (a string prompt in one row and a list of messages in another, text and a number, ...), instead of pyarrow's
    `ArrowInvalid`, which names neither.

    Args:
        rows (`Sequence[dict]`):
            The rows, e.g. a list of standard or conversational prompt-completion rows.
        source (`str`):
            Names the rows in error messages: a file, or e.g. `"train rows"`.
        places (`Sequence[str]`, *optional*):
            Where each row is, e.g. `"line 3"` of a JSONL file; defaults to `"row <index>"`.

    Example:

    ```python
    >>> rows_to_dataset([{"prompt": "2 + 2 =", "completion": "4"}], "my rows").column_names
    ['prompt', 'completion']

    ```
    """
    try:
        return Dataset.from_list(list(rows))
    except (ValueError, TypeError) as error:  # pyarrow's ArrowInvalid / ArrowTypeError
        places = list(places) if places is not None else [f"row {index}" for index in range(len(rows))]
        first: dict[str, tuple[str, str]] = {}
        for place, row in zip(places, rows):
            for field, value in row.items():
                kind = _kind(value)
                if kind is None:
                    continue
                seen = first.setdefault(field, (kind, place))
                if seen[0] != kind:
                    fix = (
                        "; a dataset is either standard (strings) or conversational (lists of role/content messages), "
                        "not both"
                        if field in (PROMPT, COMPLETION) and {kind, seen[0]} == {"a string", "a list"}
                        else "; give every row the same kind of value"
                    )
                    where = f"{source}, {place}: {field!r}"
                    raise DataError(f"{where} is {kind}, but {seen[1]} has {seen[0]}{fix}") from None
        raise DataError(f"{source}: the rows do not fit one table ({type(error).__name__}: {error})") from None


def _kind(value: Any) -> str | None:
    """What pyarrow sees in a value: `None` (fits any column), a string, a number, a bool, a list or an object."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def require_fields(rows: Sequence[dict[str, Any]] | Dataset, fields: Sequence[str], source: str) -> None:
    """Raise [`DataError`] naming the first row and field that is missing, `None` or empty."""
    columns = set(rows.column_names) if isinstance(rows, Dataset) else None
    if columns is not None:
        missing = [field for field in fields if field not in columns]
        if missing:
            raise DataError(f"{source}: missing field {missing[0]!r} (columns: {sorted(columns)})")
    for index, row in enumerate(rows):
        for field in fields:
            value = row.get(field)
            if value is None or (isinstance(value, (str, list)) and len(value) == 0):
                raise DataError(f"{source}, row {index}: field {field!r} is missing or empty")


def validate_prompt_completion(dataset: Dataset, name: str = "train_dataset") -> bool:
    """Check TRL's prompt-completion format, standard or conversational, and return whether it is conversational.

    Standard rows hold non-empty `prompt` and `completion` strings. Conversational rows (TRL's format; the trainer
    detects it with `trl.data_utils.is_conversational`) hold a `prompt` list of `{"role", "content"}` messages that
    ends with a user message, and a `completion` list of one assistant message; roles are [`CHAT_ROLES`]. All rows of
    a dataset must have the first row's format.

    Raises:
        [`DataError`]: naming the dataset, and the row and field at fault.
    """
    if len(dataset) == 0:
        raise DataError(f"{name} is empty")
    for field in (PROMPT, COMPLETION):
        if field not in dataset.column_names:
            raise DataError(
                f"{name} has no {field!r} column (columns: {dataset.column_names}); "
                "RefinerTrainer takes TRL's prompt-completion format"
            )
    # Any list is taken as meant to be messages, so that a malformed one gets the error that names its fault.
    conversational = isinstance(dataset[0][PROMPT], list)
    for index, (prompt, completion) in enumerate(zip(dataset[PROMPT], dataset[COMPLETION])):
        where = f"{name}, row {index}"
        for field, value in ((PROMPT, prompt), (COMPLETION, completion)):
            if conversational and not isinstance(value, list):
                raise DataError(
                    f"{where}: {field!r} is a {type(value).__name__}, but row 0's prompt is a conversation (a list of "
                    "messages); a dataset is either standard (strings) or conversational (messages), not both"
                )
            if not conversational:
                if isinstance(value, list):
                    raise DataError(
                        f"{where}: {field!r} is a list, but row 0's prompt is a string; a dataset is either standard "
                        "(strings) or conversational (lists of role/content messages), not both"
                    )
                if not isinstance(value, str):
                    raise DataError(f"{where}: {field!r} must be a string, got {type(value).__name__}")
                if not value.strip():
                    raise DataError(f"{where}: {field!r} is empty")
        if conversational:
            check_messages(prompt, f"{where}, {PROMPT!r}", last_role="user")
            check_messages(completion, f"{where}, {COMPLETION!r}", last_role="assistant")
            if len(completion) != 1:
                raise DataError(f"{where}: {COMPLETION!r} must hold one assistant message, got {len(completion)}")
            if not content_text(completion[0]["content"]).strip():
                raise DataError(f"{where}, {COMPLETION!r}, message 0: 'content' is empty")
    return conversational


def check_messages(messages: Any, where: str, last_role: str | None = None) -> None:
    """Check a conversation: a non-empty list of `{"role", "content"}` messages with [`CHAT_ROLES`] and text content.

    Args:
        messages (`Any`):
            The value to check.
        where (`str`):
            Names the value in error messages, e.g. `"train_dataset, row 3, 'prompt'"`.
        last_role (`str`, *optional*):
            The role the last message must have.

    Raises:
        [`DataError`]: naming `where` and the message at fault.
    """
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: expected a non-empty list of messages, got {messages!r:.80}")
    for number, message in enumerate(messages):
        at = f"{where}, message {number}"
        if not isinstance(message, dict):
            raise DataError(f"{at}: expected a dict with 'role' and 'content', got {type(message).__name__}")
        for key in ("role", "content"):
            if message.get(key) is None:
                raise DataError(f"{at}: no {key!r} (a message is {{'role': ..., 'content': ...}})")
        if message["role"] not in CHAT_ROLES:
            raise DataError(f"{at}: role {message['role']!r} is not one of {', '.join(CHAT_ROLES)}")
        text = content_text(message["content"], at)
        if message["role"] == "user" and not text.strip():
            raise DataError(f"{at}: 'content' of the user's message is empty")
    if last_role is not None and messages[-1]["role"] != last_role:
        raise DataError(f"{where}: the last message must be the {last_role}'s, got role {messages[-1]['role']!r}")


def content_text(content: Any, where: str = "message") -> str:
    """The text of a message's content: a string as it is, or the `text` of its parts joined (TRL's content parts,
    `[{"type": "text", "text": ...}, ...]`, as the chat templates of multimodal-ready models read them).

    Args:
        content (`Any`):
            The message's `content`.
        where (`str`, *optional*, defaults to `"message"`):
            Names the message in error messages.

    Raises:
        [`DataError`]: when `content` is neither a string nor a list of text parts.

    Example:

    ```python
    >>> content_text([{"type": "text", "text": "2 + 2 "}, {"type": "text", "text": "="}])
    '2 + 2 ='

    ```
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise DataError(f"{where}: 'content' must be a string or a list of text parts, got {type(content).__name__}")
    texts = []
    for number, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise DataError(
                f"{where}, part {number}: expected a text part {{'type': 'text', 'text': ...}}, got {part!r:.80} "
                "(REFINER trains on text only)"
            )
        texts.append(part["text"])
    return "".join(texts)


@dataclass
class Truncation:
    """How many prompts and completions an encoding cut to fit the length limits."""

    prompts: int = 0
    completions: int = 0


def _pad(sequences: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(s) for s in sequences)
    rows = [[value] * (width - len(s)) + s if left else s + [value] * (width - len(s)) for s in sequences]
    return torch.tensor(rows, dtype=torch.long)


def _tokenize(tokenizer, texts: Sequence[str], special: bool) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=special)["input_ids"]


def _truncate_prompts(ids: list[list[int]], max_length: int | None) -> tuple[list[list[int]], int]:
    if max_length is None:
        return ids, 0
    # Prompts keep their end: in a refine prompt, the feedback is the newest and most needed part.
    return [s[-max_length:] for s in ids], sum(len(s) > max_length for s in ids)


def count_truncation(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_prompt_length: int | None,
    max_completion_length: int | None,
    add_special_tokens: bool = True,
) -> Truncation:
    """How many prompts and completions [`encode_prompt_completion`] would cut, without building any tensor."""
    prompt_lengths = [len(s) for s in _tokenize(tokenizer, prompts, special=add_special_tokens)]
    eos = int(add_special_tokens)
    completion_lengths = [len(s) + eos for s in _tokenize(tokenizer, completions, special=False)]
    return Truncation(
        prompts=0 if max_prompt_length is None else sum(n > max_prompt_length for n in prompt_lengths),
        completions=0 if max_completion_length is None else sum(n > max_completion_length for n in completion_lengths),
    )


def encode_prompts(
    tokenizer,
    prompts: Sequence[str],
    max_length: int | None,
    is_encoder_decoder: bool,
    add_special_tokens: bool = True,
) -> tuple[dict[str, torch.Tensor], int]:
    """Tokenize prompts for generation: left padding for causal models, right padding for encoder-decoders.

    `add_special_tokens=False` for chat-template renders, which hold their special tokens (BOS, ...) already.

    Returns:
        `(inputs, n_truncated)`: `input_ids` and `attention_mask` tensors, and how many prompts were cut.
    """
    ids, n_truncated = _truncate_prompts(_tokenize(tokenizer, prompts, special=add_special_tokens), max_length)
    left = not is_encoder_decoder
    input_ids = _pad(ids, tokenizer.pad_token_id, left)
    attention_mask = _pad([[1] * len(s) for s in ids], 0, left)
    return {"input_ids": input_ids, "attention_mask": attention_mask}, n_truncated


def encode_prompt_completion(
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    max_prompt_length: int | None,
    max_completion_length: int | None,
    is_encoder_decoder: bool,
    add_special_tokens: bool = True,
    left_pad: bool = False,
) -> tuple[dict[str, torch.Tensor], Truncation]:
    """Tokenize prompt-completion pairs for the cross-entropy of the completion given the prompt.

    Encoder-decoder: the prompt is the encoder input and the completion + EOS the labels. Causal: prompt + completion
    + EOS is one sequence, right-padded (left-padded with `left_pad`, so that every completion ends in the last
    column), whose labels mask the prompt and the padding with -100. Completions are cut to `max_completion_length`
    tokens (EOS included) and prompts keep their last `max_prompt_length` tokens.

    `add_special_tokens=False` for chat-template renders (see [`~refiner_trl.chat.render_prompt_completion`]): they
    hold their special tokens already, so none is added and no EOS is appended (the template ends the turn), as TRL's
    `SFTTrainer` does for conversational rows.
    """
    prompt_ids, cut_prompts = _truncate_prompts(
        _tokenize(tokenizer, prompts, special=add_special_tokens), max_prompt_length
    )
    eos = [tokenizer.eos_token_id] if add_special_tokens else []
    completion_ids = [s + eos for s in _tokenize(tokenizer, completions, special=False)]
    cut_completions = 0
    if max_completion_length is not None:
        cut_completions = sum(len(s) > max_completion_length for s in completion_ids)
        completion_ids = [s[:max_completion_length] for s in completion_ids]
    truncation = Truncation(prompts=cut_prompts, completions=cut_completions)
    if is_encoder_decoder:
        batch = {
            "input_ids": _pad(prompt_ids, tokenizer.pad_token_id, left=False),
            "attention_mask": _pad([[1] * len(s) for s in prompt_ids], 0, left=False),
            "labels": _pad(completion_ids, LABEL_PAD, left=False),
        }
        return batch, truncation
    sequences = [p + c for p, c in zip(prompt_ids, completion_ids)]
    labels = [[LABEL_PAD] * len(p) + c for p, c in zip(prompt_ids, completion_ids)]
    batch = {
        "input_ids": _pad(sequences, tokenizer.pad_token_id, left=left_pad),
        "attention_mask": _pad([[1] * len(s) for s in sequences], 0, left=left_pad),
        "labels": _pad(labels, LABEL_PAD, left=left_pad),
    }
    return batch, truncation


def collate_text(features: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Collate rows into a dict of lists; the trainer tokenizes per turn, since later prompts depend on the model."""
    return {key: [feature[key] for feature in features] for key in features[0]}
