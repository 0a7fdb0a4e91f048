"""The R1 recipe: config validation (fast), and the five stages on the shared tiny base against
the shared R1-Zero run (slow): stage structure, language consistency, accuracy, resume."""
import json
import os

import pytest

from conftest import load_config
from r1jax.recipes import r1


def _config(**overrides):
    c = load_config("r1", "tiny")
    c.unlock()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    c.lock()
    return c


@pytest.mark.parametrize("path,value,message", [
    ("reasoning_rl.steps", 0, "config.reasoning_rl.steps must be an int > 0"),
    ("final_rl.language_weight", -1.0, "config.final_rl.language_weight must be >= 0"),
    ("final_rl.nonreasoning_share", 1.0, "config.final_rl.nonreasoning_share must be in [0, 1)"),
    ("rejection.min_language", 1.5, "config.rejection.min_language must be in [0, 1]"),
    ("language", "de", "config.language must be one of"),
    ("nonreasoning.template", "nope", "config.nonreasoning.template must be one of"),
    ("r1_zero_workdir", "/nonexistent", "config.r1_zero_workdir must be a finished R1-Zero"),
    ("resume_from.stage", "stage9", "config.resume_from.stage must be one of"),
    ("cold_start.path", "/nonexistent.jsonl", "config.cold_start.path must be an existing file"),
])
def test_bad_values_fail_naming_their_field(path, value, message, tmp_path):
    c = _config(**{path: value})
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")):
        r1.run(c, str(tmp_path / "w"))
    assert not (tmp_path / "w").exists()   # failed before any work


def test_variants_and_steps_to_reach():
    for variant in ("tiny", "qwen2.5-0.5b", "qwen2.5-1.5b"):
        c = load_config("r1", variant)
        assert c.final_rl.require_summary and c.reasoning_rl.language_weight > 0
    with pytest.raises(ValueError, match="unknown r1 variant"):
        load_config("r1", "big")
    curve = [[0, 0.2, 0.1], [10, 0.85, 0.5], [5, 0.7, 0.4], [20, 0.9, 0.6]]
    assert r1.steps_to_reach(curve, 0.8) == 10 and r1.steps_to_reach(curve, 0.95) is None
    assert r1.steps_to_reach(curve, 0.1) == 0


# Sized to what the assertions need: a shorter reasoning RL and final RL than the tiny config,
# fewer held-out samples; the R1-Zero side is the shared fixture (40 GRPO steps).
SMALL = {"reasoning_rl.steps": 10, "final_rl.steps": 6, "rejection.num_problems": 128,
         "sft.steps": 60, "reward_model.steps": 40, "eval.num_samples": 2,
         "eval.num_nonreasoning": 60, "eval.every": 5}
ACCURACY_MARGIN = 0.15   # final greedy accuracy >= R1-Zero's - this


@pytest.mark.slow
def test_r1_five_stages_against_r1_zero(tiny_base, tiny_r1_zero, tmp_path):
    work = tmp_path / "r1"
    tiny_base(work)
    c = _config(r1_zero_workdir=str(tiny_r1_zero), **SMALL)
    res = r1.run(c, str(work), show_progress=False)
    names = [s["name"] for s in res["stages"]]
    assert names == list(r1.STAGES)
    for s in res["stages"]:
        for k in ("accuracy", "greedy_accuracy", "format_rate", "language_consistency",
                  "summary_rate", "non_reasoning_score", "mean_length"):
            assert isinstance(s[k], float) and len(s[f"{k}_ci"]) == 2, (s["name"], k)
            lo, hi = s[f"{k}_ci"]
            assert lo <= s[k] <= hi, (s["name"], k)
        assert os.path.isfile(work / f"{r1.STAGES.index(s['name']) + 1}_{s['name']}"
                              / "record.json")
    stages = {s["name"]: s for s in res["stages"]}
    final, zero = stages["final_rl"], res["r1_zero"]
    # R1's point: readable, consistent reasoning, at an accuracy near R1-Zero's
    assert final["language_consistency"] >= 0.98
    assert final["language_consistency"] > zero["language_consistency"]
    assert final["greedy_accuracy"] >= zero["greedy_accuracy"] - ACCURACY_MARGIN
    assert final["summary_rate"] >= 0.9 and final["format_rate"] >= 0.9
    # the cold start alone (0 RL steps) already reasons in the R1 format, in English
    assert stages["cold_start"]["summary_rate"] >= 0.9
    assert stages["cold_start"]["language_consistency"] >= 0.98
    counts = res["rejection_counts"]
    assert counts["kept"] == stages["rejection_sampling"]["reasoning_examples"] > 0
    assert sum(counts[k] for k in ("kept",) + r1.rejection.REASONS) == counts["samples"]
    assert res["reward_model"]["pairwise_accuracy"] >= 0.7
    assert res["rl_curve"]["r1"][0][0] == 0 and len(res["rl_curve"]["r1_zero"]) >= 2
    assert "final_minus_r1_zero" in res    # same held-out problems: paired difference
    for png in ("r1_stages.png", "r1_rl_curve.png", "reasoning_rl_training.png"):
        assert (work / png).stat().st_size > 0

    # a second run in the same workdir reads every stage back: the same results
    again = r1.run(c, str(work), show_progress=False)
    assert [s["greedy_accuracy"] for s in again["stages"]] == \
        [s["greedy_accuracy"] for s in res["stages"]]
    # start from another run's last stage: everything copied, nothing trained again
    c2 = _config(r1_zero_workdir=str(tiny_r1_zero),
                 **{"resume_from.workdir": str(work), "resume_from.stage": "final_rl"}, **SMALL)
    other = r1.run(c2, str(tmp_path / "r1b"), show_progress=False)
    assert [s["language_consistency"] for s in other["stages"]] == \
        [s["language_consistency"] for s in res["stages"]]
    with open(work / "results.json") as f:
        assert json.load(f)["stages"][0]["name"] == "cold_start"
