"""The R1-Zero experiment: a base model, GRPO with rule rewards, held-out results and plots.

`run(config, workdir)` takes a `configs/r1_zero.py` config. Laptop scale (no model.path): a
tiny byte-level base model is pretrained on the synthetic corpus into `<workdir>/base` (reused
when already there), then trained with GRPO into `<workdir>/grpo`. Real scale: the base model
and tokenizer come from a local Hugging Face folder and problems from JSONL files. Writes
`<workdir>/results.json`, `metrics.jsonl`, TensorBoard events and PNG plots.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from r1jax import evaluation, grpo, pretrain, prompts, sharding, tasks, train
from r1jax.reporting import MetricWriter, plot_curves, read_metrics


def settings(c) -> tuple[grpo.GRPOConfig, train.RolloutConfig, train.LoopConfig]:
    """The validated GRPO, rollout and loop settings of config `c`; a bad value fails here,
    naming its field, before any work starts."""
    if c.task.name not in tasks.TASK_NAMES + ("gsm8k", "math"):
        raise ValueError(f"config.task.name must be one of {tasks.TASK_NAMES + ('gsm8k', 'math')}"
                         f", got {c.task.name!r}")
    if c.task.template not in prompts.TEMPLATES:
        raise ValueError(f"config.task.template must be one of {sorted(prompts.TEMPLATES)}, got "
                         f"{c.task.template!r}")
    grpo_cfg = grpo.GRPOConfig(
        num_generations=c.grpo.num_generations, beta=c.grpo.beta,
        epsilon_low=c.grpo.epsilon_low, epsilon_high=c.grpo.epsilon_high,
        num_iterations=c.grpo.num_iterations, aggregation=c.grpo.aggregation,
        advantage_scale=c.grpo.advantage_scale, dynamic_sampling=c.grpo.dynamic_sampling,
        overlong_filter=c.grpo.overlong_filter, grad_accum=c.grpo.grad_accum,
        max_len=c.grpo.max_new_tokens)
    rollout = train.RolloutConfig(
        prompts_per_step=c.grpo.prompts_per_step, max_new_tokens=c.grpo.max_new_tokens,
        max_prompt_tokens=c.grpo.max_prompt_tokens, temperature=c.grpo.temperature,
        template=c.task.template, accuracy_weight=c.grpo.accuracy_weight,
        format_weight=c.grpo.format_weight, language_weight=c.grpo.language_weight)
    loop = train.LoopConfig(steps=c.grpo.steps, learning_rate=c.grpo.learning_rate,
                            warmup_steps=c.grpo.warmup_steps, schedule="constant",
                            checkpoint_every=c.checkpoint_every,
                            keep_checkpoints=c.keep_checkpoints, seed=c.seed)
    return grpo_cfg, rollout, loop


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the experiment of config `c` in `workdir`; returns (and writes) the results."""
    t_start = time.time()
    grpo_cfg, rollout, loop = settings(c)
    mesh = pretrain.make_mesh(c)
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir)
    cfg, tok, params = pretrain.base_model(c, workdir, writer, show_progress, mesh)
    shard = None if mesh is None else sharding.make_shard_fn(mesh)
    eval_problems = pretrain.load_problems(c, "test", c.eval.num_problems, seed=c.seed + 1)
    eval_key = jax.random.key(c.seed + 12345)

    def evaluate(p, step):
        return evaluation.evaluate(p, cfg, tok, eval_problems, jax.random.fold_in(eval_key, step),
                                   template=c.task.template, max_new_tokens=c.grpo.max_new_tokens,
                                   num_samples=c.eval.num_samples,
                                   temperature=c.eval.temperature, shard=shard)

    base = evaluate(params, 0)
    writer.write(0, {f"eval_{k}": v for k, v in base.items() if isinstance(v, (int, float))},
                 "grpo")
    if c.task.name in tasks.TASK_NAMES:
        def train_problems(step, round_):
            return tasks.generate(c.task.name, c.seed * 1_000_003 + step * 97 + round_,
                                  c.grpo.prompts_per_step, split="train", **pretrain.difficulty(c))
    else:
        pool = pretrain.load_problems(c, "train", 0, c.seed)

        def train_problems(step, round_):
            rng = np.random.default_rng((c.seed, step, round_))
            return [pool[i] for i in rng.integers(0, len(pool), c.grpo.prompts_per_step)]

    params = train.run_grpo(params, cfg, tok, train_problems, loop, rollout, grpo_cfg,
                            os.path.join(workdir, "grpo"), writer=writer, evaluate_fn=evaluate,
                            eval_every=c.eval.every, mesh=mesh, show_progress=show_progress)
    final = evaluate(params, c.grpo.steps)
    writer.write(c.grpo.steps, {f"eval_{k}": v for k, v in final.items()
                                if isinstance(v, (int, float))}, "grpo")
    writer.close()
    results = {
        "base_accuracy": base["accuracy"], "base_accuracy_ci": base["accuracy_ci"],
        "final_accuracy": final["accuracy"], "final_accuracy_ci": final["accuracy_ci"],
        "base_format_rate": base["format_rate"], "format_rate": final["format_rate"],
        "base_mean_length": base["mean_length"], "final_mean_length": final["mean_length"],
        "base_language_consistency": base.get("language_consistency"),
        "final_language_consistency": final.get("language_consistency"),
        "num_eval_problems": len(eval_problems), "eval_samples_per_problem": c.eval.num_samples,
        "grpo_steps": c.grpo.steps, "seconds": round(time.time() - t_start, 1),
        "base_examples": base["examples"], "final_examples": final["examples"],
    }
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    make_plots(workdir)
    return results


def make_plots(workdir: str) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    rows = read_metrics(path, "grpo")
    plot_curves(rows, ["reward", "accuracy", "format_rate", "response_length", "kl", "entropy"],
                os.path.join(workdir, "grpo_training.png"), "GRPO rollouts (train problems)")
    plot_curves(rows, ["eval_accuracy", "eval_format_rate", "eval_mean_length",
                       "eval_language_consistency"],
                os.path.join(workdir, "grpo_heldout.png"), "Held-out evaluation")
    plot_curves(read_metrics(path, "pretrain"), ["loss"],
                os.path.join(workdir, "pretrain_loss.png"), "Base pretraining")


def results_table(results: dict) -> str:
    """A small text table of the headline numbers."""
    def ci(x):
        return f"[{x[0]:.3f}, {x[1]:.3f}]"
    lines = [f"{'':22s}{'base':>10s}{'final':>10s}",
             f"{'held-out accuracy':22s}{results['base_accuracy']:10.3f}"
             f"{results['final_accuracy']:10.3f}",
             f"{'  95% interval':22s}{ci(results['base_accuracy_ci']):>10s}  "
             f"{ci(results['final_accuracy_ci'])}",
             f"{'format rate':22s}{results['base_format_rate']:10.3f}"
             f"{results['format_rate']:10.3f}",
             f"{'response length':22s}{results['base_mean_length']:10.1f}"
             f"{results['final_mean_length']:10.1f}"]
    return "\n".join(lines)
