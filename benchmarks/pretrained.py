"""The pretrained-model experiment: the paper's MWP claim on SmolLM2-135M-Instruct, run as the recipes' commands.

Each phase is a recipe with its YAML file in `recipes/evidence_mwp_smollm2/`; this driver only runs them in order and
collects their outputs into `docs/benchmarks/pretrained.{md,json,png}` and the per-row files
`docs/benchmarks/pretrained_rows/<arm>.<critic>.jsonl.gz`. A user reproduces any row with the phase's command
(`docs/benchmarks.md`, section 4).

Phases: warm start (one epoch) -> the warm start's own samples on training prompts, labelled by the oracle -> the
baseline (more supervised steps) -> the critics (perturbations only; with the samples, calibrated) -> REFINER with the
oracle -> REFINER with the trained critic -> the evaluation of each arm on the whole validation file.

Outputs go under `--output-dir` (default `~/.cache/refiner-trl/evidence2`): each phase's folder with its
`recipe.log` and `recipe_done.json` (the command and its wall time), written when the phase ends. A training phase
always runs with `--resume_from_checkpoint true`, so a phase cut short goes on from its newest complete checkpoint;
`--resume` also skips the finished phases; `--phases` runs only some; `--render` only collects. `--quick` runs
every phase on a tiny model built from a config and synthetic data, in minutes (CI runs it).

    python benchmarks/pretrained.py --resume                       # the whole run, hours on a 2-core CPU
    python benchmarks/pretrained.py --resume --phases warm_start   # one phase (at most 90 minutes each)
    python benchmarks/pretrained.py --quick --output-dir /tmp/quick
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import render
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "evidence_mwp_smollm2"
DOCS = ROOT / "docs" / "benchmarks"
YAML_ROOT = "outputs/evidence-mwp-smollm2"
"""The outputs' folder in the YAML files; the driver puts it under `--output-dir`."""
YAML_BASE_MODEL = "outputs/pretrained/smollm2-135m-instruct"
"""The pretrained model's folder in the YAML files; the driver uses the fetched one (or `--model`)."""


@dataclass
class Phase:
    """One recipe command: `python recipes/<script> --config recipes/evidence_mwp_smollm2/<config>`."""

    name: str
    script: str
    config: str
    quick: dict[str, Any] = field(default_factory=dict)
    """Overrides of `--quick` (`None` removes a key)."""


TINY = {"model_name_or_path": None, "tiny_architecture": "causal", "tiny_hidden_size": 64, "tiny_num_layers": 2}
SYNTHETIC = {"train_path": None, "eval_path": None, "synthetic_train_size": 96, "synthetic_eval_size": 24}
PHASES = [
    Phase(
        "warm_start",
        "train_generator.py",
        "warm_start.yaml",
        {**TINY, "max_steps": 150, "per_device_train_batch_size": 16, "learning_rate": 3e-3, "save_steps": 50},
    ),
    Phase("critic_samples", "sample_critic_data.py", "critic_samples.yaml", {"max_train_samples": 48}),
    Phase("baseline", "train_generator.py", "baseline.yaml", {"max_steps": 4}),
    Phase("critic_perturbations", "train_critic.py", "critic_perturbations.yaml", {**TINY, "calibration_prompts": 16}),
    Phase("critic", "train_critic.py", "critic.yaml", {**TINY, "calibration_prompts": 16}),
    Phase("refiner", "train_mwp.py", "refiner.yaml", {"max_steps": 4}),
    Phase("refiner_critic", "train_mwp.py", "refiner_critic.yaml", {"max_steps": 4}),
    Phase("evaluate_baseline", "evaluate.py", "evaluate_baseline.yaml"),
    Phase("evaluate_refiner", "evaluate.py", "evaluate_refiner.yaml"),
    Phase("evaluate_refiner_critic", "evaluate.py", "evaluate_refiner_critic.yaml"),
]
QUICK_ALL = {
    **SYNTHETIC,
    "max_steps": 4,
    "per_device_train_batch_size": 4,
    "save_steps": 2,
    "max_new_tokens": 16,
    "max_completion_length": 32,
    "critic_max_new_tokens": 12,
    "max_eval_samples": 12,
    "torch_num_threads": 1,
    "learning_rate": 1e-3,
}
"""What `--quick` changes in every phase (where the phase's file has the key, or the phase's own `quick` says)."""

ARMS = {"baseline": "evaluate_baseline", "refiner": "evaluate_refiner", "refiner_critic": "evaluate_refiner_critic"}
TARGETS = [  # (description, arm, critic, compared arm, compared critic, target in points)
    ("REFINER + trained critic >= baseline + 10", "refiner", "critic", "baseline", "none", 10.0),
    ("REFINER + oracle >= baseline + 20", "refiner", "oracle", "baseline", "none", 20.0),
    ("REFINER + oracle >= baseline + oracle + 5", "refiner", "oracle", "baseline", "oracle", 5.0),
    ("REFINER(critic) + trained critic >= baseline + 10", "refiner_critic", "critic", "baseline", "none", 10.0),
]


