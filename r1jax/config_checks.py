"""Checks of config values, each failing with the value's full field path."""
from __future__ import annotations

from typing import Callable

from r1jax import rewards, tasks


def get(c, path: str):
    """The value at dotted `path` ("grpo.steps") of config `c`."""
    for key in path.split("."):
        c = c[key]
    return c


def is_int(v) -> bool:
    """An int that is not a bool."""
    return isinstance(v, int) and not isinstance(v, bool)


def needs(c) -> Callable[[bool, str, str], None]:
    """`need(ok, path, what)`: raises ValueError("config.<path> must be <what>, got <value>")
    unless ok."""
    def need(ok: bool, path: str, what: str) -> None:
        if not ok:
            raise ValueError(f"config.{path} must be {what}, got {get(c, path)!r}")
    return need


def check_task(c, model_note: str = "") -> None:
    """config.task's checker and name, and for a real task (not synthetic) config.model.path
    and its data files; `model_note` ends the message on a missing model.path."""
    need = needs(c)
    need(c.task.checker in rewards.CHECKERS, "task.checker", f"one of {rewards.CHECKERS}")
    need(c.task.name in tasks.TASK_NAMES + ("gsm8k", "math"), "task.name",
         f"one of {tasks.TASK_NAMES + ('gsm8k', 'math')}")
    synthetic = c.task.name in tasks.TASK_NAMES
    need(synthetic or bool(c.model.path), "model.path",
         f"a local Hugging Face folder for task {c.task.name!r}{model_note}")
    need(synthetic or bool(c.task.train_path and c.task.test_path), "task.train_path",
         f"set, with config.task.test_path (local JSONL files) for task {c.task.name!r}")
