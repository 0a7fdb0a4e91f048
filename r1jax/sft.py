"""Supervised fine-tuning: masked next-token cross-entropy and its jitted step.

Batch layout (all right-padded to one length T):
  tokens:    int32 [B, T]  prompt + completion (+ padding).
  loss_mask: [B, T]        aligned with `tokens`: loss_mask[b, t] = 1 iff token t is a
             TARGET that counts, i.e. the loss includes -log p(tokens[b, t] | tokens[b, :t]).
             Put 1 on completion tokens (including the stop token), 0 on prompt and padding.
             Column 0 is ignored (no token predicts the first one).

The loss is the mean over all counted target tokens of the batch (a token mean), with the LM
head applied in chunks (`r1jax.logprobs.token_logprobs`), so no float32 [B, T, V] array exists.
"""
from __future__ import annotations

import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from optax import GradientTransformation

from r1jax.logprobs import token_logprobs
from r1jax.model import ModelConfig, Params, ShardFn
from r1jax.train_state import TrainState, accumulate_gradients, jit_train_step

Array = jax.Array


def _check_batch(batch: dict) -> None:
    for key in ("tokens", "loss_mask"):
        if key not in batch:
            raise ValueError(f"SFT batch is missing {key!r}; got keys {sorted(batch)}")
    tokens, mask = batch["tokens"], batch["loss_mask"]
    if tokens.ndim != 2 or mask.shape != tokens.shape:
        raise ValueError(f"SFT batch: tokens [B, T] and loss_mask [B, T] must match, got "
                         f"{tokens.shape} and {mask.shape}")


def sft_loss(params: Params, cfg: ModelConfig, batch: dict, *, chunk: int = 128,
             shard: ShardFn = None) -> tuple[Array, dict]:
    """Masked mean next-token cross-entropy (nats per counted target token).

    Returns (loss float32 [], metrics {"loss", "num_tokens"}); with no counted token the loss
    is 0.
    """
    _check_batch(batch)
    logprobs_BT1 = token_logprobs(params, cfg, batch["tokens"], chunk=chunk, shard=shard)
    mask_BT1 = batch["loss_mask"][:, 1:].astype(jnp.float32)
    num_tokens = jnp.sum(mask_BT1)
    loss = -jnp.sum(logprobs_BT1 * mask_BT1) / jnp.maximum(num_tokens, 1.0)
    return loss, {"loss": loss, "num_tokens": num_tokens}


def sft_step(state: TrainState, batch: dict, cfg: ModelConfig, tx: GradientTransformation, *,
             grad_accum: int = 1, chunk: int = 128, shard: ShardFn = None
             ) -> tuple[TrainState, dict]:
    """One optimizer update on `batch` (pure; jit it with donation, see `make_sft_step`).

    With grad_accum > 1, B is split into grad_accum contiguous micro-batches, each weighted by
    its number of counted tokens, so the update equals the full-batch one.
    Metrics: loss, num_tokens (of the whole batch), grad_norm (before clipping).
    """
    _check_batch(batch)
    loss_fn = functools.partial(sft_loss, cfg=cfg, chunk=chunk, shard=shard)
    loss, grads, metrics = accumulate_gradients(
        lambda p, b: loss_fn(p, batch=b), state.params, batch, grad_accum,
        weight_fn=lambda b: jnp.sum(b["loss_mask"][:, 1:].astype(jnp.float32)))
    metrics = dict(metrics, loss=loss, grad_norm=optax.global_norm(grads),
                   num_tokens=jnp.sum(batch["loss_mask"][:, 1:].astype(jnp.float32)))
    return state.apply_gradients(grads, tx), metrics


def make_sft_step(cfg: ModelConfig, tx: GradientTransformation, *, grad_accum: int = 1,
                  chunk: int = 128, shard: ShardFn = None, state_sharding: Optional[Any] = None,
                  batch_sharding: Optional[Any] = None):
    """`sft_step` jitted once: (state, batch) -> (state, metrics), the state donated.

    state_sharding / batch_sharding (pytrees of `jax.sharding.Sharding`, or None to follow
    the arguments' own placement) fix the input shardings; the new state keeps
    state_sharding.
    """
    def step(state, batch):
        return sft_step(state, batch, cfg, tx, grad_accum=grad_accum, chunk=chunk, shard=shard)

    return jit_train_step(step, state_sharding=state_sharding, batch_sharding=batch_sharding)
