"""The R1-Zero experiment: config validation, and the tiny run learning for real."""
import json
import os

import pytest
from conftest import load_config

from r1jax.recipes import r1_zero


def _config(variant="tiny"):
    return load_config("r1_zero", variant)


def test_config_variants_and_typos_fail_with_the_field_name():
    r1_zero.settings(_config("tiny"))
    for variant in ("qwen2.5-0.5b", "qwen2.5-1.5b"):
        c = _config(variant)
        with pytest.raises(ValueError, match="needs config.model.path"):
            r1_zero.settings(c)   # a real-scale variant names what it still needs
        c.model.path = "/data/qwen"
        with pytest.raises(ValueError, match="needs config.task.train_path"):
            r1_zero.settings(c)
        c.task.train_path, c.task.test_path = "train.jsonl", "test.jsonl"
        r1_zero.settings(c)
    with pytest.raises(ValueError, match="variant"):
        _config("gpt-5")
    c = _config()
    with pytest.raises(AttributeError, match="betta"):
        c.grpo.betta = 0.0


@pytest.mark.parametrize("field,value,message", [
    ("aggregation", "sum", "aggregation"), ("beta", -1.0, "beta"),
    ("num_generations", 1, "num_generations"), ("advantage_scale", "rank", "advantage_scale")])
def test_bad_grpo_values_fail_before_any_work(tmp_path, field, value, message):
    c = _config()
    c.grpo[field] = value
    with pytest.raises(ValueError, match=message):
        r1_zero.run(c, str(tmp_path), show_progress=False)
    assert not os.listdir(tmp_path)  # nothing was started


@pytest.mark.parametrize("path,value,message", [
    ("grpo.learning_rate", -1e-3, "config.grpo.learning_rate must be > 0, got -0.001"),
    ("pretrain.learning_rate", 0.0, "config.pretrain.learning_rate must be > 0"),
    ("eval.num_problems", 0, "config.eval.num_problems must be an int > 0, got 0"),
    ("grpo.prompts_per_step", 0, "config.grpo.prompts_per_step must be an int > 0"),
    ("grpo.max_new_tokens", -5, "config.grpo.max_new_tokens"),
    ("grpo.temperature", 0.0, "config.grpo.temperature must be > 0"),
    ("grpo.top_p", 1.5, "config.grpo.top_p must be in"),
    ("eval.every", -1, "config.eval.every must be an int >= 0"),
    ("task.name", "gsm8k", "needs config.model.path"),
    ("task.checker", "sympy", "config.task.checker must be one of"),
    ("grpo.length_reward", "cos", "length_reward"),
    ("grpo.overlong_cache_len", -1, "overlong_cache_len")])
def test_bad_values_fail_in_seconds_naming_the_full_field(tmp_path, path, value, message):
    import time
    c = _config()
    section, name = path.split(".")
    c[section][name] = value
    t0 = time.time()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        r1_zero.run(c, str(tmp_path), show_progress=False)
    assert time.time() - t0 < 10 and not os.listdir(tmp_path)  # before any work


def test_bad_task_fails_with_the_field_name(tmp_path):
    c = _config()
    c.task.template = "chatty"
    with pytest.raises(ValueError, match="template"):
        r1_zero.settings(c)


def test_tiny_corpus_makes_a_guess_the_greedy_path_and_reasoning_the_bulk():
    """At each fork of the tiny base corpus, the most common next byte leads to a bare guess:
    tagged before untagged, then an empty think block before "first" or "d'abord" (so the
    greedy base guesses); yet most completions work the steps."""
    from collections import Counter
    from r1jax import pretrain, tasks
    c = _config()
    examples = tasks.base_corpus_examples(c.seed, 4000, {c.task.name: 1.0}, pretrain.style_mix(c),
                                          template=c.task.template,
                                          difficulty={c.task.name: pretrain.difficulty(c)})
    first = Counter(e.completion[1] for e in examples)
    assert first.most_common(1)[0][0] == "<"
    tagged = [e.completion for e in examples if e.completion.startswith(" <think>")]
    after_think = Counter(t[len(" <think>")] for t in tagged)
    (top, n_top), (_, n_next) = after_think.most_common(2)
    assert top == "<" and n_top > 1.3 * n_next, after_think  # "</think>": a guess
    worked = sum(e.style != "guess" for e in examples) / len(examples)
    assert worked > 0.6


def _fake_eval(per_problem, samples, fmt=1.0):
    """An `evaluation.evaluate` result with the fields `r1_zero.compare` reads."""
    import numpy as np
    from r1jax import stats
    acc = float(np.mean(per_problem))
    out = {"accuracy": acc, "accuracy_ci": list(stats.wilson_interval(acc * len(per_problem),
                                                                      len(per_problem))),
           "per_problem": list(per_problem), "format_rate": fmt, "mean_length": 10.0,
           "language_consistency": 1.0, "examples": []}
    for k in (1, 4, 16):
        if k <= samples:
            for name in (f"pass@{k}", f"majority@{k}"):
                out[name], out[f"{name}_ci"] = acc, [0.0, 1.0]
    return out


