"""Distillation of a reasoning teacher into a smaller student, against RL on the student.

`run(config, workdir)` takes a `configs/distill.py` config. The student base is pretrained on
the base corpus into `<workdir>/base` (tiny; reused when there) or read from a local Hugging
Face folder; the teacher is an R1-Zero tiny run's GRPO policy or a local HF folder with the
same tokenizer. Then, each from the student base, on the same held-out problems:

  student_base  the student as pretrained;
  grpo          GRPO on the student with the R1-Zero rule rewards (the RL baseline);
  sequence      SFT on the teacher's samples that the rule rewards accept (rejection sampling:
                correct and formatted; R1's distillation);
  token         forward KL(teacher || student) per token on all the teacher's samples;
  on_policy     the student samples, the teacher scores every token of those samples: reverse
                KL(student || teacher) (or the generalised JSD);
  teacher       the teacher itself.

Compute (`train_flops`) is model FLOPs from the shapes the loops process: 2 N per token a model
reads or samples (prompt and generated tokens when sampling, every packed position in a
forward pass) and 6 N per position of a training pass, N all of a model's parameters. The
teacher's samples are charged to both methods that use them; pretraining (shared by every
student method) and evaluations are not counted; the teacher's own training is reported apart.

Writes `<workdir>/results.json`: `methods` (per method: greedy and sampled accuracy with 95%
intervals, train_flops, train_seconds, steps and a curve of greedy accuracy against FLOPs),
`paired_differences` (each method minus student_base and minus grpo, greedy and sampled, over
the same problems, [mean, low, high]), `matched_compute` (each distillation method's greedy
accuracy at GRPO's compute, and the FLOPs at which it first reaches GRPO's final greedy
accuracy), `metrics.jsonl` and `distill_flops.png`. Each method's record is a file under
`<workdir>/<method>/`, so a stopped run resumes where it was.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from r1jax import (checkpoint, distill, evaluation, grpo, model, pretrain, prompts, sampler,
                   sharding, stats, tasks, train)
from r1jax.config_checks import check_task, get, is_int, needs
from r1jax.reporting import MetricWriter, read_json, read_metrics, write_json

log = logging.getLogger("r1jax")

METHODS = ("student_base", "grpo", "sequence", "token", "on_policy", "teacher")
DISTILLED = ("sequence", "token", "on_policy")


# ----------------------------------------------------------------------------- config

def check_config(c) -> None:
    """Every value of config `c` a run uses, each failing with its full field path, before
    any work."""
    need = needs(c)
    for path in ("samples.num_problems", "samples.per_problem", "samples.keep_per_problem",
                 "samples.max_new_tokens", "samples.max_prompt_tokens", "sequence.steps",
                 "sequence.batch_size", "token.steps", "token.batch_size", "token.chunk",
                 "on_policy.steps", "on_policy.prompts_per_step", "on_policy.num_generations",
                 "on_policy.chunk", "grpo.steps", "grpo.prompts_per_step",
                 "grpo.num_generations", "grpo.grad_accum", "eval.num_problems",
                 "eval.num_samples", "pretrain.batch_size", "pretrain.seq_len",
                 "pretrain.num_examples", "checkpoint_every", "keep_checkpoints"):
        need(is_int(get(c, path)) and get(c, path) > 0, path, "an int > 0")
    for path in ("sequence.warmup_steps", "token.warmup_steps", "on_policy.warmup_steps",
                 "grpo.warmup_steps", "eval.curve_points", "pretrain.steps",
                 "pretrain.warmup_steps"):
        need(is_int(get(c, path)) and get(c, path) >= 0, path, "an int >= 0")
    for path in ("sequence.learning_rate", "token.learning_rate", "on_policy.learning_rate",
                 "grpo.learning_rate", "pretrain.learning_rate", "samples.temperature",
                 "token.temperature", "on_policy.temperature", "on_policy.sample_temperature",
                 "grpo.temperature"):
        need(get(c, path) > 0, path, "> 0")
    need(c.grpo.num_generations >= 2, "grpo.num_generations", ">= 2 (group advantages)")
    need(c.eval.temperature >= 0, "eval.temperature", ">= 0 (0: greedy)")
    need(0 <= c.token.alpha <= 1, "token.alpha", "in [0, 1]")
    need(0 <= c.on_policy.beta <= 1, "on_policy.beta", "in [0, 1]")
    need(c.on_policy.loss in distill.LOSSES, "on_policy.loss", f"one of {distill.LOSSES}")
    need(isinstance(c.methods, (tuple, list)) and len(c.methods) > 0
         and all(m in METHODS for m in c.methods), "methods", f"a tuple of names in {METHODS}")
    need(c.task.template in prompts.TEMPLATES, "task.template",
         f"one of {sorted(prompts.TEMPLATES)}")
    check_task(c, f" (the tiny student knows only {tasks.TASK_NAMES})")
    if c.model.path:
        need(bool(c.teacher.path), "teacher.path",
             "a local Hugging Face folder (the student config.model.path is one: teacher and "
             "student must share its tokenizer)")
    else:
        need(c.model.preset in model.PRESETS, "model.preset", f"one of {sorted(model.PRESETS)}")
        need(bool(c.teacher.r1_zero_workdir) and not c.teacher.path, "teacher.r1_zero_workdir",
             "an R1-Zero tiny run's workdir (its grpo/ checkpoint is the teacher; "
             "teacher.path is for a HF student)")
        need(os.path.isdir(os.path.join(c.teacher.r1_zero_workdir, "grpo")),
             "teacher.r1_zero_workdir", "a folder with a grpo/ checkpoint")


# ----------------------------------------------------------------------------- models

def load_teacher(c, tok, mesh=None):
    """(cfg, params) of the teacher: the newest checkpoint of `<r1_zero_workdir>/grpo` (its
    stored ModelConfig), or the HF folder `teacher.path`, checked to share the student's
    tokenizer."""
    if c.teacher.path:
        from r1jax import hf
        from r1jax.tokenizer import HFTokenizer
        cfg, params = hf.load_hf(c.teacher.path, mesh=mesh)
        cfg = cfg.replace(compute_dtype=c.model.compute_dtype, remat=c.model.remat)
        probe = "Question: 12 + 7 = ? <think> first 12 + 7 = 19 </think> <answer>19</answer>"
        theirs = HFTokenizer(c.teacher.path)
        if theirs.encode(probe) != tok.encode(probe) or theirs.eos_id != tok.eos_id:
            raise ValueError(f"config.teacher.path={c.teacher.path!r} has another tokenizer than "
                             f"config.model.path={c.model.path!r}; distillation over the "
                             "vocabulary needs one tokenizer")
        return cfg, params
    directory = os.path.join(c.teacher.r1_zero_workdir, "grpo")
    with checkpoint.CheckpointManager(directory) as manager:
        stored = manager.read_meta().get("model_config")
        if stored is None:
            raise ValueError(f"{directory}: the checkpoint stores no model config")
        cfg = checkpoint.model_config_from_dict(stored)
        target = jax.eval_shape(lambda: model.init_params(cfg, jax.random.key(0)))
        params = manager.restore(target={"params": target}).params
    if mesh is not None:
        params = jax.device_put(params, sharding.param_shardings(cfg, mesh))
    return cfg, params


def flops_per_token(cfg) -> float:
    """2 N: model FLOPs of one token through a forward pass."""
    return 2.0 * cfg.num_params()


def _prompt_tokens(tok, template: str, problems) -> int:
    return sum(len(tok.encode(prompts.render(template, p.question))) for p in problems)


# ----------------------------------------------------------------------------- teacher samples

def teacher_samples(params, cfg, tok, problems, key, c, shard=None) -> dict:
    """samples.per_problem samples of each problem from a policy at samples.temperature,
    packed: tokens [N, T], completion_mask [N, T-1], problem [N], correct and formatted [N]
    (the rule rewards), and the tokens sampling read and wrote (prompt, generated)."""
    s = c.samples
    sampling = sampler.SamplingConfig(max_new_tokens=s.max_new_tokens,
                                      num_samples=s.per_problem, temperature=s.temperature)
    length = -(-(s.max_prompt_tokens + s.max_new_tokens) // 16) * 16
    out = {k: [] for k in ("tokens", "completion_mask", "problem", "correct", "format")}
    prompt_tokens = generated = 0
    for j, start in enumerate(range(0, len(problems), 64)):
        chunk = problems[start:start + 64]
        roll = evaluation.sample_completions(
            params, cfg, tok, [prompts.render(c.task.template, p.question) for p in chunk],
            jax.random.fold_in(key, j), sampling, length=length, shard=shard).to_numpy()
        if int(roll.prompt_lengths.max()) > s.max_prompt_tokens:
            raise ValueError(f"a prompt of {int(roll.prompt_lengths.max())} tokens exceeds "
                             f"config.samples.max_prompt_tokens={s.max_prompt_tokens}")
        scores = evaluation.score_completions(chunk, roll.texts(tok), None)
        out["tokens"].append(roll.tokens)
        out["completion_mask"].append(roll.completion_mask)
        out["problem"].append(np.repeat(np.arange(start, start + len(chunk)), s.per_problem))
        out["correct"].append(scores["correct"].reshape(-1))
        out["format"].append(scores["format"].reshape(-1))
        prompt_tokens += int(roll.prompt_lengths.sum())
        generated += int(roll.lengths.sum())
    data = {k: np.concatenate(v) for k, v in out.items()}
    data.update(prompt_tokens=prompt_tokens, generated_tokens=generated)
    return data


def accepted_rows(data: dict, keep: int) -> np.ndarray:
    """Rejection sampling: indices of the samples that are correct and formatted, at most
    `keep` distinct ones per problem."""
    rows, seen = [], {}
    for i in np.flatnonzero((data["correct"] == 1) & (data["format"] == 1)):
        p = int(data["problem"][i])
        key = data["tokens"][i].tobytes()
        kept = seen.setdefault(p, set())
        if len(kept) < keep and key not in kept:
            kept.add(key)
            rows.append(i)
    return np.asarray(rows, np.int64)


def _stored_samples(ctx) -> dict:
    path = os.path.join(ctx.workdir, "teacher_samples.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            return {k: (f[k].item() if f[k].ndim == 0 else f[k]) for k in f.files}
    t = time.time()
    c = ctx.c
    problems = pretrain.load_problems(c, "train", c.samples.num_problems, seed=c.seed + 2)
    log.info("teacher samples: %d train problems x %d", len(problems), c.samples.per_problem)
    data = teacher_samples(ctx.teacher_params, ctx.teacher_cfg, ctx.tok, problems,
                           jax.random.fold_in(ctx.key, 7), c, ctx.shard)
    data["seconds"] = np.float64(time.time() - t)
    np.savez(path + ".tmp.npz", **data)
    os.replace(path + ".tmp.npz", path)
    return _stored_samples(ctx)


# ----------------------------------------------------------------------------- evaluation

class Context:
    """What every method shares: config, models, tokenizer, problems, keys, the writer."""

    def __init__(self, c, workdir, cfg, tok, base_params, teacher_cfg, teacher_params, writer,
                 mesh, show_progress):
        self.c, self.workdir, self.cfg, self.tok = c, workdir, cfg, tok
        self.base_params, self.writer, self.mesh = base_params, writer, mesh
        self.teacher_cfg, self.teacher_params = teacher_cfg, teacher_params
        self.show_progress = show_progress
        self.shard = None if mesh is None else sharding.make_shard_fn(mesh)
        self.eval_problems = pretrain.load_problems(c, "test", c.eval.num_problems,
                                                    seed=c.seed + 1)
        self.key = jax.random.key(c.seed + 5151)
        self.eval_seconds = 0.0

    def greedy(self, params, cfg=None) -> dict:
        t = time.time()
        r = evaluation.evaluate(params, cfg or self.cfg, self.tok, self.eval_problems,
                                jax.random.fold_in(self.key, 1), num_samples=1, temperature=0.0,
                                template=self.c.task.template,
                                max_new_tokens=self.c.samples.max_new_tokens, shard=self.shard)
        self.eval_seconds += time.time() - t
        return r

    def heldout(self, params, cfg=None) -> dict:
        """Greedy and sampled held-out results (accuracy, interval, per problem)."""
        g = self.greedy(params, cfg)
        s = evaluation.evaluate(params, cfg or self.cfg, self.tok, self.eval_problems,
                                jax.random.fold_in(self.key, 2),
                                num_samples=self.c.eval.num_samples,
                                temperature=self.c.eval.temperature,
                                template=self.c.task.template,
                                max_new_tokens=self.c.samples.max_new_tokens, shard=self.shard)
        return {"greedy_accuracy": g["accuracy"], "greedy_accuracy_ci": g["accuracy_ci"],
                "accuracy": s["accuracy"], "accuracy_ci": s["accuracy_ci"],
                "format_rate": s["format_rate"], "mean_length": s["mean_length"],
                "per_problem_greedy": g["per_problem"], "per_problem_sampled": s["per_problem"],
                "greedy_examples": [list(e) for e in g["examples"][:2]]}

    def eval_every(self, steps: int) -> int:
        n = self.c.eval.curve_points
        return max(1, steps // (n + 1)) if n else 0

    def curve_fn(self):
        """evaluate_fn of the loops: greedy held-out accuracy (its time kept apart)."""
        return lambda params, step: {"greedy_accuracy": self.greedy(params)["accuracy"]}


def _loop(c, section, seed_offset: int) -> train.LoopConfig:
    s = c[section]
    return train.LoopConfig(steps=s.steps, learning_rate=s.learning_rate,
                            warmup_steps=s.warmup_steps, schedule="constant",
                            checkpoint_every=min(c.checkpoint_every, s.steps),
                            keep_checkpoints=c.keep_checkpoints,
                            seed=c.seed * 1000 + seed_offset)


def _curve(ctx, stage: str, start_flops: float, per_step) -> list[list[float]]:
    """[[flops, greedy accuracy], ...] from a stage's logged evaluations; per_step(step) is the
    cumulative FLOPs after `step` steps (beyond start_flops)."""
    rows = read_metrics(os.path.join(ctx.workdir, "metrics.jsonl"), stage)
    return [[start_flops + per_step(r["step"]), r["eval_greedy_accuracy"]] for r in rows
            if isinstance(r.get("eval_greedy_accuracy"), (int, float))]


# ----------------------------------------------------------------------------- methods

def _copy(params):
    return jax.tree.map(jnp.copy, params)


def method_grpo(ctx) -> tuple[object, dict]:
    c, tok = ctx.c, ctx.tok
    g = c.grpo
    grpo_cfg = grpo.GRPOConfig(num_generations=g.num_generations, beta=g.beta,
                               epsilon_low=g.epsilon_low, epsilon_high=g.epsilon_high,
                               grad_accum=g.grad_accum, max_len=c.samples.max_new_tokens)
    rollout = train.RolloutConfig(
        prompts_per_step=g.prompts_per_step, max_new_tokens=c.samples.max_new_tokens,
        max_prompt_tokens=c.samples.max_prompt_tokens, temperature=g.temperature,
        template=c.task.template, accuracy_weight=g.accuracy_weight,
        format_weight=g.format_weight)
    train_problems, _ = _train_problems(c, g.prompts_per_step, salt=1)
    loop = _loop(c, "grpo", 1)
    t = time.time()
    ev0 = ctx.eval_seconds
    params = train.run_grpo(_copy(ctx.base_params), ctx.cfg, tok,
                            lambda step, r: train_problems(step), loop, rollout, grpo_cfg,
                            os.path.join(ctx.workdir, "grpo", "ckpt"), stage="grpo",
                            writer=ctx.writer, evaluate_fn=ctx.curve_fn(),
                            eval_every=ctx.eval_every(g.steps), mesh=ctx.mesh,
                            show_progress=ctx.show_progress)
    seconds = time.time() - t - (ctx.eval_seconds - ev0)
    f = flops_per_token(ctx.cfg)
    B, T = g.prompts_per_step * g.num_generations, train.rollout_length(rollout)
    rows = {r["step"]: r for r in read_metrics(os.path.join(ctx.workdir, "metrics.jsonl"),
                                               "grpo") if "generated_tokens" in r}
    update = (3.0 + (1.0 if g.beta > 0 else 0.0)) * f * B * T

    def step_flops(s):   # the s-th step (1-based)
        sample = f * (g.num_generations * _prompt_tokens(tok, c.task.template,
                                                          train_problems(s - 1))
                      + rows.get(s, {}).get("generated_tokens", B * c.samples.max_new_tokens))
        return sample + update
    cumulative = np.cumsum([step_flops(s) for s in range(1, g.steps + 1)])
    curve = _curve(ctx, "grpo", 0.0, lambda s: float(cumulative[s - 1]) if s else 0.0)
    return params, {"train_flops": float(cumulative[-1]), "train_seconds": seconds,
                    "steps": g.steps, "curve": curve}


def _train_problems(c, per_step: int, salt: int):
    """(fn(step) -> problems, pool or None): a step's train problems, pure in (seed, step)."""
    if c.task.name in tasks.TASK_NAMES:
        def fn(step):
            return tasks.generate(c.task.name, c.seed * 1_000_003 + step * 97 + salt * 7919,
                                  per_step, split="train", **pretrain.difficulty(c))
        return fn, None
    pool = pretrain.load_problems(c, "train", 0, c.seed)

    def fn(step):
        rng = np.random.default_rng((c.seed, step, salt))
        return [pool[i] for i in rng.integers(0, len(pool), per_step)]
    return fn, pool


