"""refiner-trl: REFINER (Paul et al., EACL 2024) as a trainer of the Hugging Face TRL ecosystem.

Names are imported on first use, so that `import refiner_trl` stays fast for scripts that need only a critic or
`refine` and not the trainer.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .refinement import RefinementTrace, refine, refine_metrics

__version__ = "0.1.0"

_EXPORTS = {
    "RefinerConfig": "config",
    "RefinerTrainer": "trainer",
    "NO_ERROR": "critics",
    "Critic": "critics",
    "CallableCritic": "critics",
    "ModelCritic": "critics",
    "HumanCritic": "critics",
    "LLMCritic": "critics",
    "Generator": "generators",
    "GeneratorError": "generators",
    "ModelGenerator": "generators",
    "CallableGenerator": "generators",
    "OpenAIChatGenerator": "generators",
    "as_generator": "generators",
    "as_critic": "critics",
    "get_task": "tasks",
}

__all__ = [
    "CallableCritic",
    "CallableGenerator",
    "Critic",
    "Generator",
    "GeneratorError",
    "HumanCritic",
    "LLMCritic",
    "ModelCritic",
    "ModelGenerator",
    "NO_ERROR",
    "OpenAIChatGenerator",
    "RefinementTrace",
    "RefinerConfig",
    "RefinerTrainer",
    "__version__",
    "as_critic",
    "as_generator",
    "get_task",
    "refine",
    "refine_metrics",
]

if TYPE_CHECKING:
    from .config import RefinerConfig
    from .critics import NO_ERROR, CallableCritic, Critic, HumanCritic, LLMCritic, ModelCritic, as_critic
    from .generators import (
        CallableGenerator,
        Generator,
        GeneratorError,
        ModelGenerator,
        OpenAIChatGenerator,
        as_generator,
    )
    from .tasks import get_task
    from .trainer import RefinerTrainer


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'refiner_trl' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
