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
import logging
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
from r1jax import distill, evaluation, grpo, prompts, rewards, sft, verifiers
from r1jax import rollout as rollout_lib
from r1jax import sampler as sampler_lib
from r1jax.model import ModelConfig
from r1jax.reporting import MetricWriter
from r1jax.train_state import TrainState, make_optimizer, make_schedule

# Where each loop starts or resumes (INFO; entry points print it, the library stays quiet).
log = logging.getLogger("r1jax")


class NonFiniteError(FloatingPointError):
    """Loss or gradients became NaN/Inf; the last good checkpoint is left intact."""


class Preempted(Exception):
    """SIGTERM/SIGINT arrived; a checkpoint of the last completed step was written. The entry
    points exit with EXIT_PREEMPTED so that a scheduler can tell it from a crash."""


EXIT_PREEMPTED = 75   # EX_TEMPFAIL: checkpointed, not failed; run the same command to resume


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


def _learning_rate(loop: LoopConfig, step: int) -> float:
    """The learning rate the optimizer applies at `step` (logged beside the loss)."""
    return float(make_schedule(loop.learning_rate, min(loop.warmup_steps, loop.steps),
                               max(loop.steps, 1), loop.schedule)(step))


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


def _restore_or(manager: ckpt_lib.CheckpointManager, state: TrainState, stage: str,
                total: int, workdir: str):
    """(state, first step) from the newest readable checkpoint, or (state, 0); logs which."""
    if manager.latest_step() is None:
        log.info("%s: starting (%d steps, checkpoints in %s)", stage, total, workdir)
        return state, 0
    r = manager.restore(target={"params": state.params, "opt_state": state.opt_state})
    if r.step >= total:
        log.info("%s: already complete (step %d), reusing its checkpoint in %s", stage, r.step,
                 workdir)
    else:
        log.info("%s: resuming at step %d of %d from %s", stage, r.step, total, workdir)
    return state.replace(params=r.params, opt_state=r.opt_state,
                         step=jnp.asarray(r.step, jnp.int32)), r.step


def _save(manager: ckpt_lib.CheckpointManager, step: int, state: TrainState, stage: str,
          force: bool = False, model_config: Optional[ModelConfig] = None) -> None:
    """Saves the state; a policy's checkpoint also stores its ModelConfig (for exporters)."""
    if step in manager.all_steps():  # the final save of a run that already saved this step
        return
    manager.save(step, params=state.params, opt_state=state.opt_state,
                 extra={"stage": stage}, model_config=model_config, force=force)


def _resume(state: TrainState, loop: LoopConfig, workdir: str, stage: str,
            show_progress: bool):
    """(checkpoint manager, state restored from `workdir` or as given, progress bar over the
    steps left)."""
    manager = ckpt_lib.CheckpointManager(workdir, max_to_keep=loop.keep_checkpoints)
    state, start = _restore_or(manager, state, stage, loop.steps, workdir)
    bar = tqdm(range(start, loop.steps), desc=stage, disable=not show_progress, initial=start,
               total=loop.steps)
    return manager, state, bar


def _save_or_stop(manager: ckpt_lib.CheckpointManager, step: int, state: TrainState, stage: str,
                  flag: dict, model_config: Optional[ModelConfig]) -> None:
    """Saves step's checkpoint; after SIGTERM/SIGINT (`flag["stop"]`) waits for it and raises
    Preempted."""
    _save(manager, step, state, stage, model_config=model_config)
    if flag["stop"]:
        manager.wait()
        raise Preempted(f"checkpoint saved at {stage} step {step}; run the same command to "
                        "resume")


def _final_save(manager: ckpt_lib.CheckpointManager, steps: int, state: TrainState, stage: str,
                model_config: Optional[ModelConfig]) -> None:
    """The last checkpoint of a loop, once the pending saves are written."""
    manager.wait()
    _save(manager, steps, state, stage, force=True, model_config=model_config)


