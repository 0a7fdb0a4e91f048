"""Training loops: SFT (base pretraining, cold start) and GRPO (R1-Zero), with checkpoints,
exact resume, NaN guards, metrics, plots and progress.

A loop step is deterministic in (seed, step): the batch it draws and the PRNG key it uses are
derived from them, so a run that stops (SIGTERM, Ctrl-C, a crash) and resumes from its last
checkpoint reaches the same parameters as one that never stopped.
"""
from __future__ import annotations

import contextlib
import functools
import dataclasses
import signal
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from r1jax import checkpoint as ckpt_lib
from r1jax import sharding as sharding_lib
from r1jax import evaluation, grpo, prompts, rewards, sft, tasks
from r1jax.model import ModelConfig
from r1jax.reporting import MetricWriter
from r1jax.train_state import TrainState, make_optimizer


class NonFiniteError(FloatingPointError):
    """Loss or gradients became NaN/Inf; the last good checkpoint is left intact."""


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint of the last completed step was written."""


@contextlib.contextmanager
def _preemption_flag():
    """Turns SIGTERM / SIGINT into a flag that the loop checks between steps."""
    flag = {"stop": False}
    previous = {}

    def handler(signum, frame):
        flag["stop"] = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread (e.g. inside some notebook runners)
            pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _check_finite(step: int, metrics: dict) -> None:
    for name in ("loss", "grad_norm"):
        if name in metrics and not np.isfinite(metrics[name]):
            raise NonFiniteError(f"{name} is {metrics[name]} at step {step}; stopping. The "
                                 "last good checkpoint is intact.")


def _fetch(metrics: dict) -> dict:
    return {k: float(v) for k, v in jax.device_get(metrics).items()}


# ----------------------------------------------------------------------------- SFT

def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], length: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(prompt, completion) pairs -> tokens [N, length] and loss_mask [N, length] (1 on the
    completion and its EOS). Pairs longer than `length` fail with their index."""
    tokens = np.full((len(pairs), length), tokenizer.pad_id, np.int32)
    mask = np.zeros((len(pairs), length), np.float32)
    for i, (prompt, completion) in enumerate(pairs):
        p = tokenizer.encode(prompt)
        c = tokenizer.encode(completion) + [tokenizer.eos_id]
        if len(p) + len(c) > length:
            raise ValueError(f"example {i} has {len(p) + len(c)} tokens, more than the sequence "
                             f"length {length}: {prompt[:60]!r}")
        tokens[i, :len(p) + len(c)] = p + c
        mask[i, len(p):len(p) + len(c)] = 1.0
    return tokens, mask


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """What every loop shares: steps, learning rate, checkpoints and logging cadence."""
    steps: int
    learning_rate: float
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    schedule: str = "cosine"
    checkpoint_every: int = 50
    keep_checkpoints: int = 2
    log_every: int = 10
    seed: int = 0


def _optimizer(loop: LoopConfig):
    return make_optimizer(loop.learning_rate, weight_decay=loop.weight_decay,
                          grad_clip=loop.grad_clip, warmup_steps=min(loop.warmup_steps,
                                                                     loop.steps),
                          total_steps=max(loop.steps, 1), schedule=loop.schedule)


def _place(state: TrainState, cfg: ModelConfig, mesh):
    """Lays the state out on `mesh` by the sharding rules; returns (state, state shardings,
    a function giving a batch dict's shardings). Without a mesh: (state, None, None)."""
    if mesh is None:
        return state, None, None
    p_sh = sharding_lib.param_shardings(cfg, mesh)
    state_sh = TrainState(params=p_sh, step=NamedSharding(mesh, PartitionSpec()),
                          opt_state=sharding_lib.opt_state_shardings(state.opt_state,
                                                                     state.params, p_sh))

    def batch_sh(batch):
        return {k: sharding_lib.batch_sharding(mesh, ndim=np.ndim(v), shape=np.shape(v))
                for k, v in batch.items()}
    return jax.device_put(state, state_sh), state_sh, batch_sh


def _restore_or(manager: ckpt_lib.CheckpointManager, state: TrainState):
    """(state, first step) from the newest readable checkpoint, or (state, 0)."""
    if manager.latest_step() is None:
        return state, 0
    r = manager.restore(target={"params": state.params, "opt_state": state.opt_state})
    return state.replace(params=r.params, opt_state=r.opt_state,
                         step=jnp.asarray(r.step, jnp.int32)), r.step


