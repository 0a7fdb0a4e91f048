"""The R1-Zero experiment: a base model, GRPO with rule rewards, held-out results and plots.

`run(config, workdir)` takes a `configs/r1_zero.py` config. Laptop scale (no model.path): a
tiny byte-level base model is pretrained on the synthetic corpus into `<workdir>/base` (reused
when already there), then trained with GRPO into `<workdir>/grpo`. Real scale: the base model
and tokenizer come from a local Hugging Face folder and problems from JSONL files. Writes
`<workdir>/results.json` (base and final policy on the same held-out problems: greedy and
sampled accuracy, pass@k, majority@k, format, with intervals, and the paired differences over
problems; where the time went), `metrics.jsonl`, TensorBoard events and PNG plots.
"""
from __future__ import annotations

import json
import logging
import os
import time

import jax
import numpy as np

from r1jax import evaluation, grpo, pretrain, prompts, rewards, sharding, stats, tasks, train
from r1jax.config_checks import get, is_int, needs
from r1jax.reporting import MetricWriter, plot_curves, read_metrics

log = logging.getLogger("r1jax")


def _check_values(c) -> None:
    """Counts, lengths, rates and learning rates of config `c`, each named by its full path."""
    need = needs(c)
    for path in ("grpo.steps", "grpo.prompts_per_step", "grpo.num_generations",
                 "grpo.max_new_tokens", "grpo.max_prompt_tokens", "grpo.grad_accum",
                 "eval.num_problems", "eval.num_samples", "eval.curve_samples",
                 "pretrain.batch_size", "pretrain.seq_len", "pretrain.num_examples",
                 "checkpoint_every", "keep_checkpoints"):
        v = get(c, path)
        need(is_int(v) and v > 0, path, "an int > 0")
    for path in ("pretrain.steps", "pretrain.warmup_steps", "grpo.warmup_steps", "eval.every",
                 "grpo.top_k", "pretrain.length_bucket"):
        v = get(c, path)
        need(is_int(v) and v >= 0, path, "an int >= 0")
    for path in ("grpo.learning_rate", "pretrain.learning_rate", "grpo.temperature"):
        need(get(c, path) > 0, path, "> 0")
    need(c.eval.temperature >= 0, "eval.temperature", ">= 0 (0: greedy)")
    need(0 < c.grpo.top_p <= 1, "grpo.top_p", "in (0, 1]")
    need(0 <= c.grpo.min_p < 1, "grpo.min_p", "in [0, 1)")
    need(0 <= c.pretrain.weight_decay, "pretrain.weight_decay", ">= 0")
    need(all(isinstance(k, int) and k > 0 for k in c.eval.pass_ks), "eval.pass_ks",
         "a tuple of ints > 0")
    if c.task.name not in tasks.TASK_NAMES and not c.model.path:
        raise ValueError(f"config.task.name={c.task.name!r} needs config.model.path (a local "
                         "Hugging Face folder): the tiny base is pretrained on the synthetic "
                         f"tasks {tasks.TASK_NAMES} only")
    if c.task.name not in tasks.TASK_NAMES and not (c.task.train_path and c.task.test_path):
        raise ValueError(f"config.task.name={c.task.name!r} needs config.task.train_path and "
                         "config.task.test_path (local JSONL files)")
    if c.task.checker not in rewards.CHECKERS:
        raise ValueError(f"config.task.checker must be one of {rewards.CHECKERS}, got "
                         f"{c.task.checker!r}")


