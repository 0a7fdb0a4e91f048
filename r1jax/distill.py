"""Distillation losses of a teacher into a student that share a tokenizer, and their jitted step.

Per-token divergences between the teacher's next-token distribution p and the student's q over
the whole vocabulary, at every counted position of a batch of sequences:

  forward   KL(p_tau || q_tau) * tau^2 (Hinton et al.: p, q at temperature tau; the tau^2
            keeps the gradient's scale independent of tau), optionally mixed with the
            hard-label loss: alpha * that + (1 - alpha) * (-log q(next token)), q at
            temperature 1 (the sequence's own next token: the teacher's sample when the
            sequences are the teacher's).
  reverse   KL(q_tau || p_tau) * tau^2: on the student's own samples, on-policy distillation.
  jsd       the generalised Jensen-Shannon divergence of GKD (Agarwal et al. 2024), with
            m = beta * p + (1 - beta) * q: beta * KL(p || m) + (1 - beta) * KL(q || m), times
            tau^2; beta = 0 is the forward KL and beta = 1 the reverse KL exactly (as TRL).

Batch layout (right-padded to one length T, like `r1jax.rollout.Rollout`):
  tokens:          int32 [B, T]    prompt + completion (+ padding).
  completion_mask: [B, T-1]        aligned with the targets tokens[:, 1:]: 1 where the target
                                   is a completion token that counts, 0 on prompt and padding.

The loss is the mean over counted positions (a token mean). Neither model ever builds a
float32 [B, T, V] array: both trunks run once to hidden states, and the LM heads are applied
to blocks of positions together (`r1jax.logprobs.map_position_blocks`), so the largest
temporaries are a few [B, C, V] blocks, recomputed in the backward pass. The teacher runs
under `jax.lax.stop_gradient` with the student's activation sharding (`shard`); its parameters
keep the placement they are passed with (`r1jax.sharding.param_shardings` of its own config).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from optax import GradientTransformation

from r1jax.logprobs import MAX_BLOCK_LOGITS, map_position_blocks
from r1jax.model import ModelConfig, Params, ShardFn, hidden_states, logits_from_hidden
from r1jax.train_state import TrainState, accumulate_gradients, jit_train_step

Array = jax.Array

LOSSES = ("forward", "reverse", "jsd")
# A distillation block holds several [B, C, V] float32 temporaries (both models' logits and
# log-probs, the mixture): blocks are a quarter of the log-prob blocks.
MAX_DISTILL_BLOCK = MAX_BLOCK_LOGITS // 4


@dataclasses.dataclass(frozen=True)
class DistillConfig:
    """loss: "forward" | "reverse" | "jsd"; temperature tau > 0; alpha in [0, 1] weighs the
    forward KL against the hard-label loss (forward only; 1: pure KL); beta in [0, 1] the
    generalised JSD's interpolation (jsd only); chunk: positions per LM-head block;
    grad_accum: micro-batches per update."""
    loss: str = "forward"
    temperature: float = 1.0
    alpha: float = 1.0
    beta: float = 0.5
    chunk: int = 128
    grad_accum: int = 1

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"DistillConfig.loss must be one of {LOSSES}, got {self.loss!r}")
        if not self.temperature > 0:
            raise ValueError(f"DistillConfig.temperature must be > 0, got {self.temperature!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"DistillConfig.alpha must be in [0, 1], got {self.alpha!r}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"DistillConfig.beta must be in [0, 1], got {self.beta!r}")
        for name in ("chunk", "grad_accum"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"DistillConfig.{name} must be an int >= 1, got {v!r}")


def _kl(logp: Array, logq: Array) -> Array:
    """KL(P || Q) over the last axis from log-probabilities (0 * log 0 = 0)."""
    p = jnp.exp(logp)
    return jnp.sum(jnp.where(p > 0, p * (logp - logq), 0.0), axis=-1)


def token_divergence(student_logits: Array, teacher_logits: Array, targets: Array,
                     dcfg: DistillConfig) -> Array:
    """The per-position loss of `dcfg` from logits [..., V] of both models, float32 [...].

    targets [...] are the next tokens (the hard labels of the forward loss's mix)."""
    s = student_logits.astype(jnp.float32)
    t = jax.lax.stop_gradient(teacher_logits.astype(jnp.float32))
    tau = dcfg.temperature
    logq = jax.nn.log_softmax(s / tau, axis=-1)
    logp = jax.nn.log_softmax(t / tau, axis=-1)
    if dcfg.loss == "forward" or (dcfg.loss == "jsd" and dcfg.beta == 0):
        div = _kl(logp, logq)
    elif dcfg.loss == "reverse" or dcfg.beta == 1:
        div = _kl(logq, logp)
    else:
        b = dcfg.beta
        logm = jnp.logaddexp(logp + math.log(b), logq + math.log(1 - b))
        div = b * _kl(logp, logm) + (1 - b) * _kl(logq, logm)
    div = div * tau ** 2
    if dcfg.loss == "forward" and dcfg.alpha < 1:
        nll = -jnp.take_along_axis(jax.nn.log_softmax(s, axis=-1), targets[..., None],
                                   axis=-1)[..., 0]
        div = dcfg.alpha * div + (1 - dcfg.alpha) * nll
    return div


def _check_batch(batch: dict) -> None:
    for key in ("tokens", "completion_mask"):
        if key not in batch:
            raise ValueError(f"distillation batch is missing {key!r}; got keys {sorted(batch)}")
    B, T = batch["tokens"].shape
    if batch["completion_mask"].shape != (B, T - 1):
        raise ValueError(f"distillation batch: completion_mask must be [B, T-1] = {(B, T - 1)} "
                         f"for tokens {(B, T)}, got {batch['completion_mask'].shape}")


def per_token_loss(params: Params, teacher_params: Params, cfg: ModelConfig,
                   teacher_cfg: ModelConfig, tokens_BT: Array, dcfg: DistillConfig, *,
                   shard: ShardFn = None) -> Array:
    """The loss of `dcfg` at every target position, float32 [B, T-1] (position t scores the
    distributions over token t + 1), computed in position blocks; no gradient reaches the
    teacher."""
    if cfg.vocab_size != teacher_cfg.vocab_size:
        raise ValueError(f"student and teacher must share a vocabulary, got vocab_size "
                         f"{cfg.vocab_size} and {teacher_cfg.vocab_size}")
    T1 = tokens_BT.shape[1] - 1
    h_s = hidden_states(params, tokens_BT, cfg, shard)[:, :T1]
    h_t = jax.lax.stop_gradient(
        hidden_states(teacher_params, tokens_BT, teacher_cfg, shard)[:, :T1])
    targets = tokens_BT[:, 1:].astype(jnp.int32)

    def block(consts, hs_BCD, ht_BCD, targets_BC):
        p, tp = consts
        s = logits_from_hidden(p, hs_BCD, cfg).astype(jnp.float32)
        t = logits_from_hidden(jax.lax.stop_gradient(tp), ht_BCD, teacher_cfg)
        if shard is not None:
            s = shard(s, ("batch", "length", "vocab"))
            t = shard(t.astype(jnp.float32), ("batch", "length", "vocab"))
        return token_divergence(s, t, targets_BC, dcfg)

    return map_position_blocks(block, (params, teacher_params), (h_s, h_t, targets),
                               chunk=dcfg.chunk, vocab=cfg.vocab_size,
                               max_block=MAX_DISTILL_BLOCK)


def distill_loss(params: Params, teacher_params: Params, cfg: ModelConfig,
                 teacher_cfg: ModelConfig, batch: dict, dcfg: DistillConfig, *,
                 shard: ShardFn = None) -> tuple[Array, dict]:
    """Token mean of `per_token_loss` over batch["completion_mask"]; (loss, metrics {"loss",
    "num_tokens"}); 0 with no counted position. Values at masked positions never enter."""
    _check_batch(batch)
    per_token = per_token_loss(params, teacher_params, cfg, teacher_cfg, batch["tokens"], dcfg,
                               shard=shard)
    mask = batch["completion_mask"].astype(jnp.float32)
    num_tokens = jnp.sum(mask)
    loss = jnp.sum(jnp.where(mask > 0, per_token, 0.0) * mask) / jnp.maximum(num_tokens, 1.0)
    return loss, {"loss": loss, "num_tokens": num_tokens}


def distill_step(state: TrainState, teacher_params: Params, batch: dict, cfg: ModelConfig,
                 teacher_cfg: ModelConfig, tx: GradientTransformation, dcfg: DistillConfig,
                 shard: ShardFn = None) -> tuple[TrainState, dict]:
    """One optimizer update of the student (pure; see `make_distill_step`). Micro-batches are
    weighted by their counted tokens, so the accumulated gradient is the full-batch one.
    Metrics: loss, num_tokens, grad_norm (before clipping)."""
    _check_batch(batch)
    loss_fn = functools.partial(distill_loss, teacher_params=teacher_params, cfg=cfg,
                                teacher_cfg=teacher_cfg, dcfg=dcfg, shard=shard)
    weight = lambda b: jnp.sum(b["completion_mask"].astype(jnp.float32))  # noqa: E731
    loss, grads, metrics = accumulate_gradients(lambda p, b: loss_fn(p, batch=b), state.params,
                                                batch, dcfg.grad_accum, weight_fn=weight)
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                   num_tokens=weight(batch))
    return state.apply_gradients(grads, tx), metrics


def make_distill_step(cfg: ModelConfig, teacher_cfg: ModelConfig, tx: GradientTransformation,
                      dcfg: DistillConfig, *, shard: ShardFn = None,
                      state_sharding: Optional[Any] = None,
                      batch_sharding: Optional[Any] = None):
    """`distill_step` jitted once: (state, teacher_params, batch) -> (state, metrics), the
    state donated (the teacher's buffers must not alias it). Shardings as in
    `r1jax.sft.make_sft_step`; the teacher keeps the placement it is passed with."""
    def step(state, teacher_params, batch):
        return distill_step(state, teacher_params, batch, cfg, teacher_cfg, tx, dcfg, shard)

    return jit_train_step(step, state_sharding=state_sharding, batch_sharding=batch_sharding,
                          num_middle=1)
