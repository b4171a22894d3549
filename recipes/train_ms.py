"""REFINER training on Moral Stories (x: situation, intention, immoral action; z: the norm).

`recipes/train_refiner.py` for the `moral_stories` task (a YAML that sets another `task` is refused):
trains the generator with a critic's feedback, saves it to `output_dir`, then refines the evaluation rows without a
critic and with each critic and prints the table.

    python recipes/train_ms.py --config recipes/ms_tiny.yaml                  # tiny, offline, CPU
    python recipes/train_ms.py --config recipes/ms.yaml --learning_rate 1e-4  # YAML + override
    accelerate launch --config_file ds_configs/accelerate_zero3.yaml recipes/train_ms.py --config recipes/ms.yaml
"""

import os

from train_refiner import REFINER_ARGUMENTS, main  # train_refiner.py sits next to this script, on sys.path

from refiner_trl.recipe_parser import parse_recipe_args

TASK = "moral_stories"

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(*parse_recipe_args(REFINER_ARGUMENTS, task=TASK))
