"""The pretrained-model benchmark's report: the tables of `pretrained.md` and the plot `pretrained.png`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from _machine import machine_line
from _measurements import bootstrap_interval

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
    gaps = target_rows(data)
    if gaps:
        lines += ["", "The targets: paired differences in points, with 95% bootstrap intervals over the rows:", ""]
        lines.append(markdown_table(["seed", "arm", "difference", "target", "points", "95% interval", "met"], gaps))
    lines += ["", f"Machine: {machine_line(data['machine'])}"]
    return "\n".join(lines) + "\n"


TARGETS = (
    ("trained", "none", 10.0),
    ("trained_samples", "none", 10.0),
    ("oracle", "none", 20.0),
    ("oracle", "oracle", 5.0),
    ("oracle", "decision_only", None),
)
"""(REFINER arm's run, baseline's run, target in points): REFINER + trained critic >= baseline + 10, + oracle >=
baseline + 20 and >= baseline + oracle + 5; the last row (+ oracle against the arm's own decision-only oracle) has no
target: it is the gain of the oracle's specific feedback over a bare "there is an error"."""


def target_rows(data: dict[str, Any], rounds: int = 2000) -> list[list[Any]]:
    """For each seed and REFINER arm, the differences of `TARGETS` against its baseline (the same warm start's), with
    paired bootstrap intervals over the evaluation rows.

    Args:
        data (`dict`):
            The run's JSON (`pretrained.json`).
        rounds (`int`, *optional*, defaults to `2000`):
            Bootstrap resamples.
    """
    rows = []
    for seed, seed_record in data["evaluations"].items():
        baselines = {name: record for name, record in seed_record.items() if name.startswith("baseline")}
        for arm, record in seed_record.items():
            if arm in baselines:
                continue
            baseline_name = _baseline_of(arm, record, baselines)
            if baseline_name is None:
                continue
            for run, other, target in TARGETS:
                ours = record["runs"].get(run)
                theirs = (record if other == "decision_only" else baselines[baseline_name])["runs"].get(other)
                if ours is None or theirs is None:
                    continue
                gaps = [a - b for a, b in zip(ours["correct"], theirs["correct"])]
                low, high = bootstrap_interval(gaps, rounds)
                label = f"+ {run} - " + (f"+ {other}" if other == "decision_only" else f"{baseline_name} + {other}")
                rows.append(
                    [
                        seed,
                        arm,
                        label.replace("+ none", "alone"),
                        "–" if target is None else f">= +{target:.0f}",
                        f"{100 * sum(gaps) / len(gaps):+.1f}",
                        f"[{100 * low:+.1f}, {100 * high:+.1f}]",
                        "–" if target is None else ("yes" if 100 * sum(gaps) / len(gaps) >= target else "no"),
                    ]
                )
    return rows


def _baseline_of(arm: str, record: dict[str, Any], baselines: dict[str, Any]) -> str | None:
    """The baseline trained from the same warm start as `arm` (`baseline-<warm>-<steps>`); the only baseline when the
    record does not say its warm start."""
    warm = record.get("warm_steps")
    if warm is None:
        return next(iter(baselines)) if len(baselines) == 1 else None
    matching = [name for name in baselines if name.startswith(f"baseline-{warm}-")]
    return matching[0] if matching else None


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

    figure, axis = plt.subplots(figsize=(9, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"oracle": "-", "trained": "--", "trained_samples": ":", "decision_only": "-."}
    arms = [arm for seed_record in data["evaluations"].values() for arm in seed_record]
    for seed_record in data["evaluations"].values():
        for arm, record in seed_record.items():
            for name, run in record["runs"].items():
                if name != "none":
                    axis.plot(
                        range(len(run["by_turn"])),
                        [100 * v for v in run["by_turn"]],
                        marker="o",
                        color=colors[arms.index(arm) % len(colors)],
                        linestyle=styles.get(name, "-"),
                        label=f"{arm} + {name}",
                    )
    axis.set_xlabel("refinement turn (0 = before any feedback)")
    axis.set_ylabel("equation accuracy (%)")
    axis.set_xticks(
        range(
            max(
                len(run["by_turn"])
                for r in data["evaluations"].values()
                for a in r.values()
                for run in a["runs"].values()
            )
        )
    )
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
