"""[`load_critic`]: the one place a critic spec (`"oracle"`, `"decision_oracle"`, a folder, `openai:<model>`) is read.

Adding a kind of critic is one module in this package and one branch in [`critic_kind`] and [`load_critic`].
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import Critic

if TYPE_CHECKING:
    from ..script_args import CriticArguments
    from ..tasks.base import Task

ORACLE = "oracle"
"""The spec of the task's oracle critic, which compares each hypothesis with the gold completion."""
DECISION_ORACLE = "decision_oracle"
"""The task's oracle that says only *that* a hypothesis is wrong ([`Task.oracle_critic`] with `decision_only`)."""
OPENAI_PREFIX = "openai:"
"""A spec that starts with it names a chat model behind an OpenAI-compatible API: `openai:<model>`."""


def critic_kind(spec: str) -> str:
    """The kind of critic `spec` names: `"oracle"`, `"decision_oracle"`, `"openai"` (`openai:<model>`) or `"model"`.

    Args:
        spec (`str`):
            `"oracle"`, `"decision_oracle"`, `"openai:<model>"` or the path of a critic saved by
            `recipes/train_critic.py`.

    Raises:
        `ValueError`: for `openai:` with no model.
    """
    if spec in (ORACLE, DECISION_ORACLE):
        return spec
    if spec.startswith(OPENAI_PREFIX):
        if not _openai_model(spec):
            raise ValueError(f"critic: {spec!r} names no model; write {OPENAI_PREFIX}<model>")
        return "openai"
    return "model"


def load_critic(
    spec: str,
    task: Task,
    args: CriticArguments | None = None,
    trust_remote_code: bool = False,
    device: Any = None,
) -> Critic:
    """The critic `spec` names: the task's oracle, an [`LLMCritic`] for `openai:<model>`, or a [`ModelCritic`] loaded
    from a folder.

    Args:
        spec (`str`):
            `"oracle"`, `"decision_oracle"`, `"openai:<model>"` or the path of a critic saved by
            `recipes/train_critic.py`.
        task ([`Task`]):
            The task (its oracle critic; its error types for an LLM critic).
        args ([`~refiner_trl.script_args.CriticArguments`], *optional*):
            The settings of a model or LLM critic (feedback length, batch size, the API's address, ...); unset: their
            defaults.
        trust_remote_code (`bool`, *optional*, defaults to `False`):
            Run a critic model's repository code when loading it.
        device (`str` or `torch.device`, *optional*):
            Where a critic model runs (e.g. the training device); unset: where it loads.
    """
    from ..script_args import CriticArguments

    args = CriticArguments() if args is None else args
    kind = critic_kind(spec)
    if kind in (ORACLE, DECISION_ORACLE):
        return task.oracle_critic(decision_only=kind == DECISION_ORACLE)
    if kind == "openai":
        from ..generators import OpenAIChatGenerator
        from .llm import LLMCritic

        generator = OpenAIChatGenerator(
            _openai_model(spec),
            base_url=args.critic_base_url,
            api_key_env=args.critic_api_key_env,
            timeout=args.critic_timeout,
            max_retries=args.critic_max_retries,
            max_tokens=args.critic_max_new_tokens,
            max_workers=args.critic_max_workers,
        )
        return LLMCritic(generator, task=task, use_references=args.critic_reference_guided)
    if not Path(spec).exists():
        raise FileNotFoundError(
            f"critic: {spec!r} is neither {ORACLE!r}, {DECISION_ORACLE!r}, {OPENAI_PREFIX}<model>, "
            "nor an existing folder"
        )
    from .model import ModelCritic

    model_critic = ModelCritic(
        spec,
        max_new_tokens=args.critic_max_new_tokens,
        batch_size=args.critic_batch_size,
        trust_remote_code=trust_remote_code,
        use_chat_template=args.critic_use_chat_template,
    )
    if device is not None:
        model_critic.model.to(device)
    return model_critic


def _openai_model(spec: str) -> str:
    return spec[len(OPENAI_PREFIX) :].strip()
