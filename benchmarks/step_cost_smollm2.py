"""The SmolLM2 section of the step-cost benchmark: a real 135M-parameter causal LM, before and after the two speed-ups.

On SmolLM2-135M-Instruct (a converted model folder, see `python -m refiner_trl.pretrained fetch`), batch 8 MWP
prompts, the oracle critic, measured in one process:

1. **Grid** (k in `ks`, T in `turns`): the step of today's `RefinerTrainer` split into its parts, and its overhead.
2. **Before / after** at each (k, T) with T > 1: the same step with the step as it was before the speed-ups
   (`trainer_variants.variant_class(shared=False, grouped=False)`: every prompt repeated k times before its prefill,
   one right-padded forward over all turns with the logits of every position), and each speed-up alone at the
   compare point.
3. **Comparisons** at the compare point: TRL's SFTTrainer step on the same model and batch, and the per-example loop
   (the authors' style, `trainer_variants.per_example_trainer_class`).
4. **Generation split**: one turn's `generate_texts` at k samples per prompt, shared and unshared, and the prefill
   alone, to show where sampling time goes.

Every cell is written to the JSON as soon as it is measured; `--resume` skips the cells already there, so a long run
cut short loses at most one cell. `step_cost_report` writes the section's tables.
"""

from __future__ import annotations

import copy
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from _common import task_data
from _measurements import Stopwatch, median
from step_timing import refiner_step, supervised_step
from trainer_variants import per_example_trainer_class, variant_class

Measure = Callable[[str], dict[str, Any]]
"""One cell's measurement: the scratch folder -> the cell's record."""


@torch.no_grad()
def generation_split(model: Any, tokenizer: Any, prompts: list[str], k: int, max_new_tokens: int) -> dict[str, Any]:
    """One turn's sampling (k per prompt), shared and unshared, and the prefill of the prompts alone, in seconds.

    Args:
        model (`PreTrainedModel`):
            The causal model.
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        prompts (`list[str]`):
            One batch of prompts.
        k (`int`):
            Samples per prompt.
        max_new_tokens (`int`):
            The longest sample.
    """
    from refiner_trl.data import encode_prompts
    from refiner_trl.generation import generate_texts

    model.eval()
    inputs, _ = encode_prompts(tokenizer, prompts, None, False)
    repeated = {key: value.repeat_interleave(k, dim=0) for key, value in inputs.items()}
    result: dict[str, Any] = {"k": k, "prompts": len(prompts), "prompt_width": inputs["input_ids"].shape[1]}
    for name, batch in (("prefill_repeated", repeated), ("prefill_once", inputs)):
        with Stopwatch() as watch:
            model(**batch, use_cache=True, logits_to_keep=1)
        result[name], result[f"{name}_cpu"] = watch.seconds, watch.cpu_seconds
    for name, share in (("generate_unshared", False), ("generate_shared", True)):
        torch.manual_seed(0)
        with Stopwatch() as watch:
            texts, _ = generate_texts(
                model, tokenizer, prompts, None, max_new_tokens, do_sample=True, num_return_sequences=k,
                top_p=0.95, share_prompt_cache=share,
            )  # fmt: skip
        result[name], result[f"{name}_cpu"] = watch.seconds, watch.cpu_seconds
        result[f"{name}_tokens"] = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return result


def padding_share(tokenizer: Any, rows: Any, turns: int, batch_size: int, seed: int) -> dict[str, float]:
    """The share of padding tokens in the loss forward of T turns (gold completions as hypotheses, as the issue
    measured), one forward against length groups.

    Args:
        tokenizer (`PreTrainedTokenizerBase`):
            The tokenizer.
        rows (`Dataset`):
            Prompt-completion rows, drawn from in 50 random batches.
        turns (`int`):
            The refinement turns of the loss.
        batch_size (`int`):
            Examples per batch.
        seed (`int`):
            The seed of the draws.
    """
    from refiner_trl.losses import length_groups
    from refiner_trl.templates import REFINE_TEMPLATE, render_refine_prompt

    rng = random.Random(seed)
    shares_single, shares_grouped = [], []
    indices = list(range(len(rows)))
    for _ in range(50):
        batch = [rows[i] for i in rng.sample(indices, batch_size)]
        prompts = [row["prompt"] for row in batch]
        completions = [row["completion"] for row in batch]
        texts = list(prompts)
        for _turn in range(1, turns):
            texts += [render_refine_prompt(p, c, "No error.", REFINE_TEMPLATE) for p, c in zip(prompts, completions)]
        lengths = [
            len(tokenizer(t)["input_ids"]) + len(tokenizer(c, add_special_tokens=False)["input_ids"]) + 1
            for t, c in zip(texts, completions * turns)
        ]
        real = sum(lengths)
        shares_single.append(1 - real / (len(lengths) * max(lengths)))
        groups = length_groups([(n,) for n in lengths], 4)
        computed = sum(len(g) * max(lengths[i] for i in g) for g in groups)
        shares_grouped.append(1 - real / computed)
    return {"turns": turns, "single_forward": median(shares_single), "grouped": median(shares_grouped)}


