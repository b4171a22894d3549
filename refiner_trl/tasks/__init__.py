"""The paper's three tasks: math word problems (`"mwp"`), sNLR (`"snlr"`) and Moral Stories (`"moral_stories"`).

Example:

```python
>>> from refiner_trl.tasks import get_task
>>> task = get_task("mwp")
>>> train = task.synthetic(n=100, seed=0)
>>> task.oracle_critic().critique(train["prompt"][:1], train["completion"][:1], train["completion"][:1])
['No error.']
```
"""

from __future__ import annotations

from .base import Task
from .moral_stories import MoralStoriesTask
from .mwp import MWPTask
from .mwp_equations import EquationError, execute_equation, normalize_equation, parse_equation
from .snlr import SNLRTask

_TASKS: dict[str, type[Task]] = {"mwp": MWPTask, "snlr": SNLRTask, "moral_stories": MoralStoriesTask}

TASKS: tuple[str, ...] = tuple(_TASKS)
"""The names [`get_task`] knows."""


def get_task(name: str) -> Task:
    """The task called `name`.

    Args:
        name (`str`):
            One of [`TASKS`]: `"mwp"`, `"snlr"`, `"moral_stories"`.

    Raises:
        `ValueError`: for an unknown name, listing the known ones.
    """
    if name not in _TASKS:
        raise ValueError(f"Unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return _TASKS[name]()


__all__ = [
    "TASKS",
    "EquationError",
    "MWPTask",
    "MoralStoriesTask",
    "SNLRTask",
    "Task",
    "execute_equation",
    "get_task",
    "normalize_equation",
    "parse_equation",
]
