"""The paper's warm start: supervised training of the generator (prompt -> completion), with no critic.

Causal models train with TRL's `SFTTrainer` (completion-only loss), encoder-decoders with `Seq2SeqTrainer`. The model
and tokenizer are saved to `output_dir`, the `model_name_or_path` of the REFINER recipe that follows; the evaluation
rows are then refined without a critic and with the oracle, and the table is printed.

    python recipes/train_generator.py --config recipes/generator_ms_tiny.yaml
    accelerate launch --config_file ds_configs/accelerate_zero2.yaml recipes/train_generator.py \
        --config recipes/generator_ms.yaml
"""

from __future__ import annotations

from collections.abc import Sequence

from refiner_trl.evaluation import EvaluationResult
from refiner_trl.recipes_common import run_generator


def main(argv: Sequence[str] | None = None) -> EvaluationResult | None:
    """Train, save and evaluate; returns the evaluation result on the main process."""
    return run_generator(argv)


if __name__ == "__main__":
    main()
