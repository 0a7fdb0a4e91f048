"""Per-token log-probabilities (and entropies) of sequences, with the LM head applied in chunks.

At real vocabulary sizes a float32 [B, T, V] logits array does not fit (256 x 768 x 151,936
x 4 B = 119 GB), so the trunk runs once to give hidden states [B, T, D] and the head is
applied to `chunk` positions at a time inside a `lax.scan`: only a [B, chunk, V] logits
block exists at any moment (fewer positions when B * chunk * V would exceed
MAX_BLOCK_LOGITS). The chunk body is rematerialised (`jax.checkpoint`), so the
backward pass recomputes each block instead of storing all of them.

Alignment: position t of the result scores token t + 1 given tokens 0..t, so a [B, T]
sequence gives [B, T - 1] log-probs ("targets" are tokens[:, 1:]).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from r1jax.model import ModelConfig, Params, ShardFn, hidden_states, logits_from_hidden

Array = jax.Array

# The largest logits block, in elements (512 MiB of float32): with many rows and a large
# vocabulary the blocks get fewer positions than `chunk`.
MAX_BLOCK_LOGITS = 2**27


def _chunk_stats(params: Params, cfg: ModelConfig, h_BCD: Array, targets_BC: Array, shard,
                 with_entropy: bool) -> tuple[Array, Array | None]:
    """Log-prob of each target and (optionally) the entropy of each position's distribution,
    float32 [B, C]."""
    logits_BCV = logits_from_hidden(params, h_BCD, cfg).astype(jnp.float32)
    if shard is not None:
        logits_BCV = shard(logits_BCV, ("batch", "length", "vocab"))
    lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
    target_BC = jnp.take_along_axis(logits_BCV, targets_BC[:, :, None], axis=-1)[:, :, 0]
    if not with_entropy:
        return target_BC - lse_BC, None
    probs_BCV = jnp.exp(logits_BCV - lse_BC[:, :, None])
    entropy_BC = lse_BC - jnp.sum(probs_BCV * logits_BCV, axis=-1)
    return target_BC - lse_BC, entropy_BC


def position_blocks(T1: int, rows: int, vocab: int, chunk: int,
                    max_block: int = MAX_BLOCK_LOGITS) -> tuple[int, int]:
    """(n, C): T1 positions split into n equal blocks of C <= chunk positions, with at most
    max_block elements in a [rows, C, vocab] block (n * C - T1 < n positions of padding)."""
    if not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    n = math.ceil(T1 / max(1, min(chunk, max_block // (rows * vocab))))
    return n, math.ceil(T1 / n)


def map_position_blocks(fn, consts, arrays, *, chunk: int, vocab: int,
                        max_block: int = MAX_BLOCK_LOGITS):
    """fn(consts, *blocks) over blocks of positions, as a rematerialised `lax.scan`.

    arrays: [B, T1, ...] arrays sharing B and T1 (hidden states, targets, masks); each block
    passes [B, C, ...] slices of them (the last one zero-padded). fn returns a pytree of
    [B, C, ...] arrays; the result is that pytree over all T1 positions. Blocks have C <=
    chunk positions and B * C * vocab <= max_block (`position_blocks`); the body is wrapped
    in `jax.checkpoint`, so the backward pass recomputes each block's [B, C, V] temporaries
    instead of storing them. consts (e.g. parameters) go to every block.
    """
    B, T1 = arrays[0].shape[:2]
    n, C = position_blocks(T1, B, vocab, chunk, max_block)
    pad = n * C - T1

    def split(x):   # [B, T1, ...] -> [n, B, C, ...]
        if pad:
            x = jnp.pad(x, ((0, 0), (0, pad)) + ((0, 0),) * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(B, n, C, *x.shape[2:]), 1, 0)

    def join(y):    # [n, B, C, ...] -> [B, T1, ...]
        return jnp.moveaxis(y, 0, 1).reshape(B, n * C, *y.shape[3:])[:, :T1]

    body = jax.checkpoint(fn)

    def step(carry, xs):
        return carry, body(consts, *xs)

    _, out = jax.lax.scan(step, None, tuple(split(x) for x in arrays))
    return jax.tree.map(join, out)


def token_logprobs(params: Params, cfg: ModelConfig, tokens_BT: Array, *, chunk: int = 128,
                   shard: ShardFn = None, with_entropy: bool = False
                   ) -> Array | tuple[Array, Array]:
    """log p(tokens[:, t+1] | tokens[:, :t+1]) for t = 0..T-2, float32 [B, T-1].

    Args:
      params, cfg: the model (`r1jax.model`).
      tokens_BT: int [B, T], causal positions 0..T-1 (right padding is harmless: outputs at
        padded targets are simply to be masked by the caller).
      chunk: at most this many sequence positions per LM-head block, and at most
        MAX_BLOCK_LOGITS / (B * V); the largest logits array is float32 [B, <= chunk, V].
        Need not divide T - 1: the T - 1 positions are split into equal blocks (the last
        one padded by fewer positions than there are blocks).
      shard: optional activation-sharding callback (see `r1jax.model`).
      with_entropy: also return the entropy (nats) of each predictive distribution at
        temperature 1, float32 [B, T-1].

    Returns:
      logprobs_BT1, or (logprobs_BT1, entropy_BT1) when with_entropy.
    """
    if tokens_BT.ndim != 2 or tokens_BT.shape[1] < 2:
        raise ValueError(f"tokens must be int [B, T] with T >= 2, got shape {tokens_BT.shape}")
    if not isinstance(chunk, int) or chunk <= 0:
        raise ValueError(f"chunk must be a positive int, got {chunk!r}")
    T1 = tokens_BT.shape[1] - 1
    h_BTD = hidden_states(params, tokens_BT, cfg, shard)[:, :T1]
    targets_BT = tokens_BT[:, 1:].astype(jnp.int32)

    def body(params, h_BCD, targets_BC):
        return _chunk_stats(params, cfg, h_BCD, targets_BC, shard, with_entropy)

    logprobs, entropy = map_position_blocks(body, params, (h_BTD, targets_BT), chunk=chunk,
                                            vocab=cfg.vocab_size)
    if not with_entropy:
        return logprobs
    return logprobs, jax.lax.stop_gradient(entropy)