def _sampling_flops(ctx, data) -> float:
    return flops_per_token(ctx.teacher_cfg) * (data["prompt_tokens"] + data["generated_tokens"])


def method_sequence(ctx) -> tuple[object, dict]:
    c = ctx.c
    data = _stored_samples(ctx)
    rows = accepted_rows(data, c.samples.keep_per_problem)
    if len(rows) == 0:   # nothing to fine-tune on: the student base, at the sampling's cost
        log.warning("sequence: the rule rewards accepted none of the teacher's %d samples; "
                    "the student base stands for this method", len(data["correct"]))
        start = _sampling_flops(ctx, data)
        return ctx.base_params, {"train_flops": start, "train_seconds": float(data["seconds"]),
                                 "steps": 0, "train_examples": 0,
                                 "teacher_samples": int(len(data["correct"])),
                                 "teacher_sample_accuracy": float(np.mean(data["correct"])),
                                 "curve": [[start, None]]}
    tokens = data["tokens"][rows]
    # Packed to the longest accepted sample (rounded up to 8): what SFT processes.
    used = int(np.max(np.flatnonzero(data["completion_mask"][rows].any(axis=0)))) + 2
    T = min(tokens.shape[1], -(-used // 8) * 8)
    tokens = tokens[:, :T]
    loss_mask = np.zeros(tokens.shape, np.float32)
    loss_mask[:, 1:] = data["completion_mask"][rows][:, :T - 1]
    loop = _loop(c, "sequence", 2)
    t = time.time()
    ev0 = ctx.eval_seconds
    params = train.run_sft(_copy(ctx.base_params), ctx.cfg, tokens, loss_mask, loop,
                           os.path.join(ctx.workdir, "sequence", "ckpt"),
                           batch_size=c.sequence.batch_size, stage="sequence", writer=ctx.writer,
                           mesh=ctx.mesh, show_progress=ctx.show_progress,
                           evaluate_fn=ctx.curve_fn(),
                           eval_every=ctx.eval_every(c.sequence.steps))
    seconds = time.time() - t - (ctx.eval_seconds - ev0) + float(data["seconds"])
    start = _sampling_flops(ctx, data)
    per_step = 3.0 * flops_per_token(ctx.cfg) * c.sequence.batch_size * T
    return params, {"train_flops": start + per_step * c.sequence.steps,
                    "train_seconds": seconds, "steps": c.sequence.steps,
                    "train_examples": int(len(rows)),
                    "teacher_samples": int(len(data["correct"])),
                    "teacher_sample_accuracy": float(np.mean(data["correct"])),
                    "curve": [[start, None]] + _curve(ctx, "sequence", start,
                                                      lambda s: per_step * s)}


def method_token(ctx) -> tuple[object, dict]:
    c = ctx.c
    data = _stored_samples(ctx)
    dcfg = distill.DistillConfig(loss="forward", temperature=c.token.temperature,
                                 alpha=c.token.alpha, chunk=c.token.chunk)
    loop = _loop(c, "token", 3)
    t = time.time()
    ev0 = ctx.eval_seconds
    params = train.run_token_distill(
        _copy(ctx.base_params), ctx.cfg, ctx.teacher_params, ctx.teacher_cfg, data["tokens"],
        data["completion_mask"], loop, dcfg, os.path.join(ctx.workdir, "token", "ckpt"),
        batch_size=c.token.batch_size, writer=ctx.writer, mesh=ctx.mesh,
        show_progress=ctx.show_progress, evaluate_fn=ctx.curve_fn(),
        eval_every=ctx.eval_every(c.token.steps))
    seconds = time.time() - t - (ctx.eval_seconds - ev0) + float(data["seconds"])
    start = _sampling_flops(ctx, data)
    T = data["tokens"].shape[1]
    per_step = (3.0 * flops_per_token(ctx.cfg) + flops_per_token(ctx.teacher_cfg)) \
        * c.token.batch_size * T
    return params, {"train_flops": start + per_step * c.token.steps, "train_seconds": seconds,
                    "steps": c.token.steps, "teacher_samples": int(len(data["correct"])),
                    "curve": [[start, None]] + _curve(ctx, "token", start,
                                                      lambda s: per_step * s)}


def method_on_policy(ctx) -> tuple[object, dict]:
    c, o = ctx.c, ctx.c.on_policy
    dcfg = distill.DistillConfig(loss=o.loss, temperature=o.temperature, beta=o.beta,
                                 chunk=o.chunk)
    rollout = train.RolloutConfig(prompts_per_step=o.prompts_per_step,
                                  max_new_tokens=c.samples.max_new_tokens,
                                  max_prompt_tokens=c.samples.max_prompt_tokens,
                                  temperature=o.sample_temperature, template=c.task.template)
    train_problems, _ = _train_problems(c, o.prompts_per_step, salt=4)
    loop = _loop(c, "on_policy", 4)
    t = time.time()
    ev0 = ctx.eval_seconds
    params = train.run_on_policy_distill(
        _copy(ctx.base_params), ctx.cfg, ctx.teacher_params, ctx.teacher_cfg, ctx.tok,
        train_problems, loop, rollout, dcfg, o.num_generations,
        os.path.join(ctx.workdir, "on_policy", "ckpt"), writer=ctx.writer,
        evaluate_fn=ctx.curve_fn(), eval_every=ctx.eval_every(o.steps), mesh=ctx.mesh,
        show_progress=ctx.show_progress)
    seconds = time.time() - t - (ctx.eval_seconds - ev0)
    fs, ft = flops_per_token(ctx.cfg), flops_per_token(ctx.teacher_cfg)
    rows = sorted((r for r in read_metrics(os.path.join(ctx.workdir, "metrics.jsonl"),
                                           "on_policy") if "update_tokens" in r),
                  key=lambda r: r["step"])
    per = [fs * (r["prompt_tokens"] + r["generated_tokens"]) + (3 * fs + ft) * r["update_tokens"]
           for r in rows]
    cumulative = np.cumsum(per) if per else np.zeros(1)
    curve = _curve(ctx, "on_policy", 0.0,
                   lambda s: float(cumulative[min(s, len(cumulative)) - 1]) if s else 0.0)
    return params, {"train_flops": float(cumulative[-1]), "train_seconds": seconds,
                    "steps": o.steps, "curve": curve}


def teacher_train_flops(c, teacher_cfg) -> Optional[float]:
    """The tiny teacher's GRPO compute from its run's metrics (update passes 8 N per packed
    position: policy 6 N, reference 2 N; sampling 2 N per generated token, prompts left out),
    or None when unknown."""
    if not c.teacher.r1_zero_workdir:
        return None
    path = os.path.join(c.teacher.r1_zero_workdir, "metrics.jsonl")
    prov = os.path.join(c.teacher.r1_zero_workdir, "results.json")
    if not os.path.exists(path) or not os.path.exists(prov):
        return None
    rows = [r for r in read_metrics(path, "grpo") if "generated_tokens" in r]
    f = flops_per_token(teacher_cfg)
    r1 = _r1_zero_shapes()
    return float(sum(f * r["generated_tokens"] + 4 * f * r1 for r in rows)) if rows else None


def _r1_zero_shapes() -> int:
    """B x T of an R1-Zero tiny GRPO update (16 prompts x 8 samples x 128 positions)."""
    return 16 * 8 * 128


# ----------------------------------------------------------------------------- the run

def run_method(ctx, name: str) -> dict:
    """One method's record (trained, evaluated), read back when it already finished."""
    path = os.path.join(ctx.workdir, name, "record.json")
    if os.path.exists(path):
        log.info("%s: reusing %s", name, path)
        return read_json(path)
    log.info("%s: starting", name)
    if name == "student_base":
        params, record = ctx.base_params, {"train_flops": 0.0, "train_seconds": 0.0,
                                           "steps": 0}
        cfg = ctx.cfg
    elif name == "teacher":
        params, cfg = ctx.teacher_params, ctx.teacher_cfg
        record = {"train_flops": teacher_train_flops(ctx.c, ctx.teacher_cfg),
                  "train_seconds": None, "steps": None,
                  "note": "the teacher's own training (R1-Zero GRPO from its base), not "
                          "charged to the student methods"}
    else:
        params, record = {"grpo": method_grpo, "sequence": method_sequence,
                          "token": method_token, "on_policy": method_on_policy}[name](ctx)
        cfg = ctx.cfg
    record.update(ctx.heldout(params, cfg))
    record["params"] = cfg.num_params()
    record["train_seconds"] = None if record["train_seconds"] is None else \
        round(record["train_seconds"], 1)
    write_json(path, record)
    return record


def matched_compute(methods: dict) -> dict:
    """Against GRPO: each distillation method's greedy accuracy at the last curve point within
    GRPO's train_flops, and the FLOPs (and ratio to GRPO's) at which its curve first reaches
    GRPO's final greedy accuracy (None: not within its run)."""
    if "grpo" not in methods:
        return {}
    g = methods["grpo"]
    target, budget = g["greedy_accuracy"], g["train_flops"]
    out = {"grpo_greedy_accuracy": target, "grpo_train_flops": budget}
    base = methods.get("student_base", {}).get("greedy_accuracy")
    for name in DISTILLED:
        if name not in methods:
            continue
        m = methods[name]
        pts = [(f, a) for f, a in m["curve"] if a is not None]
        pts.append((m["train_flops"], m["greedy_accuracy"]))
        within = [a for f, a in pts if f <= budget]
        reach = next((f for f, a in pts if a >= target), None)
        out[name] = {
            "greedy_accuracy_at_grpo_flops": within[-1] if within else base,
            "flops_to_reach_grpo": reach,
            "flops_ratio_to_grpo": None if reach is None else reach / budget,
        }
    return out


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the experiment of config `c` in `workdir`; returns (and writes) the results."""
    check_config(c)
    t_start = time.time()
    mesh = pretrain.make_mesh(c)
    os.makedirs(workdir, exist_ok=True)
    writer = MetricWriter(workdir)
    cfg, tok, base_params = pretrain.base_model(c, workdir, writer, show_progress, mesh)
    teacher_cfg, teacher_params = load_teacher(c, tok, mesh)
    if teacher_cfg.vocab_size != cfg.vocab_size:
        raise ValueError(f"teacher vocab_size {teacher_cfg.vocab_size} != student's "
                         f"{cfg.vocab_size}: they must share a tokenizer")
    ctx = Context(c, workdir, cfg, tok, base_params, teacher_cfg, teacher_params, writer, mesh,
                  show_progress)
    order = ["student_base"] + [m for m in METHODS[1:] if m in c.methods]
    methods = {name: run_method(ctx, name) for name in order}
    base_greedy = methods["student_base"]["greedy_accuracy"]
    for m in methods.values():   # a curve starts at the student base (after any sampling)
        if m.get("curve") is not None:
            m["curve"] = [[f, base_greedy if a is None else a] for f, a in m["curve"]]
    writer.close()
    paired = {}
    for name, m in methods.items():
        for ref in ("student_base", "grpo"):
            if ref in methods and ref != name:
                r = methods[ref]
                paired[f"{name}_minus_{ref}"] = {
                    "greedy": list(stats.paired_difference(m["per_problem_greedy"],
                                                           r["per_problem_greedy"])),
                    "sampled": list(stats.paired_difference(m["per_problem_sampled"],
                                                            r["per_problem_sampled"]))}
    results = {
        "methods": {n: {k: v for k, v in m.items() if not k.startswith("per_problem")}
                    for n, m in methods.items()},
        "paired_differences": paired,
        "matched_compute": matched_compute(methods),
        "per_problem": {n: {"greedy": m["per_problem_greedy"],
                            "sampled": m["per_problem_sampled"]} for n, m in methods.items()},
        "student_params": cfg.num_params(), "teacher_params": teacher_cfg.num_params(),
        "num_eval_problems": len(ctx.eval_problems),
        "eval_samples_per_problem": c.eval.num_samples, "eval_temperature": c.eval.temperature,
        "seconds": round(time.time() - t_start, 1),
    }
    write_json(os.path.join(workdir, "results.json"), results)
    plot_flops(results, os.path.join(workdir, "distill_flops.png"))
    return results


def plot_flops(results: dict, path: str) -> None:
    """Greedy held-out accuracy against training FLOPs, one line per trained method; the
    student base and the teacher as horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    methods = results["methods"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    base = methods["student_base"]["greedy_accuracy"]
    for name in ("grpo",) + DISTILLED:
        if name not in methods:
            continue
        m = methods[name]
        pts = [(f, a) for f, a in m["curve"] if f > 0] + [(m["train_flops"],
                                                            m["greedy_accuracy"])]
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, marker="o", label=name)
    ax.axhline(base, color="grey", ls="--", label="student base")
    if "teacher" in methods:
        ax.axhline(methods["teacher"]["greedy_accuracy"], color="black", ls=":",
                   label="teacher")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (model FLOPs, teacher samples and forward passes included)")
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Distillation vs RL on the student")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_table(results: dict) -> str:
    """Per method: greedy and sampled accuracy with intervals, FLOPs, seconds, and the paired
    differences with the student base and with GRPO (greedy)."""
    def ci(x):
        return f"[{x[0]:.2f}, {x[1]:.2f}]"

    def diff(key):
        d = results["paired_differences"].get(key, {}).get("greedy")
        return f"{d[0]:+.2f} [{d[1]:+.2f}, {d[2]:+.2f}]" if d else ""

    lines = [f"{results['num_eval_problems']} held-out problems; greedy, and "
             f"{results['eval_samples_per_problem']} samples each at temperature "
             f"{results['eval_temperature']}",
             f"{'method':13s}{'greedy':19s}{'sampled':19s}{'train FLOPs':>12s}{'seconds':>9s}"
             f"  {'- student base (greedy)':24s}- grpo (greedy)"]
    for name, m in results["methods"].items():
        flops = "" if m["train_flops"] is None else f"{m['train_flops']:.2e}"
        secs = "" if m["train_seconds"] is None else f"{m['train_seconds']:.0f}"
        lines.append(f"{name:13s}{m['greedy_accuracy']:.2f} {ci(m['greedy_accuracy_ci']):14s}"
                     f"{m['accuracy']:.2f} {ci(m['accuracy_ci']):14s}{flops:>12s}{secs:>9s}  "
                     f"{diff(f'{name}_minus_student_base'):24s}{diff(f'{name}_minus_grpo')}")
    mc = results.get("matched_compute", {})
    for name in DISTILLED:
        if name in mc:
            r = mc[name]
            reach = ("not reached" if r["flops_to_reach_grpo"] is None else
                     f"{r['flops_to_reach_grpo']:.2e} ({r['flops_ratio_to_grpo']:.2f}x GRPO's)")
            lines.append(f"{name}: greedy {r['greedy_accuracy_at_grpo_flops']:.2f} at GRPO's "
                         f"FLOPs; reaches GRPO's greedy accuracy at {reach}")
    return "\n".join(lines)
