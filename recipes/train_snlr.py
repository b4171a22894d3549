"""REFINER training on synthetic natural-language reasoning (x: fact and rules; z: the chain of inference steps).

`recipes/train_refiner.py` for the `snlr` task (a YAML that sets another `task` is refused):
trains the generator with a critic's feedback, saves it to `output_dir`, then refines the evaluation rows without a
critic and with each critic and prints the table.

    python recipes/train_snlr.py --config recipes/snlr_tiny.yaml                  # tiny, offline, CPU
    python recipes/train_snlr.py --config recipes/snlr.yaml --learning_rate 1e-4  # YAML + override
    accelerate launch --config_file ds_configs/accelerate_zero3.yaml recipes/train_snlr.py --config recipes/snlr.yaml
"""

import os

from train_refiner import REFINER_ARGUMENTS, main  # train_refiner.py sits next to this script, on sys.path

from refiner_trl.recipe_parser import parse_recipe_args

TASK = "snlr"

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(REFINER_ARGUMENTS, task=TASK))
