"""Run by test_ddp.py under `accelerate launch --multi_gpu --num_processes 2` with `use_cpu=True` (DDP over gloo)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from conftest import SpyTrainer, code_rows, reveal_feedback, tokenizer_for
from datasets import Dataset

from refiner_trl import CallableCritic, RefinerConfig
from refiner_trl.modeling import build_tiny_model


def main(output_dir: Path) -> None:
    rows = code_rows(32, seed=0)
    tokenizer = tokenizer_for(rows)
    model = build_tiny_model("causal", tokenizer, seed=0)
    critic = CallableCritic(lambda prompts, hyps, refs: [reveal_feedback(h, r) for h, r in zip(hyps, refs)])
    args = RefinerConfig(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        max_steps=2,
        num_hypotheses=4,
        num_refinement_turns=3,
        max_new_tokens=4,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = SpyTrainer(model, args, critic=critic, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    state = trainer.accelerator.state
    record = {
        "process_index": state.process_index,
        "num_processes": state.num_processes,
        "distributed_type": str(state.distributed_type),
        "picks": trainer.picks,
        "losses": [e["loss"] for e in trainer.state.log_history if "loss" in e],
        # Equal on both processes only if every gradient was reduced (the loss runs several forwards per step).
        "weights": [float(p.detach().double().sum()) for p in trainer.model.parameters()],
    }
    (output_dir / f"process_{state.process_index}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
