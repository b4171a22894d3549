"""The pretrained-model benchmark's report: the tables of `pretrained.md` and the plot `pretrained.png`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _machine import machine_line

from refiner_trl.report import markdown_table


def format_markdown(data: dict[str, Any]) -> str:
    """The headline table (each arm's rows with their intervals), the critic's turn-0 verdicts and the machine.

    Args:
        data (`dict`):
            The run's JSON (`pretrained.json`).
    """
    lines = [f"# Pretrained benchmark on {data['model']}: {data['num_eval']} rows of {data['eval_file']}", ""]
    rows = []
    for seed_record in data["evaluations"].values():
        for arm, record in seed_record.items():
            for run in record["runs"].values():
                low, high = run["interval"]
                by_turn = " / ".join(f"{100 * v:.1f}" for v in run["by_turn"])
                interval = f"[{100 * low:.1f}, {100 * high:.1f}]"
                rows.append([f"{arm}: {run['label']}", f"{100 * run['final']:.1f}", interval, by_turn])
    lines.append(markdown_table(["arm and critic", "accuracy %", "95% interval", "by turn 0..T"], rows))
    verdicts = [
        [arm, critic, counts["errors"], _share(counts["recall"]), _share(counts["false_alarms"])]
        for seed_record in data["evaluations"].values()
        for arm, record in seed_record.items()
        for critic, counts in record.get("critic_on_turn0", {}).items()
    ]
    if verdicts:
        lines += ["", "Trained critics on each arm's own turn-0 hypotheses, against the oracle:", ""]
        lines.append(markdown_table(["arm", "critic", "turn-0 errors", "recall", "false alarms"], verdicts))
    lines += ["", f"Machine: {machine_line(data['machine'])}"]
    return "\n".join(lines) + "\n"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def plot(data: dict[str, Any], path: Path) -> Path:
    """Accuracy after each refinement turn, one line per arm and critic.

    Args:
        data (`dict`):
            The run's JSON.
        path (`Path`):
            The PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 5))
    for seed_record in data["evaluations"].values():
        for arm, record in seed_record.items():
            for name, run in record["runs"].items():
                if name != "none":
                    axis.plot(
                        range(len(run["by_turn"])),
                        [100 * v for v in run["by_turn"]],
                        marker="o",
                        label=f"{arm} + {name}",
                    )
    axis.set_xlabel("refinement turn")
    axis.set_ylabel("equation accuracy (%)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
