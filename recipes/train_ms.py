"""REFINER training on Moral Stories (x: situation, intention, immoral action; z: the norm).

Trains the generator with a critic's feedback (the oracle, or a critic saved by `recipes/train_critic.py`), saves it
to `output_dir`, then refines the evaluation rows without a critic and with each critic and prints the table.

    python recipes/train_ms.py --config recipes/ms_tiny.yaml                  # tiny, offline, CPU
    python recipes/train_ms.py --config recipes/ms.yaml --learning_rate 1e-4  # YAML + override
    accelerate launch --config_file ds_configs/accelerate_zero3.yaml recipes/train_ms.py --config recipes/ms.yaml
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from refiner_trl.recipes_common import parse_refiner_args, run_refiner

TASK = "moral_stories"


def parse_args(argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Parse `--config file.yaml` and overrides into (task, model, critic, evaluation, `RefinerConfig`) arguments."""
    return parse_refiner_args(TASK, argv)


def main(argv: Sequence[str] | None = None) -> Any:
    """Train, save and evaluate; returns the evaluation result (main process)."""
    return run_refiner(TASK, argv)


if __name__ == "__main__":
    main()
