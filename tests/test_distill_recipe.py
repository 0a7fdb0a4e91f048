"""The distillation recipe: config validation (fast) and the tiny experiment end to end (slow,
the R1-Zero tiny policy of the shared `tiny_r1_zero` fixture as the teacher)."""
import json
import os

import pytest

from conftest import config_with, load_config
from r1jax.recipes import distill as recipe


def _config(teacher_dir, **overrides):
    return config_with("distill", "tiny",
                       **{"teacher.r1_zero_workdir": str(teacher_dir), **overrides})


@pytest.mark.parametrize("path,value,message", [
    ("teacher.r1_zero_workdir", "", "config.teacher.r1_zero_workdir"),
    ("on_policy.loss", "kl", "config.on_policy.loss"),
    ("token.alpha", 1.5, "config.token.alpha"),
    ("grpo.num_generations", 1, "config.grpo.num_generations"),
    ("sequence.steps", 0, "config.sequence.steps"),
    ("methods", ("student_base", "rl"), "config.methods"),
    ("samples.temperature", 0.0, "config.samples.temperature"),
])
def test_bad_values_fail_naming_their_field(tmp_path, path, value, message):
    (tmp_path / "grpo").mkdir()
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        recipe.check_config(_config(tmp_path, **{path: value}))


def test_teacher_folder_needs_a_grpo_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="grpo/ checkpoint"):
        recipe.check_config(_config(tmp_path))


def test_real_variant_needs_both_folders():
    c = load_config("distill", "qwen2.5-1.5b-to-0.5b")
    with pytest.raises(ValueError, match="config.model.path"):
        recipe.check_config(c)


def test_accepted_rows_keep_distinct_correct_formatted_samples():
    import numpy as np
    tokens = np.array([[1, 2], [1, 2], [1, 3], [1, 4], [5, 6], [5, 7]])
    data = {"tokens": tokens, "problem": np.array([0, 0, 0, 0, 1, 1]),
            "correct": np.array([1, 1, 1, 1, 0, 1.0]), "format": np.array([1, 1, 1, 1, 1, 0.0])}
    # Problem 0: rows 0 and 2 (row 1 repeats row 0; row 3 is beyond keep=2); problem 1: none.
    assert recipe.accepted_rows(data, keep=2).tolist() == [0, 2]


def test_matched_compute_reads_the_curves():
    methods = {"student_base": {"greedy_accuracy": 0.2},
               "grpo": {"greedy_accuracy": 0.6, "train_flops": 100.0},
               "token": {"greedy_accuracy": 0.9, "train_flops": 300.0,
                         "curve": [[10.0, 0.2], [50.0, 0.7], [200.0, 0.8]]}}
    mc = recipe.matched_compute(methods)
    assert mc["token"] == {"greedy_accuracy_at_grpo_flops": 0.7, "flops_to_reach_grpo": 50.0,
                           "flops_ratio_to_grpo": 0.5}


@pytest.mark.slow
def test_tiny_distillation_end_to_end(tmp_path, tiny_r1_zero):
    """The student pretrained briefly, every method at small size; distillation beats the
    student base, and at GRPO's compute the best distilled student is at least GRPO's."""
    c = _config(tiny_r1_zero, **{
        "pretrain.steps": 400, "samples.num_problems": 96, "sequence.steps": 50,
        "token.steps": 50, "on_policy.steps": 20, "grpo.steps": 20,
        "eval.num_problems": 60, "eval.num_samples": 4, "eval.curve_points": 2})
    results = recipe.run(c, str(tmp_path), show_progress=False)
    m = results["methods"]
    assert set(m) == set(recipe.METHODS)
    for name in ("grpo",) + recipe.DISTILLED:
        assert m[name]["train_flops"] > 0 and m[name]["train_seconds"] > 0
    base = m["student_base"]["greedy_accuracy"]
    for name in ("sequence", "token"):
        d = results["paired_differences"][f"{name}_minus_student_base"]["greedy"]
        assert d[1] > 0, (name, d)       # the interval of the paired gain above zero
    mc = results["matched_compute"]
    best = max(mc[n]["greedy_accuracy_at_grpo_flops"] for n in recipe.DISTILLED)
    assert best >= m["grpo"]["greedy_accuracy"] - 0.05, (best, m["grpo"])
    assert m["teacher"]["greedy_accuracy"] > base
    with open(tmp_path / "results.json") as f:
        assert json.load(f)["methods"].keys() == m.keys()
    assert os.path.exists(tmp_path / "distill_flops.png")
    # A second run reads every finished method back.
    again = recipe.run(c, str(tmp_path), show_progress=False)
    assert again["methods"]["token"]["greedy_accuracy"] == m["token"]["greedy_accuracy"]