def _save(manager: ckpt_lib.CheckpointManager, step: int, state: TrainState, stage: str,
          force: bool = False) -> None:
    if step in manager.all_steps():  # the final save of a run that already saved this step
        return
    manager.save(step, params=state.params, opt_state=state.opt_state,
                 extra={"stage": stage}, force=force)


def run_sft(params, cfg: ModelConfig, tokens: np.ndarray, loss_mask: np.ndarray,
            loop: LoopConfig, workdir: str, *, batch_size: int, stage: str = "sft",
            writer: Optional[MetricWriter] = None, mesh=None, show_progress: bool = True):
    """Masked next-token SFT on fixed examples; batch at step s is drawn from (seed, s).

    Checkpoints to `workdir` every `loop.checkpoint_every` steps and when preempted; returns
    the final params. Resumes from `workdir` when it holds a checkpoint. With a `mesh`, the
    state and batches are sharded by the rules of `r1jax.sharding`.
    """
    tx = _optimizer(loop)
    state, state_sh, batch_sh = _place(TrainState.create(params, tx), cfg, mesh)
    shard = None if mesh is None else sharding_lib.make_shard_fn(mesh)
    step_fn = sft.make_sft_step(
        cfg, tx, shard=shard, state_sharding=state_sh,
        batch_sharding=None if mesh is None else batch_sh({"tokens": tokens[:batch_size],
                                                            "loss_mask": loss_mask[:batch_size]}))
    manager = ckpt_lib.CheckpointManager(workdir, max_to_keep=loop.keep_checkpoints)
    state, start = _restore_or(manager, state)
    bar = tqdm(range(start, loop.steps), desc=stage, disable=not show_progress, initial=start,
               total=loop.steps)
    pending = None
    # Closing the manager waits for pending saves, also when an error ends the loop.
    with manager, _preemption_flag() as flag:
        for step in bar:
            rng = np.random.default_rng((loop.seed, step))
            idx = rng.integers(0, len(tokens), batch_size)
            state, metrics = step_fn(state, {"tokens": tokens[idx], "loss_mask": loss_mask[idx]})
            # Read the previous step's metrics after dispatching this one (no stall).
            if pending is not None:
                _log_step(*pending, loop, writer, bar, stage)
            pending = (step, metrics)
            if (step + 1) % loop.checkpoint_every == 0 or flag["stop"]:
                _log_step(*pending, loop, writer, bar, stage, force=True)
                pending = None
                _save(manager, step + 1, state, stage)
                if flag["stop"]:
                    manager.wait()
                    raise Preempted(f"{stage} preempted after step {step + 1}; checkpoint saved")
        if pending is not None:
            _log_step(*pending, loop, writer, bar, stage, force=True)
        manager.wait()
        _save(manager, loop.steps, state, stage, force=True)
    return state.params


def _log_step(step, metrics, loop, writer, bar, stage, force=False):
    metrics = _fetch(metrics)
    _check_finite(step, metrics)
    if force or step % loop.log_every == 0:
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if writer is not None:
            writer.write(step, metrics, stage)


# ----------------------------------------------------------------------------- GRPO

@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How the GRPO loop samples and rewards rollouts."""
    prompts_per_step: int = 16          # P prompts per step (B = P * G rollouts)
    max_new_tokens: int = 96
    max_prompt_tokens: int = 64         # prompts are right-padded to this (no recompiles)
    temperature: float = 1.0
    template: str = "r1_zero_short"
    accuracy_weight: float = 1.0
    format_weight: float = 0.5
    language_weight: float = 0.0        # language-consistency reward (R1 stage 2)
    language: str = "en"
    max_refills: int = 4                # dynamic sampling: extra rollout rounds to refill


def rule_reward_matrix(problems, texts, rollout: RolloutConfig) -> dict[str, np.ndarray]:
    """Rule rewards [P, G]: accuracy, format, language, and their weighted sum "reward"."""
    scores = evaluation.score_completions(
        problems, texts, rollout.language if rollout.language_weight else None)
    total = rollout.accuracy_weight * scores["correct"] + rollout.format_weight * scores["format"]
    if rollout.language_weight:
        total = total + rollout.language_weight * scores["language"]
    return dict(scores, reward=total.astype(np.float32))


def build_grpo_batch(roll: evaluation.Rollouts, advantages_PG: np.ndarray, length: int,
                     pad_id: int, eos_id: int) -> dict[str, np.ndarray]:
    """Rollouts -> the GRPO step's batch (see `r1jax.grpo`): full sequences [B, length] with
    the completion mask and the sampler's log-probs at target positions (B = P * G)."""
    toks, lens, lps = roll.out.tokens, roll.out.lengths, roll.out.logprobs
    P, G, M = toks.shape
    B = P * G
    tokens = np.full((B, length), pad_id, np.int32)
    mask = np.zeros((B, length - 1), np.float32)
    old = np.zeros((B, length - 1), np.float32)
    truncated = np.zeros((B,), bool)
    for p, prompt in enumerate(roll.prompt_ids):
        n_p = len(prompt)
        for g in range(G):
            b = p * G + g
            n_c = int(lens[p, g])
            tokens[b, :n_p] = prompt
            tokens[b, n_p:n_p + n_c] = toks[p, g, :n_c]
            mask[b, n_p - 1:n_p - 1 + n_c] = 1.0
            old[b, n_p - 1:n_p - 1 + n_c] = lps[p, g, :n_c]
            truncated[b] = n_c == M and toks[p, g, n_c - 1] != eos_id
    return {"tokens": tokens, "completion_mask": mask, "old_logprobs": old,
            "advantages": advantages_PG.reshape(B).astype(np.float32), "truncated": truncated}


