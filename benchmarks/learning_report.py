"""The learning benchmark's report: each pipeline's rows aggregated over seeds, the tables of `learning.md` and the
plot `learning.png`."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from _machine import machine_line
from _measurements import mean_std, pm

from refiner_trl.report import markdown_table

ROWS = (
    ("baseline", "baseline (supervised, S+R steps)"),
    ("refiner_alone", "REFINER, turn 0 (no critic)"),
    ("refiner_trained", "REFINER + trained critic (T=3)"),
    ("refiner_oracle", "REFINER + oracle critic (T=3)"),
)
DIAGNOSTIC_ROWS = (
    ("majority", "most frequent training completion, for every row"),
    ("baseline_oracle", "baseline + oracle critic (T=3)"),
    ("refiner_detect", "REFINER + trained detection, oracle text (T=3)"),
)


def primary(record: dict[str, Any], row: str) -> float:
    """The primary metric of one row of a pipeline's results; NaN where it is missing.

    Args:
        record (`dict`):
            A pipeline's record.
        row (`str`):
            A row's key (`ROWS`, `DIAGNOSTIC_ROWS`).
    """
    value = record["results"].get(row, {}).get("final", {}).get(record["primary_metric"])
    return float("nan") if value is None else value


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds, per (task, architecture), of every row's primary metric and the gains.

    Args:
        records (`list[dict]`):
            The pipelines' records.
    """
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["architecture"])].append(record)
    summary = []
    for (task, architecture), group in sorted(groups.items()):
        entry: dict[str, Any] = {
            "task": task,
            "architecture": architecture,
            "data": group[0]["data"],
            "metric": group[0]["primary_metric"],
            "seeds": sorted(r["seed"] for r in group),
            "num_eval": group[0]["num_eval"],
        }
        for row, _ in (*ROWS, *DIAGNOSTIC_ROWS):
            values = [primary(r, row) for r in group]
            mean, std, _ = mean_std(values)
            entry[row] = {"mean": mean, "std": std, "values": values}
        for name, (high, low) in {
            "gain_trained_vs_baseline": ("refiner_trained", "baseline"),
            "gain_oracle_vs_trained": ("refiner_oracle", "refiner_trained"),
            "gain_alone_vs_baseline": ("refiner_alone", "baseline"),
        }.items():
            values = [primary(r, high) - primary(r, low) for r in group]
            mean, std, _ = mean_std(values)
            entry[name] = {"mean": mean, "std": std, "values": values}
        for name in ("exact_match", "no_error_accuracy", "error_type_accuracy", "false_alarm_rate"):
            mean, std, _ = mean_std([r["critic_heldout"].get(name) for r in group])
            entry[f"critic_{name}"] = {"mean": mean, "std": std}
        for name in ("oracle_error_rate", "detection_recall", "false_alarm_rate", "type_agreement"):
            mean, std, _ = mean_std([r["critic_on_refiner_turn0"].get(name) for r in group])
            entry[f"turn0_{name}"] = {"mean": mean, "std": std}
        entry["targets"] = {
            "trained_at_least_10_points_above_baseline": entry["gain_trained_vs_baseline"]["mean"] >= 0.10,
            "oracle_above_trained": entry["gain_oracle_vs_trained"]["mean"] > 0,
        }
        summary.append(entry)
    return summary


def format_markdown(data: dict[str, Any]) -> str:
    """The tables of `learning.md`: results, gains and critic quality.

    Args:
        data (`dict`):
            The run's JSON, with its `summary`.
    """
    records, summary = data["pipelines"], data["summary"]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["task"], record["architecture"])].append(record)
    settings = data["settings"]
    lines = [
        "# Learning benchmark",
        "",
        f"Command: `{data['command']}`",
        "",
        f"Machine: {machine_line(data['machine'])}. Wall time: {data.get('wall_seconds', 0) / 60:.1f} min"
        f" for {len(records)} pipelines ({data.get('workers', 1)} worker process(es)).",
        "",
        f"Tiny models built from a config: hidden {settings['hidden_size']}, {settings['num_layers']} layer(s) "
        f"(per stack), vocabulary {settings['vocab_size']}; batch {settings['batch_size']}, learning rate "
        f"{settings['learning_rate']}. Steps: warm start S={settings['warm_steps']}, then R="
        f"{settings['refiner_steps']} more (supervised for the baseline, REFINER with the oracle critic, k="
        f"{settings['num_hypotheses']}, T={settings['num_refinement_turns']}); critic {settings['critic_steps']} "
        f"steps. Evaluation on the first {settings['max_eval']} rows of `val.json` (or synthetic rows), greedy, "
        f"T={settings['eval_turns']}. Values: primary metric in %, mean ± standard deviation over seeds.",
        "",
        "## Results",
        "",
        _results_table(summary, groups),
        "",
        "## Diagnostics",
        "",
        _diagnostics_table(summary, groups),
        "",
        "## Per pipeline",
        "",
        _pipelines_table(records),
        "",
    ]
    return "\n".join(lines)


