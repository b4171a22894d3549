"""Critics: anything that reads (x, z) and writes short, structured feedback on z.

- `base`: the [`Critic`] protocol, [`NO_ERROR`] (defined only there), [`as_critic`], [`checked_critique`];
- `model`: [`ModelCritic`], a trained language model;
- `llm`: [`LLMCritic`], any generator (e.g. a chat model behind an API) prompted to critique;
- `human`: [`HumanCritic`], a person at the terminal;
- `state`: the critic's state saved in checkpoints;
- `loading`: [`load_critic`], the one place a critic spec (`"oracle"`, a folder, `"openai:<model>"`) is read.
"""

from .base import (
    NO_ERROR,
    CallableCritic,
    Critic,
    CriticError,
    StatefulCritic,
    as_critic,
    checked_critique,
    is_no_error,
)
from .human import HumanCritic
from .llm import LLM_CRITIC_TEMPLATE, LLMCritic, answer_to_feedback, means_no_error
from .loading import critic_kind, load_critic
from .model import ModelCritic
from .state import load_critic_state, save_critic_state

__all__ = [
    "LLM_CRITIC_TEMPLATE",
    "NO_ERROR",
    "CallableCritic",
    "Critic",
    "CriticError",
    "HumanCritic",
    "LLMCritic",
    "ModelCritic",
    "StatefulCritic",
    "answer_to_feedback",
    "as_critic",
    "checked_critique",
    "critic_kind",
    "is_no_error",
    "load_critic",
    "load_critic_state",
    "means_no_error",
    "save_critic_state",
]