def phase_config(phase: Phase, root: Path, base_model: str, quick: bool, threads: int | None) -> Path:
    """Write the phase's YAML with its paths under `root` (and `--quick`'s changes) to `root/configs/`."""
    text = (RECIPES / phase.config).read_text(encoding="utf-8")
    config = yaml.safe_load(text.replace(YAML_BASE_MODEL, base_model).replace(YAML_ROOT, str(root)))
    changes = {"torch_num_threads": threads} if threads else {}
    if quick:
        changes = {**{key: value for key, value in QUICK_ALL.items() if key in config}, **SYNTHETIC, **phase.quick}
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path = root / "configs" / phase.config
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def run_phase(phase: Phase, root: Path, base_model: str, quick: bool, threads: int | None) -> float:
    """Run one phase's recipe, a training phase resuming from its newest complete checkpoint; return its seconds."""
    overrides: dict[str, Any] = {"output_dir": root / phase.name}
    if phase.script.startswith("train_"):
        overrides["resume_from_checkpoint"] = "true"  # a folder without checkpoints starts at step 0
    print(f"[{time.strftime('%H:%M:%S')}] {phase.name}", flush=True)
    config = phase_config(phase, root, base_model, quick, threads)
    return render.run_recipe(phase.script, str(config), overrides).seconds


def base_model_path(model: str | None, quick: bool) -> str:
    """The pretrained model: `--model`, else SmolLM2 fetched into the cache (nothing to fetch with `--quick`)."""
    if model is not None or quick:
        return model or YAML_BASE_MODEL
    from refiner_trl.pretrained import fetch

    return str(fetch("smollm2-135m-instruct"))


# --------------------------------------------------------------------------------------------------- collecting


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The per-row records of one evaluation run (`rows/<critic>.jsonl.gz` of `recipes/evaluate.py`)."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def collect(root: Path, docs: Path) -> dict[str, Any]:
    """Read each arm's `results.json` and per-row files; write the tables, the plot and the rows under `docs`."""
    from refiner_trl.report import bootstrap_interval, markdown_table, percent, write_json, write_text

    results = {
        arm: json.loads(path.read_text(encoding="utf-8"))
        for arm, phase in ARMS.items()
        if (path := root / phase / "results.json").is_file()
    }
    if not results:
        print(f"no evaluation under {root} yet: nothing to collect")
        return {}
    rows_dir = docs / "pretrained_rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    for arm, result in results.items():
        for run in result["runs"]:
            shutil.copyfile(
                root / ARMS[arm] / "rows" / f"{run['name']}.jsonl.gz", rows_dir / f"{arm}.{run['name']}.jsonl.gz"
            )
    metric = next(iter(results.values()))["primary_metric"]

    def final(arm: str, critic: str) -> list[float]:
        return [row["scores"][-1] for row in read_rows(rows_dir / f"{arm}.{critic}.jsonl.gz")]

    targets = []
    for description, arm, critic, other_arm, other_critic, points in TARGETS:
        if not (
            (rows_dir / f"{arm}.{critic}.jsonl.gz").is_file()
            and (rows_dir / f"{other_arm}.{other_critic}.jsonl.gz").is_file()
        ):
            continue
        difference = [100 * (a - b) for a, b in zip(final(arm, critic), final(other_arm, other_critic))]
        gain, (low, high) = sum(difference) / len(difference), bootstrap_interval(difference)
        targets.append({"target": description, "gain": gain, "interval": [low, high], "met": gain >= points})

    critics = list(dict.fromkeys(run["name"] for result in results.values() for run in result["runs"]))
    runs = {arm: {run["name"]: run for run in result["runs"]} for arm, result in results.items()}

    def cell(run: dict[str, Any] | None) -> str:
        if run is None:
            return "–"
        low, high = run["interval"]
        return f"{100 * run['by_turn'][-1][metric]:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

    lines = [f"# Pretrained benchmark: {metric} % on {next(iter(results.values()))['num_examples']} rows", ""]
    lines += ["95% bootstrap intervals over the rows; T = 3, greedy.", ""]
    header = ["arm", *[("alone" if c == "none" else f"+ {c}") for c in critics]]
    lines.append(markdown_table(header, [[arm, *[cell(runs[arm].get(c)) for c in critics]] for arm in runs]))
    lines += ["", "## Targets (paired differences over the rows, points)", ""]
    lines.append(
        markdown_table(
            ["target", "gain [95% interval]", "met"],
            [
                [t["target"], f"{t['gain']:+.1f} [{t['interval'][0]:+.1f}, {t['interval'][1]:+.1f}]", t["met"]]
                for t in targets
            ],
        )
    )
    lines += ["", "## Each critic on the arm's own turn-0 hypotheses, against the oracle", ""]
    quality = [
        [arm, name, percent(q["recall"]), percent(q["false_alarm"]), q["num_wrong"], q["num_right"]]
        for arm in runs
        for name, run in runs[arm].items()
        if (q := run.get("critic_quality")) is not None
    ]
    lines.append(markdown_table(["arm", "critic", "recall %", "false alarms %", "wrong z_0", "right z_0"], quality))
    by_steps = critic_by_steps(root)
    lines += ["", "## The critics on their held-out samples, by training steps", ""]
    lines.append(
        markdown_table(
            ["critic", "steps", "AUC", "recall %", "false alarms %"],
            [
                [r["critic"], r["steps"], f"{r['auc']:.3f}", percent(r["recall"]), percent(r["false_alarm"])]
                for r in by_steps
            ],
        )
    )
    for critic in ("critic_perturbations", "critic"):
        if (root / critic / "calibration_curve.png").is_file():
            shutil.copyfile(root / critic / "calibration_curve.png", docs / f"pretrained_{critic}_calibration.png")
    phases = _phase_times(root)
    lines += ["", "## Phases (wall time, minutes)", ""]
    lines.append(
        markdown_table(["phase", "minutes"], [[name, f"{seconds / 60:.1f}"] for name, seconds in phases.items()])
    )
    summary = {"metric": metric, "results": results, "targets": targets, "critic_by_steps": by_steps, "phases": phases}
    write_json(docs / "pretrained.json", summary)
    write_text(docs / "pretrained.md", "\n".join(lines) + "\n")
    render.plot_by_turn(
        {
            metric: {
                f"{arm} + {name}": [100 * t[metric] for t in run["by_turn"]]
                for arm in runs
                for name, run in runs[arm].items()
                if run["max_turns"] > 0
            }
        },
        docs / "pretrained.png",
        f"{metric} %",
    )
    print("\n".join(lines))
    return summary


