"""What the benchmarks share: run a recipe as a subprocess, describe the machine, write tables and plots.

    from render import run_recipe, table, plot_by_turn, plot_stacked, write_outputs, machine

A benchmark runs the recipes (`run_recipe`) or the trainer, and writes `<name>.json`, `<name>.md` and `<name>.png`
through these helpers; JSON and markdown go through `refiner_trl.report`, so a run cut short leaves no half file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from refiner_trl.report import markdown_table, write_json, write_text

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT.parent / "shared" / "data" / "refiner-paper"
"""The REFINER release's processed data, when the checkout sits next to `../shared` (never required)."""
DONE = "recipe_done.json"


class RecipeRun(NamedTuple):
    """One recipe run: its `output_dir`, its `results.json` (`{}` when it wrote none) and its wall seconds."""

    output_dir: Path
    results: dict[str, Any]
    seconds: float


def run_recipe(
    script: str,
    config: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    resume: bool = False,
) -> RecipeRun:
    """Run `python recipes/<script> --config <config> --key value ...` from the repository root and read its results.

    The subprocess imports this checkout's `refiner_trl` (its root first on `PYTHONPATH`), runs offline, and writes
    its output to `<output_dir>/recipe.log`; `output_dir` must be among the overrides. On success
    `<output_dir>/recipe_done.json` records the command and seconds, and with `resume` a run that has it, for the
    same command, is not run again.

    Args:
        script (`str`):
            A recipe, e.g. `"train_mwp.py"`, or a path.
        config (`str`, *optional*):
            Its YAML file, e.g. `"recipes/mwp_tiny.yaml"`.
        overrides (`Mapping[str, Any]`, *optional*):
            `--key value` options: booleans as `true` / `false`, lists as several values, `None` left out.
        env (`Mapping[str, str]`, *optional*):
            More environment variables.
        resume (`bool`, *optional*, defaults to `False`):
            Skip a run whose `output_dir` holds the `recipe_done.json` of the same command.

    Raises:
        `RuntimeError`: the recipe failed; the message ends with the log's last lines.
    """
    overrides = dict(overrides or {})
    output_dir = Path(overrides["output_dir"])
    path = Path(script) if "/" in script else ROOT / "recipes" / script
    command = [sys.executable, str(path)] + (["--config", str(config)] if config else [])
    for key, value in overrides.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if value is not None:
            command += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    done = output_dir / DONE
    earlier = json.loads(done.read_text(encoding="utf-8")) if done.is_file() else {}
    if resume and earlier.get("command") == command:
        print(f"  {output_dir}: done in an earlier run", flush=True)
        return RecipeRun(output_dir, _results(output_dir), earlier["seconds"])
    done.unlink(missing_ok=True)
    python_path = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": python_path}
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with open(output_dir / "recipe.log", "a", encoding="utf-8") as log:  # a resumed run adds to the log
        code = subprocess.run(command, cwd=ROOT, env={**full_env, **(env or {})}, stdout=log, stderr=log).returncode
    seconds = time.perf_counter() - started
    if code != 0:
        tail = (output_dir / "recipe.log").read_text(encoding="utf-8")[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited with {code}:\n{tail}")
    write_json(done, {"command": command, "seconds": seconds})
    print(f"  {output_dir}: {path.name} {seconds:.0f} s", flush=True)
    return RecipeRun(output_dir, _results(output_dir), seconds)


def _results(output_dir: Path) -> dict[str, Any]:
    path = output_dir / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def machine(threads: int | None = None) -> dict[str, Any]:
    """What the numbers were measured on: CPU, cores, memory, load, accelerator and library versions.

    Args:
        threads (`int`, *optional*):
            The torch threads of the run; default: torch's current number.
    """
    import torch
    import transformers
    import trl

    cpu = platform.processor()
    if Path("/proc/cpuinfo").is_file():
        names = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    memory = Path("/proc/meminfo").read_text().split()[1] if Path("/proc/meminfo").is_file() else None
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "ram_gib": round(int(memory) / 2**20, 1) if memory else None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": threads or torch.get_num_threads(),
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
        },
    }