def settings(c) -> tuple[grpo.GRPOConfig, train.RolloutConfig, train.LoopConfig]:
    """The validated GRPO, rollout and loop settings of config `c`; a bad value fails here,
    naming its field, before any work starts."""
    if c.task.name not in tasks.TASK_NAMES + ("gsm8k", "math"):
        raise ValueError(f"config.task.name must be one of {tasks.TASK_NAMES + ('gsm8k', 'math')}"
                         f", got {c.task.name!r}")
    if c.task.template not in prompts.TEMPLATES:
        raise ValueError(f"config.task.template must be one of {sorted(prompts.TEMPLATES)}, got "
                         f"{c.task.template!r}")
    _check_values(c)
    g = c.grpo
    grpo_cfg = grpo.GRPOConfig(
        num_generations=g.num_generations, beta=g.beta, epsilon_low=g.epsilon_low,
        epsilon_high=g.epsilon_high, num_iterations=g.num_iterations,
        aggregation=g.aggregation, advantage_scale=g.advantage_scale,
        dynamic_sampling=g.dynamic_sampling, overlong_filter=g.overlong_filter,
        overlong_cache_len=g.overlong_cache_len, grad_accum=g.grad_accum,
        max_len=g.max_new_tokens, logprob_micro_batch=g.logprob_micro_batch)
    rollout = train.RolloutConfig(
        prompts_per_step=g.prompts_per_step, max_new_tokens=g.max_new_tokens,
        max_prompt_tokens=g.max_prompt_tokens, temperature=g.temperature, top_k=g.top_k,
        top_p=g.top_p, min_p=g.min_p, template=c.task.template,
        accuracy_weight=g.accuracy_weight, format_weight=g.format_weight,
        partial_format=g.partial_format, language_weight=g.language_weight,
        repetition_weight=g.repetition_weight, length_reward=g.length_reward)
    loop = train.LoopConfig(steps=g.steps, learning_rate=g.learning_rate,
                            warmup_steps=g.warmup_steps, schedule="constant",
                            checkpoint_every=c.checkpoint_every,
                            keep_checkpoints=c.keep_checkpoints, seed=c.seed)
    return grpo_cfg, rollout, loop


def _evaluations(c, cfg, tok, problems, key, shard, num_samples: int, pass_ks=()):
    """Greedy and sampled held-out evaluations of a policy -> fn(params, step) -> (greedy,
    sampled) result dicts of `evaluation.evaluate` on the same problems."""
    def fn(params, step):
        common = dict(template=c.task.template, max_new_tokens=c.grpo.max_new_tokens,
                      shard=shard)
        greedy = evaluation.evaluate(params, cfg, tok, problems, jax.random.fold_in(key, step),
                                     num_samples=1, temperature=0.0, **common)
        sampled = evaluation.evaluate(params, cfg, tok, problems,
                                      jax.random.fold_in(key, step + 1_000_000),
                                      num_samples=num_samples, temperature=c.eval.temperature,
                                      pass_ks=pass_ks, **common)
        return greedy, sampled
    return fn


def _curve_metrics(greedy: dict, sampled: dict) -> dict:
    """The metrics logged for one evaluation: sampled scalars as they are, greedy ones prefixed
    with `greedy_`, and both accuracies' 95% intervals (drawn as bands in the plots)."""
    out = {k: v for k, v in sampled.items() if isinstance(v, (int, float))}
    out.update({f"greedy_{k}": greedy[k] for k in ("accuracy", "format_rate", "mean_length")})
    out.update(accuracy_ci=sampled["accuracy_ci"], greedy_accuracy_ci=greedy["accuracy_ci"])
    return out


def _stored_base_evaluation(c, workdir: str, evaluate_base) -> tuple[tuple[dict, dict], bool]:
    """((greedy, sampled), reused): the base policy's held-out evaluation, computed once per
    workdir. A restarted run reads `<workdir>/base_eval.json` when it was made with the same
    model, task, pretraining, evaluation and seed settings, and evaluates again otherwise."""
    path = os.path.join(workdir, "base_eval.json")
    settings_ = json.loads(json.dumps(
        {"seed": c.seed, "max_new_tokens": c.grpo.max_new_tokens,
         **{k: c[k].to_dict() for k in ("model", "task", "pretrain", "eval")}}, default=str))
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            stored = json.load(f)
        if stored.get("settings") == settings_:
            log.info("evaluation of the base model: reusing %s", path)
            return (stored["greedy"], stored["sampled"]), True
    log.info("evaluation of the base model: %d held-out problems, greedy and %d samples each",
             c.eval.num_problems, c.eval.num_samples)
    greedy, sampled = evaluate_base()
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"settings": settings_, "greedy": greedy, "sampled": sampled}, f, default=float)
    os.replace(path + ".tmp", path)
    return (greedy, sampled), False


def _pass_per_problem(per_problem, n: int, k: int) -> list[float]:
    """Per-problem unbiased pass@k from each problem's mean correctness over n samples."""
    return [stats.pass_at_k(n, int(round(a * n)), k) for a in per_problem]