def collect_rollouts(params, cfg, tokenizer, draw_problems: Callable[[int], list], key,
                     rollout: RolloutConfig, grpo_cfg: grpo.GRPOConfig, shard=None,
                     reward_fn: Optional[Callable] = None):
    """Samples G completions for P problems and rewards them; with dynamic sampling, groups
    whose rewards are all equal are dropped and the batch refilled from fresh problems (up to
    `max_refills` rounds; then the best available groups are repeated to keep the shape).

    `draw_problems(round)` returns P problems for refill round `round`; `reward_fn(problems,
    texts) -> {"reward": [P, G], ...}` defaults to the rule rewards of `rule_reward_matrix`.
    Returns (problems, Rollouts, reward dict [P, G], stats).
    """
    from r1jax import sampler as sampler_lib
    sampling = sampler_lib.SamplingConfig(max_new_tokens=rollout.max_new_tokens,
                                          num_samples=grpo_cfg.num_generations,
                                          temperature=rollout.temperature)
    kept_probs, kept_ids, kept_out, kept_rewards, generated = [], [], [], [], 0
    P = rollout.prompts_per_step
    for round_ in range(1 + (rollout.max_refills if grpo_cfg.dynamic_sampling else 0)):
        probs = draw_problems(round_)
        texts_in = [prompts.render(rollout.template, p.question) for p in probs]
        roll = evaluation.sample_completions(params, cfg, tokenizer, texts_in,
                                             jax.random.fold_in(key, round_), sampling,
                                             shard=shard)
        for ids in roll.prompt_ids:
            if len(ids) > rollout.max_prompt_tokens:
                raise ValueError(f"prompt of {len(ids)} tokens exceeds "
                                 f"rollout.max_prompt_tokens={rollout.max_prompt_tokens}")
        generated += int(roll.out.lengths.sum())
        rew = (reward_fn or functools.partial(rule_reward_matrix, rollout=rollout))(
            probs, roll.texts)
        keep = np.ones(len(probs), bool)
        if grpo_cfg.dynamic_sampling:
            keep = np.asarray(grpo.dynamic_sampling_filter(jnp.asarray(rew["reward"])))
        for i in np.flatnonzero(keep):
            kept_probs.append(probs[i])
            kept_ids.append(roll.prompt_ids[i])
            kept_out.append(tuple(np.asarray(x)[i] for x in roll.out))
            kept_rewards.append({k: v[i] for k, v in rew.items()})
        if len(kept_probs) >= P:
            break
        if not grpo_cfg.dynamic_sampling:
            break
    num_kept = len(kept_probs)
    if num_kept == 0:  # every group uniform: fall back to the last round (zero advantages)
        return probs, roll, rew, {"groups_kept": 0.0, "generated_tokens": generated}
    while len(kept_probs) < P:  # repeat kept groups to keep the batch shape fixed
        i = len(kept_probs) % num_kept
        kept_probs.append(kept_probs[i]); kept_ids.append(kept_ids[i])
        kept_out.append(kept_out[i]); kept_rewards.append(kept_rewards[i])
    kept_probs, kept_ids = kept_probs[:P], kept_ids[:P]
    out = sampler_lib.SampleOutput(*(np.stack(x) for x in zip(*kept_out[:P])))
    rew = {k: np.stack([r[k] for r in kept_rewards[:P]]) for k in kept_rewards[0]}
    roll = evaluation.Rollouts(kept_ids, out, [[""] * out.tokens.shape[1]] * P)
    return kept_probs, roll, rew, {"groups_kept": float(num_kept),
                                   "generated_tokens": float(generated)}


