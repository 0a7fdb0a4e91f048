"""The GPU suite runs end to end on the CPU at toy sizes, without ml_collections or seqio."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SUITE = os.path.join(REPO, "experiments", "benchmarks", "gpu_suite.py")


@pytest.fixture(scope="module")
def blocked_imports(tmp_path_factory):
    """A PYTHONPATH entry whose ml_collections / seqio / grain fail to import, as on the GPU
    image that has none of them."""
    root = tmp_path_factory.mktemp("blocked")
    for name in ("ml_collections", "seqio", "grain"):
        (root / name).mkdir()
        (root / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not installed on the GPU image')\n")
    return str(root)


def test_gpu_suite_smoke(tmp_path, blocked_imports):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    out = tmp_path / "suite.json"
    env = dict(os.environ, PYTHONPATH=blocked_imports, JAX_PLATFORMS="cpu")
    p = subprocess.run([sys.executable, SUITE, "--smoke", "--out", str(out)], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads(out.read_text())
    for step in ("attention", "grpo", "decode qwen2.5-0.5b"):
        assert res[step]["rc"] == 0 and res[step]["data"], (step, res[step].get("tail"))
    att = res["attention"]["data"]["impls"]
    for name in ("chunked", "dot_product"):
        assert att[name]["logits_max_abs_diff"] < 1e-3 * att[name]["logits_scale"], att
    assert res["attention_used"] == "auto"
    grpo = res["grpo"]["data"]
    assert set(grpo["phases"]) == {"rollout", "log-probs: reference", "log-probs: old policy",
                                   "update"}
    assert grpo["info"]["remat"] == "block" and grpo["info"]["attention"] == "auto"
    rows = res["decode qwen2.5-0.5b"]["data"]["results"]
    assert [r["batch"] for r in rows] == [1, 2]
    assert all(r["greedy_rows_agree_16"] == 1.0 and r["hf_tok_s"] > 0 for r in rows)
    table = p.stdout[p.stdout.index("| run |"):]
    for name in ("attention chunked vs xla", "GRPO update", "GRPO one step",
                 "decode qwen2.5-0.5b", "decode qwen2.5-1.5b"):
        assert f"| {name}" in table, table


def test_suite_falls_back_when_an_attention_check_fails():
    spec = importlib.util.spec_from_file_location("gpu_suite", SUITE)
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    good = {"logits_max_abs_diff": 0.01, "logits_scale": 4.0, "grads_max_rel_diff": 0.01,
            "cudnn_in_hlo": True}
    bad = dict(good, logits_max_abs_diff=1.0)
    assert suite.attention_choice({"impls": {"chunked": good, "dot_product": good}}) == "auto"
    assert suite.attention_choice({"impls": {"chunked": good, "dot_product": bad}}) == "chunked"
    assert suite.attention_choice({"impls": {"chunked": good,
                                             "dot_product": {"error": "cuDNN"}}}) == "chunked"
    assert suite.attention_choice({"impls": {"chunked": bad, "dot_product": good}}) == "xla"
    assert suite.attention_choice(None) == "xla"
    table = suite.table({"attention_used": "xla", "grpo": {"timeout": True, "seconds": 192.0},
                         "decode qwen2.5-1.5b": {"skipped": "no time left in the budget"}})
    assert "| GRPO step | | | | | | | timed out after 192 s |" in table
    assert "skipped: no time left in the budget" in table
