"""The SmolLM2 section of the step-cost benchmark: a real 135M-parameter causal LM, before and after the two speed-ups.

On SmolLM2-135M-Instruct (a converted model folder, see `python -m refiner_trl.pretrained fetch`), batch 8 MWP
prompts, the oracle critic, measured in one process:

1. **Grid** (k in `ks`, T in `turns`): the step of today's `RefinerTrainer` split into its parts, and its overhead.
2. **Before / after** at each (k, T) with T > 1: the same step with the step as it was before the speed-ups
   (`variant_class(shared=False, grouped=False)`: every prompt repeated k times before its prefill, one right-padded
   forward over all turns with the logits of every position), and each speed-up alone at the compare point.
3. **Comparisons** at the compare point: TRL's SFTTrainer step on the same model and batch, and the per-example loop
   (the authors' style, `step_cost.per_example_trainer_class`).
4. **Generation split**: one turn's `generate_texts` at k samples per prompt, shared and unshared, and the prefill
   alone, to show where sampling time goes.

Every cell is written to the JSON as soon as it is measured; `--resume` skips the cells already there, so a long run
cut short loses at most one cell.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common
import torch
import torch.nn.functional as F
from _common import median

# ----------------------------------------------------------------------------------- the step before the speed-ups


def single_forward_turn_losses(
    model: torch.nn.Module,
    tokenizer: Any,
    turn_prompts: list[list[str]],
    completions: list[str],
    max_prompt_length: int | None,
    max_completion_length: int | None,
    encoder_decoder: bool,
    decoder_start_token_id: int | None = None,
) -> torch.Tensor:
    """The per-turn losses as computed before length groups: one right-padded forward over every turn's rows, with
    the logits of every position. The tests check the trainer's grouped forward against it."""
    from refiner_trl.data import LABEL_PAD, encode_prompt_completion
    from refiner_trl.trainer import _shift_right

    num_turns, batch_size = len(turn_prompts), len(completions)
    batch, _ = encode_prompt_completion(
        tokenizer,
        [p for prompts in turn_prompts for p in prompts],
        completions * num_turns,
        max_prompt_length,
        max_completion_length,
        encoder_decoder,
    )
    device = next(model.parameters()).device
    batch = {key: value.to(device) for key, value in batch.items()}
    labels = batch.pop("labels")
    if encoder_decoder:
        batch["decoder_input_ids"] = _shift_right(labels, decoder_start_token_id, tokenizer.pad_token_id)
        logits = model(**batch, use_cache=False).logits
    else:
        logits = model(**batch, use_cache=False).logits[:, :-1]
        labels = labels[:, 1:]
    token_losses = F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=LABEL_PAD, reduction="none"
    ).view(num_turns, batch_size, -1)
    mask = (labels != LABEL_PAD).view(num_turns, batch_size, -1)
    return token_losses.sum(dim=(1, 2)) / mask.sum(dim=(1, 2)).clamp(min=1)


def variant_class(base: type, shared: bool, grouped: bool) -> type:
    """`base` (a `RefinerTrainer` class) with either speed-up turned back to the code before it.

    Args:
        base: the trainer class.
        shared: keep shared-prompt sampling; `False` repeats every prompt k times before its prefill.
        grouped: keep the length-grouped loss forward; `False` runs one right-padded forward with all logits.
    """
    if shared and grouped:
        return base
    namespace: dict[str, Any] = {}
    if not shared:

        def _sample(self: Any, generator: torch.nn.Module, prompts: list[str]) -> list[str]:
            from refiner_trl.modeling import generate_texts

            args = self.args
            return generate_texts(
                generator, self.processing_class, prompts, args.max_prompt_length, args.max_new_tokens,
                do_sample=True, num_return_sequences=args.num_hypotheses, temperature=args.temperature,
                top_p=args.top_p, top_k=args.top_k, share_prompt_cache=False,
            )[0]  # fmt: skip

        namespace["_sample"] = _sample
    if not grouped:

        def _turn_losses(
            self: Any, model: torch.nn.Module, turn_prompts: list[list[str]], completions: list[str], mode: str
        ) -> torch.Tensor:
            start = time.perf_counter()
            config = self.accelerator.unwrap_model(model).config
            per_turn = single_forward_turn_losses(
                model, self.processing_class, turn_prompts, completions, self.args.max_prompt_length,
                self.args.max_completion_length, self.encoder_decoder, getattr(config, "decoder_start_token_id", None),
            )  # fmt: skip
            self._metrics[mode]["time/forward"].append(time.perf_counter() - start)
            self._metrics[mode]["truncated_prompts"].append(0.0)
            return per_turn

        namespace["_turn_losses"] = _turn_losses
    name = f"{base.__name__}{'' if shared else 'Unshared'}{'' if grouped else 'SingleForward'}"
    return type(name, (base,), namespace)


