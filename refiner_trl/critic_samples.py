"""Critic data from a generator's own samples: the errors a generator really makes, labelled by the task's oracle.

A critic trained only on perturbed gold completions meets, at inference, hypotheses unlike anything it saw. This
module samples a (warm-started) generator on training prompts, k hypotheses per prompt in batches, labels each with
the task's oracle critic (its feedback text, or [`NO_ERROR`]), and appends them to a JSONL file as it goes, so that a
sampling run cut short goes on where it stopped. [`critic_rows`] then mixes those samples with the task's
perturbations and gold "no error" rows at a share the recipe sets, and keeps the samples of some prompts apart for the
critic's calibration ([`~refiner_trl.critics.calibration`]).

File format, one JSON object a line: `{"index": <row of the training data>, "prompt": <plain text>, "reference":
<gold completion>, "hypotheses": [...k], "feedback": [...k]}`.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset, concatenate_datasets

from .chat import plain_text
from .data import COMPLETION, PROMPT
from .report import write_text

if TYPE_CHECKING:
    from .generators import ModelGenerator
    from .tasks.base import Task

SAMPLES_FILE = "generator_samples.jsonl"
"""The file name [`sample_critic_data`] writes in a recipe's `output_dir`."""


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Read a samples file; a last line cut by a killed run is left out, anything else that does not parse is an
    error naming the file and line.

    Args:
        path (`str` or `Path`):
            A JSONL file written by [`sample_critic_data`]; a missing file reads as no samples.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    lines = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines[:-1], start=1):  # lines[-1] follows the last newline: empty, or torn
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}, line {number}: not a JSON object ({error.msg})") from None
        missing = [key for key in ("index", "prompt", "reference", "hypotheses", "feedback") if key not in record]
        if missing:
            raise ValueError(f"{path}, line {number}: no {missing[0]!r} field; was it written by sample_critic_data?")
        records.append(record)
    return records


def sample_critic_data(
    generator: ModelGenerator,
    task: Task,
    rows: Dataset,
    path: str | Path,
    num_samples: int = 2,
    prompts_per_batch: int = 16,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Sample `num_samples` hypotheses per row from `generator`, label them with the task's oracle, append to `path`.

    Rows already in `path` (from an earlier run with the same rows) are kept and not sampled again; each batch is
    seeded from `seed` and its first row, so a resumed run writes what an uninterrupted one would have.

    Args:
        generator ([`ModelGenerator`]):
            A sampling generator (`do_sample=True`); its `batch_size` should be at least `prompts_per_batch *
            num_samples` so that a batch is one `generate` call.
        task ([`Task`]):
            The task whose oracle labels the samples.
        rows (`Dataset`):
            Prompt-completion rows (standard or conversational); row `i` gets `"index": i`.
        path (`str` or `Path`):
            The JSONL file, created with its folder if missing.
        num_samples (`int`, *optional*, defaults to `2`):
            Hypotheses per prompt (k).
        prompts_per_batch (`int`, *optional*, defaults to `16`):
            Prompts per batch; a batch is written as soon as it is labelled.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the samples.

    Returns:
        `list[dict]`: every record of the file, in row order.
    """
    import torch

    if num_samples < 1 or prompts_per_batch < 1:
        raise ValueError(
            f"num_samples and prompts_per_batch must be at least 1, got {num_samples}, {prompts_per_batch}"
        )
    if not generator.do_sample:
        raise ValueError("sample_critic_data needs a sampling generator (ModelGenerator(..., do_sample=True)).")
    path = Path(path)
    records = read_samples(path)
    prompts, references = list(rows[PROMPT]), [plain_text(c) for c in rows[COMPLETION]]
    for number, record in enumerate(records, start=1):
        index = record["index"]
        if index != number - 1 or index >= len(rows) or record["prompt"] != plain_text(prompts[index]):
            raise ValueError(
                f"{path}, line {number}: holds row {index} of other training rows; point the sampling at a new "
                "output_dir, or delete the file to sample again"
            )
        if len(record["hypotheses"]) != num_samples:
            raise ValueError(
                f"{path}, line {number}: {len(record['hypotheses'])} samples a prompt, not num_samples={num_samples}; "
                "sample with the earlier settings, or into a new output_dir"
            )
    if len(records) < len(rows):
        # Keep whole batches only: a batch's samples depend on the rows drawn with it, so a resumed run starts on a
        # batch boundary and writes what an uninterrupted run would have.
        del records[len(records) - len(records) % prompts_per_batch :]
    if path.exists() and path.read_bytes() != _jsonl(records).encode("utf-8"):
        write_text(path, _jsonl(records))  # atomically: drops a torn line and a partial batch
    oracle = task.oracle_critic()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as handle:
        for start in range(len(records), len(rows), prompts_per_batch):
            batch = list(range(start, min(start + prompts_per_batch, len(rows))))
            torch.manual_seed(seed * 1_000_003 + start)
            repeated = [i for i in batch for _ in range(num_samples)]
            hypotheses = generator.generate([prompts[i] for i in repeated])
            feedback = oracle.critique(
                [plain_text(prompts[i]) for i in repeated], hypotheses, [references[i] for i in repeated]
            )
            new = [
                {
                    "index": index,
                    "prompt": plain_text(prompts[index]),
                    "reference": references[index],
                    "hypotheses": hypotheses[position * num_samples : (position + 1) * num_samples],
                    "feedback": feedback[position * num_samples : (position + 1) * num_samples],
                }
                for position, index in enumerate(batch)
            ]
            handle.write(_jsonl(new))
            records.extend(new)
            handle.flush()
            os.fsync(handle.fileno())
    return records


def _jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def split_calibration(
    records: Sequence[dict[str, Any]], calibration_prompts: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split sampled records into the critic's training part and the last `calibration_prompts` prompts, held out.

    Args:
        records (`Sequence[dict]`):
            Records of [`read_samples`], in row order.
        calibration_prompts (`int`):
            How many prompts (the last ones) to hold out.
    """
    if not 0 <= calibration_prompts <= len(records):
        raise ValueError(f"calibration_prompts must be between 0 and {len(records)} (the sampled prompts)")
    cut = len(records) - calibration_prompts
    return list(records[:cut]), list(records[cut:])


def mix_at_share(base: Dataset, samples: Dataset, share: float | None, seed: int = 0) -> Dataset:
    """Mix two sets of critic rows so that `samples` make `share` of the result, repeating no row.

    The larger side is subsampled (seeded): all of `samples` with as many `base` rows as the share allows, or, when
    `base` runs out, all of `base` with fewer samples. `share=None` keeps both whole.

    Args:
        base (`Dataset`):
            Gold and perturbation rows.
        samples (`Dataset`):
            Generator-sample rows.
        share (`float`, *optional*):
            The samples' share of the result, in [0, 1].
        seed (`int`, *optional*, defaults to `0`):
            Seed of the subsampling and of the final shuffle.
    """
    if share is None:
        return concatenate_datasets([base, samples]).shuffle(seed=seed)
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"generator_sample_share must be in [0, 1], got {share}")
    rng = random.Random(seed)
    n_samples, n_base = len(samples), len(base)
    if share == 0.0:
        n_samples = 0
    elif share < 1.0:
        wanted_base = round(n_samples * (1.0 - share) / share)
        if wanted_base > n_base:
            n_samples = round(n_base * share / (1.0 - share))
        else:
            n_base = wanted_base
    else:
        n_base = 0
    parts = [
        data.select(sorted(rng.sample(range(len(data)), n)))
        for data, n in ((base, n_base), (samples, n_samples))
        if n > 0
    ]
    if not parts:
        raise ValueError("the mixed critic data is empty: no rows on the side the share asks for")
    return concatenate_datasets(parts).shuffle(seed=seed)


