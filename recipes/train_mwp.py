"""REFINER training on math word problems (x: the problem; z: the equation).

Trains the generator with a critic's feedback (the oracle, or a critic saved by `recipes/train_critic.py`), saves it
to `output_dir`, then refines the evaluation rows without a critic and with each critic and prints the table.

    python recipes/train_mwp.py --config recipes/mwp_tiny.yaml                  # tiny, offline, CPU
    python recipes/train_mwp.py --config recipes/mwp.yaml --learning_rate 1e-4  # YAML + override
    accelerate launch --config_file ds_configs/accelerate_zero3.yaml recipes/train_mwp.py --config recipes/mwp.yaml
"""

from __future__ import annotations

from collections.abc import Sequence

from refiner_trl.evaluation import EvaluationResult
from refiner_trl.recipes_common import run_refiner

TASK = "mwp"


def main(argv: Sequence[str] | None = None) -> EvaluationResult | None:
    """Train, save and evaluate; returns the evaluation result on the main process."""
    return run_refiner(TASK, argv)


if __name__ == "__main__":
    main()