# ------------------------------------------------------------------------------------------------ measurements


@torch.no_grad()
def generation_split(model: Any, tokenizer: Any, prompts: list[str], k: int, max_new_tokens: int) -> dict[str, Any]:
    """One turn's sampling (k per prompt), shared and unshared, and the prefill of the prompts alone, in seconds."""
    from refiner_trl.data import encode_prompts
    from refiner_trl.modeling import generate_texts

    model.eval()
    inputs, _ = encode_prompts(tokenizer, prompts, None, False)
    repeated = {key: value.repeat_interleave(k, dim=0) for key, value in inputs.items()}
    result: dict[str, Any] = {"k": k, "prompts": len(prompts), "prompt_width": inputs["input_ids"].shape[1]}
    for name, batch in (("prefill_repeated", repeated), ("prefill_once", inputs)):
        with _common.Stopwatch() as watch:
            model(**batch, use_cache=True, logits_to_keep=1)
        result[name], result[f"{name}_cpu"] = watch.seconds, watch.cpu_seconds
    for name, share in (("generate_unshared", False), ("generate_shared", True)):
        torch.manual_seed(0)
        with _common.Stopwatch() as watch:
            texts, _ = generate_texts(
                model, tokenizer, prompts, None, max_new_tokens, do_sample=True, num_return_sequences=k,
                top_p=0.95, share_prompt_cache=share,
            )  # fmt: skip
        result[name], result[f"{name}_cpu"] = watch.seconds, watch.cpu_seconds
        result[f"{name}_tokens"] = sum(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
    return result


def padding_share(tokenizer: Any, rows: Any, turns: int, batch_size: int, seed: int) -> dict[str, float]:
    """The share of padding tokens in the loss forward of T turns (gold completions as hypotheses, as the issue
    measured), one forward against length groups."""
    import random

    from refiner_trl.length_groups import length_groups
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


def run(
    path: Path,
    settings: Any,
    seed: int,
    data_dir: Path | None,
    store: dict[str, Any],
    save: Callable[[], None],
) -> dict[str, Any]:
    """Measure every cell not yet in `store` (keyed by name), calling `save()` after each; return `store`."""
    from step_cost import per_example_trainer_class, refiner_step, supervised_step
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from refiner_trl import RefinerTrainer
    from refiner_trl.modeling import prepare_tokenizer

    tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(path))
    with _common.Stopwatch() as load:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    task, train, _, source = _common.task_data("mwp", data_dir, 2000, 16, None)
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
    oracle = task.oracle_critic()
    cells = store["cells"]
    k0, t0 = settings.compare_k, settings.compare_turns
    before = variant_class(RefinerTrainer, shared=False, grouped=False)

    # Most important first: the before / after pair at the compare point, then the comparisons, then the grid.
    plan: list[tuple[str, Callable[[str], dict[str, Any]]]] = []

    def refiner(trainer_class: type, k: int, turns: int) -> Callable[[str], dict[str, Any]]:
        return lambda scratch: refiner_step(
            trainer_class, copy.deepcopy(model), tokenizer, rows, oracle, settings, k, turns, seed, scratch
        )

    plan += [
        (f"after k={k0} T={t0}", refiner(RefinerTrainer, k0, t0)),
        (f"before k={k0} T={t0}", refiner(before, k0, t0)),
    ]
    plan += [
        ("supervised", lambda scratch: supervised_step(copy.deepcopy(model), tokenizer, rows, settings, seed, scratch))
    ]
    plan += [(f"per-example k={k0} T={t0}", refiner(per_example_trainer_class(), k0, t0))]
    for turns in settings.turns:
        for k in settings.ks if turns > 1 else settings.ks[:1]:  # T = 1 samples nothing: k does not matter
            plan.append((f"after k={k} T={turns}", refiner(RefinerTrainer, k, turns)))
            if turns > 1:
                plan.append((f"before k={k} T={turns}", refiner(before, k, turns)))
    plan += [
        (f"shared only k={k0} T={t0}", refiner(variant_class(RefinerTrainer, shared=True, grouped=False), k0, t0)),
        (f"grouped only k={k0} T={t0}", refiner(variant_class(RefinerTrainer, shared=False, grouped=True), k0, t0)),
        ("before k=1 T=1", refiner(before, 1, 1)),
    ]
    prompts = list(rows["prompt"][: settings.batch_size])
    plan.append(("generation split", lambda scratch: generation_split(model, tokenizer, prompts, k0, 48)))
    plan.append(("padding", lambda scratch: {str(t): padding_share(tokenizer, train, t, 8, seed) for t in (2, 3)}))
    with tempfile.TemporaryDirectory() as scratch:
        for name, measure in plan:
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


