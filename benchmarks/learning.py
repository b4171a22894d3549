"""Learning benchmark: does REFINER beat its supervised warm start? The recipes, run over variants and seeds.

For each task (`--tasks`), architecture (`--architectures`) and seed (`--seeds`), one pipeline of recipe runs, each
a subprocess whose output folder is `<output-dir>/<task>-<architecture>/seed-<seed>/<phase>`:

1. **warm**: `recipes/train_generator.py --config recipes/generator_mwp_tiny.yaml` for `--warm-steps` steps: a tiny
   generator built from a config (random weights, a tokenizer trained on the task's texts);
2. from the same warm-started weights, `--refiner-steps` more steps each: the **baseline**
   (`train_generator.py`, supervised) and one REFINER run per **variant** (`recipes/train_<task>.py --config
   recipes/<task>_tiny.yaml`, the oracle critic; `--variant NAME:key=value,...` adds an arm whose keys override the
   YAML, e.g. `--variant flagged:hypothesis_selection=flagged,num_hypotheses=4`). Same batch size, learning rate
   and seed everywhere;
3. **critic**: `recipes/train_critic.py --config recipes/critic_<task>_tiny.yaml` for `--critic-steps` steps (its
   held-out report is `critic_eval.json`);
4. **evaluation**: `recipes/evaluate.py` of each arm with the trained critic and the oracle, on the same rows; its
   `results.json` is what this benchmark reads.

The data is the paper's release when `--data-dir` holds `<task>/train.json` and `val.json` (the first `--max-eval`
rows of `val.json` are evaluated), else the tasks' synthetic rows. `learning.json` is rewritten after every pipeline;
with `--resume` a recipe run whose folder holds the `recipe_done.json` of the same command is not run again.

    python benchmarks/learning.py --quick                   # one tiny pipeline; tests/test_benchmarks_quick.py runs it
    python benchmarks/learning.py --threads 1 --jobs 2      # the full run: 2 tasks x 2 architectures x 3 seeds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import render

RECIPES = {"mwp": "train_mwp.py", "snlr": "train_snlr.py", "moral_stories": "train_ms.py"}
YAML = {"mwp": "mwp", "snlr": "snlr", "moral_stories": "ms"}
CRITICS = {"none": "alone", "trained": "+ trained critic", "oracle": "+ oracle critic"}
QUICK = {
    "tasks": ["mwp"], "architectures": ["causal"], "seeds": [0], "hidden_size": 32, "num_layers": 1,
    "vocab_size": 400, "batch_size": 8, "warm_steps": 20, "refiner_steps": 4, "critic_steps": 20, "max_eval": 8,
    "synthetic_train": 200, "max_new_tokens": 16,
}  # fmt: skip


def pipeline(task: str, architecture: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """The recipe runs of one (task, architecture, seed) and what their `results.json` say."""
    folder = Path(args.output_dir) / f"{task}-{architecture}" / f"seed-{seed}"
    release = Path(args.data_dir) / task
    if (release / "train.json").is_file() and (release / "val.json").is_file():
        data = {"train_path": release / "train.json", "eval_path": release / "val.json"}
        data |= {"max_eval_samples": args.max_eval}
    else:
        data = {"synthetic_train_size": args.synthetic_train, "synthetic_eval_size": args.max_eval}
    common = {"task": task, "torch_num_threads": args.threads, **data}
    training = {
        **common, "seed": seed, "per_device_train_batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "evaluate_after_training": False,
    }  # fmt: skip
    tiny = {"tiny_hidden_size": args.hidden_size, "tiny_num_layers": args.num_layers}
    tiny["tiny_vocab_size"] = args.vocab_size

    def run(phase: str, script: str, config: str, **overrides: Any) -> render.RecipeRun:
        overrides["output_dir"] = folder / phase
        return render.run_recipe(script, f"recipes/{config}.yaml", overrides, resume=args.resume)

    generator = "generator_mwp_tiny"  # `task` switches it to the other tasks
    runs = {"warm": run("warm", "train_generator.py", generator, **training, **tiny, tiny_architecture=architecture,
                        max_steps=args.warm_steps)}  # fmt: skip
    warm = {**training, "model_name_or_path": folder / "warm", "max_steps": args.refiner_steps}
    runs["baseline"] = run("baseline", "train_generator.py", generator, **warm)
    for name, overrides in args.variant:
        runs[name] = run(
            name, RECIPES[task], f"{YAML[task]}_tiny", **warm, critic="oracle", num_hypotheses=1,
            num_refinement_turns=args.turns, max_new_tokens=args.max_new_tokens, **overrides,
        )  # fmt: skip
    runs["critic"] = run("critic", "train_critic.py", f"critic_{YAML[task]}_tiny", **common, **tiny, seed=seed,
                         tiny_architecture=architecture, max_steps=args.critic_steps)  # fmt: skip
    arms = ["baseline", *(name for name, _ in args.variant)]
    evaluations = {
        arm: run(f"evaluate-{arm}", "evaluate.py", "evaluate_mwp_tiny", **common, model_name_or_path=folder / arm,
                 critic=folder / "critic", eval_max_turns=args.turns, eval_oracle_max_turns=args.turns,
                 eval_max_new_tokens=args.max_new_tokens).results
        for arm in arms
    }  # fmt: skip
    critic_eval = json.loads((folder / "critic" / "critic_eval.json").read_text(encoding="utf-8"))
    source = "release" if "train_path" in data else "synthetic"
    return {
        "task": task, "architecture": architecture, "seed": seed, "data": source, "evaluations": evaluations,
        "seconds": {phase: run.seconds for phase, run in runs.items()},
        "critic": {key: critic_eval.get(key) for key in ("exact_match", "error_type_accuracy", "no_error_accuracy")},
    }  # fmt: skip


def by_critic(evaluation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An evaluate recipe's `results.json` runs, keyed by critic name (`none`, `trained`, `oracle`)."""
    return {run["name"]: run for run in evaluation["runs"]}