def compare(base: tuple[dict, dict], final: tuple[dict, dict], num_samples: int,
            pass_ks=()) -> dict:
    """The results of the base and final (greedy, sampled) evaluations on the same problems:
    accuracies with intervals, pass@k / majority@k, format, length, and paired differences
    (final - base) over problems as [mean, low, high]."""
    (bg, bs), (fg, fs) = base, final
    out = {
        "base_accuracy": bs["accuracy"], "base_accuracy_ci": bs["accuracy_ci"],
        "final_accuracy": fs["accuracy"], "final_accuracy_ci": fs["accuracy_ci"],
        "base_greedy_accuracy": bg["accuracy"], "base_greedy_accuracy_ci": bg["accuracy_ci"],
        "final_greedy_accuracy": fg["accuracy"], "final_greedy_accuracy_ci": fg["accuracy_ci"],
        "greedy_paired_difference": list(stats.paired_difference(fg["per_problem"],
                                                                 bg["per_problem"])),
        "sampled_paired_difference": list(stats.paired_difference(fs["per_problem"],
                                                                  bs["per_problem"])),
        "base_format_rate": bs["format_rate"], "format_rate": fs["format_rate"],
        "base_greedy_format_rate": bg["format_rate"],
        "final_greedy_format_rate": fg["format_rate"],
        "base_mean_length": bs["mean_length"], "final_mean_length": fs["mean_length"],
        "base_language_consistency": bs.get("language_consistency"),
        "final_language_consistency": fs.get("language_consistency"),
    }
    for k in (k for k in pass_ks if k <= num_samples):
        for name in (f"pass@{k}", f"majority@{k}"):
            for who, r in (("base", bs), ("final", fs)):
                out[f"{who}_{name}"] = r[name]
                out[f"{who}_{name}_ci"] = r[f"{name}_ci"]
        out[f"pass@{k}_paired_difference"] = list(stats.paired_difference(
            _pass_per_problem(fs["per_problem"], num_samples, k),
            _pass_per_problem(bs["per_problem"], num_samples, k)))
    out["per_problem"] = {"base_greedy": bg["per_problem"], "final_greedy": fg["per_problem"],
                          "base_sampled": bs["per_problem"], "final_sampled": fs["per_problem"]}
    return out


