"""Group Relative Policy Optimization (DeepSeekMath / R1-Zero) with the Dr. GRPO and DAPO variants.

The formulas, exactly (the GRPO objective of DeepSeekMath with its variants' switches):
  A_i   = (r_i - mean_g r) / (std_g r + 1e-6)        sample std (ddof=1) over the group of G;
                                                     scale="none": r_i - mean_g r (Dr. GRPO)
  ratio = exp(logp - old_logp)
  obj   = min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
  kl    = exp(ref_logp - logp) - (ref_logp - logp) - 1          (k3 estimator)
  l     = -(obj - beta * kl)
aggregated by "seq_mean_token_mean" (GRPO), "token_mean" (DAPO) or "seq_mean_token_sum_norm"
(Dr. GRPO: each sequence's sum divided by a constant maximum length).

The update step works on rollouts laid out as full sequences:
  tokens:          int32 [B, T]   prompt + completion, right-padded (B = P * G rows)
  completion_mask: [B, T-1]       aligned with `token_logprobs` targets: column t is 1 iff
                                  tokens[:, t+1] is a generated token that counts
  old_logprobs:    float32 [B, T-1] log-probs of the old policy at those positions
  advantages:      float32 [B]    one per sequence (`group_advantages`, flattened)
  truncated:       bool [B]       only with GRPOConfig.overlong_filter (`Rollout.truncated`)
  ref_logprobs:    float32 [B, T-1] optional: the reference policy's log-probs, precomputed
                                  once with `ref_logprobs_fn` (saves a reference pass in each
                                  of the mu iterations); otherwise the step computes them

Old log-probs and temperature. The ratio compares the current and the old policy at
temperature 1 (the policy being optimised is the untempered model). The sampler's log-probs
are those of the distribution it sampled from: at temperature 1 with no top-k / top-p they
are the old policy's and can be used as they are; with temperature != 1 or truncation they are
not, and the old log-probs must be recomputed with `compute_old_logprobs(params, ...)` using
the parameters that sampled, before the first of the mu iterations.

mu iterations (GRPOConfig.num_iterations): the caller runs the step mu times on the same
rollouts, keeping `old_logprobs` fixed; the first iteration has ratio = 1 up to numerics.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from optax import GradientTransformation

from r1jax.logprobs import token_logprobs
from r1jax.model import ModelConfig, Params, ShardFn
from r1jax.train_state import TrainState, accumulate_gradients, jit_train_step

Array = jax.Array

AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")
ADVANTAGE_SCALES = ("group_std", "batch_std", "none")


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
    """GRPO hyper-parameters, named by paper symbol."""

    num_generations: int = 8            # G: samples per prompt (the group)
    beta: float = 0.04                  # β: weight of the k3 KL to the reference policy
    epsilon_low: float = 0.2            # ε_low: lower clip, ratio >= 1 - ε_low
    epsilon_high: float = 0.2           # ε_high: upper clip, ratio <= 1 + ε_high (DAPO: 0.28)
    num_iterations: int = 1             # μ: optimisation iterations per batch of rollouts
    aggregation: str = "seq_mean_token_mean"   # GRPO; "token_mean" DAPO; "..._sum_norm" Dr. GRPO
    advantage_scale: str = "group_std"  # "group_std" GRPO; "none" Dr. GRPO; "batch_std"
    dynamic_sampling: bool = False      # DAPO: drop groups whose rewards are all equal
    overlong_filter: bool = False       # DAPO: truncated samples excluded from the loss
    overlong_cache_len: int = 0         # L_cache of DAPO's soft overlong punishment; 0 = off
    max_len: Optional[int] = None       # normaliser of seq_mean_token_sum_norm; None: T - 1
    grad_accum: int = 1                 # micro-batches per update (B must divide)
    logprob_chunk: int = 128            # sequence positions per LM-head block
    logprob_micro_batch: int = 0        # rows per pass of ref_logprobs_fn /
                                        # compute_old_logprobs; 0: as many as hold
                                        # LOGPROB_TOKENS tokens

    def __post_init__(self):
        def positive_int(name):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GRPOConfig.{name} must be a positive int, got {value!r}")
        for name in ("num_generations", "num_iterations", "grad_accum", "logprob_chunk"):
            positive_int(name)
        if self.max_len is not None:
            positive_int("max_len")
        if not self.beta >= 0:
            raise ValueError(f"GRPOConfig.beta must be >= 0, got {self.beta!r}")
        if not 0 <= self.epsilon_low < 1:
            raise ValueError(f"GRPOConfig.epsilon_low must be in [0, 1), got {self.epsilon_low!r}")
        if not self.epsilon_high >= 0:
            raise ValueError(f"GRPOConfig.epsilon_high must be >= 0, got {self.epsilon_high!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"GRPOConfig.aggregation must be one of {AGGREGATIONS}, got "
                             f"{self.aggregation!r}")
        if self.advantage_scale not in ADVANTAGE_SCALES:
            raise ValueError(f"GRPOConfig.advantage_scale must be one of {ADVANTAGE_SCALES}, "
                             f"got {self.advantage_scale!r}")
        if self.advantage_scale != "none" and self.num_generations < 2:
            raise ValueError("GRPOConfig.num_generations must be >= 2 for a standard deviation "
                             f"(advantage_scale={self.advantage_scale!r})")
        if not isinstance(self.overlong_cache_len, int) or self.overlong_cache_len < 0:
            raise ValueError("GRPOConfig.overlong_cache_len must be an int >= 0, got "
                             f"{self.overlong_cache_len!r}")
        mb = self.logprob_micro_batch
        if not isinstance(mb, int) or isinstance(mb, bool) or mb < 0:
            raise ValueError(f"GRPOConfig.logprob_micro_batch must be an int >= 0, got {mb!r}")


# ----------------------------------------------------------------------------- advantages

def group_advantages(rewards_PG: Array, scale: str = "group_std") -> Array:
    """Group-relative advantages, float32 [P, G] from rewards [P, G].

    scale="group_std": (r - mean_g r) / (std_g r + 1e-6), sample std (ddof=1) in each group;
    "none": r - mean_g r (Dr. GRPO); "batch_std": (r - mean_g r) / (std r + 1e-6) with the
    sample std over all P * G rewards.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"advantage scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    if rewards_PG.ndim != 2:
        raise ValueError(f"rewards must be [P, G], got shape {rewards_PG.shape}")
    r = rewards_PG.astype(jnp.float32)
    centred = r - jnp.mean(r, axis=1, keepdims=True)
    if scale == "none":
        return centred
    if scale == "group_std":
        if r.shape[1] < 2:
            raise ValueError(f"group_std needs G >= 2 samples per group, got {r.shape}")
        return centred / (jnp.std(r, axis=1, ddof=1, keepdims=True) + 1e-6)
    if r.size < 2:
        raise ValueError(f"batch_std needs at least 2 rewards, got {r.shape}")
    return centred / (jnp.std(r, ddof=1) + 1e-6)


