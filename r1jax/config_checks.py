"""Checks of config values, each failing with the value's full field path."""
from __future__ import annotations

from typing import Callable


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