def critic_rows(
    task: Task,
    train_rows: Dataset,
    records: Sequence[dict[str, Any]] = (),
    share: float | None = None,
    negatives_per_example: int = 2,
    seed: int = 0,
    excluded: Sequence[int] = (),
) -> Dataset:
    """The critic's training rows: the task's gold and perturbation rows, plus generator samples at `share`.

    Args:
        task ([`Task`]):
            The task (perturbations, oracle).
        train_rows (`Dataset`):
            The training rows the records index into.
        records (`Sequence[dict]`, *optional*):
            Sampled records ([`read_samples`]) whose hypotheses join the data with their oracle feedback.
        share (`float`, *optional*):
            The generator rows' share of the result ([`mix_at_share`]); `None`: all rows as they come.
        negatives_per_example (`int`, *optional*, defaults to `2`):
            Perturbations per gold row.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the perturbations and the mix.
        excluded (`Sequence[int]`, *optional*):
            Training rows left out entirely (the calibration prompts).

    Returns:
        `Dataset`: `prompt`, `completion`, `feedback_type`, `source` (`"gold"`, `"perturbation"`, `"generator"`).
    """
    for record in records:
        index = record["index"]
        if index >= len(train_rows) or plain_text(train_rows[index][PROMPT]) != record["prompt"]:
            raise ValueError(
                f"generator sample of row {index} ({record['prompt'][:60]!r}...) is not that row of the training "
                "data: sample the same train_path as the critic trains on"
            )
    excluded_rows = set(excluded)
    kept = [i for i in range(len(train_rows)) if i not in excluded_rows]
    samples_by_row = {record["index"]: record["hypotheses"] for record in records}
    data = task.build_critic_dataset(
        train_rows.select(kept),
        seed=seed,
        negatives_per_example=negatives_per_example,
        generator_samples=[samples_by_row.get(i, []) for i in kept],
    )
    is_sample = [source == "generator" for source in data["source"]]
    base = data.select([i for i, flag in enumerate(is_sample) if not flag])
    samples = data.select([i for i, flag in enumerate(is_sample) if flag])
    return mix_at_share(base, samples, share, seed=seed)