def _results_table(summary: list[dict[str, Any]], groups: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """Each (task, architecture)'s rows over seeds, the gain of REFINER + trained critic, and its target."""
    header = ["task (data)", "arch", "seeds", *[label for _, label in ROWS], "trained − baseline", "target met"]
    rows = []
    for entry in summary:
        group = groups[(entry["task"], entry["architecture"])]
        rows.append(
            [
                f"{entry['task']} ({entry['data']}, {entry['metric']})",
                entry["architecture"],
                len(group),
                *[pm(primary(r, row) for r in group) for row, _ in ROWS],
                pm(primary(r, "refiner_trained") - primary(r, "baseline") for r in group),
                "yes" if entry["targets"]["trained_at_least_10_points_above_baseline"] else "no",
            ]
        )
    return markdown_table(header, rows)


def _diagnostics_table(summary: list[dict[str, Any]], groups: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    """The diagnostic rows, the critic's held-out quality and its verdicts on REFINER's turn-0 hypotheses."""
    header = [
        "task",
        "arch",
        *[label for _, label in DIAGNOSTIC_ROWS],
        "critic held-out: exact / error type / no-error acc.",
        "turn-0: oracle error rate / critic recall / false alarms / type agreement",
    ]
    rows = []
    for entry in summary:
        group = groups[(entry["task"], entry["architecture"])]

        def held(name: str, group: list[dict[str, Any]] = group) -> str:
            return pm(r["critic_heldout"].get(name) for r in group)

        def turn0(name: str, group: list[dict[str, Any]] = group) -> str:
            return pm(r["critic_on_refiner_turn0"].get(name) for r in group)

        rows.append(
            [
                entry["task"],
                entry["architecture"],
                *[pm(primary(r, row) for r in group) for row, _ in DIAGNOSTIC_ROWS],
                f"{held('exact_match')} / {held('error_type_accuracy')} / {held('no_error_accuracy')}",
                f"{turn0('oracle_error_rate')} / {turn0('detection_recall')} / {turn0('false_alarm_rate')} / "
                f"{turn0('type_agreement')}",
            ]
        )
    return markdown_table(header, rows)


def _pipelines_table(records: list[dict[str, Any]]) -> str:
    """Every pipeline's rows (primary metric in %) and minutes."""
    header = ["task", "arch", "seed", *[row for row, _ in (*ROWS, *DIAGNOSTIC_ROWS)], "minutes"]
    rows = [
        [
            r["task"],
            r["architecture"],
            r["seed"],
            *[f"{100 * primary(r, row):.1f}" for row, _ in (*ROWS, *DIAGNOSTIC_ROWS)],
            f"{r['seconds']['total'] / 60:.1f}",
        ]
        for r in records
    ]
    return markdown_table(header, rows)


def plot(data: dict[str, Any], path: Path) -> Path:
    """Bars of each row's primary metric per (task, architecture), with the seeds' spread as error bars.

    Args:
        data (`dict`):
            The run's JSON, with its `summary`.
        path (`Path`):
            The PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = data["summary"]
    figure, axes = plt.subplots(figsize=(7.5, 3.6), dpi=100)
    width = 0.8 / len(ROWS)
    for i, (row, label) in enumerate(ROWS):
        means = [100 * (entry[row]["mean"] if entry[row]["mean"] == entry[row]["mean"] else 0) for entry in summary]
        stds = [100 * (entry[row]["std"] if entry[row]["std"] == entry[row]["std"] else 0) for entry in summary]
        positions = [j + (i - (len(ROWS) - 1) / 2) * width for j in range(len(summary))]
        axes.bar(positions, means, width, yerr=stds, capsize=2, label=label)
    for j, entry in enumerate(summary):
        majority = entry.get("majority", {}).get("mean", float("nan"))
        if majority == majority:
            label = "most frequent training answer" if j == 0 else None
            axes.hlines(100 * majority, j - 0.45, j + 0.45, colors="black", linestyles="dotted", label=label)
    axes.set_xticks(range(len(summary)))
    axes.set_xticklabels([f"{e['task']}\n{e['architecture']}" for e in summary])
    axes.set_ylabel("equation / inference-rule accuracy (%)")
    axes.set_title("REFINER vs supervised baseline (tiny models, mean ± std over seeds)", fontsize=9)
    axes.legend(fontsize=7, loc="upper left")
    axes.grid(axis="y", alpha=0.3)
    axes.set_ylim(0, max(5.0, axes.get_ylim()[1]))
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def complete(data: dict[str, Any]) -> None:
    """Set `data["summary"]` to the [`aggregate`] of its pipelines (before any file of the run is written).

    Args:
        data (`dict`):
            The run's JSON.
    """
    data["summary"] = aggregate(data["pipelines"])