def dynamic_sampling_filter(rewards_PG: Array) -> Array:
    """DAPO dynamic sampling: bool [P], True for groups whose rewards are not all equal
    (groups with equal rewards have zero advantage and give no gradient)."""
    if rewards_PG.ndim != 2:
        raise ValueError(f"rewards must be [P, G], got shape {rewards_PG.shape}")
    return jnp.any(rewards_PG != rewards_PG[:, :1], axis=1)


def overlong_penalty(lengths: Array, max_len: int, cache_len: int) -> Array:
    """DAPO soft overlong punishment (added to the reward), float32 of lengths' shape.

    0 for |y| <= L_max - L_cache; (L_max - L_cache - |y|) / L_cache in between (a linear ramp
    from 0 to -1); -1 for |y| > L_max. L_max = max_len, L_cache = cache_len.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(f"overlong_penalty needs 0 < cache_len ({cache_len}) <= max_len "
                         f"({max_len})")
    y = lengths.astype(jnp.float32)
    start = max_len - cache_len
    ramp = (start - y) / cache_len
    return jnp.where(y <= start, 0.0, jnp.where(y <= max_len, ramp, -1.0))


def overlong_filter_mask(completion_mask_BT: Array, truncated_B: Array) -> Array:
    """DAPO overlong filtering: the completion mask with truncated samples' rows zeroed."""
    return completion_mask_BT * (~truncated_B)[:, None].astype(completion_mask_BT.dtype)