def time_breakdown(rows: list[dict]) -> dict:
    """Seconds of the GRPO loop from its metric rows: rollouts, updates, and the first step
    apart (it includes compiling the sampler and the update)."""
    steps = [r for r in rows if "step_seconds" in r]
    if not steps:
        return {}
    first, rest = steps[0], steps[1:]
    return {"grpo_first_step": round(first["step_seconds"], 1),
            "grpo_rollouts": round(sum(r["rollout_seconds"] for r in rest), 1),
            "grpo_updates": round(sum(r["step_seconds"] - r["rollout_seconds"] for r in rest), 1),
            "grpo_steps_timed": len(rest)}


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the experiment of config `c` in `workdir`; returns (and writes) the results."""
    t_start = time.time()
    grpo_cfg, rollout, loop = settings(c)
    mesh = pretrain.make_mesh(c)
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir)
    cfg, tok, params = pretrain.base_model(c, workdir, writer, show_progress, mesh)
    seconds = {"pretrain": time.time() - t_start}
    shard = None if mesh is None else sharding.make_shard_fn(mesh)
    eval_problems = pretrain.load_problems(c, "test", c.eval.num_problems, seed=c.seed + 1)
    eval_key = jax.random.key(c.seed + 12345)
    pass_ks = tuple(c.eval.pass_ks)
    full = _evaluations(c, cfg, tok, eval_problems, eval_key, shard, c.eval.num_samples,
                        pass_ks)
    curve = _evaluations(c, cfg, tok, eval_problems, eval_key, shard, c.eval.curve_samples)

    t = time.time()
    base, reused = _stored_base_evaluation(c, workdir, lambda: full(params, 0))
    seconds["base_eval"] = time.time() - t
    if not reused:  # a restarted run logged this row the first time
        writer.write(0, {f"eval_{k}": v for k, v in _curve_metrics(*base).items()}, "grpo")
    if c.task.name in tasks.TASK_NAMES:
        def train_problems(step, round_):
            return tasks.generate(c.task.name, c.seed * 1_000_003 + step * 97 + round_,
                                  c.grpo.prompts_per_step, split="train", **pretrain.difficulty(c))
    else:
        pool = pretrain.load_problems(c, "train", 0, c.seed)

        def train_problems(step, round_):
            rng = np.random.default_rng((c.seed, step, round_))
            return [pool[i] for i in rng.integers(0, len(pool), c.grpo.prompts_per_step)]

    curve_seconds = [0.0]

    def evaluate_fn(p, step):
        t0 = time.time()
        out = _curve_metrics(*curve(p, step))
        curve_seconds[0] += time.time() - t0
        return out

    t = time.time()
    params = train.run_grpo(params, cfg, tok, train_problems, loop, rollout, grpo_cfg,
                            os.path.join(workdir, "grpo"), writer=writer,
                            evaluate_fn=evaluate_fn, eval_every=c.eval.every, mesh=mesh,
                            show_progress=show_progress)
    seconds["grpo"] = time.time() - t
    seconds["curve_evals"] = curve_seconds[0]
    t = time.time()
    log.info("evaluation of the final policy: %d held-out problems", c.eval.num_problems)
    final = full(params, c.grpo.steps)
    seconds["final_eval"] = time.time() - t
    writer.write(c.grpo.steps, {f"eval_{k}": v for k, v in _curve_metrics(*final).items()},
                 "grpo")
    writer.close()
    results = compare(base, final, c.eval.num_samples, pass_ks)
    seconds = {k: round(v, 1) for k, v in seconds.items()}
    seconds.update(time_breakdown(read_metrics(os.path.join(workdir, "metrics.jsonl"), "grpo")))
    results.update({
        "num_eval_problems": len(eval_problems), "eval_samples_per_problem": c.eval.num_samples,
        "eval_temperature": c.eval.temperature, "grpo_steps": c.grpo.steps,
        "seconds": round(time.time() - t_start, 1), "seconds_breakdown": seconds,
        "base_examples": base[1]["examples"], "final_examples": final[1]["examples"],
        "base_greedy_examples": base[0]["examples"], "final_greedy_examples": final[0]["examples"],
    })
    log.info("writing results.json and plots to %s", workdir)
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    make_plots(workdir)
    return results


def make_plots(workdir: str) -> None:
    path = os.path.join(workdir, "metrics.jsonl")
    rows = read_metrics(path, "grpo")
    plot_curves(rows, ["reward", "accuracy", "format_rate", "response_length", "kl", "entropy"],
                os.path.join(workdir, "grpo_training.png"), "GRPO rollouts (train problems)")
    plot_curves(rows, ["eval_greedy_accuracy", "eval_accuracy", "eval_format_rate",
                       "eval_mean_length", "eval_language_consistency"],
                os.path.join(workdir, "grpo_heldout.png"), "Held-out evaluation")
    plot_curves(read_metrics(path, "pretrain"), ["loss"],
                os.path.join(workdir, "pretrain_loss.png"), "Base pretraining")


def results_table(results: dict) -> str:
    """A small text table of the headline numbers: base, final, and the paired difference."""
    def ci(x):
        return f"[{x[0]:.3f}, {x[1]:.3f}]"

    def row(label, key, diff=None):
        b, f = results[f"base_{key}"], results[f"final_{key}"]
        line = f"{label:30s}{b:7.3f} {ci(results[f'base_{key}_ci']):16s}" \
               f"{f:7.3f} {ci(results[f'final_{key}_ci']):16s}"
        if diff and diff in results:
            d = results[diff]
            line += f"{d[0]:+7.3f} {ci(d[1:])}"
        return line

    n, g = results["num_eval_problems"], results["eval_samples_per_problem"]
    lines = [f"{n} held-out problems; greedy, and {g} samples each at temperature "
             f"{results.get('eval_temperature', 1.0)}",
             f"{'':30s}{'base':24s}{'final':24s}final - base (paired)",
             row("held-out accuracy, greedy", "greedy_accuracy", "greedy_paired_difference"),
             row("held-out accuracy, sampled", "accuracy", "sampled_paired_difference")]
    for k in (1, 4, 16):
        if f"base_pass@{k}" in results:
            lines.append(row(f"pass@{k}", f"pass@{k}", f"pass@{k}_paired_difference"))
    for k in (4, 16):
        if f"base_majority@{k}" in results:
            lines.append(row(f"majority@{k}", f"majority@{k}"))
    lines += [f"{'format rate, sampled':30s}{results['base_format_rate']:7.3f}{'':17s}"
              f"{results['format_rate']:7.3f}",
              f"{'response length, sampled':30s}{results['base_mean_length']:7.1f}{'':17s}"
              f"{results['final_mean_length']:7.1f}"]
    return "\n".join(lines)
