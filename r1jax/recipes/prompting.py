"""Prompting, measured: a base model's held-out accuracy under each prompt style.

`run(config, workdir)` takes a `configs/prompting.py` config. The styles: "direct" (the answer
at once), "zero_shot_cot" ("Let's think step by step."), "few_shot_<k>" (k worked train
examples in front, `prompts.few_shot_cot`) and "r1_zero" (the task's R1-Zero template). Every
style sees the same held-out problems, greedy and sampled; the answer is read from
`<answer>` tags or "The answer is X". Writes `<workdir>/results.json`: `styles` maps each style
to its greedy and sampled accuracy with 95% intervals, mean response length, and its paired
difference with "direct" over problems ([mean, low, high]).
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Optional

import jax
import numpy as np

from r1jax import evaluation, pretrain, prompts, rewards, sampler, sharding, stats, tasks
from r1jax.reporting import MetricWriter

_ANSWER_IS = re.compile(r"[Tt]he answer is\s*(.+?)(?:\.\s|\.$|\n|$)")


def check_config(c) -> None:
    """Every value a run uses, failing with its full field path before any work."""
    for i, style in enumerate(c.prompting.styles):
        k = style[len("few_shot_"):] if style.startswith("few_shot_") else None
        if style not in ("direct", "zero_shot_cot", "r1_zero") and not (
                k and k.isdigit() and int(k) > 0):
            raise ValueError(f"config.prompting.styles[{i}] must be direct, zero_shot_cot, "
                             f"r1_zero or few_shot_<k> (k > 0), got {style!r}")
    for path, value in (("prompting.max_new_tokens", c.prompting.max_new_tokens),
                        ("eval.num_problems", c.eval.num_problems),
                        ("eval.num_samples", c.eval.num_samples)):
        if not (isinstance(value, int) and value > 0):
            raise ValueError(f"config.{path} must be an int > 0, got {value!r}")
    if not c.eval.temperature > 0:
        raise ValueError(f"config.eval.temperature must be > 0 (greedy is always measured), "
                         f"got {c.eval.temperature!r}")
    if c.task.template not in prompts.TEMPLATES:
        raise ValueError(f"config.task.template must be one of {sorted(prompts.TEMPLATES)}, "
                         f"got {c.task.template!r}")
    if c.task.name not in tasks.TASK_NAMES and not c.model.path:
        raise ValueError(f"config.model.path must be a local Hugging Face folder for task "
                         f"{c.task.name!r} (the tiny base knows only {tasks.TASK_NAMES})")
    if c.task.name not in tasks.TASK_NAMES and not (c.task.train_path and c.task.test_path):
        raise ValueError(f"config.task.train_path and config.task.test_path must be set (local "
                         f"JSONL files) for task {c.task.name!r}")


def final_answer(style: str, completion: str) -> Optional[str]:
    """The answer a completion gives: its last <answer> block, else the first "The answer is
    X" (for "direct" the prompt ends in "The answer is")."""
    text = "The answer is" + completion if style == "direct" else completion
    tagged = rewards.extract_answer(text)
    if tagged is not None:
        return tagged
    m = _ANSWER_IS.search(text)
    return m.group(1).strip() if m else None


def worked_examples(c, k: int) -> list[tuple[str, str, str]]:
    """k (question, reasoning, answer) worked train examples (synthetic solutions, or the
    JSONL's rationales / solutions)."""
    if c.task.name in tasks.TASK_NAMES:
        return tasks.few_shot_examples(c.task.name, k, c.seed + 999, **pretrain.difficulty(c))
    return [(p.question, p.metadata.get("rationale") or p.metadata.get("solution", ""),
             p.answer) for p in pretrain.load_problems(c, "train", k, c.seed)]


def style_prompt(c, style: str, question: str, shots) -> str:
    if style.startswith("few_shot_"):
        return prompts.few_shot_cot(question, shots[:int(style[len("few_shot_"):])])
    return prompts.render(c.task.template if style == "r1_zero" else style, question)