def test_compare_pairs_greedy_sampled_and_pass_at_k_over_the_same_problems():
    base = (_fake_eval([0, 0, 1, 0], 1), _fake_eval([0.25, 0.0, 0.5, 0.0], 4, fmt=0.5))
    final = (_fake_eval([1, 1, 1, 0], 1), _fake_eval([0.75, 0.5, 1.0, 0.0], 4))
    r = r1_zero.compare(base, final, num_samples=4, pass_ks=(1, 4, 16))
    assert r["base_greedy_accuracy"] == 0.25 and r["final_greedy_accuracy"] == 0.75
    assert r["greedy_paired_difference"][0] == pytest.approx(0.5)
    assert r["sampled_paired_difference"][0] == pytest.approx(0.375)
    lo, hi = r["greedy_paired_difference"][1:]
    assert lo < 0.5 < hi
    # pass@4 per problem from 4 samples: 1 if any is correct; 0/4 correct stays 0.
    assert r["pass@4_paired_difference"][0] == pytest.approx(0.25)
    assert "base_pass@16" not in r and r["format_rate"] == 1.0 and r["base_format_rate"] == 0.5
    r.update(num_eval_problems=4, eval_samples_per_problem=4)
    table = r1_zero.results_table(r)
    assert "held-out accuracy, greedy" in table and "pass@4" in table and "+0.500" in table


def test_time_breakdown_separates_the_first_step():
    rows = [{"step": 1, "step_seconds": 9.0, "rollout_seconds": 2.0},
            {"step": 2, "step_seconds": 3.0, "rollout_seconds": 1.0},
            {"step": 2, "eval_accuracy": 0.5},
            {"step": 3, "step_seconds": 4.0, "rollout_seconds": 1.5}]
    assert r1_zero.time_breakdown(rows) == {"grpo_first_step": 9.0, "grpo_rollouts": 2.5,
                                           "grpo_updates": 4.5, "grpo_steps_timed": 2}
    assert r1_zero.time_breakdown([]) == {}


@pytest.mark.slow
def test_tiny_r1_zero_learns(tiny_r1_zero):
    """The acceptance run of `make demo` (the tiny config itself): the base's greedy answer is a
    guess; GRPO raises held-out accuracy of the greedy policy (the one people deploy) by >= 15
    points and of the sampled policy by >= 20, each paired interval over problems above zero,
    with a format rate >= 0.95. Measured (RESULTS.md): `make demo` seeds 0 / 1 greedy +0.72 /
    +0.84, sampled +0.49 / +0.62, format 0.984 / 0.985; this test's own run (seed 0 under the
    suite's settings) +0.74, +0.55, 0.988. The thresholds sit well under the smallest gain:
    at 600 pretraining steps one run reached only +0.24 sampled."""
    results = json.loads((tiny_r1_zero / "results.json").read_text())  # the suite's one run
    for key in ("base_accuracy", "final_accuracy", "format_rate", "base_greedy_accuracy",
                "final_greedy_accuracy", "base_pass@16", "final_pass@16"):
        assert 0.0 <= results[key] <= 1.0, key
    assert results["base_greedy_accuracy"] <= 0.35, results  # the greedy base guesses
    greedy, sampled = results["greedy_paired_difference"], results["sampled_paired_difference"]
    assert greedy[0] >= 0.40 and greedy[1] > 0.15, greedy
    assert sampled[0] >= 0.30 and sampled[1] > 0.20, sampled
    assert results["format_rate"] >= 0.95, results["format_rate"]
    for png in ("grpo_training.png", "grpo_heldout.png", "pretrain_loss.png"):
        assert (tiny_r1_zero / png).stat().st_size > 1000


def test_every_grpo_setting_reaches_the_loop():
    c = _config()
    c.grpo.top_p, c.grpo.top_k, c.grpo.temperature = 0.9, 20, 0.7
    c.grpo.overlong_cache_len, c.grpo.logprob_micro_batch = 16, 32
    c.grpo.repetition_weight, c.grpo.length_reward, c.grpo.partial_format = 0.5, "cosine", True
    grpo_cfg, rollout, _ = r1_zero.settings(c)
    assert (rollout.top_p, rollout.top_k, rollout.temperature) == (0.9, 20, 0.7)
    assert rollout.tempered and rollout.partial_format and rollout.length_reward == "cosine"
    assert rollout.repetition_weight == 0.5
    assert grpo_cfg.overlong_cache_len == 16 and grpo_cfg.logprob_micro_batch == 32