def plan(model: Any, tokenizer: Any, rows: Any, train: Any, task: Any, settings: Any, seed: int) -> list:
    """The cells to measure, most important first: the before / after pair at the compare point, the comparisons,
    the grid, each speed-up alone, the generation split and the padding shares.

    Args:
        model (`PreTrainedModel`):
            SmolLM2 (each training cell trains a copy).
        tokenizer (`PreTrainedTokenizerBase`):
            Its tokenizer.
        rows (`Dataset`):
            The rows of the measured steps.
        train (`Dataset`):
            The training rows (for the padding shares).
        task (`Task`):
            MWP (its oracle critic).
        settings (`Settings`):
            The SmolLM2 sizes ([`settings_for`]).
        seed (`int`):
            The seed.

    Returns:
        `list[tuple[str, Measure]]`: each cell's name and measurement.
    """
    from refiner_trl import RefinerTrainer

    oracle = task.oracle_critic()
    k0, t0 = settings.compare_k, settings.compare_turns
    before = variant_class(RefinerTrainer, shared=False, grouped=False)

    def refiner(trainer_class: type, k: int, turns: int) -> Measure:
        return lambda scratch: refiner_step(
            trainer_class, copy.deepcopy(model), tokenizer, rows, oracle, settings, k, turns, seed, scratch
        )

    cells: list[tuple[str, Measure]] = [
        (f"after k={k0} T={t0}", refiner(RefinerTrainer, k0, t0)),
        (f"before k={k0} T={t0}", refiner(before, k0, t0)),
        (
            "supervised",
            lambda scratch: supervised_step(copy.deepcopy(model), tokenizer, rows, settings, seed, scratch),
        ),
        (f"per-example k={k0} T={t0}", refiner(per_example_trainer_class(), k0, t0)),
    ]
    for turns in settings.turns:
        for k in settings.ks if turns > 1 else settings.ks[:1]:  # T = 1 samples nothing: k does not matter
            cells.append((f"after k={k} T={turns}", refiner(RefinerTrainer, k, turns)))
            if turns > 1:
                cells.append((f"before k={k} T={turns}", refiner(before, k, turns)))
    cells += [
        (f"shared only k={k0} T={t0}", refiner(variant_class(RefinerTrainer, shared=True, grouped=False), k0, t0)),
        (f"grouped only k={k0} T={t0}", refiner(variant_class(RefinerTrainer, shared=False, grouped=True), k0, t0)),
        ("before k=1 T=1", refiner(before, 1, 1)),
    ]
    prompts = list(rows["prompt"][: settings.batch_size])
    cells.append(("generation split", lambda scratch: generation_split(model, tokenizer, prompts, k0, 48)))
    cells.append(("padding", lambda scratch: {str(t): padding_share(tokenizer, train, t, 8, seed) for t in (2, 3)}))
    return cells


def run(
    path: Path,
    settings: Any,
    seed: int,
    data_dir: Path | None,
    store: dict[str, Any],
    save: Callable[[], None],
) -> dict[str, Any]:
    """Measure every cell not yet in `store` (keyed by name), calling `save()` after each; return `store`.

    Args:
        path (`Path`):
            The SmolLM2 model folder.
        settings (`Settings`):
            The SmolLM2 sizes ([`settings_for`]).
        seed (`int`):
            The seed.
        data_dir (`Path`, *optional*):
            The release's data; `None`: synthetic MWP rows.
        store (`dict`):
            The section of the JSON, with the cells of an earlier run (filled in place).
        save (`Callable[[], None]`):
            Writes the JSON.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refiner_trl.modeling import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    with Stopwatch() as load:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    task, train, _, source = task_data("mwp", data_dir, 2000, 16, None)
    train = train.select_columns(["prompt", "completion"])
    rows = train.shuffle(seed=seed).select(range(settings.batch_size * (settings.warmup + settings.repeats)))
    prompt_tokens = [len(ids) for ids in tokenizer(list(rows["prompt"]))["input_ids"]]
    store.setdefault("cells", {})
    store.update(
        {
            "path": str(path),
            "parameters": sum(p.numel() for p in model.parameters()),
            "data": source,
            "load_seconds": load.seconds,
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens),
            "max_new_tokens": settings.max_new_tokens,
        }
    )
    cells = store["cells"]
    with tempfile.TemporaryDirectory() as scratch:
        for name, measure in plan(model, tokenizer, rows, train, task, settings, seed):
            if name in cells:
                print(f"  smollm2 {name}: done in an earlier run", flush=True)
                continue
            started = time.perf_counter()
            cells[name] = measure(scratch)
            cells[name]["cell_seconds"] = time.perf_counter() - started
            save()
            step = cells[name].get("step")
            print(
                f"  smollm2 {name}: " + (f"step {step:.2f} s" if step else "done")
                + f" ({cells[name]['cell_seconds']:.0f} s)",
                flush=True,
            )  # fmt: skip
    return store


def settings_for(settings: Any) -> Any:
    """The SmolLM2 sizes: batch 8, k in {1, 4}, T in {1, 2, 3}, 1 warm-up and 2 measured steps, 48 new tokens.

    Args:
        settings (`Settings`):
            The step-cost settings of the run (its other fields are kept).
    """
    return replace(
        settings,
        batch_size=8,
        ks=[1, 4],
        turns=[1, 2, 3],
        compare_k=4,
        compare_turns=3,
        warmup=1,
        repeats=2,
        max_new_tokens=48,
        max_prompt_length=320,
    )
