"""colab/distill.ipynb: committed without outputs, its defaults those of configs/distill.py:tiny,
and executed end to end at smoke size (its own R1-Zero teacher, a few steps of everything)."""
import json

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import load_config
from test_notebooks import REPO, _literal_assignments, _parameters_cell, _smoke_environment

NB = REPO / "colab" / "distill.ipynb"


def test_committed_without_outputs_and_its_defaults_are_the_tiny_config():
    nb = nbformat.read(NB, as_version=4)
    nbformat.validate(nb)
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells
               if c.cell_type == "code")
    params = _literal_assignments(_parameters_cell(nb))
    c = load_config("distill", "tiny")
    expected = {"variant": "tiny", "seed": c.seed, "teacher_workdir": c.teacher.r1_zero_workdir,
                "pretrain_steps": c.pretrain.steps,
                "teacher_samples": c.samples.num_problems, "sequence_steps": c.sequence.steps,
                "token_steps": c.token.steps, "on_policy_steps": c.on_policy.steps,
                "grpo_steps": c.grpo.steps, "eval_problems": c.eval.num_problems,
                "eval_samples": c.eval.num_samples}
    assert {k: params.get(k) for k in expected} == expected


@pytest.mark.slow
def test_distill_notebook_executes(tmp_path, monkeypatch):
    workdir = _smoke_environment(tmp_path, monkeypatch)
    nb = nbformat.read(NB, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    results = json.loads((workdir / "results.json").read_text())
    assert set(results["methods"]) == {"student_base", "grpo", "sequence", "token",
                                       "on_policy", "teacher"}
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs)
    assert "student_base" in text and "[STUDENT_BASE]" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