def machine_line(info: Mapping[str, Any]) -> str:
    """One markdown line describing [`machine`]'s result."""
    versions = ", ".join(f"{name} {version}" for name, version in info["versions"].items())
    device = info["cuda"] or f"{info['cpu']}, {info['nproc']} cores, {info['torch_threads']} torch threads"
    return f"Machine: {device}; {info['ram_gib']} GiB RAM; load {info['load_average_at_start']}; {versions}."


def mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """`"mean ± std"` of `values` times `scale` (`"–"` when empty; no `±` for one value)."""
    values = [scale * v for v in values if v is not None]
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "–"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def table(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str] | Sequence[str], digits: int = 3) -> str:
    """A markdown table of `rows` (dicts), one column per key of `columns` (a key -> heading mapping, or keys).

    Floats are written with `digits` decimals, a missing value or `None` as `–`; anything else with `str`.
    """
    headings = dict(columns) if isinstance(columns, Mapping) else {key: key for key in columns}

    def cell(value: Any) -> str:
        return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    return markdown_table(list(headings.values()), [[cell(row.get(key)) for key in headings] for row in rows])


def _figure(panels: int) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, max(panels, 1), figsize=(4.5 * max(panels, 1), 3.6), squeeze=False)
    return figure, list(axes[0])


def _save(figure: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def plot_by_turn(panels: Mapping[str, Mapping[str, Sequence[float]]], path: str | Path, ylabel: str) -> Path:
    """One panel per key of `panels`, one line per series: its values after turn 0, 1, ... T.

    Args:
        panels (`Mapping[str, Mapping[str, Sequence[float]]]`):
            Panel title -> series label -> one value per turn.
        path (`str` or `Path`):
            The PNG.
        ylabel (`str`):
            The y axis, e.g. `"equation accuracy %"`.
    """
    figure, axes = _figure(len(panels))
    for axis, (title, series) in zip(axes, panels.items()):
        for label, values in series.items():
            axis.plot(range(len(values)), values, marker="o", label=label)
        axis.set(title=title, xlabel="refinement turn", ylabel=ylabel)
        axis.legend(fontsize=7)
    return _save(figure, path)


def plot_stacked(panels: Mapping[str, Mapping[str, Mapping[str, float]]], path: str | Path, ylabel: str) -> Path:
    """One panel per key of `panels`, one stacked bar per x label, one colour per part.

    Args:
        panels (`Mapping[str, Mapping[str, Mapping[str, float]]]`):
            Panel title -> bar label -> part -> value.
        path (`str` or `Path`):
            The PNG.
        ylabel (`str`):
            The y axis, e.g. `"seconds per step"`.
    """
    figure, axes = _figure(len(panels))
    for axis, (title, bars) in zip(axes, panels.items()):
        bottoms = [0.0] * len(bars)
        for part in dict.fromkeys(part for parts in bars.values() for part in parts):
            heights = [parts.get(part, 0.0) for parts in bars.values()]
            axis.bar(list(bars), heights, bottom=bottoms, label=part)
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        axis.set(title=title, ylabel=ylabel)
        axis.tick_params(axis="x", labelrotation=45, labelsize=7)
        axis.legend(fontsize=7)
    return _save(figure, path)


def write_outputs(output_dir: str | Path, name: str, data: Mapping[str, Any], markdown: str) -> None:
    """Write `<name>.json` and `<name>.md` into `output_dir` and print the markdown."""
    write_json(Path(output_dir) / f"{name}.json", data)
    write_text(Path(output_dir) / f"{name}.md", markdown)
    print(f"\n{markdown}\nWritten to {output_dir}/{name}.{{json,md,png}}", flush=True)


def parse_sized_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    sizes: Mapping[str, int | None],
    quick: Mapping[str, Any],
) -> argparse.Namespace:
    """Add one integer option `--<name>` per entry of `sizes` (its default), take `quick`'s defaults when `--quick` is
    on the command line, and parse `argv` (default: the command line)."""
    for name, default in sizes.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(**quick)
    return parser.parse_args(argv)
