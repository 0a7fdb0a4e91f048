"""DeepSeek-R1 (2025): five stages from a base model, and R1-Zero from the same base beside it.

`run(config, workdir)` takes a `configs/r1.py` config:

1. cold_start: SFT of the base on a few hundred readable worked solutions in the R1 format
   (`r1_data`: `<think>` chain of thought in the target language, a summary, `<answer>`).
2. reasoning_rl: GRPO from stage 1 with accuracy + format + language-consistency rewards.
3. rejection_sampling: N samples per train problem from stage 2's policy, kept when correct,
   well formed (summary included), language-consistent and not repetitive, at most k per
   problem (`rejection`), joined with non-reasoning examples answered at once.
4. sft_union: SFT of the *base* on that union.
5. final_rl: a Bradley-Terry reward model (value head over a copy of stage 4's trunk) trained
   on preference pairs, then GRPO from stage 4 on a mix of reasoning prompts (rule rewards,
   summary required) and non-reasoning prompts (the reward model's score; `mixed_reward`).

Every policy is evaluated on the same held-out problems (R1-Zero's, same seed), greedy and
sampled: accuracy, R1 format rate, language consistency, summary rate, non-reasoning score
(`r1_data.nonreasoning_score` on held-out non-reasoning questions) and length, each with its
95% interval. `results.json`: `stages` (in order, each with `name` and those metrics),
`r1_zero` (an existing R1-Zero workdir's results read, or R1-Zero run here), the RL curves of
both and the steps each needs to reach `eval.reach_accuracy`, the rejection counts, the reward
model's held-out pairwise accuracy. Each stage lives in `<workdir>/<i>_<name>/` (checkpoints,
`record.json`); a stopped run resumes at the stage and step where it stopped, finished stages
are read back, and `resume_from` starts from another run's earlier stage.

Beside the stages, with `orm_ablation.rl_steps` > 0, DeepSeek's "unsuccessful attempt": GRPO
from the base with a learned outcome reward model as the only reward (`orm_ablation`,
`results.json` → `orm_ablation` with its curve), to see whether the policy hacks it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import (evaluation, grpo, mixed_reward, pretrain, prompts, r1_data, rejection,
                   rewards, sampler, sharding, stats, tasks, train, verifiers)
from r1jax.config_checks import check_task, get, is_int, needs
from r1jax.reporting import MetricWriter, plot_curves, read_json, read_metrics, write_json

log = logging.getLogger("r1jax")

STAGES = ("cold_start", "reasoning_rl", "rejection_sampling", "sft_union", "final_rl")
METRICS = ("accuracy", "greedy_accuracy", "format_rate", "language_consistency",
           "summary_rate", "non_reasoning_score", "greedy_non_reasoning_score", "mean_length")


# ----------------------------------------------------------------------------- config

def check_config(c) -> None:
    """Every value a run uses, each failing with its full field path, before any work."""
    need = needs(c)
    positive = ["cold_start.steps", "cold_start.batch_size", "rejection.num_problems",
                "rejection.samples_per_problem", "rejection.keep_per_problem",
                "nonreasoning.num_train", "sft.steps", "sft.batch_size", "reward_model.steps",
                "reward_model.batch_size", "eval.num_problems", "eval.num_samples",
                "eval.num_nonreasoning", "pretrain.batch_size", "pretrain.seq_len",
                "pretrain.num_examples", "checkpoint_every", "keep_checkpoints",
                "r1_zero_steps"]
    for g in ("reasoning_rl", "final_rl"):
        positive += [f"{g}.{k}" for k in ("steps", "prompts_per_step", "num_generations",
                                          "max_new_tokens", "max_prompt_tokens", "grad_accum")]
    if c.orm_ablation.rl_steps:
        positive += [f"orm_ablation.{k}" for k in ("num_problems", "samples_per_problem",
                                                    "steps", "batch_size")]
    for path in positive:
        need(is_int(get(c, path)) and get(c, path) > 0, path, "an int > 0")
    for path in ("cold_start.num_examples", "cold_start.warmup_steps", "sft.warmup_steps",
                 "orm_ablation.rl_steps",
                 "reasoning_rl.warmup_steps", "final_rl.warmup_steps", "eval.every",
                 "pretrain.steps", "pretrain.warmup_steps"):
        need(is_int(get(c, path)) and get(c, path) >= 0, path, "an int >= 0")
    for path in ("cold_start.learning_rate", "sft.learning_rate", "reward_model.learning_rate",
                 "orm_ablation.learning_rate",
                 "reasoning_rl.learning_rate", "final_rl.learning_rate",
                 "reasoning_rl.temperature", "final_rl.temperature", "rejection.temperature",
                 "pretrain.learning_rate"):
        need(get(c, path) > 0, path, "> 0")
    for path in ("reasoning_rl.beta", "final_rl.beta", "reasoning_rl.epsilon",
                 "final_rl.epsilon", "reasoning_rl.format_weight", "final_rl.format_weight",
                 "reasoning_rl.language_weight", "final_rl.language_weight",
                 "reasoning_rl.accuracy_weight", "final_rl.accuracy_weight",
                 "final_rl.rm_weight", "final_rl.rule_weight", "rejection.max_repetition"):
        need(get(c, path) >= 0, path, ">= 0")
    need(c.final_rl.rm_weight + c.final_rl.rule_weight > 0, "final_rl.rm_weight",
         "> 0 or final_rl.rule_weight > 0 (non-reasoning prompts need a reward)")
    need(0 <= c.final_rl.nonreasoning_share < 1, "final_rl.nonreasoning_share", "in [0, 1)")
    for stage in ("reasoning_rl", "final_rl"):
        need(c[stage].advantage_scale in grpo.ADVANTAGE_SCALES, f"{stage}.advantage_scale",
             f"one of {grpo.ADVANTAGE_SCALES}")
    need(0 <= c.rejection.min_language <= 1, "rejection.min_language", "in [0, 1]")
    need(0 <= c.eval.reach_accuracy <= 1, "eval.reach_accuracy", "in [0, 1]")
    need(c.eval.temperature > 0, "eval.temperature", "> 0 (the sampled evaluation)")
    need(c.language in rewards.LANGUAGE_WORDS, "language",
         f"one of {sorted(rewards.LANGUAGE_WORDS)}")
    need(c.task.template in prompts.TEMPLATES, "task.template",
         f"one of {sorted(prompts.TEMPLATES)}")
    need(c.nonreasoning.template in prompts.TEMPLATES, "nonreasoning.template",
         f"one of {sorted(prompts.TEMPLATES)}")
    check_task(c)
    synthetic = c.task.name in tasks.TASK_NAMES
    need(synthetic or bool(c.cold_start.path), "cold_start.path",
         f"a local JSONL of worked solutions for task {c.task.name!r}")
    need(not c.cold_start.path or os.path.isfile(c.cold_start.path), "cold_start.path",
         "an existing file")
    need(not synthetic or c.cold_start.num_examples > 0 or bool(c.cold_start.path),
         "cold_start.num_examples", "> 0 (the careful solver's examples)")
    need(not c.r1_zero_workdir or os.path.isfile(os.path.join(c.r1_zero_workdir,
                                                              "results.json")),
         "r1_zero_workdir", "a finished R1-Zero workdir (with results.json), or empty")
    if c.resume_from.workdir or c.resume_from.stage:
        need(c.resume_from.stage in STAGES, "resume_from.stage", f"one of {STAGES}")
        need(os.path.isdir(c.resume_from.workdir), "resume_from.workdir", "an existing run")


def _stage_dir(workdir: str, name: str) -> str:
    return os.path.join(workdir, f"{STAGES.index(name) + 1}_{name}")


# ----------------------------------------------------------------------------- context

class Context:
    """What the stages share: model, tokenizer, base params, problems, keys, writer."""

    def __init__(self, c, workdir, cfg, tok, base_params, writer, mesh, show_progress):
        self.c, self.workdir, self.cfg, self.tok = c, workdir, cfg, tok
        self.base_params, self.writer, self.mesh = base_params, writer, mesh
        self.show_progress = show_progress
        self.shard = None if mesh is None else sharding.make_shard_fn(mesh)
        self.eval_problems = pretrain.load_problems(c, "test", c.eval.num_problems,
                                                    seed=c.seed + 1)
        self.eval_nonreasoning = r1_data.nonreasoning_problems(c.seed, c.eval.num_nonreasoning,
                                                               "test")
        self.train_nonreasoning = r1_data.nonreasoning_problems(c.seed, c.nonreasoning.num_train,
                                                                "train")
        self.key = jax.random.key(c.seed + 777)

    # -- held-out evaluation of one policy
    def evaluate(self, params, step: int, num_samples: int = None) -> dict:
        c = self.c
        num_samples = num_samples or c.eval.num_samples
        key = jax.random.fold_in(self.key, step)
        max_new = max(c.reasoning_rl.max_new_tokens, c.final_rl.max_new_tokens)

        def extra(problem, text):
            return {"r1_format": rewards.r1_format_reward(text),
                    "summary_rate": rewards.summary_reward(text),
                    "language": rewards.language_consistency_reward(text, c.language)}
        common = dict(template=c.task.template, max_new_tokens=max_new, shard=self.shard,
                      lang=c.language, extra_scores=extra)
        g = evaluation.evaluate(params, self.cfg, self.tok, self.eval_problems, key,
                                num_samples=1, temperature=0.0, **common)
        s = evaluation.evaluate(params, self.cfg, self.tok, self.eval_problems,
                                jax.random.fold_in(key, 1), num_samples=num_samples,
                                temperature=c.eval.temperature, **common)
        nr_common = dict(template=c.nonreasoning.template, max_new_tokens=max_new,
                         shard=self.shard, lang=None,
                         extra_scores=lambda p, t: {"score": r1_data.nonreasoning_score(p, t)})
        ng = evaluation.evaluate(params, self.cfg, self.tok, self.eval_nonreasoning,
                                 jax.random.fold_in(key, 2), num_samples=1, temperature=0.0,
                                 **nr_common)
        ns = evaluation.evaluate(params, self.cfg, self.tok, self.eval_nonreasoning,
                                 jax.random.fold_in(key, 3), num_samples=num_samples,
                                 temperature=c.eval.temperature, **nr_common)
        return {
            "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
            "greedy_accuracy": g["accuracy"], "greedy_accuracy_ci": g["accuracy_ci"],
            "format_rate": s["r1_format"], "format_rate_ci": s["r1_format_ci"],
            "greedy_format_rate": g["r1_format"],
            "language_consistency": s["language"], "language_consistency_ci": s["language_ci"],
            "greedy_language_consistency": g["language"],
            "summary_rate": s["summary_rate"], "summary_rate_ci": s["summary_rate_ci"],
            "greedy_summary_rate": g["summary_rate"],
            "non_reasoning_score": ns["score"], "non_reasoning_score_ci": ns["score_ci"],
            "greedy_non_reasoning_score": ng["score"],
            "greedy_non_reasoning_score_ci": ng["score_ci"],
            "mean_length": s["mean_length"], "mean_length_ci": s["mean_length_ci"],
            "per_problem": {"greedy": g["per_problem"], "sampled": s["per_problem"],
                            "non_reasoning_greedy": ng["per_problem_score"],
                            "non_reasoning_sampled": ns["per_problem_score"]},
            "examples": {"greedy": [list(e) for e in g["examples"][:2]],
                         "non_reasoning": [list(e) for e in ng["examples"][:2]]},
        }


# ----------------------------------------------------------------------------- training

def _sft(ctx: Context, params, examples, s, stage_dir: str, stage: str, seed: int):
    """`params` (left intact) fine-tuned on prompt -> completion examples with config
    section `s` (steps, batch_size, learning_rate, warmup_steps); resumes from stage_dir."""
    pairs = [(e["prompt"], e["completion"]) for e in examples]
    longest = max(len(ctx.tok.encode(p)) + len(ctx.tok.encode(q)) + 1 for p, q in pairs)
    tokens, mask = train.encode_pairs(ctx.tok, pairs, -(-longest // 8) * 8)
    loop = train.LoopConfig(steps=s.steps, learning_rate=s.learning_rate,
                            warmup_steps=s.warmup_steps, schedule="constant",
                            checkpoint_every=min(ctx.c.checkpoint_every, s.steps),
                            keep_checkpoints=ctx.c.keep_checkpoints, seed=seed)
    return train.run_sft(jax.tree.map(jnp.copy, params), ctx.cfg, tokens, mask, loop,
                         os.path.join(stage_dir, "ckpt"), batch_size=s.batch_size, stage=stage,
                         writer=ctx.writer, mesh=ctx.mesh, show_progress=ctx.show_progress)


def _grpo_settings(g, template: str, steps: int, seed: int):
    grpo_cfg = grpo.GRPOConfig(num_generations=g.num_generations, beta=g.beta,
                               epsilon_low=g.epsilon, epsilon_high=g.epsilon,
                               grad_accum=g.grad_accum, max_len=g.max_new_tokens,
                               advantage_scale=g.advantage_scale)
    rollout = train.RolloutConfig(prompts_per_step=g.prompts_per_step,
                                  max_new_tokens=g.max_new_tokens,
                                  max_prompt_tokens=g.max_prompt_tokens,
                                  temperature=g.temperature, template=template,
                                  accuracy_weight=g.accuracy_weight,
                                  format_weight=g.format_weight)
    loop = train.LoopConfig(steps=steps, learning_rate=g.learning_rate,
                            warmup_steps=g.warmup_steps, schedule="constant",
                            checkpoint_every=20, keep_checkpoints=1, seed=seed)
    return grpo_cfg, rollout, loop


def _reasoning_problems(c, tag: int):
    """train_problems(step, round) -> P reasoning problems of the train split."""
    if c.task.name in tasks.TASK_NAMES:
        def draw(step, round_, n):
            return tasks.generate(c.task.name, c.seed * 1_000_003 + tag * 7919 + step * 97
                                  + round_, n, split="train", **pretrain.difficulty(c))
        return draw
    pool = pretrain.load_problems(c, "train", 0, c.seed)

    def draw(step, round_, n):
        rng = np.random.default_rng((c.seed, tag, step, round_))
        return [pool[i] for i in rng.integers(0, len(pool), n)]
    return draw


def _rl(ctx: Context, params, g, stage: str, stage_dir: str, reward_fn, train_problems,
        template: str, steps: int, curve_offset: int, seed: int):
    """GRPO of `params` with `reward_fn` (None: R1-Zero's rule rewards); held-out curve points
    every eval.every steps, logged under `stage` as eval_* (step + curve_offset = RL step)."""
    grpo_cfg, rollout, loop = _grpo_settings(g, template, steps, seed)

    def evaluate_fn(p, step):
        r = ctx.evaluate(p, 10_000 + curve_offset + step, num_samples=2)
        return {k: v for k, v in r.items() if k in METRICS or k.endswith("accuracy_ci")}
    return train.run_grpo(params, ctx.cfg, ctx.tok, train_problems, loop, rollout, grpo_cfg,
                          os.path.join(stage_dir, "ckpt"), stage=stage, writer=ctx.writer,
                          evaluate_fn=evaluate_fn, eval_every=ctx.c.eval.every,
                          reward_fn=reward_fn, mesh=ctx.mesh, show_progress=ctx.show_progress)


def _record(ctx: Context, name: str, params, extra: dict, t0: float) -> dict:
    rec = {"name": name}
    rec.update(ctx.evaluate(params, STAGES.index(name) + 1 if name in STAGES else 0))
    rec.update(extra)
    rec["seconds"] = round(time.time() - t0, 1)
    return rec


def _done(d: str):
    path = os.path.join(d, "record.json")
    return read_json(path) if os.path.exists(path) else None


# ----------------------------------------------------------------------------- stages

def stage_cold_start(ctx: Context, params):
    c, d, t0 = ctx.c, _stage_dir(ctx.workdir, "cold_start"), time.time()
    if c.cold_start.path:
        examples = r1_data.cold_start_from_jsonl(c.cold_start.path, c.task.template,
                                                 c.cold_start.num_examples, c.language)
    else:
        examples = r1_data.cold_start_examples(c.task.name, c.cold_start.num_examples,
                                               c.seed + 5, c.task.template, c.language,
                                               **pretrain.difficulty(c))
    log.info("stage 1, cold start: SFT of the base on %d examples", len(examples))
    params = _sft(ctx, params, examples, c.cold_start, d, "cold_start", c.seed * 1000 + 1)
    rec = _done(d) or _record(ctx, "cold_start", params,
                              {"train_examples": len(examples), "rl_steps": 0}, t0)
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return params, rec


def _reasoning_reward(c, g, require_summary: bool):
    def fn(problems, texts):
        return mixed_reward.reasoning_rewards(
            problems, texts, accuracy_weight=g.accuracy_weight, format_weight=g.format_weight,
            language_weight=g.language_weight, language=c.language,
            require_summary=require_summary)
    return fn


def stage_reasoning_rl(ctx: Context, params):
    c, d, t0 = ctx.c, _stage_dir(ctx.workdir, "reasoning_rl"), time.time()
    g = c.reasoning_rl
    log.info("stage 2, reasoning RL: %d GRPO steps, accuracy + %.2f format + %.2f language",
             g.steps, g.format_weight, g.language_weight)
    draw = _reasoning_problems(c, 2)
    params = _rl(ctx, params, g, "reasoning_rl", d, _reasoning_reward(c, g, False),
                 lambda step, r: draw(step, r, g.prompts_per_step), c.task.template, g.steps,
                 0, c.seed * 1000 + 2)
    rec = _done(d) or _record(ctx, "reasoning_rl", params, {"rl_steps": g.steps}, t0)
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return params, rec


def stage_rejection(ctx: Context, params, rl_record: dict):
    c, d, t0 = ctx.c, _stage_dir(ctx.workdir, "rejection_sampling"), time.time()
    if _done(d):
        return read_json(os.path.join(d, "examples.json")), _done(d)
    r = c.rejection
    problems = pretrain.load_problems(c, "train", r.num_problems, seed=c.seed + 3)
    log.info("stage 3, rejection sampling: %d samples on each of %d train problems",
             r.samples_per_problem, len(problems))
    kept, counts = rejection.rejection_sample(
        params, ctx.cfg, ctx.tok, problems, jax.random.fold_in(ctx.key, 3),
        num_samples=r.samples_per_problem, keep=r.keep_per_problem, template=c.task.template,
        max_new_tokens=c.reasoning_rl.max_new_tokens, temperature=r.temperature,
        shard=ctx.shard, language=c.language, min_language=r.min_language,
        max_repetition=r.max_repetition, require_summary=True)
    nonr = r1_data.nonreasoning_examples(ctx.train_nonreasoning, c.nonreasoning.template)
    examples = [dict(e, source="reasoning") for e in kept] + \
        [dict(e, source="non_reasoning") for e in nonr]
    # The policy is stage 2's: its held-out metrics are repeated here, with the data's counts.
    rec = {k: v for k, v in rl_record.items() if k not in ("name", "seconds", "rl_steps")}
    rec.update(name="rejection_sampling", policy="reasoning_rl", counts=counts,
               reasoning_examples=len(kept), non_reasoning_examples=len(nonr),
               seconds=round(time.time() - t0, 1))
    write_json(os.path.join(d, "examples.json"), examples, default=float)
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return examples, rec


def stage_sft_union(ctx: Context, examples):
    c, d, t0 = ctx.c, _stage_dir(ctx.workdir, "sft_union"), time.time()
    log.info("stage 4, SFT of the base on the union: %d examples", len(examples))
    params = _sft(ctx, ctx.base_params, examples, c.sft, d, "sft_union", c.seed * 1000 + 4)
    rec = _done(d) or _record(ctx, "sft_union", params,
                              {"train_examples": len(examples), "rl_steps": 0}, t0)
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return params, rec


def train_reward_model(ctx: Context, params, d: str):
    """The Bradley-Terry model over a copy of `params`' trunk, trained on preference pairs of
    the train non-reasoning questions; (score_fn: r, or sigmoid(r) with final_rl.rm_sigmoid,
    held-out pairwise accuracy)."""
    c = ctx.c
    tmpl = c.nonreasoning.template
    train_pairs = r1_data.preference_pairs(ctx.train_nonreasoning, c.seed, tmpl)
    test_pairs = r1_data.preference_pairs(ctx.eval_nonreasoning, c.seed + 1, tmpl)
    batch = verifiers.make_pair_batch(ctx.tok, [p["prompt"] for p in train_pairs],
                                      [[p["chosen"]] for p in train_pairs],
                                      [[p["rejected"]] for p in train_pairs])
    vparams = verifiers.init_verifier(params, ctx.cfg, jax.random.fold_in(ctx.key, 5))
    m = c.reward_model
    loop = train.LoopConfig(steps=m.steps, learning_rate=m.learning_rate, warmup_steps=5,
                            schedule="constant", checkpoint_every=m.steps, keep_checkpoints=1,
                            seed=c.seed * 1000 + 5)
    log.info("stage 5, reward model: %d preference pairs, %d steps", len(train_pairs), m.steps)
    vparams = train.run_verifier(vparams, ctx.cfg, "bt", batch, loop, os.path.join(d, "rm"),
                                 batch_size=m.batch_size, stage="reward_model",
                                 writer=ctx.writer, show_progress=ctx.show_progress)
    score = mixed_reward.bt_scorer(vparams, ctx.cfg, ctx.tok, squash=c.final_rl.rm_sigmoid)
    acc = mixed_reward.pairwise_accuracy(score, test_pairs)
    acc["pairwise_accuracy_ci"] = list(stats.wilson_interval(
        acc["pairwise_accuracy"] * acc["num_pairs"], acc["num_pairs"]))
    acc["train_pairwise_accuracy"] = mixed_reward.pairwise_accuracy(
        score, train_pairs[:300])["pairwise_accuracy"]
    return score, acc


def stage_final_rl(ctx: Context, params):
    c, d, t0 = ctx.c, _stage_dir(ctx.workdir, "final_rl"), time.time()
    g = c.final_rl
    score, rm = train_reward_model(ctx, params, d)
    n_nonr = int(round(g.prompts_per_step * g.nonreasoning_share))
    draw = _reasoning_problems(c, 5)
    pool = ctx.train_nonreasoning

    def render(p, template):
        return dataclasses.replace(p, question=prompts.render(template, p.question))

    def train_problems(step, round_):
        rng = np.random.default_rng((c.seed, 55, step, round_))
        nonr = [pool[i] for i in rng.integers(0, len(pool), n_nonr)]
        return ([render(p, c.task.template)
                 for p in draw(step, round_, g.prompts_per_step - n_nonr)]
                + [render(p, c.nonreasoning.template) for p in nonr])

    reward_fn = mixed_reward.MixedReward(
        score if g.rm_weight else None, rm_weight=g.rm_weight, rule_weight=g.rule_weight,
        accuracy_weight=g.accuracy_weight, format_weight=g.format_weight,
        language_weight=g.language_weight, language=c.language,
        require_summary=g.require_summary)
    log.info("stage 5, RL for all scenarios: %d GRPO steps, %d of %d prompts non-reasoning "
             "(reward model x %.2f + rule x %.2f)", g.steps, n_nonr, g.prompts_per_step,
             g.rm_weight, g.rule_weight)
    params = _rl(ctx, params, g, "final_rl", d, reward_fn, train_problems, "plain",
                 g.steps, c.reasoning_rl.steps, c.seed * 1000 + 6)
    rec = _done(d) or _record(ctx, "final_rl", params,
                              {"rl_steps": g.steps, "reward_model": rm}, t0)
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return params, rec


# ----------------------------------------------------------------------------- R1-Zero

def r1_zero_reference(ctx: Context) -> dict:
    """R1-Zero's held-out numbers and greedy curve: read from config.r1_zero_workdir, or
    R1-Zero (GRPO with accuracy + format rule rewards, no language reward) run here from the
    base for r1_zero_steps and evaluated like the stages."""
    c = ctx.c
    if c.r1_zero_workdir:
        res = read_json(os.path.join(c.r1_zero_workdir, "results.json"))
        out = {"source": os.path.abspath(c.r1_zero_workdir),
               "accuracy": res["final_accuracy"], "accuracy_ci": res["final_accuracy_ci"],
               "greedy_accuracy": res["final_greedy_accuracy"],
               "greedy_accuracy_ci": res["final_greedy_accuracy_ci"],
               "format_rate": res["format_rate"],
               "language_consistency": res.get("final_language_consistency"),
               "mean_length": res["final_mean_length"], "rl_steps": res["grpo_steps"],
               "per_problem": {"greedy": res["per_problem"]["final_greedy"],
                               "sampled": res["per_problem"]["final_sampled"]}}
        rows = read_metrics(os.path.join(c.r1_zero_workdir, "metrics.jsonl"), "grpo")
        out["curve"] = [[r["step"], r["eval_greedy_accuracy"], r.get("eval_accuracy")]
                        for r in rows if "eval_greedy_accuracy" in r]
        return out
    d = os.path.join(ctx.workdir, "r1_zero")
    done = _done(d)
    if done:
        return done
    t0 = time.time()
    log.info("R1-Zero from the base: %d GRPO steps (no r1_zero_workdir given)", c.r1_zero_steps)
    base_eval = ctx.evaluate(ctx.base_params, 0)
    g = c.reasoning_rl
    draw = _reasoning_problems(c, 0)
    grpo_cfg, rollout, loop = _grpo_settings(g, c.task.template, c.r1_zero_steps, c.seed)
    curve = [[0, base_eval["greedy_accuracy"], base_eval["accuracy"]]]

    def evaluate_fn(p, step):
        r = ctx.evaluate(p, 20_000 + step, num_samples=2)
        curve.append([step, r["greedy_accuracy"], r["accuracy"]])
        return {k: r[k] for k in ("greedy_accuracy", "accuracy")}
    params = train.run_grpo(jax.tree.map(jnp.copy, ctx.base_params), ctx.cfg, ctx.tok,
                            lambda step, r: draw(step, r, g.prompts_per_step), loop, rollout,
                            grpo_cfg, os.path.join(d, "ckpt"), stage="r1_zero",
                            writer=ctx.writer, evaluate_fn=evaluate_fn,
                            eval_every=c.eval.every, mesh=ctx.mesh,
                            show_progress=ctx.show_progress)
    rec = _record(ctx, "r1_zero", params, {"rl_steps": c.r1_zero_steps, "source": "this run"},
                  t0)
    rec["curve"] = curve + [[c.r1_zero_steps, rec["greedy_accuracy"], rec["accuracy"]]]
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return rec


# ----------------------------------------------------------------------------- ablation

def train_outcome_model(ctx: Context, d: str):
    """An ORM (value head over a copy of the base's trunk) trained on base samples of train
    problems labelled by the rule checker; the last fifth of the problems is held out.
    Returns (score_fn: probability of correctness, held-out numbers)."""
    c, a = ctx.c, ctx.c.orm_ablation
    problems = pretrain.load_problems(c, "train", a.num_problems, seed=c.seed + 11)
    rendered = [prompts.render(c.task.template, p.question) for p in problems]
    sampling = sampler.SamplingConfig(max_new_tokens=c.reasoning_rl.max_new_tokens,
                                      num_samples=a.samples_per_problem, temperature=1.0)
    texts = evaluation.sample_texts(ctx.base_params, ctx.cfg, ctx.tok, rendered,
                                    jax.random.fold_in(ctx.key, 11), sampling, shard=ctx.shard)
    flat = [(q, t, tasks.task_accuracy_reward(p, t))
            for p, q, row in zip(problems, rendered, texts) for t in row]
    n_train = (len(problems) - len(problems) // 5) * a.samples_per_problem
    train_rows, test_rows = flat[:n_train], flat[n_train:]
    batch = verifiers.make_orm_batch(ctx.tok, [q for q, _, _ in train_rows],
                                     [[t] for _, t, _ in train_rows],
                                     [y for _, _, y in train_rows])
    vparams = verifiers.init_verifier(ctx.base_params, ctx.cfg, jax.random.fold_in(ctx.key, 12))
    loop = train.LoopConfig(steps=a.steps, learning_rate=a.learning_rate, warmup_steps=5,
                            schedule="constant", checkpoint_every=a.steps, keep_checkpoints=1,
                            seed=c.seed * 1000 + 11)
    log.info("ablation: outcome reward model on %d base samples, %d steps", n_train, a.steps)
    vparams = train.run_verifier(vparams, ctx.cfg, "orm", batch, loop, os.path.join(d, "orm"),
                                 batch_size=a.batch_size, stage="orm_ablation_verifier",
                                 writer=ctx.writer, show_progress=ctx.show_progress)
    score = mixed_reward.orm_scorer(vparams, ctx.cfg, ctx.tok)
    held = score([q for q, _, _ in test_rows], [t for _, t, _ in test_rows])
    y = np.array([v for _, _, v in test_rows]) > 0.5
    right = int(np.sum((held > 0.5) == y))
    info = {"num_train": n_train, "num_test": len(test_rows),
            "train_positive_rate": float(np.mean([v for _, _, v in train_rows])),
            "test_accuracy": right / len(test_rows),
            "test_accuracy_ci": list(stats.wilson_interval(right, len(test_rows))),
            "test_auc": stats.roc_auc(held, y) if 0 < y.sum() < len(y) else None}
    return score, info


def orm_ablation(ctx: Context, base_record: dict):
    """DeepSeek-R1's "unsuccessful attempt" at tiny scale: GRPO from the base (as R1-Zero)
    with the ORM's probability of correctness as the only reward, for orm_ablation.rl_steps,
    the rule checker only watching (the rollouts' "accuracy" in the metrics). The record holds
    the held-out numbers at the end and the ORM's; `orm_curve` reads the curve. None when
    orm_ablation.rl_steps is 0."""
    c, a = ctx.c, ctx.c.orm_ablation
    if not a.rl_steps:
        return None
    d = os.path.join(ctx.workdir, "ablation_orm_reward")
    if _done(d):
        return _done(d)
    t0 = time.time()
    score, orm = train_outcome_model(ctx, d)
    g = c.reasoning_rl
    grpo_cfg, rollout, loop = _grpo_settings(g, c.task.template, a.rl_steps, c.seed * 1000 + 12)

    def reward_fn(problems, texts):
        G = len(texts[0])
        p_ = [prompts.render(c.task.template, p.question) for p in problems for _ in range(G)]
        learned = np.asarray(score(p_, [t for row in texts for t in row]), np.float32)
        correct = np.array([[tasks.task_accuracy_reward(p, t) for t in row]
                            for p, row in zip(problems, texts)], np.float32)
        fmt = np.array([[rewards.format_reward(t) for t in row] for row in texts], np.float32)
        return {"reward": learned.reshape(len(problems), G), "correct": correct, "format": fmt}

    def evaluate_fn(p, step):
        r = ctx.evaluate(p, 30_000 + step, num_samples=2)
        return {k: r[k] for k in ("greedy_accuracy", "accuracy", "format_rate")}
    draw = _reasoning_problems(c, 0)     # R1-Zero's training problems
    log.info("ablation: GRPO from the base with the ORM as the reward, %d steps", a.rl_steps)
    params = train.run_grpo(jax.tree.map(jnp.copy, ctx.base_params), ctx.cfg, ctx.tok,
                            lambda step, r: draw(step, r, g.prompts_per_step), loop, rollout,
                            grpo_cfg, os.path.join(d, "ckpt"), stage="orm_ablation",
                            writer=ctx.writer, evaluate_fn=evaluate_fn,
                            eval_every=c.eval.every, reward_fn=reward_fn, mesh=ctx.mesh,
                            show_progress=ctx.show_progress)
    rec = _record(ctx, "orm_ablation", params, {"rl_steps": a.rl_steps, "orm": orm}, t0)
    rec["curve"] = orm_curve(ctx.workdir, base_record, rec)
    write_json(os.path.join(d, "record.json"), rec, default=float)
    return rec


def orm_curve(workdir: str, base: dict, record: dict) -> list:
    """[[RL step, mean ORM reward of the step's rollouts, their rule accuracy, held-out greedy
    accuracy, held-out sampled accuracy]] of the ablation (None where not measured at that
    step; step 0 is the base, the last step the final evaluation; of a step logged twice, as
    when a run resumed, the last)."""
    rows = {r["step"]: r for r in read_metrics(os.path.join(workdir, "metrics.jsonl"),
                                               "orm_ablation")}
    out = [[0, None, None, base["greedy_accuracy"], base["accuracy"]]]
    out += [[s, r.get("reward"), r.get("accuracy"), r.get("eval_greedy_accuracy"),
             r.get("eval_accuracy")] for s, r in sorted(rows.items())]
    if out[-1][0] == record["rl_steps"]:
        out[-1][3:] = [record["greedy_accuracy"], record["accuracy"]]
    return out


# ----------------------------------------------------------------------------- the run

def _copy_earlier_stages(c, workdir: str) -> None:
    """resume_from: the other run's base (with the ORM ablation, which depends on the base
    alone) and its stages up to resume_from.stage, copied into `workdir` where this run has
    none of its own."""
    src = c.resume_from.workdir
    names = ["base", "ablation_orm_reward"] + [os.path.basename(_stage_dir(src, s))
                        for s in STAGES[:STAGES.index(c.resume_from.stage) + 1]]
    for name in names:
        if os.path.isdir(os.path.join(src, name)) and not os.path.exists(
                os.path.join(workdir, name)):
            log.info("resume_from: copying %s from %s", name, src)
            shutil.copytree(os.path.join(src, name), os.path.join(workdir, name))


def rl_curve(c, workdir: str, records: dict) -> list:
    """[[RL step, greedy accuracy, sampled accuracy]] of R1: the cold start at 0, the stage 2
    curve, its end, then stage 5 (RL steps continue) and its end."""
    rows = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    out = [[0, records["cold_start"]["greedy_accuracy"], records["cold_start"]["accuracy"]]]
    for stage, offset in (("reasoning_rl", 0), ("final_rl", c.reasoning_rl.steps)):
        out += [[r["step"] + offset, r["eval_greedy_accuracy"], r.get("eval_accuracy")]
                for r in rows if r.get("stage") == stage and "eval_greedy_accuracy" in r]
        end = offset + (c.reasoning_rl.steps if stage == "reasoning_rl" else c.final_rl.steps)
        out.append([end, records[stage]["greedy_accuracy"], records[stage]["accuracy"]])
    return out


def steps_to_reach(curve, threshold: float):
    """The first RL step whose greedy accuracy is >= threshold (None: never)."""
    return next((s for s, g, _ in sorted(curve, key=lambda x: x[0]) if g >= threshold), None)


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the five stages of config `c` in `workdir`; returns (and writes) the results."""
    check_config(c)
    t_start = time.time()
    os.makedirs(workdir, exist_ok=True)
    if c.resume_from.workdir:
        _copy_earlier_stages(c, workdir)
    mesh = pretrain.make_mesh(c)
    writer = MetricWriter(workdir)
    cfg, tok, base_params = pretrain.base_model(c, workdir, writer, show_progress, mesh)
    ctx = Context(c, workdir, cfg, tok, base_params, writer, mesh, show_progress)
    base_dir = os.path.join(workdir, "0_base")
    base_rec = _done(base_dir) or _record(ctx, "base", base_params, {"rl_steps": 0}, time.time())
    write_json(os.path.join(base_dir, "record.json"), base_rec, default=float)
    records = {}
    params, records["cold_start"] = stage_cold_start(ctx, base_params)
    params, records["reasoning_rl"] = stage_reasoning_rl(ctx, params)
    examples, records["rejection_sampling"] = stage_rejection(ctx, params,
                                                              records["reasoning_rl"])
    params, records["sft_union"] = stage_sft_union(ctx, examples)
    params, records["final_rl"] = stage_final_rl(ctx, params)
    r1_zero = r1_zero_reference(ctx)
    ablation = orm_ablation(ctx, base_rec)
    writer.close()
    curve = rl_curve(c, workdir, records)
    final = records["final_rl"]
    results = {
        "stages": [records[s] for s in STAGES], "base": base_rec, "r1_zero": r1_zero,
        "rl_curve": {"r1": curve, "r1_zero": r1_zero.get("curve", [])},
        "reach_accuracy": c.eval.reach_accuracy,
        "rl_steps_to_reach": {"r1": steps_to_reach(curve, c.eval.reach_accuracy),
                              "r1_zero": steps_to_reach(r1_zero.get("curve", []),
                                                        c.eval.reach_accuracy)},
        "rejection_counts": records["rejection_sampling"]["counts"],
        "reward_model": final["reward_model"],
        "num_eval_problems": c.eval.num_problems, "eval_samples_per_problem": c.eval.num_samples,
        "num_eval_nonreasoning": len(ctx.eval_nonreasoning),
        "seconds": round(time.time() - t_start, 1),
    }
    if ablation is not None:
        results["orm_ablation"] = {k: v for k, v in ablation.items()
                                   if k not in ("per_problem", "examples")}
    same = len(r1_zero["per_problem"]["greedy"]) == len(final["per_problem"]["greedy"])
    if same:
        results["final_minus_r1_zero"] = {
            k: list(stats.paired_difference(final["per_problem"][k], r1_zero["per_problem"][k]))
            for k in ("greedy", "sampled")}
    results["stage5_minus_stage4"] = {
        k: list(stats.paired_difference(final["per_problem"][k],
                                        records["sft_union"]["per_problem"][k]))
        for k in ("greedy", "sampled", "non_reasoning_greedy", "non_reasoning_sampled")
        if k in records["sft_union"]["per_problem"]}   # (records of older runs lack the last two)
    write_json(os.path.join(workdir, "results.json"), results, default=float)
    make_plots(workdir, results)
    return results


# ----------------------------------------------------------------------------- report

PLOT_KEYS = ("accuracy", "greedy_accuracy", "format_rate", "language_consistency",
             "summary_rate", "non_reasoning_score", "mean_length")


def make_plots(workdir: str, results: dict) -> None:
    rows = [dict({k: st.get(k) for k in PLOT_KEYS},
                 **{f"{k}_ci": st.get(f"{k}_ci") for k in PLOT_KEYS}, step=i + 1)
            for i, st in enumerate(results["stages"])]
    plot_curves(rows, PLOT_KEYS, os.path.join(workdir, "r1_stages.png"),
                "R1: held-out metrics per stage (1 cold start ... 5 final RL)")
    curve_rows = ([{"step": s, "r1_greedy_accuracy": g, "r1_sampled_accuracy": a}
                   for s, g, a in results["rl_curve"]["r1"]]
                  + [{"step": s, "r1_zero_greedy_accuracy": g, "r1_zero_sampled_accuracy": a}
                     for s, g, a in results["rl_curve"]["r1_zero"]])
    plot_curves(curve_rows, ["r1_greedy_accuracy", "r1_zero_greedy_accuracy",
                             "r1_sampled_accuracy", "r1_zero_sampled_accuracy"],
                os.path.join(workdir, "r1_rl_curve.png"),
                "Held-out accuracy per RL step: R1 (cold start at 0) vs R1-Zero (base at 0)")
    if "orm_ablation" in results:
        rows = [{"step": s, "orm_reward_train": r, "rule_accuracy_train": a,
                 "heldout_greedy_accuracy": g, "heldout_sampled_accuracy": sa}
                for s, r, a, g, sa in results["orm_ablation"]["curve"]]
        rows += [{"step": s, "r1_zero_heldout_greedy": g}
                 for s, g, _ in results["rl_curve"]["r1_zero"]]
        plot_curves([{k: v for k, v in r.items() if v is not None} for r in rows],
                    ["orm_reward_train", "rule_accuracy_train", "heldout_greedy_accuracy",
                     "heldout_sampled_accuracy", "r1_zero_heldout_greedy"],
                    os.path.join(workdir, "r1_orm_ablation.png"),
                    "GRPO with a learned ORM as the reward (from the base) vs R1-Zero's rule "
                    "rewards")
    path = os.path.join(workdir, "metrics.jsonl")
    for stage in ("reasoning_rl", "final_rl"):
        plot_curves(read_metrics(path, stage),
                    ["reward", "accuracy", "format_rate", "language_consistency",
                     "response_length", "kl", "eval_greedy_accuracy",
                     "eval_language_consistency", "eval_non_reasoning_score"],
                    os.path.join(workdir, f"{stage}_training.png"), f"R1 {stage}")


def results_table(results: dict) -> str:
    """A markdown table: one row per stage (and R1-Zero), held-out metrics with intervals."""
    def cell(r, k, digits=3):
        v = r.get(k)
        if v is None:
            return "-"
        ci = r.get(f"{k}_ci")
        s = f"{v:.{digits}f}"
        return s + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")
    cols = ("accuracy", "greedy_accuracy", "format_rate", "language_consistency",
            "summary_rate", "non_reasoning_score", "mean_length")
    lines = ["| stage | RL steps | " + " | ".join(cols) + " |",
             "|---" * (len(cols) + 2) + "|"]
    rows = [("0 base", results["base"])] + [
        (f"{i + 1} {s['name']}", s) for i, s in enumerate(results["stages"])] + [
        ("R1-Zero", results["r1_zero"])]
    for label, r in rows:
        lines.append(f"| {label} | {r.get('rl_steps', '-')} | " + " | ".join(
            cell(r, k, 1 if k == "mean_length" else 3) for k in cols) + " |")
    rm = results["reward_model"]
    lines.append(f"\nrejection sampling: {results['rejection_counts']}")
    lines.append(f"reward model held-out pairwise accuracy: {rm['pairwise_accuracy']:.3f} "
                 f"[{rm['pairwise_accuracy_ci'][0]:.3f}, {rm['pairwise_accuracy_ci'][1]:.3f}] "
                 f"({rm['num_pairs']} pairs)")
    lines.append(f"RL steps to greedy accuracy >= {results['reach_accuracy']}: "
                 f"{results['rl_steps_to_reach']}")
    if "orm_ablation" in results:
        a = results["orm_ablation"]
        lines.append(f"ORM ablation ({a['rl_steps']} GRPO steps, ORM reward only): held-out "
                     f"greedy {cell(a, 'greedy_accuracy')}, sampled {cell(a, 'accuracy')}; "
                     f"ORM held-out accuracy {a['orm']['test_accuracy']:.3f}, AUC "
                     f"{a['orm']['test_auc']}")
        lines.append("ORM ablation curve [step, ORM reward, rollout accuracy, greedy, "
                     f"sampled]: {a['curve']}")
    for key in ("final_minus_r1_zero", "stage5_minus_stage4"):
        if key in results:
            lines.append(f"{key} (paired): " + "; ".join(
                f"{k} {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]" for k, d in results[key].items()))
    return "\n".join(lines)