def length_buckets(loss_mask: np.ndarray, bucket: int) -> list[tuple[np.ndarray, int]]:
    """Examples grouped by length: (member indices, width) per group, where width is the
    members' length (through their last loss position) rounded up to a multiple of `bucket`
    (at most the array's width). Every example is in exactly one group."""
    length = loss_mask.shape[1] - np.argmax(loss_mask[:, ::-1] > 0, axis=1)
    width = np.minimum(-(-length // bucket) * bucket, loss_mask.shape[1])
    return [(np.flatnonzero(width == w), int(w)) for w in np.unique(width)]


def _batch_indices(rng, num_examples: int, batch_size: int, buckets):
    """(indices, width or None) of one step's batch: uniform over all examples, or with
    `buckets` one group drawn in proportion to its size and the batch uniform within it (so
    each example keeps probability batch_size / N per row, and the batch is cut to the group's
    width)."""
    if buckets is None:
        return rng.integers(0, num_examples, batch_size), None
    sizes = np.array([len(m) for m, _ in buckets], np.float64)
    members, width = buckets[rng.choice(len(buckets), p=sizes / sizes.sum())]
    return members[rng.integers(0, len(members), batch_size)], width


def _fixed_example_loop(step_fn, state: TrainState, data: dict[str, np.ndarray],
                        loop: LoopConfig, workdir: str, *, batch_size: int, stage: str,
                        writer: Optional[MetricWriter], show_progress: bool,
                        model_config: Optional[ModelConfig] = None,
                        buckets=None,
                        evaluate_fn: Optional[Callable[[object, int], dict]] = None,
                        eval_every: int = 0) -> TrainState:
    """The loop of SFT and verifier training: `step_fn(state, batch) -> (state, metrics)` on
    batch_size rows of `data` drawn from (seed, step) (from one of `buckets`, see
    `length_buckets`, cut to its width, when given). Checkpoints every
    `loop.checkpoint_every` steps and on SIGTERM/SIGINT (then raises Preempted), resumes from
    `workdir`, stops with NonFiniteError on a NaN/Inf loss (the last good checkpoint intact).
    `evaluate_fn(params, step) -> metrics`, when given, runs every `eval_every` steps (before
    the last) and its numbers are written as `eval_<name>`."""
    manager, state, bar = _resume(state, loop, workdir, stage, show_progress)
    num_examples = len(next(iter(data.values())))
    pending = None
    # Closing the manager waits for pending saves, also when an error ends the loop.
    with manager, _preemption_flag() as flag:
        for step in bar:
            idx, width = _batch_indices(np.random.default_rng((loop.seed, step)),
                                        num_examples, batch_size, buckets)
            batch = {k: v[idx] if width is None else v[idx, :width] for k, v in data.items()}
            state, metrics = step_fn(state, batch)
            # Read the previous step's metrics after dispatching this one (no stall).
            if pending is not None:
                _log_step(*pending, loop, writer, bar, stage)
            pending = (step, metrics)
            evaluated = _periodic_eval(evaluate_fn, eval_every, step, loop, state.params)
            if evaluated and writer is not None:
                writer.write(step + 1, evaluated, stage)
            if (step + 1) % loop.checkpoint_every == 0 or flag["stop"]:
                _log_step(*pending, loop, writer, bar, stage, force=True)
                pending = None
                _save_or_stop(manager, step + 1, state, stage, flag, model_config)
        if pending is not None:
            _log_step(*pending, loop, writer, bar, stage, force=True)
        _final_save(manager, loop.steps, state, stage, model_config)
    return state


def _periodic_eval(evaluate_fn, eval_every: int, step: int, loop: LoopConfig, params) -> dict:
    """`evaluate_fn(params, step + 1)`'s numbers as eval_<name> when step + 1 is a multiple of
    eval_every before the last step; {} otherwise (the loops' held-out curve points)."""
    if evaluate_fn is None or not eval_every or (step + 1) % eval_every or step + 1 >= loop.steps:
        return {}
    return {f"eval_{k}": v for k, v in evaluate_fn(params, step + 1).items()
            if isinstance(v, (int, float, list, tuple))}


def run_sft(params, cfg: ModelConfig, tokens: np.ndarray, loss_mask: np.ndarray,
            loop: LoopConfig, workdir: str, *, batch_size: int, stage: str = "sft",
            writer: Optional[MetricWriter] = None, mesh=None, show_progress: bool = True,
            length_bucket: int = 0,
            evaluate_fn: Optional[Callable[[object, int], dict]] = None, eval_every: int = 0):
    """Masked next-token SFT on fixed examples; batch at step s is drawn from (seed, s).
    With `length_bucket` > 0 each batch comes from examples of one length group and is cut
    to that group's width (`length_buckets`): short examples stop paying for the longest
    row's padding, at one compiled step per group.

    Checkpoints to `workdir` every `loop.checkpoint_every` steps and when preempted; returns
    the final params. Resumes from `workdir` when it holds a checkpoint. With a `mesh`, the
    state and batches are sharded by the rules of `r1jax.sharding`. evaluate_fn / eval_every
    as in `_fixed_example_loop`.
    """
    tx = _optimizer(loop)
    state, state_sh, batch_sh = _place(TrainState.create(params, tx), cfg, mesh)
    shard = None if mesh is None else sharding_lib.make_shard_fn(mesh)
    step_fn = sft.make_sft_step(
        cfg, tx, shard=shard, state_sharding=state_sh,
        batch_sharding=None if mesh is None else batch_sh({"tokens": tokens[:batch_size],
                                                            "loss_mask": loss_mask[:batch_size]}))
    return _fixed_example_loop(step_fn, state, {"tokens": tokens, "loss_mask": loss_mask},
                               loop, workdir, batch_size=batch_size, stage=stage, writer=writer,
                               show_progress=show_progress, model_config=cfg,
                               buckets=length_buckets(loss_mask, length_bucket)
                               if length_bucket else None,
                               evaluate_fn=evaluate_fn, eval_every=eval_every).params


def _log_step(step, metrics, loop, writer, bar, stage, force=False):
    metrics = _fetch(metrics)
    _check_finite(step, metrics)
    if force or step % loop.log_every == 0:
        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
        if writer is not None:
            writer.write(step, dict(metrics, learning_rate=_learning_rate(loop, step)), stage)


# ----------------------------------------------------------------------------- GRPO

@dataclasses.dataclass(frozen=True)
class RolloutConfig:
    """How the GRPO loop samples and rewards rollouts."""
    prompts_per_step: int = 16          # P prompts per step (B = P * G rollouts)
    max_new_tokens: int = 96            # M
    max_prompt_tokens: int = 64         # rollouts are packed to M + this (no recompiles)
    temperature: float = 1.0            # sampling; != 1 (or any truncation) makes the loop
    top_k: int = 0                      #   recompute the old log-probs at temperature 1
    top_p: float = 1.0
    min_p: float = 0.0
    template: str = "r1_zero_short"
    accuracy_weight: float = 1.0
    format_weight: float = 0.5
    partial_format: bool = False        # format reward with partial credit (0, .25, ..., 1)
    language_weight: float = 0.0        # language-consistency reward (R1 stage 2)
    language: str = "en"
    repetition_weight: float = 0.0      # weight of `rewards.repetition_penalty` (in [-1, 0])
    length_reward: str = "none"         # "cosine": accuracy term scaled by length (Yeo et al.)
    max_refills: int = 4                # dynamic sampling: extra rollout rounds to refill

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"RolloutConfig.temperature must be > 0 (GRPO needs distinct "
                             f"samples), got {self.temperature!r}")
        if self.length_reward not in ("none", "cosine"):
            raise ValueError(f"RolloutConfig.length_reward must be 'none' or 'cosine', got "
                             f"{self.length_reward!r}")

    @property
    def tempered(self) -> bool:
        """True when the sampler's log-probs are not the temperature-1 policy's."""
        return (self.temperature != 1.0 or self.top_k > 0 or self.top_p < 1.0
                or self.min_p > 0.0)


def rule_reward_matrix(problems, texts, rollout: RolloutConfig,
                       lengths_PG: Optional[np.ndarray] = None) -> dict[str, np.ndarray]:
    """Rule rewards [P, G]: accuracy, format, language, repetition, and their weighted sum
    "reward". `lengths_PG` (generated tokens) is needed by length_reward="cosine"."""
    scores = evaluation.score_completions(
        problems, texts, rollout.language if rollout.language_weight else None)
    accuracy = scores["correct"]
    if rollout.length_reward == "cosine":
        if lengths_PG is None:
            raise ValueError("length_reward='cosine' needs the completions' lengths")
        accuracy = np.vectorize(lambda n, c: rewards.cosine_length_reward(
            int(n), bool(c), rollout.max_new_tokens))(lengths_PG, accuracy)
    fmt = scores["format"]
    if rollout.partial_format:
        fmt = np.array([[rewards.format_reward_partial(t) for t in row] for row in texts],
                       np.float32)
    total = rollout.accuracy_weight * accuracy + rollout.format_weight * fmt
    if rollout.language_weight:
        total = total + rollout.language_weight * scores["language"]
    if rollout.repetition_weight:
        scores["repetition"] = np.array([[rewards.repetition_penalty(t) for t in row]
                                         for row in texts], np.float32)
        total = total + rollout.repetition_weight * scores["repetition"]
    return dict(scores, reward=total.astype(np.float32))


def rollout_length(rollout: RolloutConfig) -> int:
    """T of the packed rollouts: prompt + completion, rounded up to a multiple of 16."""
    return -(-(rollout.max_prompt_tokens + rollout.max_new_tokens) // 16) * 16


def collect_rollouts(params, cfg, tokenizer, draw_problems: Callable[[int], list], key,
                     rollout: RolloutConfig, grpo_cfg: grpo.GRPOConfig, shard=None,
                     reward_fn: Optional[Callable] = None):
    """Samples G completions for P problems and rewards them; with dynamic sampling, groups
    whose rewards are all equal are dropped and the batch refilled from fresh problems (up to
    `max_refills` rounds; then kept groups are repeated to keep the shape).

    `draw_problems(round)` returns P problems for refill round `round`; `reward_fn(problems,
    texts) -> {"reward": [P, G], ...}` defaults to the rule rewards of `rule_reward_matrix`.
    With GRPOConfig.overlong_cache_len, DAPO's soft overlong penalty is added to "reward".
    Returns (problems, Rollout of P * G rows, reward dict [P, G], stats).
    """
    sampling = sampler_lib.SamplingConfig(
        max_new_tokens=rollout.max_new_tokens, num_samples=grpo_cfg.num_generations,
        temperature=rollout.temperature, top_k=rollout.top_k, top_p=rollout.top_p,
        min_p=rollout.min_p)
    length = rollout_length(rollout)
    P, G = rollout.prompts_per_step, grpo_cfg.num_generations
    kept: list[tuple[list, rollout_lib.Rollout, dict]] = []
    generated = 0
    for round_ in range(1 + (rollout.max_refills if grpo_cfg.dynamic_sampling else 0)):
        probs = draw_problems(round_)
        roll = evaluation.sample_completions(
            params, cfg, tokenizer, [prompts.render(rollout.template, p.question) for p in probs],
            jax.random.fold_in(key, round_), sampling, length=length, shard=shard)
        longest = int(np.max(roll.prompt_lengths))
        if longest > rollout.max_prompt_tokens:
            raise ValueError(f"prompt of {longest} tokens exceeds rollout.max_prompt_tokens="
                             f"{rollout.max_prompt_tokens}")
        lengths_PG = np.asarray(roll.lengths).reshape(len(probs), G)
        generated += int(lengths_PG.sum())
        texts = roll.texts(tokenizer)
        rew = (reward_fn(probs, texts) if reward_fn is not None
               else rule_reward_matrix(probs, texts, rollout, lengths_PG))
        if grpo_cfg.overlong_cache_len:
            rew["overlong_penalty"] = np.asarray(grpo.overlong_penalty(
                lengths_PG, rollout.max_new_tokens, grpo_cfg.overlong_cache_len))
            rew["reward"] = rew["reward"] + rew["overlong_penalty"]
        keep = np.ones(len(probs), bool)
        if grpo_cfg.dynamic_sampling:
            keep = np.asarray(grpo.dynamic_sampling_filter(jnp.asarray(rew["reward"])))
        idx = np.flatnonzero(keep)
        if len(idx) or not kept:
            kept.append(([probs[i] for i in idx], roll.select_groups(idx),
                         {k: np.asarray(v)[idx] for k, v in rew.items()}))
        if sum(len(k[0]) for k in kept) >= P or not grpo_cfg.dynamic_sampling:
            break
    num_kept = sum(len(k[0]) for k in kept)
    if num_kept == 0:  # every group uniform: the last round as it is (zero advantages)
        return probs, roll, rew, {"groups_kept": 0.0, "generated_tokens": float(generated)}
    probs = [p for k in kept for p in k[0]]
    roll = rollout_lib.concat([k[1] for k in kept])
    rew = {name: np.concatenate([k[2][name] for k in kept]) for name in kept[0][2]}
    order = np.arange(P) % num_kept   # repeat kept groups to keep the batch shape fixed
    return ([probs[i] for i in order], roll.select_groups(order),
            {k: v[order] for k, v in rew.items()},
            {"groups_kept": float(num_kept), "generated_tokens": float(generated)})


def grpo_batch(roll: rollout_lib.Rollout, advantages_PG, old_logprobs=None) -> dict:
    """The GRPO step's batch (see `r1jax.grpo`) from a rollout: its tokens, completion mask and
    truncation flags, the advantages flattened to [B], and the old policy's log-probs (the
    sampler's unless given)."""
    return {"tokens": roll.tokens, "completion_mask": roll.completion_mask,
            "old_logprobs": roll.logprobs if old_logprobs is None else old_logprobs,
            "advantages": jnp.asarray(advantages_PG, jnp.float32).reshape(-1),
            "truncated": roll.truncated}


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
    length = rollout_length(rollout)
    B = rollout.prompts_per_step * grpo_cfg.num_generations
    example = {"tokens": np.zeros((B, length)), "completion_mask": np.zeros((B, length - 1)),
               "old_logprobs": np.zeros((B, length - 1)), "advantages": np.zeros((B,))}
    if grpo_cfg.overlong_filter:
        example["truncated"] = np.zeros((B,), bool)
    # With mu > 1 iterations the reference log-probs are computed once per batch, not per mu.
    precompute_ref = grpo_cfg.beta > 0 and grpo_cfg.num_iterations > 1
    if precompute_ref:
        example["ref_logprobs"] = np.zeros((B, length - 1))
    batch_sharding = None if mesh is None else batch_sh(example)
    step_fn = grpo.make_grpo_step(cfg, tx, grpo_cfg, shard=shard, state_sharding=state_sh,
                                  batch_sharding=batch_sharding)

    def make_batch(params, roll, rew):
        """The step's batch; old log-probs recomputed at temperature 1 when the sampler's
        distribution was tempered or truncated (one extra forward pass)."""
        adv = grpo.group_advantages(jnp.asarray(rew["reward"]), grpo_cfg.advantage_scale)
        old = None
        if rollout.tempered:
            old = grpo.compute_old_logprobs(params, cfg, roll.tokens, roll.completion_mask,
                                            chunk=grpo_cfg.logprob_chunk, shard=shard)
        batch = grpo_batch(roll, adv, old)
        if not grpo_cfg.overlong_filter:
            batch.pop("truncated")
        if precompute_ref:
            batch["ref_logprobs"] = grpo.ref_logprobs_fn(
                ref_params, cfg, roll.tokens, roll.completion_mask,
                chunk=grpo_cfg.logprob_chunk, shard=shard)
        return batch if batch_sharding is None else jax.device_put(batch, batch_sharding)

    manager, state, bar = _resume(state, loop, workdir, stage, show_progress)
    base_key = jax.random.key(loop.seed)
    with manager, _preemption_flag() as flag:
        for step in bar:
            t0 = time.perf_counter()
            key = jax.random.fold_in(base_key, step)
            probs, roll, rew, stats = collect_rollouts(
                state.params, cfg, tokenizer, lambda r: train_problems(step, r), key, rollout,
                grpo_cfg, shard, reward_fn)
            t_rollout = time.perf_counter() - t0
            batch = make_batch(state.params, roll, rew)
            for i in range(grpo_cfg.num_iterations):
                state, metrics = step_fn(state, None if precompute_ref else ref_params, batch)
                if i == 0:
                    first = metrics
            metrics = dict(_fetch(metrics), first_ratio_mean=float(first["ratio_mean"]),
                           first_clip_frac=float(first["clip_frac"]))
            _check_finite(step, metrics)
            metrics.update(stats, reward=float(rew["reward"].mean()),
                           learning_rate=_learning_rate(loop, step),
                           response_length=float(np.mean(roll.lengths)),
                           rollout_seconds=t_rollout,
                           step_seconds=time.perf_counter() - t0)
            for name, key_ in (("correct", "accuracy"), ("format", "format_rate"),
                               ("language", "language_consistency"),
                               ("overlong_penalty", "overlong_penalty")):
                if name in rew:
                    metrics[key_] = float(rew[name].mean())
            metrics.update(_periodic_eval(evaluate_fn, eval_every, step, loop, state.params))
            if writer is not None:
                writer.write(step + 1, metrics, stage)
                if step % loop.log_every == 0:   # two sampled completions, as people read them
                    texts = roll.select_groups([0]).texts(tokenizer)[0][:2]
                    writer.write_text(step + 1, "completions", "\n\n---\n\n".join(
                        f"reward {r:.2f}:\n\n    " + t.replace("\n", "\n    ")
                        for r, t in zip(rew["reward"][0], texts)), stage)
            bar.set_postfix(reward=f"{metrics['reward']:.2f}")
            if (step + 1) % loop.checkpoint_every == 0 or flag["stop"]:
                _save_or_stop(manager, step + 1, state, stage, flag, cfg)
        _final_save(manager, loop.steps, state, stage, cfg)
    return state.params


# ----------------------------------------------------------------------------- verifiers

def run_verifier(vparams, cfg: ModelConfig, kind: str, data: dict[str, np.ndarray],
                 loop: LoopConfig, workdir: str, *, batch_size: int,
                 stage: Optional[str] = None, writer: Optional[MetricWriter] = None,
                 show_progress: bool = True):
    """Trains a learned verifier with `verifiers.make_train_step(kind, ...)` ("orm", "prm" or
    "bt") on fixed examples, in the loop SFT uses (`_fixed_example_loop`).

    data: the arrays of a `verifiers` batch builder (`orm_batch_from_ids`,
    `prm_batch_from_ids`, `make_pair_batch`, ...), each with a leading axis of E examples;
    extra keys (e.g. "lengths" of a PRM batch) are left out of the step. The batch at step s is
    batch_size rows drawn from (loop.seed, s), so a resumed run is exact. Checkpoints to
    `workdir` every `loop.checkpoint_every` steps and when SIGTERM/SIGINT arrives (then raises
    Preempted), resumes from the newest checkpoint there, stops with NonFiniteError on a
    NaN/Inf loss (the last good checkpoint intact). `vparams` are donated; returns the final
    ones. Metrics go to `writer` under `stage` (default: kind).
    """
    keys = {"orm": ("tokens", "lengths", "labels"), "prm": ("tokens", "step_mask", "targets"),
            "bt": ("chosen_tokens", "chosen_lengths", "rejected_tokens", "rejected_lengths")}
    if kind not in keys:
        raise ValueError(f"verifier kind must be one of {sorted(keys)}, got {kind!r}")
    data = {k: np.asarray(data[k]) for k in keys[kind]}
    tx = _optimizer(loop)
    verifier_step = verifiers.make_train_step(kind, cfg, tx)

    def step_fn(state, batch):
        params, opt_state, metrics = verifier_step(state.params, state.opt_state, batch)
        return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

    return _fixed_example_loop(step_fn, TrainState.create(vparams, tx), data, loop, workdir,
                               batch_size=batch_size, stage=stage or kind, writer=writer,
                               show_progress=show_progress).params


# ----------------------------------------------------------------------------- distillation

def _teacher_placed(teacher_params, teacher_cfg: ModelConfig, mesh):
    """The teacher laid out like a policy on `mesh` (its own config's sharding rules)."""
    if mesh is None:
        return teacher_params
    return jax.device_put(teacher_params, sharding_lib.param_shardings(teacher_cfg, mesh))


def run_token_distill(params, cfg: ModelConfig, teacher_params, teacher_cfg: ModelConfig,
                      tokens: np.ndarray, completion_mask: np.ndarray, loop: LoopConfig,
                      dcfg: distill.DistillConfig, workdir: str, *, batch_size: int,
                      stage: str = "token", writer: Optional[MetricWriter] = None, mesh=None,
                      show_progress: bool = True,
                      evaluate_fn: Optional[Callable[[object, int], dict]] = None,
                      eval_every: int = 0):
    """Token-level distillation on fixed sequences (the teacher's samples): every step, the
    `dcfg` loss (`r1jax.distill`) between teacher and student on batch_size rows drawn from
    (seed, step), counted where completion_mask [N, T-1] is 1. Checkpoints, resume,
    preemption, NaN guard and evaluations as `run_sft`. The teacher is not trained; `params`
    are donated. Returns the final params."""
    tx = _optimizer(loop)
    state, state_sh, batch_sh = _place(TrainState.create(params, tx), cfg, mesh)
    shard = None if mesh is None else sharding_lib.make_shard_fn(mesh)
    teacher_params = _teacher_placed(teacher_params, teacher_cfg, mesh)
    data = {"tokens": np.asarray(tokens), "completion_mask": np.asarray(completion_mask)}
    step = distill.make_distill_step(
        cfg, teacher_cfg, tx, dcfg, shard=shard, state_sharding=state_sh,
        batch_sharding=None if mesh is None else batch_sh({k: v[:batch_size]
                                                           for k, v in data.items()}))
    return _fixed_example_loop(lambda s, b: step(s, teacher_params, b), state, data, loop,
                               workdir, batch_size=batch_size, stage=stage, writer=writer,
                               show_progress=show_progress, model_config=cfg,
                               evaluate_fn=evaluate_fn, eval_every=eval_every).params


def run_on_policy_distill(params, cfg: ModelConfig, teacher_params, teacher_cfg: ModelConfig,
                          tokenizer, train_problems: Callable[[int], list], loop: LoopConfig,
                          rollout: RolloutConfig, dcfg: distill.DistillConfig,
                          num_generations: int, workdir: str, *, stage: str = "on_policy",
                          writer: Optional[MetricWriter] = None,
                          evaluate_fn: Optional[Callable[[object, int], dict]] = None,
                          eval_every: int = 0, mesh=None, show_progress: bool = True):
    """On-policy distillation: every step the student samples `num_generations` completions of
    `rollout.prompts_per_step` problems (`train_problems(step)`, a pure function of the step)
    and takes one update of the `dcfg` loss (reverse KL, or the generalised JSD) against the
    teacher on its own samples' completion tokens. No reward enters the update; the rule
    rewards of the samples are logged. Checkpoints, exact resume, preemption and NaN guard as
    `run_grpo`; metrics per step include generated_tokens and rows x length of the update
    (`update_tokens`) for compute accounting. Returns the final params."""
    tx = _optimizer(loop)
    state, state_sh, batch_sh = _place(TrainState.create(params, tx), cfg, mesh)
    shard = None if mesh is None else sharding_lib.make_shard_fn(mesh)
    teacher_params = _teacher_placed(teacher_params, teacher_cfg, mesh)
    length = rollout_length(rollout)
    B = rollout.prompts_per_step * num_generations
    batch_sharding = None if mesh is None else batch_sh(
        {"tokens": np.zeros((B, length)), "completion_mask": np.zeros((B, length - 1))})
    step_fn = distill.make_distill_step(cfg, teacher_cfg, tx, dcfg, shard=shard,
                                        state_sharding=state_sh, batch_sharding=batch_sharding)
    sampling = sampler_lib.SamplingConfig(
        max_new_tokens=rollout.max_new_tokens, num_samples=num_generations,
        temperature=rollout.temperature, top_k=rollout.top_k, top_p=rollout.top_p,
        min_p=rollout.min_p)
    manager, state, bar = _resume(state, loop, workdir, stage, show_progress)
    base_key = jax.random.key(loop.seed)
    with manager, _preemption_flag() as flag:
        for step in bar:
            t0 = time.perf_counter()
            probs = train_problems(step)
            roll = evaluation.sample_completions(
                state.params, cfg, tokenizer,
                [prompts.render(rollout.template, p.question) for p in probs],
                jax.random.fold_in(base_key, step), sampling, length=length, shard=shard)
            longest = int(np.max(roll.prompt_lengths))
            if longest > rollout.max_prompt_tokens:
                raise ValueError(f"prompt of {longest} tokens exceeds "
                                 f"rollout.max_prompt_tokens={rollout.max_prompt_tokens}")
            t_rollout = time.perf_counter() - t0
            rew = rule_reward_matrix(probs, roll.texts(tokenizer), rollout)
            batch = {"tokens": roll.tokens, "completion_mask": roll.completion_mask}
            if batch_sharding is not None:
                batch = jax.device_put(batch, batch_sharding)
            state, metrics = step_fn(state, teacher_params, batch)
            metrics = _fetch(metrics)
            _check_finite(step, metrics)
            metrics.update(reward=float(rew["reward"].mean()),
                           accuracy=float(rew["correct"].mean()),
                           format_rate=float(rew["format"].mean()),
                           learning_rate=_learning_rate(loop, step),
                           response_length=float(np.mean(roll.lengths)),
                           generated_tokens=float(np.sum(roll.lengths)),
                           prompt_tokens=float(np.sum(roll.prompt_lengths)),
                           update_tokens=float(B * length), rollout_seconds=t_rollout,
                           step_seconds=time.perf_counter() - t0)
            metrics.update(_periodic_eval(evaluate_fn, eval_every, step, loop, state.params))
            if writer is not None:
                writer.write(step + 1, metrics, stage)
            bar.set_postfix(loss=f"{metrics['loss']:.3f}", acc=f"{metrics['accuracy']:.2f}")
            if (step + 1) % loop.checkpoint_every == 0 or flag["stop"]:
                _save_or_stop(manager, step + 1, state, stage, flag, cfg)
        _final_save(manager, loop.steps, state, stage, cfg)
    return state.params