def critic_by_steps(root: Path) -> list[dict[str, Any]]:
    """Each finished critic's calibration at each complete checkpoint, on its held-out samples: AUC, and recall at
    false alarms <= its bound (how many steps work best). Cached in the critic's `by_steps.json`."""
    from refiner_trl.checkpoints import checkpoint_folders, is_complete_checkpoint
    from refiner_trl.critic_samples import read_samples, split_calibration
    from refiner_trl.critics import ModelCritic, is_no_error
    from refiner_trl.critics.calibration import calibrate
    from refiner_trl.templates import render_critic_input

    rows = []
    for critic in ("critic_perturbations", "critic"):
        if not (root / critic / render.DONE).is_file():
            continue
        config = yaml.safe_load((root / "configs" / f"{critic}.yaml").read_text(encoding="utf-8"))
        held_out = split_calibration(read_samples(config["generator_samples"]), config["calibration_prompts"])[1]
        inputs = [render_critic_input(r["prompt"], h) for r in held_out for h in r["hypotheses"]]
        wrong = [not is_no_error(f) for r in held_out for f in r["feedback"]]
        folders = [f for f in checkpoint_folders(root / critic) if is_complete_checkpoint(f)] or [root / critic]
        cache = root / critic / "by_steps.json"
        found = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
        for folder in folders:
            step = str(
                int(folder.name.split("-")[1]) if folder.name.startswith("checkpoint-") else config["max_steps"]
            )
            if step not in found:
                scorer = ModelCritic(
                    str(folder),
                    max_prompt_length=config["max_prompt_length"],
                    batch_size=config["critic_batch_size"],
                    use_calibration=False,
                )
                result = calibrate(scorer.no_error_logprobs(inputs), wrong, config["max_false_alarm"])
                found[step] = {"auc": result.auc, "recall": result.recall, "false_alarm": result.false_alarm}
                cache.write_text(json.dumps(found, indent=1), encoding="utf-8")
            rows.append({"critic": critic, "steps": int(step), **found[step]})
    return rows


def _phase_times(root: Path) -> dict[str, float]:
    times = {}
    for phase in PHASES:
        path = root / phase.name / render.DONE
        if path.is_file():
            times[phase.name] = json.loads(path.read_text(encoding="utf-8"))["seconds"]
    return times


def main(argv: list[str] | None = None) -> None:
    """Run the phases (all, or `--phases`), then collect the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", type=Path, default=Path.home() / ".cache" / "refiner-trl" / "evidence2")
    parser.add_argument("--docs-dir", type=Path, default=DOCS, help="Where the tables, plot and rows go.")
    parser.add_argument("--model", help="The pretrained model's folder (default: SmolLM2, fetched).")
    parser.add_argument("--phases", nargs="+", choices=[p.name for p in PHASES], help="Only these phases.")
    parser.add_argument("--resume", action="store_true", help="Skip finished phases; resume an unfinished one.")
    parser.add_argument("--render", action="store_true", help="Only collect the finished evaluations.")
    parser.add_argument("--quick", action="store_true", help="Tiny model, synthetic data, minutes (CI).")
    parser.add_argument("--threads", type=int, help="torch threads of every phase (default: the YAML files').")
    args = parser.parse_args(argv)
    root = args.output_dir.expanduser().resolve()
    if not args.render:
        base_model = base_model_path(args.model, args.quick)
        for phase in PHASES:
            if args.phases and phase.name not in args.phases:
                continue
            if args.resume and (root / phase.name / render.DONE).is_file():
                print(f"{phase.name}: done")
                continue
            run_phase(phase, root, base_model, args.quick, args.threads)
    collect(root, args.docs_dir)


if __name__ == "__main__":
    main()