# ----------------------------------------------------------------------------- the loss

def grpo_loss(logprobs: Array, old_logprobs: Array, ref_logprobs: Optional[Array],
              advantages: Array, mask: Array, *, epsilon_low: float = 0.2,
              epsilon_high: float = 0.2, beta: float = 0.04,
              aggregation: str = "seq_mean_token_mean", max_len: Optional[int] = None
              ) -> tuple[Array, dict]:
    """The GRPO loss of the module docstring's formulas and its metrics.

    Args:
      logprobs: float32 [B, T] current policy log-probs of the sampled tokens (differentiated).
      old_logprobs: [B, T] the sampling (old) policy's; ref_logprobs: [B, T] the reference
        policy's, or None when beta == 0 (the KL is then not computed).
      advantages: [B] one per sequence. mask: [B, T], 1 on tokens that count.
      max_len: the constant of seq_mean_token_sum_norm; None means T (mask.shape[1]).
    A sequence with no counted token contributes 0 but still counts in the mean over B.
    Values at masked positions are ignored (may be anything finite or not).

    Returns (loss, metrics) with metrics as token means over the mask: kl (0 when beta == 0),
    ratio_mean, clip_frac_low (A < 0 and ratio < 1 - eps_low: the clipped term is taken),
    clip_frac_high (A > 0 and ratio > 1 + eps_high), clip_frac, and pg_loss (the policy term
    alone, aggregated like the loss), num_tokens.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs must be [B, T], got shape {logprobs.shape}")
    shapes = {"old_logprobs": old_logprobs, "mask": mask}
    if ref_logprobs is not None:
        shapes["ref_logprobs"] = ref_logprobs
    for name, x in shapes.items():
        if x.shape != logprobs.shape:
            raise ValueError(f"{name} must have logprobs' shape {logprobs.shape}, got {x.shape}")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be [B] = {logprobs.shape[:1]}, got "
                         f"{advantages.shape}")
    if ref_logprobs is None and beta != 0:
        raise ValueError(f"ref_logprobs is None but beta = {beta}; pass the reference "
                         "policy's log-probs or set beta = 0")
    m = mask.astype(jnp.float32)
    on = m > 0
    logp = logprobs.astype(jnp.float32)
    # Zero the differences off the mask so that padding (possibly inf) cannot leak NaNs.
    log_ratio = jnp.where(on, logp - old_logprobs.astype(jnp.float32), 0.0)
    ratio = jnp.exp(log_ratio)
    A = advantages.astype(jnp.float32)[:, None]
    clipped = jnp.clip(ratio, 1.0 - epsilon_low, 1.0 + epsilon_high)
    obj = jnp.minimum(ratio * A, clipped * A)
    if beta != 0:
        d = jnp.where(on, ref_logprobs.astype(jnp.float32) - logp, 0.0)
        kl = jnp.exp(d) - d - 1.0
    else:
        kl = jnp.zeros_like(obj)
    per_token = -(obj - beta * kl)

    num_tokens = jnp.sum(m)
    lengths_B = jnp.sum(m, axis=1)
    norm = float(max_len if max_len is not None else mask.shape[1])

    def aggregate(x):
        x = x * m
        if aggregation == "token_mean":
            return jnp.sum(x) / jnp.maximum(num_tokens, 1.0)
        if aggregation == "seq_mean_token_mean":
            return jnp.mean(jnp.sum(x, axis=1) / jnp.maximum(lengths_B, 1.0))
        return jnp.mean(jnp.sum(x, axis=1) / norm)

    def token_mean(x):
        return jnp.sum(x * m) / jnp.maximum(num_tokens, 1.0)

    low = (ratio < 1.0 - epsilon_low) & (A < 0)
    high = (ratio > 1.0 + epsilon_high) & (A > 0)
    loss = aggregate(per_token)
    metrics = {
        "loss": loss,
        "pg_loss": aggregate(-obj),
        "kl": token_mean(kl),
        "ratio_mean": token_mean(ratio),
        "clip_frac_low": token_mean(low),
        "clip_frac_high": token_mean(high),
        "clip_frac": token_mean(low | high),
        "num_tokens": num_tokens,
    }
    return loss, metrics


# ----------------------------------------------------------------------------- jitted helpers

# Default rows per log-prob pass: as many as hold this many tokens (at least one row).
LOGPROB_TOKENS = 32768


def logprob_passes(B: int, T: int, micro_batch: Optional[int] = None) -> tuple[int, int]:
    """(passes, rows per pass) of `ref_logprobs_fn` over [B, T]: rows <= micro_batch (None
    or 0: LOGPROB_TOKENS // T), evened out over the passes (B is padded by fewer rows than
    there are passes)."""
    limit = micro_batch or max(1, LOGPROB_TOKENS // T)
    if not isinstance(limit, int) or limit < 1:
        raise ValueError(f"micro_batch must be a positive int or None, got {micro_batch!r}")
    n = -(-B // limit)
    return n, -(-B // n)


def _masked_logprobs(params: Params, cfg: ModelConfig, tokens_BT: Array,
                     completion_mask_BT1: Optional[Array] = None, *, chunk: int = 128,
                     shard: ShardFn = None, micro_batch: Optional[int] = None) -> Array:
    B, T = tokens_BT.shape
    n, rows = logprob_passes(B, T, micro_batch)
    if n == 1:
        lp = token_logprobs(params, cfg, tokens_BT, chunk=chunk, shard=shard)
    else:
        # Pass i takes rows i, i + n, i + 2n, ...: with the batch sharded over devices every
        # pass stays spread over all of them.
        tokens = jnp.pad(tokens_BT, ((0, n * rows - B), (0, 0)))
        tokens_nRT = tokens.reshape(rows, n, T).swapaxes(0, 1)
        lp_nRT1 = jax.lax.map(
            lambda t: token_logprobs(params, cfg, t, chunk=chunk, shard=shard), tokens_nRT)
        lp = lp_nRT1.swapaxes(0, 1).reshape(n * rows, T - 1)[:B]
    if completion_mask_BT1 is None:
        return lp
    return jnp.where(completion_mask_BT1 > 0, lp, 0.0)


# (params, cfg, tokens_BT, completion_mask_BT1=None, *, chunk=128, shard=None,
#  micro_batch=None) -> [B, T-1]: temperature-1 log-probs of tokens[:, 1:], zero off the mask,
# computed in `logprob_passes(B, T, micro_batch)` sequential passes of at most micro_batch
# rows (a lax.map over row blocks, so one pass's activations live at a time; None: as many
# rows as hold LOGPROB_TOKENS tokens). Jitted; cfg, chunk, shard and micro_batch are static.
# `ref_logprobs_fn` scores rollouts under the reference policy outside the step;
# `compute_old_logprobs` recomputes the old policy's log-probs with the sampling parameters
# when the sampler used temperature != 1 or top-k / top-p (see the module docstring).
ref_logprobs_fn = jax.jit(_masked_logprobs,
                          static_argnames=("cfg", "chunk", "shard", "micro_batch"))
compute_old_logprobs = ref_logprobs_fn


def _check_rollouts(batch: dict, grpo_cfg: GRPOConfig) -> None:
    keys = ["tokens", "completion_mask", "old_logprobs", "advantages"]
    if grpo_cfg.overlong_filter:
        keys.append("truncated")
    for key in keys:
        if key not in batch:
            raise ValueError(f"GRPO batch is missing {key!r}; got keys {sorted(batch)}")
    B, T = batch["tokens"].shape
    expected = {"completion_mask": (B, T - 1), "old_logprobs": (B, T - 1), "advantages": (B,),
                "truncated": (B,), "ref_logprobs": (B, T - 1)}
    for key, shape in expected.items():
        if key in batch and batch[key].shape != shape:
            raise ValueError(f"GRPO batch {key!r} must be {shape} for tokens {(B, T)}, got "
                             f"{batch[key].shape}")


def grpo_step(state: TrainState, ref_params: Optional[Params], batch: dict, cfg: ModelConfig,
              tx: GradientTransformation, grpo_cfg: GRPOConfig, shard: ShardFn = None
              ) -> tuple[TrainState, dict]:
    """One optimizer update on a batch of rollouts (pure; see `make_grpo_step`).

    ref_params is not used (may be None) when beta == 0 or the batch carries "ref_logprobs".
    It must not share buffers with state.params (the state is donated). The batch is split into
    grad_accum micro-batches; reference log-probs, the policy pass and its backward run per
    micro-batch. Micro-batch weights make the accumulated gradient equal the full-batch one
    (token counts for token_mean, equal weights otherwise). Metrics: those of `grpo_loss`
    plus entropy (token mean), grad_norm, advantage_mean.
    """
    _check_rollouts(batch, grpo_cfg)
    chunk = grpo_cfg.logprob_chunk
    use_ref = grpo_cfg.beta != 0
    if use_ref and ref_params is None and "ref_logprobs" not in batch:
        raise ValueError(f"ref_params is None and the batch has no 'ref_logprobs' but "
                         f"GRPOConfig.beta = {grpo_cfg.beta}")
    max_len = grpo_cfg.max_len

    def mask_of(mb):
        mask = mb["completion_mask"].astype(jnp.float32)
        if grpo_cfg.overlong_filter:
            mask = overlong_filter_mask(mask, mb["truncated"])
        return mask

    def loss_fn(params, mb):
        mask = mask_of(mb)
        ref_lp = None
        if use_ref and "ref_logprobs" in mb:
            ref_lp = mb["ref_logprobs"]
        elif use_ref:
            ref_lp = jax.lax.stop_gradient(
                token_logprobs(ref_params, cfg, mb["tokens"], chunk=chunk, shard=shard))
        lp, entropy = token_logprobs(params, cfg, mb["tokens"], chunk=chunk, shard=shard,
                                     with_entropy=True)
        loss, metrics = grpo_loss(lp, mb["old_logprobs"], ref_lp, mb["advantages"], mask,
                                  epsilon_low=grpo_cfg.epsilon_low,
                                  epsilon_high=grpo_cfg.epsilon_high, beta=grpo_cfg.beta,
                                  aggregation=grpo_cfg.aggregation, max_len=max_len)
        metrics["entropy"] = jnp.sum(entropy * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        return loss, metrics

    weight_fn = (lambda mb: jnp.sum(mask_of(mb))) if grpo_cfg.aggregation == "token_mean" \
        else None
    loss, grads, metrics = accumulate_gradients(loss_fn, state.params, batch,
                                                grpo_cfg.grad_accum, weight_fn)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                   num_tokens=jnp.sum(mask_of(batch)),
                   advantage_mean=jnp.mean(batch["advantages"].astype(jnp.float32)))
    return state.apply_gradients(grads, tx), metrics


def make_grpo_step(cfg: ModelConfig, tx: GradientTransformation, grpo_cfg: GRPOConfig, *,
                   shard: ShardFn = None, state_sharding: Optional[Any] = None,
                   batch_sharding: Optional[Any] = None):
    """`grpo_step` jitted once: (state, ref_params, batch) -> (state, metrics), the state
    donated. Pass ref_params=None when beta == 0 or the batch carries "ref_logprobs".
    Shardings as in `r1jax.sft.make_sft_step`; the
    reference parameters keep the placement they are passed with."""
    def step(state, ref_params, batch):
        return grpo_step(state, ref_params, batch, cfg, tx, grpo_cfg, shard)

    return jit_train_step(step, state_sharding=state_sharding, batch_sharding=batch_sharding,
                          num_middle=1)
