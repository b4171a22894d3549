"""The step-cost benchmark's report: the tables of `step_cost.md` and the plot `step_cost.png`, from its JSON (the
tiny models' sections and, when measured, the SmolLM2 section)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from _machine import machine_line
from step_timing import PARTS

from refiner_trl.report import markdown_table


def format_markdown(data: dict[str, Any]) -> str:
    """The tables of `step_cost.md`.

    Args:
        data (`dict`):
            The run's JSON (`step_cost.json`).
    """
    settings, results = data["settings"], data.get("results", {})
    lines = [
        "# Step-cost benchmark",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Machine: {machine_line(data['machine'])}. Wall time: {data['wall_seconds'] / 60:.1f} min.",
        "",
        f"Batch {settings['batch_size']} MWP prompts, oracle critic; tiny models have random weights (so every "
        f"sampled hypothesis runs to max_new_tokens). Medians over {settings['repeats']} steps after "
        f"{settings['warmup']} warm-up step(s) (SmolLM2: over 2 after 1). Times in seconds. `step` is wall time from "
        "the Trainer's `on_step_begin` to its `on_step_end`, `step CPU` the process's CPU time over the same span "
        "(with one torch thread, close to the wall time on a quiet machine); overhead = step / (generate + critique "
        "+ forward + backward + optimizer), all wall times of the same step.",
        "",
    ]
    if "smollm2" in data:
        lines += smollm2_lines(data["smollm2"])
    for architecture, entry in results.items():
        lines += [
            f"## {architecture}: {entry['parameters'] / 1e6:.2f}M parameters, max_new_tokens "
            f"{entry['max_new_tokens']}, mean prompt {entry['mean_prompt_tokens']:.0f} tokens",
            "",
        ]
        lines += _grid_lines(entry["grid"])
        lines += _comparison_lines(entry["comparison"])
        lines += _inference_lines(entry["inference"])
    return "\n".join(lines)


def _cpu(value: dict[str, Any], key: str = "step_cpu") -> str:
    return f"{value[key]:.3f}" if key in value else "–"


def _grid_lines(grid: list[dict[str, Any]]) -> list[str]:
    """The breakdown of every (k, T) and the largest overhead against its target."""
    header = ["k", "T", "k·T", "step", "step CPU", *PARTS, "overhead"]
    rows = [
        [
            g["k"],
            g["turns"],
            g["k"] * g["turns"],
            f"{g['step']:.3f}",
            _cpu(g),
            *[f"{g[p]:.3f}" for p in PARTS],
            f"{g['overhead']:.3f}",
        ]
        for g in grid
    ]
    worst = max(g["overhead"] for g in grid)
    return [
        markdown_table(header, rows),
        "",
        f"Largest overhead: {worst:.3f} (target ≤ 1.10: {'met' if worst <= 1.10 else 'missed'}).",
        "",
    ]


def _timed_row(label: str, cell: dict[str, Any], wall_ratio: str, cpu_ratio: str) -> list[str]:
    """One trainer's row of the comparison table."""
    return [
        label,
        f"{cell['step']:.3f}",
        _cpu(cell),
        f"{cell['generate']:.3f}",
        f"{cell['overhead']:.3f}",
        wall_ratio,
        cpu_ratio,
    ]


def _comparison_lines(c: dict[str, Any]) -> list[str]:
    """REFINER's step against the supervised step, the per-example loop, the step before the speed-ups and the
    step exploring its last turn."""
    r, sup, loop = c["refiner"], c["supervised"], c["per_example_loop"]

    def ratio(key: str) -> str:
        return f"{c[key]:.2f}" if key in c else "–"

    rows = [
        _timed_row("RefinerTrainer", r, "1", "1"),
        [f"{sup['trainer']} (`train_supervised`)", f"{sup['step']:.3f}", _cpu(sup), "–", "–"]
        + [f"REFINER / supervised = {c['refiner_over_supervised']:.2f}", ratio("refiner_over_supervised_cpu")],
        _timed_row(
            "per-example loop (authors' style)",
            loop,
            f"per-example / REFINER = {c['per_example_over_refiner']:.2f}",
            ratio("per_example_over_refiner_cpu"),
        ),
    ]
    if "before" in c:
        rows.append(
            _timed_row(
                "RefinerTrainer before the speed-ups (unshared prefill, one padded forward)",
                c["before"],
                f"before / REFINER = {c['before_over_refiner']:.2f}",
                ratio("before_over_refiner_cpu"),
            )
        )
    if c.get("explore_last_turn"):
        rows.append(
            _timed_row(
                "RefinerTrainer, `explore_last_turn=True`",
                c["explore_last_turn"],
                f"last turn explored / REFINER = {c['explore_last_turn_over_refiner']:.2f}",
                ratio("explore_last_turn_over_refiner_cpu"),
            )
        )
    header = ["trainer", "step", "step CPU", "generate", "overhead", "ratio (wall)", "ratio (CPU)"]
    return [f"Same model and batch, k={c['k']}, T={c['turns']}:", "", markdown_table(header, rows), ""]


