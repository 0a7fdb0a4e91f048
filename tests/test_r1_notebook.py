"""colab/r1.ipynb: committed without outputs, its parameters those of configs/r1.py:tiny, and
executed end to end (a few steps per stage) in a fresh python3 kernel."""
import json

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import load_config
from test_notebooks import REPO, _literal_assignments, _parameters_cell, _smoke_environment

R1_NB = REPO / "colab" / "r1.ipynb"


def test_r1_notebook_committed_without_outputs_and_its_defaults_are_the_tiny_config():
    nb = nbformat.read(R1_NB, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells
               if c.cell_type == "code")
    params = _literal_assignments(_parameters_cell(nb))
    c = load_config("r1", "tiny")
    expected = {"variant": "tiny", "seed": c.seed, "pretrain_examples": c.pretrain.num_examples,
                "pretrain_steps": c.pretrain.steps,
                "cold_start_examples": c.cold_start.num_examples,
                "cold_start_steps": c.cold_start.steps,
                "reasoning_rl_steps": c.reasoning_rl.steps,
                "language_weight": c.reasoning_rl.language_weight,
                "rejection_problems": c.rejection.num_problems, "sft_steps": c.sft.steps,
                "reward_model_steps": c.reward_model.steps, "final_rl_steps": c.final_rl.steps,
                "eval_problems": c.eval.num_problems, "eval_samples": c.eval.num_samples,
                "eval_nonreasoning": c.eval.num_nonreasoning,
                "r1_zero_workdir": c.r1_zero_workdir, "r1_zero_steps": c.r1_zero_steps,
                "orm_ablation_steps": c.orm_ablation.rl_steps,
                "orm_problems": c.orm_ablation.num_problems}
    assert {k: params.get(k) for k in expected} == expected
    assert c.final_rl.language_weight == c.reasoning_rl.language_weight


@pytest.mark.slow
def test_r1_notebook_executes(tmp_path, monkeypatch):
    workdir = _smoke_environment(tmp_path, monkeypatch)
    nb = nbformat.read(R1_NB, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    results = json.loads((workdir / "results.json").read_text())
    assert [s["name"] for s in results["stages"]] == [
        "cold_start", "reasoning_rl", "rejection_sampling", "sft_union", "final_rl"]
    assert results["r1_zero"]["source"] == "this run" and results["r1_zero"]["rl_steps"] == 2
    assert results["orm_ablation"]["rl_steps"] == 2
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "| 5 final_rl |" in text and "FINAL POLICY" in text and "<answer>" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