def measure(params, cfg, tok, problems, c, style: str, shots, key, num_samples: int,
            temperature: float, shard=None) -> dict:
    """Accuracy (interval over problems), per-problem accuracy and mean length of one style."""
    sampling = sampler.SamplingConfig(max_new_tokens=c.prompting.max_new_tokens,
                                      num_samples=num_samples, temperature=temperature,
                                      stop_strings=("\nQ:",))
    correct, lengths = [], []
    for j, start in enumerate(range(0, len(problems), 64)):
        chunk = problems[start:start + 64]
        roll = evaluation.sample_completions(
            params, cfg, tok, [style_prompt(c, style, p.question, shots) for p in chunk],
            jax.random.fold_in(key, j), sampling, shard=shard)
        correct += [[tasks.check(p, final_answer(style, t)) for t in row]
                    for p, row in zip(chunk, roll.texts(tok))]
        lengths.append(np.asarray(roll.lengths))
    per_problem = np.asarray(correct, np.float64).mean(axis=1)
    n = len(per_problem)
    return {"accuracy": float(per_problem.mean()),
            "accuracy_ci": list(stats.wilson_interval(float(per_problem.sum()), n)),
            "mean_length": float(np.concatenate(lengths).mean()),
            "per_problem": per_problem.tolist()}


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the experiment of config `c` in `workdir`; returns (and writes) the results."""
    check_config(c)
    t_start = time.time()
    mesh = pretrain.make_mesh(c)
    shard = None if mesh is None else sharding.make_shard_fn(mesh)
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir)
    cfg, tok, params = pretrain.base_model(c, workdir, writer, show_progress, mesh)
    writer.close()
    problems = pretrain.load_problems(c, "test", c.eval.num_problems, seed=c.seed + 1)
    ks = [int(s[len("few_shot_"):]) for s in c.prompting.styles if s.startswith("few_shot_")]
    shots = worked_examples(c, max(ks, default=0))
    key = jax.random.key(c.seed + 777)
    styles = {}
    for i, style in enumerate(c.prompting.styles):
        g = measure(params, cfg, tok, problems, c, style, shots, jax.random.fold_in(key, 2 * i),
                    1, 0.0, shard)
        s = measure(params, cfg, tok, problems, c, style, shots,
                    jax.random.fold_in(key, 2 * i + 1), c.eval.num_samples,
                    c.eval.temperature, shard)
        styles[style] = {"greedy_accuracy": g["accuracy"], "greedy_accuracy_ci": g["accuracy_ci"],
                         "greedy_mean_length": g["mean_length"],
                         "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                         "mean_length": s["mean_length"],
                         "per_problem_greedy": g["per_problem"],
                         "per_problem_sampled": s["per_problem"],
                         "example": style_prompt(c, style, problems[0].question, shots)}
    for r in styles.values():
        if "direct" in styles:
            for mode in ("greedy", "sampled"):
                r[f"{mode}_paired_minus_direct"] = list(stats.paired_difference(
                    r[f"per_problem_{mode}"], styles["direct"][f"per_problem_{mode}"]))
    results = {"styles": styles, "num_eval_problems": len(problems),
               "eval_samples_per_problem": c.eval.num_samples,
               "eval_temperature": c.eval.temperature,
               "seconds": round(time.time() - t_start, 1)}
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    return results


def results_table(results: dict) -> str:
    def ci(x):
        return f"[{x[0]:.3f}, {x[1]:.3f}]"
    lines = [f"{results['num_eval_problems']} held-out problems; greedy, and "
             f"{results['eval_samples_per_problem']} samples each at temperature "
             f"{results['eval_temperature']}",
             f"{'style':15s}{'greedy':24s}{'sampled':24s}{'length':>7s}  greedy - direct"]
    for style, r in results["styles"].items():
        d = r.get("greedy_paired_minus_direct")
        lines.append(f"{style:15s}{r['greedy_accuracy']:.3f} {ci(r['greedy_accuracy_ci']):18s}"
                     f"{r['accuracy']:.3f} {ci(r['accuracy_ci']):18s}{r['mean_length']:7.1f}"
                     + (f"  {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" if d else ""))
    return "\n".join(lines)
