"""What a run was: its resolved config, the code version and the package versions, and which
config fields changed between a run and its resumption. Pure functions; the entry points in
experiments/ write the result into the workdir."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from typing import Any, Mapping

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections")


def code_version(path: str) -> str | None:
    """`git describe --always --dirty` of the checkout holding `path`, or None outside git."""
    try:
        out = subprocess.run(["git", "-C", os.path.dirname(os.path.abspath(path)), "describe",
                              "--always", "--dirty"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def describe(config: Mapping[str, Any], argv: list[str], code_path: str) -> dict:
    """The run's provenance: resolved config, command line, code version, Python, packages."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {"config": dict(config), "argv": list(argv), "code_version": code_version(code_path),
            "python": sys.version.split()[0], "platform": platform.platform(),
            "packages": versions}


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """'field: old -> new' for every field (dotted path) whose value differs, sorted."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
            for k in sorted(set(a) | set(b)) if a.get(k, "<absent>") != b.get(k, "<absent>")]
