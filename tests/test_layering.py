"""The package's floors, listed once here: a module imports only from its own floor or below,
and a recipe never imports another recipe. A new module must be given a floor here."""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "r1jax"

FLOORS = {
    # 1: the model and what needs no model
    "model": 1, "sharding": 1, "tokenizer": 1, "stats": 1, "distributed": 1, "reporting": 1,
    "provenance": 1, "train_state": 1, "svg": 1,
    # 2: sampling (and its token-level rollout type), log-probs, checkpoints, HF interop
    "sampler": 2, "rollout": 2, "logprobs": 2, "checkpoint": 2, "hf": 2,
    # 3: tasks and data, templates, rule rewards, learned verifiers
    "tasks": 3, "data": 3, "seqio_tasks": 3, "prompts": 3, "rewards": 3, "verifiers": 3,
    "r1_data": 3,
    # 4: losses, jitted steps and search methods
    "sft": 4, "grpo": 4, "distill": 4, "search": 4,
    "mixed_reward": 4,
    # 5: loops, held-out evaluation, the shared base model of the recipes
    "train": 5, "evaluation": 5, "pretrain": 5,
    "rejection": 5, "config_checks": 5,
    # 6: the recipes (each one experiment; never importing another recipe)
    "recipes": 6,
}


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts)


def _imports(path: pathlib.Path) -> set[str]:
    """r1jax modules imported by a file (`from r1jax import a, b`, `from r1jax.a import x`,
    `import r1jax.a`), anywhere in the file (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            parts = node.module.split(".")
            if parts[0] != "r1jax":
                continue
            if len(parts) == 1:
                out.update(a.name for a in node.names)
            else:
                out.add(".".join(parts[1:]))
                if parts[1] == "recipes" and len(parts) == 2:
                    out.update(f"recipes.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "r1jax" and len(parts) > 1:
                    out.add(".".join(parts[1:]))
    return out


def _floor(module: str) -> int:
    top = module.split(".")[0]
    if top not in FLOORS:
        raise AssertionError(f"r1jax.{module} has no floor: add it to FLOORS in {__file__}")
    return FLOORS[top]


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down(path):
    me = _module_name(path)
    floor = _floor(me)
    for dep in _imports(path):
        assert _floor(dep) <= floor, (f"r1jax.{me} (floor {floor}) imports r1jax.{dep} "
                                      f"(floor {_floor(dep)}): imports must point down")
        if me.startswith("recipes.") and dep.startswith("recipes."):
            assert dep == "recipes", f"recipe r1jax.{me} imports recipe r1jax.{dep}"


def test_the_checker_sees_violations(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from r1jax import train\nfrom r1jax.recipes import r1_zero\n"
                   "def f():\n    import r1jax.search\n")
    assert _imports(bad) == {"train", "recipes.r1_zero", "recipes", "search"}
    assert _floor("recipes.r1_zero") == 6 and _floor("model") == 1
    with pytest.raises(AssertionError, match="no floor"):
        _floor("nonexistent_module")


def test_every_module_has_a_floor():
    assert MODULES, "no modules found"
    for path in MODULES:
        _floor(_module_name(path))