def _inference_lines(inference: dict[str, Any]) -> list[str]:
    """`refine` with early stopping against all T turns: texts generated, and the model's wall and CPU time."""
    work, timed = inference["function_generator"], inference["model_generator"]
    early, full = timed["early_stopping"], timed["all_turns"]
    rows = [
        [
            "function, right with prob. p, + oracle: texts generated",
            work["early_stopping"]["prompts_generated"],
            work["all_turns"]["prompts_generated"],
            f"{work['generated_ratio']:.2f} (expected {work['expected_generated_ratio']:.2f})",
        ],
        [
            "model (greedy) + critic accepting with prob. p: texts generated",
            early["prompts_generated"],
            full["prompts_generated"],
            f"{full['prompts_generated'] / early['prompts_generated']:.2f}",
        ],
        [
            "model (greedy) + critic accepting with prob. p: wall seconds",
            f"{early['seconds']:.3f}",
            f"{full['seconds']:.3f}",
            f"{timed['speedup']:.2f}",
        ],
        [
            "model (greedy) + critic accepting with prob. p: CPU seconds",
            _cpu(early, "cpu_seconds"),
            _cpu(full, "cpu_seconds"),
            f"{timed['cpu_speedup']:.2f}" if "cpu_speedup" in timed else "–",
        ],
    ]
    return [
        f"Inference (`refine`), {inference['rows']} prompts, T={inference['turns']}, p={inference['p']}:",
        "",
        markdown_table(["generator", "early stopping", "all T turns", "all / early"], rows),
        "",
    ]


# ---------------------------------------------------------------------------------------------------- SmolLM2


def smollm2_ratios(store: dict[str, Any], compare: str = "k=4 T=3") -> dict[str, float]:
    """Before / after at each (k, T) measured both ways, and the comparisons at `compare`, wall and CPU.

    Args:
        store (`dict`):
            The SmolLM2 section of the JSON (its `cells`).
        compare (`str`, *optional*, defaults to `"k=4 T=3"`):
            The compare point's cell name.
    """
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


def smollm2_lines(store: dict[str, Any]) -> list[str]:
    """The SmolLM2 section's markdown lines.

    Args:
        store (`dict`):
            The SmolLM2 section of the JSON.
    """
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
    measured = smollm2_ratios(store)
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


def smollm2_grid(store: dict[str, Any]) -> list[dict[str, Any]]:
    """Today's trainer's SmolLM2 cells as grid entries (`k`, `turns` and the step's parts), for the plot.

    Args:
        store (`dict`):
            The SmolLM2 section of the JSON.
    """
    grid = []
    for name, cell in store.get("cells", {}).items():
        if name.startswith("after k=") and "overhead" in cell:
            k, turns = (int(part.split("=")[1]) for part in name[len("after ") :].split())
            grid.append({"k": k, "turns": turns, **cell})
    return sorted(grid, key=lambda g: (g["turns"], g["k"]))


# ------------------------------------------------------------------------------------------------------- plot


def plot(data: dict[str, Any], path: Path) -> Path:
    """Step time (wall and CPU) against k·T, one line per architecture and T; and the parts of each step.

    Args:
        data (`dict`):
            The run's JSON.
        path (`Path`):
            The PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = dict(data.get("results", {}))
    if "smollm2" in data:
        results["SmolLM2"] = {"grid": smollm2_grid(data["smollm2"])}
    figure, axes = plt.subplots(1, 2 + len(results), figsize=(3.6 * (2 + len(results)), 3.4), dpi=80)
    markers = {1: "o", 2: "s", 3: "^", 4: "D"}
    for axis, key, title in ((axes[0], "step", "step wall time (s)"), (axes[1], "step_cpu", "step CPU time (s)")):
        for architecture, entry in results.items():
            by_turns: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for g in entry["grid"]:
                by_turns[g["turns"]].append(g)
            for turns, grid in sorted(by_turns.items()):
                grid = sorted(grid, key=lambda g: g["k"])
                axis.plot(
                    [g["k"] * turns for g in grid],
                    [g.get(key, float("nan")) for g in grid],
                    marker=markers.get(turns, "x"),
                    linestyle="-" if architecture == "seq2seq" else "--",
                    label=f"{architecture}, T={turns}",
                )
        axis.set_xlabel("k · T (k · (T−1) samples per example)", fontsize=8)
        axis.set_title(title, fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=6)
    for axis, (architecture, entry) in zip(axes[2:], results.items()):
        grid = entry["grid"]
        bottom = [0.0] * len(grid)
        for part in PARTS:
            values = [max(g[part], 0.0) for g in grid]
            axis.bar(range(len(grid)), values, bottom=bottom, label=part)
            bottom = [b + v for b, v in zip(bottom, values)]
        axis.set_xticks(range(len(grid)))
        axis.set_xticklabels([f"{g['k']},{g['turns']}" for g in grid], fontsize=6, rotation=90)
        axis.set_xlabel("k, T")
        axis.set_title(f"{architecture}: parts of a step (wall s)", fontsize=9)
        axis.legend(fontsize=6)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