def summary(pipelines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (task, architecture, arm): the primary metric of each critic's run and the arm's difference with
    the baseline alone, `mean ± std` over seeds in %."""
    rows = []
    for task, architecture in dict.fromkeys((p["task"], p["architecture"]) for p in pipelines):
        group = [p for p in pipelines if (p["task"], p["architecture"]) == (task, architecture)]
        metric = next(iter(group[0]["evaluations"].values()))["primary_metric"]
        for arm in group[0]["evaluations"]:
            finals = [{name: run["by_turn"][-1][metric] for name, run in by_critic(p["evaluations"][arm]).items()}
                      for p in group]  # fmt: skip
            baseline = [by_critic(p["evaluations"]["baseline"])["none"]["by_turn"][-1][metric] for p in group]
            row = {"task": f"{task} ({metric})", "architecture": architecture, "arm": arm, "seeds": len(group)}
            row |= {label: render.mean_std([f.get(name) for f in finals], 100) for name, label in CRITICS.items()}
            gains = [f["trained"] - b for f, b in zip(finals, baseline) if f.get("trained") is not None]
            row["trained - baseline"] = render.mean_std(gains, 100)
            row["training minutes"] = render.mean_std([(p["seconds"]["warm"] + p["seconds"][arm]) / 60 for p in group])
            rows.append(row)
    return rows


def markdown(data: dict[str, Any]) -> str:
    columns = ["task", "architecture", "arm", "seeds", *CRITICS.values(), "trained - baseline", "training minutes"]
    critics = [{"task": p["task"], "architecture": p["architecture"], "seed": p["seed"], **p["critic"]}
               for p in data["pipelines"]]  # fmt: skip
    return (
        f"# Learning\n\n{render.machine_line(data['machine'])}\n\nCommand: `{data['command']}`\n\n"
        f"Primary metric in %, mean ± std over seeds (T = {data['settings']['turns']}):\n\n"
        f"{render.table(data['summary'], columns)}\n\nThe trained critics on held-out critic data:\n\n"
        f"{render.table(critics, ['task', 'architecture', 'seed', *data['pipelines'][0]['critic']])}\n"
    )


def plot(data: dict[str, Any], path: Path) -> None:
    """The primary metric after each turn, mean over seeds, one panel per (task, architecture)."""
    panels: dict[str, dict[str, list[float]]] = {}
    for p in data["pipelines"]:
        for arm, evaluation in p["evaluations"].items():
            metric = evaluation["primary_metric"]
            for name in ("trained", "oracle"):
                run = by_critic(evaluation).get(name)
                if run is not None:
                    panel = panels.setdefault(f"{p['task']} {p['architecture']}", {})
                    panel.setdefault(f"{arm} + {name}", []).append([100 * scores[metric] for scores in run["by_turn"]])
    means = {title: {label: [statistics.mean(t) for t in zip(*runs)] for label, runs in series.items()}
             for title, series in panels.items()}  # fmt: skip
    render.plot_by_turn(means, path, "primary metric %")


def variant(text: str) -> tuple[str, dict[str, str]]:
    """`NAME:key=value,key=value` -> `(NAME, {key: value})`."""
    name, _, pairs = text.partition(":")
    return name, dict(pair.split("=", 1) for pair in pairs.split(",") if pair)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="One tiny pipeline, a couple of minutes (the test runs it).")
    add("--output-dir", default="outputs/benchmarks/learning")
    add("--data-dir", default=str(render.DATA_DIR), help="The release's data; 'none': the tasks' synthetic rows.")
    add("--tasks", nargs="+", choices=sorted(RECIPES), default=["mwp", "snlr"])
    add("--architectures", nargs="+", choices=["seq2seq", "causal"], default=["seq2seq", "causal"])
    add("--seeds", type=int, nargs="+", default=[0, 1, 2])
    add("--variant", type=variant, action="append", help="NAME:key=value,... a REFINER arm (default: refiner).")
    add("--jobs", type=int, default=1, help="Pipelines run at once.")
    add("--threads", type=int, default=1, help="torch threads per recipe run.")
    add("--resume", action="store_true", help="Skip the recipe runs that finished in an earlier run.")
    add("--learning-rate", type=float, default=2e-3)
    for name, default in (
        ("hidden-size", 64), ("num-layers", 2), ("vocab-size", 1000), ("batch-size", 32), ("warm-steps", 500),
        ("refiner-steps", 50), ("critic-steps", 300), ("turns", 3), ("max-eval", 200), ("synthetic-train", 2000),
        ("max-new-tokens", 48),
    ):  # fmt: skip
        add(f"--{name}", type=int, default=default)
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**QUICK)
    args = parser.parse_args(argv)
    args.variant = args.variant or [("refiner", {})]
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    data: dict[str, Any] = {
        "benchmark": "learning", "command": " ".join(["python", *sys.argv]), "quick": args.quick,
        "machine": render.machine(args.threads), "settings": vars(args), "pipelines": [],
    }  # fmt: skip
    keys = [(task, arch, seed) for task in args.tasks for arch in args.architectures for seed in args.seeds]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for record in pool.map(lambda key: pipeline(*key, args), keys):
            data["pipelines"].append(record)
            data["summary"] = summary(data["pipelines"])
            render.write_outputs(output_dir, "learning", data, markdown(data))
    plot(data, output_dir / "learning.png")
    return data


if __name__ == "__main__":
    main()
