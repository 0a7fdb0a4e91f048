"""The Colab notebooks: committed without outputs, parameters matching their configs, and
executed end to end (a few steps) in a fresh python3 kernel, writing only into a tmp dir."""
import ast
import importlib.util
import json
import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

REPO = pathlib.Path(__file__).resolve().parent.parent
R1_ZERO_NB = REPO / "colab" / "r1_zero.ipynb"


def _load_config_module():
    spec = importlib.util.spec_from_file_location("r1_zero_config_for_test",
                                                  REPO / "configs" / "r1_zero.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _parameters_cell(nb) -> str:
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    return cells[0].source


def _literal_assignments(source: str) -> dict:
    """Top-level `name = <literal>` assignments of a cell (what papermill overrides)."""
    values = {}
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)):
            try:
                values[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # not a literal (e.g. workdir from the environment)
    return values


def test_committed_without_outputs():
    nb = nbformat.read(R1_ZERO_NB, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"cell {i} has stored outputs; clear them"
            assert cell.execution_count is None, f"cell {i} has an execution count"


def test_parameter_defaults_are_the_tiny_config():
    params = _literal_assignments(_parameters_cell(nbformat.read(R1_ZERO_NB, as_version=4)))
    c = _load_config_module().get_config("tiny")
    expected = {"variant": "tiny", "seed": c.seed, "pretrain_examples": c.pretrain.num_examples,
                "pretrain_steps": c.pretrain.steps,
                "pretrain_batch_size": c.pretrain.batch_size, "grpo_steps": c.grpo.steps,
                "prompts_per_step": c.grpo.prompts_per_step,
                "num_generations": c.grpo.num_generations,
                "eval_problems": c.eval.num_problems, "eval_every": c.eval.every}
    assert {k: params.get(k) for k in expected} == expected


def _smoke_environment(tmp_path, monkeypatch):
    """The kernel inherits this environment: the venv's python first on PATH (the kernelspec
    runs "python"), smoke sizes, the work dir (returned), and no simulated multi-device CPU."""
    workdir = tmp_path / "run"
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    monkeypatch.setenv("R1JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("R1JAX_WORKDIR", str(workdir))
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    return workdir


@pytest.mark.slow
def test_r1_zero_notebook_executes(tmp_path, monkeypatch):
    workdir = _smoke_environment(tmp_path, monkeypatch)
    nb = nbformat.read(R1_ZERO_NB, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    results = json.loads((workdir / "results.json").read_text())
    for key in ("base_accuracy", "final_accuracy", "format_rate"):
        assert 0.0 <= results[key] <= 1.0, (key, results[key])
    assert results["grpo_steps"] == 3 and results["num_eval_problems"] == 16
    assert (workdir / "grpo_training.png").is_file()
    assert (workdir / "pretrain_loss.png").is_file()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "held-out accuracy" in text and "AFTER GRPO" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert len(images) >= 2, "the plot cell displayed fewer than two PNGs"
    # Nothing was written next to the notebook or into the repository's runs/ folder.
    assert not (REPO / "colab" / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


STAR_NB = REPO / "colab" / "star.ipynb"


def test_star_notebook_committed_without_outputs_and_its_defaults_are_the_tiny_config():
    nb = nbformat.read(STAR_NB, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells
               if c.cell_type == "code")
    params = _literal_assignments(_parameters_cell(nb))
    spec = importlib.util.spec_from_file_location("star_config_for_test",
                                                  REPO / "configs" / "star.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config("tiny")
    expected = {"variant": "tiny", "seed": c.seed, "pretrain_examples": c.pretrain.num_examples,
                "pretrain_steps": c.pretrain.steps, "iterations": c.star.iterations,
                "train_problems": c.star.num_train_problems,
                "samples_per_problem": c.star.samples_per_problem, "star_steps": c.star.steps,
                "rationalize": c.star.rationalize, "ablation": c.star.ablation,
                "eval_problems": c.eval.num_problems, "eval_samples": c.eval.num_samples}
    assert {k: params.get(k) for k in expected} == expected


@pytest.mark.slow
def test_star_notebook_executes(tmp_path, monkeypatch):
    workdir = _smoke_environment(tmp_path, monkeypatch)
    nb = nbformat.read(STAR_NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    results = json.loads((workdir / "results.json").read_text())
    assert [it["iteration"] for it in results["iterations"]] == [0, 1]
    assert [it["iteration"] for it in results["no_rationalization"]["iterations"]] == [0, 1]
    assert len(results["paired_last_minus_first"]) == 3
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "last - iteration 0, greedy (paired)" in text and "LAST ITERATION" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