def run_grpo(params, cfg: ModelConfig, tokenizer, train_problems: Callable[[int, int], list],
             loop: LoopConfig, rollout: RolloutConfig, grpo_cfg: grpo.GRPOConfig, workdir: str,
             *, stage: str = "grpo", writer: Optional[MetricWriter] = None,
             evaluate_fn: Optional[Callable[[object, int], dict]] = None, eval_every: int = 0,
             reward_fn: Optional[Callable] = None, mesh=None, show_progress: bool = True):
    """GRPO from `params` (also the frozen reference policy when beta > 0).

    train_problems(step, round) returns the P problems of a step's refill round, a pure
    function of its arguments (so resume is exact). evaluate_fn(params, step) -> metrics is
    called every `eval_every` steps; reward_fn as in `collect_rollouts`. Returns the final
    params.
    """
    tx = _optimizer(loop)
    state, state_sh, batch_sh = _place(TrainState.create(params, tx), cfg, mesh)
    shard = None if mesh is None else sharding_lib.make_shard_fn(mesh)
    # A copy: the policy's buffers are donated to the step and must not alias the reference.
    ref_params = jax.tree.map(jnp.copy, state.params) if grpo_cfg.beta > 0 else None
    length = -(-(rollout.max_prompt_tokens + rollout.max_new_tokens) // 16) * 16
    B = rollout.prompts_per_step * grpo_cfg.num_generations
    example = {"tokens": np.zeros((B, length)), "completion_mask": np.zeros((B, length - 1)),
               "old_logprobs": np.zeros((B, length - 1)), "advantages": np.zeros((B,))}
    if grpo_cfg.overlong_filter:
        example["truncated"] = np.zeros((B,), bool)
    step_fn = grpo.make_grpo_step(cfg, tx, grpo_cfg, shard=shard, state_sharding=state_sh,
                                  batch_sharding=None if mesh is None else batch_sh(example))
    manager = ckpt_lib.CheckpointManager(workdir, max_to_keep=loop.keep_checkpoints)
    state, start = _restore_or(manager, state)
    base_key = jax.random.key(loop.seed)
    bar = tqdm(range(start, loop.steps), desc=stage, disable=not show_progress, initial=start,
               total=loop.steps)
    with manager, _preemption_flag() as flag:
        for step in bar:
            t0 = time.perf_counter()
            key = jax.random.fold_in(base_key, step)
            probs, roll, rew, stats = collect_rollouts(
                state.params, cfg, tokenizer, lambda r: train_problems(step, r), key, rollout,
                grpo_cfg, shard, reward_fn)
            t_rollout = time.perf_counter() - t0
            adv = np.asarray(grpo.group_advantages(jnp.asarray(rew["reward"]),
                                                   grpo_cfg.advantage_scale))
            batch = build_grpo_batch(roll, adv, length, tokenizer.pad_id, tokenizer.eos_id)
            if not grpo_cfg.overlong_filter:
                batch.pop("truncated")
            for _ in range(grpo_cfg.num_iterations):
                state, metrics = step_fn(state, ref_params, batch)
            metrics = _fetch(metrics)
            _check_finite(step, metrics)
            metrics.update(stats, reward=float(rew["reward"].mean()),
                           response_length=float(roll.out.lengths.mean()),
                           rollout_seconds=t_rollout,
                           step_seconds=time.perf_counter() - t0)
            for name, key_ in (("correct", "accuracy"), ("format", "format_rate"),
                               ("language", "language_consistency")):
                if name in rew:
                    metrics[key_] = float(rew[name].mean())
            if evaluate_fn is not None and eval_every and (step + 1) % eval_every == 0 \
                    and step + 1 < loop.steps:
                metrics.update({f"eval_{k}": v for k, v in evaluate_fn(state.params, step + 1)
                                .items() if isinstance(v, (int, float))})
            if writer is not None:
                writer.write(step + 1, metrics, stage)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}")
            if (step + 1) % loop.checkpoint_every == 0 or flag["stop"]:
                _save(manager, step + 1, state, stage)
                if flag["stop"]:
                    manager.wait()
                    raise Preempted(f"{stage} preempted after step {step + 1}; checkpoint saved")
        manager.wait()
        _save(manager, loop.steps, state, stage, force=True)
    return state.params