def ratios(store: dict[str, Any], compare: str = "k=4 T=3") -> dict[str, float]:
    """Before / after at each (k, T) measured both ways, and the comparisons at `compare`, wall and CPU."""
    cells, ratios = store.get("cells", {}), {}
    for key in cells:
        if key.startswith("after ") and f"before {key[6:]}" in cells:
            after, before = cells[key], cells[f"before {key[6:]}"]
            ratios[f"before / after {key[6:]}"] = before["step"] / after["step"]
            ratios[f"before / after {key[6:]} (CPU)"] = before["step_cpu"] / after["step_cpu"]
    point = compare
    after = cells.get(f"after {point}")
    if after:
        for name, other in (("per-example / REFINER", f"per-example {point}"), ("REFINER / supervised", "supervised")):
            if other in cells:
                top, bottom = (cells[other], after) if name.startswith("per") else (after, cells[other])
                ratios[name] = top["step"] / bottom["step"]
                ratios[f"{name} (CPU)"] = top["step_cpu"] / bottom["step_cpu"]
    for part in ("generate", "forward", "backward"):
        before = cells.get(f"before {point}")
        if after and before and after[part] > 0:
            ratios[f"{part}: before / after {point}"] = before[part] / after[part]
    return ratios


# ------------------------------------------------------------------------------------------------------ tables


def format_markdown(store: dict[str, Any]) -> list[str]:
    """The SmolLM2 section's markdown lines."""
    from _common import markdown_table
    from step_cost import PARTS

    cells = store.get("cells", {})
    lines = [
        f"## SmolLM2-135M-Instruct: {store['parameters'] / 1e6:.1f}M parameters, fp32, max_new_tokens "
        f"{store['max_new_tokens']}, mean prompt {store['mean_prompt_tokens']:.0f} tokens ({store['data']} data)",
        "",
        "`after` is today's trainer; `before` the step without both speed-ups (every prompt repeated k times before "
        "its prefill; one right-padded loss forward with every position's logits).",
        "",
    ]
    header = ["cell", "step", "step CPU", *PARTS, "overhead"]
    rows = [
        [name, f"{c['step']:.2f}", f"{c['step_cpu']:.2f}", *[f"{c[p]:.2f}" for p in PARTS], f"{c['overhead']:.3f}"]
        for name, c in cells.items()
        if "overhead" in c
    ]
    lines += [markdown_table(header, rows), ""]
    if "supervised" in cells:
        s = cells["supervised"]
        lines += [f"{s['trainer']} step: {s['step']:.2f} s (CPU {s['step_cpu']:.2f} s).", ""]
    measured = ratios(store)
    if measured:
        lines += [markdown_table(["ratio", "value"], [[k, f"{v:.2f}"] for k, v in measured.items()]), ""]
    split = cells.get("generation split")
    if split:
        lines += [
            f"One turn's sampling, {split['prompts']} prompts x k = {split['k']} (prompt width "
            f"{split['prompt_width']}), seconds (CPU): prefill of the repeated rows {split['prefill_repeated']:.2f} "
            f"({split['prefill_repeated_cpu']:.2f}), prefill once per prompt {split['prefill_once']:.2f} "
            f"({split['prefill_once_cpu']:.2f}); generate unshared {split['generate_unshared']:.2f} "
            f"({split['generate_unshared_cpu']:.2f}), shared {split['generate_shared']:.2f} "
            f"({split['generate_shared_cpu']:.2f}).",
            "",
        ]
    padding = cells.get("padding")
    if padding:
        lines += [
            "Padding share of the loss forward (median of 50 random batches of 8, gold completions as hypotheses): "
            + "; ".join(
                f"T = {t}: one forward {100 * p['single_forward']:.0f}%, length groups {100 * p['grouped']:.0f}%"
                for t, p in padding.items()
                if isinstance(p, dict)
            ),
            "",
        ]
    return lines


def after_grid(store: dict[str, Any]) -> list[dict[str, Any]]:
    """Today's trainer's cells as grid entries (`k`, `turns` and the step's parts), for the plot."""
    grid = []
    for name, cell in store.get("cells", {}).items():
        if name.startswith("after k=") and "overhead" in cell:
            k, turns = (int(part.split("=")[1]) for part in name[len("after ") :].split())
            grid.append({"k": k, "turns": turns, **cell})
    return sorted(grid, key=lambda g: (g["turns"], g["k"]))


def settings_for(settings: Any) -> Any:
    """The SmolLM2 sizes: batch 8, k in {1, 4}, T in {1, 2, 3}, 1 warm-up and 2 measured steps, 48 new tokens."""
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
