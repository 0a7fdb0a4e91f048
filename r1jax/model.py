"""Decoder-only transformer (Qwen2 / Llama-3 family) as pure functions over a params pytree.

Shape letters, one vocabulary for the whole package (names such as `logits_BTV` and einsum
strings use them; no letter means two things):
  B batch rows                      T sequence length          S KV-cache length
  D d_model                         F d_ff                     V vocab
  L layers                          N query heads              K kv heads
  R = N // K query heads per kv head                           H head_dim
  C sequence chunk (LM head blocks)  W top-p candidate window   E stop-string tail bytes
  P prompts (problems)              G group size: samples per prompt (GRPO's G; the
                                      sampler's num_samples), so B = P * G
  M generated tokens per row (max_new_tokens)

Parameters are a plain dict; per-layer weights are stacked on a leading L axis and the
layer loop is a `lax.scan`, so compile time does not grow with depth. `param_axes(cfg)`
gives the logical axis names of every parameter (the sharding module maps them to mesh
axes); activations are annotated through an optional `shard(x, names)` callback.

The KV cache is explicit: `init_cache` allocates it, `prefill` writes ragged prompts
(right-padded, prompt b occupies positions 0..len_b-1) and `decode_step` writes one token
per row at per-row positions, each returning the new cache.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

Array = jax.Array
Params = dict[str, Any]
# shard(x, logical_axes) -> x with a sharding constraint; identity when None.
ShardFn = Optional[Callable[[Array, tuple], Array]]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and numerics of a decoder-only transformer.

    Attributes:
      vocab_size: V.
      d_model: D, the residual width (HF `hidden_size`).
      n_layers: L.
      n_heads: N query heads.
      n_kv_heads: K key/value heads (grouped-query attention when K < N).
      head_dim: H.
      d_ff: F, SwiGLU inner width (HF `intermediate_size`).
      rope_theta: RoPE base frequency.
      rope_scaling: None, or Llama-3 scaling as
        (factor, low_freq_factor, high_freq_factor, original_max_position_embeddings).
      qkv_bias: biases on the q/k/v projections (Qwen2).
      tie_embeddings: LM head shares the embedding matrix.
      norm_eps: RMSNorm epsilon.
      max_seq_len: longest sequence the model is used with (cache allocation upper bound).
      param_dtype / compute_dtype: "float32" on CPU; "bfloat16" compute on accelerators.
      remat: recompute each block in the backward pass instead of storing its activations
        (attention scores included): memory O(L * B * T * D) instead of O(L * B * N * T^2).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_ff: int
    rope_theta: float = 10000.0
    rope_scaling: Optional[tuple[float, float, float, int]] = None
    qkv_bias: bool = False
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    max_seq_len: int = 2048
    param_dtype: str = "float32"
    compute_dtype: str = "float32"
    remat: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "head_dim", "d_ff", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"ModelConfig.n_heads ({self.n_heads}) must be a multiple of "
                             f"n_kv_heads ({self.n_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if not self.rope_theta > 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta!r}")
        if not self.norm_eps > 0:
            raise ValueError(f"ModelConfig.norm_eps must be > 0, got {self.norm_eps!r}")
        if self.rope_scaling is not None and len(self.rope_scaling) != 4:
            raise ValueError("ModelConfig.rope_scaling must be (factor, low_freq_factor, "
                             f"high_freq_factor, original_max_position_embeddings), got "
                             f"{self.rope_scaling!r}")
        for name in ("param_dtype", "compute_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(f"ModelConfig.{name} must be one of {sorted(_DTYPES)}, "
                                 f"got {getattr(self, name)!r}")

    @property
    def dtype(self):
        return _DTYPES[self.compute_dtype]

    @property
    def pdtype(self):
        return _DTYPES[self.param_dtype]

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """Named shapes: "tiny" (laptop), "qwen2.5-0.5b", "qwen2.5-1.5b", "llama3.2-1b"."""
        if name not in PRESETS:
            raise ValueError(f"unknown ModelConfig preset {name!r}; known: {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def num_params(self) -> int:
        return sum(math.prod(x.shape) for x in jax.tree.leaves(param_shapes(self)))


PRESETS = {
    # 0.82M parameters over a 264-symbol byte vocabulary: pretrains on 2 CPU cores in minutes.
    "tiny": ModelConfig(vocab_size=264, d_model=128, n_layers=4, n_heads=4, n_kv_heads=2,
                        head_dim=32, d_ff=384, rope_theta=10000.0, tie_embeddings=True,
                        max_seq_len=512),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14,
                                n_kv_heads=2, head_dim=64, d_ff=4864, rope_theta=1e6,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768,
                                param_dtype="bfloat16", compute_dtype="bfloat16", remat=True),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12,
                                n_kv_heads=2, head_dim=128, d_ff=8960, rope_theta=1e6,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768,
                                param_dtype="bfloat16", compute_dtype="bfloat16", remat=True),
    "llama3.2-1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32,
                               n_kv_heads=8, head_dim=64, d_ff=8192, rope_theta=500000.0,
                               rope_scaling=(32.0, 1.0, 4.0, 8192), norm_eps=1e-5,
                               tie_embeddings=True, max_seq_len=131072,
                               param_dtype="bfloat16", compute_dtype="bfloat16", remat=True),
}


# ----------------------------------------------------------------------------- parameters

def param_axes(cfg: ModelConfig) -> Params:
    """Logical axis names of every parameter, a pytree matching `init_params`."""
    layers = {
        "attn_norm": ("layers", "norm"),
        "q": ("layers", "embed", "q_heads", "head_dim"),
        "k": ("layers", "embed", "kv_heads", "head_dim"),
        "v": ("layers", "embed", "kv_heads", "head_dim"),
        "o": ("layers", "q_heads", "head_dim", "embed"),
        "mlp_norm": ("layers", "norm"),
        "gate": ("layers", "embed", "mlp"),
        "up": ("layers", "embed", "mlp"),
        "down": ("layers", "mlp", "embed"),
    }
    if cfg.qkv_bias:
        layers.update(q_bias=("layers", "q_heads", "head_dim"),
                      k_bias=("layers", "kv_heads", "head_dim"),
                      v_bias=("layers", "kv_heads", "head_dim"))
    axes = {"embed": ("vocab", "embed"), "layers": layers, "final_norm": ("norm",)}
    if not cfg.tie_embeddings:
        axes["lm_head"] = ("embed", "vocab")
    return axes


def param_shapes(cfg: ModelConfig) -> Params:
    """`jax.ShapeDtypeStruct` of every parameter, without allocating."""
    return jax.eval_shape(lambda: init_params(cfg, jax.random.key(0)))


def init_params(cfg: ModelConfig, key: Array) -> Params:
    """Random parameters: normal(0, 1/sqrt(fan_in)) matrices, unit norms, zero biases."""
    return _init_params_jit(cfg, key)


@functools.partial(jax.jit, static_argnums=0)
def _init_params_jit(cfg: ModelConfig, key: Array) -> Params:
    L, D, N, K, H, F, V = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads,
                           cfg.head_dim, cfg.d_ff, cfg.vocab_size)
    keys = iter(jax.random.split(key, 9))

    def normal(shape, fan_in):
        return (jax.random.normal(next(keys), shape, jnp.float32) / math.sqrt(fan_in)).astype(
            cfg.pdtype)

    layers = {
        "attn_norm": jnp.ones((L, D), cfg.pdtype),
        "q": normal((L, D, N, H), D),
        "k": normal((L, D, K, H), D),
        "v": normal((L, D, K, H), D),
        "o": normal((L, N, H, D), N * H),
        "mlp_norm": jnp.ones((L, D), cfg.pdtype),
        "gate": normal((L, D, F), D),
        "up": normal((L, D, F), D),
        "down": normal((L, F, D), F),
    }
    if cfg.qkv_bias:
        layers.update(q_bias=jnp.zeros((L, N, H), cfg.pdtype),
                      k_bias=jnp.zeros((L, K, H), cfg.pdtype),
                      v_bias=jnp.zeros((L, K, H), cfg.pdtype))
    # Embeddings at std 1/sqrt(D) keep tied logits O(1) at init.
    params = {"embed": normal((V, D), D), "layers": layers,
              "final_norm": jnp.ones((D,), cfg.pdtype)}
    if not cfg.tie_embeddings:
        params["lm_head"] = normal((D, V), D)
    return params


# ----------------------------------------------------------------------------- building blocks

def _identity_shard(x, names):
    return x


def rms_norm(x: Array, scale: Array, eps: float) -> Array:
    """RMSNorm computed in float32, returned in x's dtype."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    scale = scale.astype(jnp.float32).reshape((1,) * (x.ndim - 1) + (-1,))
    return (y * scale).astype(x.dtype)


def rope_frequencies(cfg: ModelConfig) -> Array:
    """Inverse frequencies [H/2], with Llama-3 scaling when configured (as HF computes them)."""
    H = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, H, 2, dtype=jnp.float32) / H))
    if cfg.rope_scaling is None:
        return inv_freq
    factor, low_ff, high_ff, old_len = cfg.rope_scaling
    low_wavelen, high_wavelen = old_len / low_ff, old_len / high_ff
    wavelen = 2 * math.pi / inv_freq
    scaled = jnp.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low_ff) / (high_ff - low_ff)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


def apply_rope(x_BTnH: Array, positions_BT: Array, inv_freq: Array) -> Array:
    """Rotary embedding, HF "rotate_half" layout (first half / second half of H)."""
    angles = positions_BT.astype(jnp.float32)[:, :, None] * inv_freq[None, None, :]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x = x_BTnH.astype(jnp.float32)
    x1, x2 = jnp.split(x, 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x_BTnH.dtype)


def _qkv(layer: Params, x_BTD: Array, positions_BT: Array, cfg: ModelConfig, inv_freq: Array):
    dt = cfg.dtype
    q = jnp.einsum("BTD,DNH->BTNH", x_BTD, layer["q"].astype(dt))
    k = jnp.einsum("BTD,DKH->BTKH", x_BTD, layer["k"].astype(dt))
    v = jnp.einsum("BTD,DKH->BTKH", x_BTD, layer["v"].astype(dt))
    if cfg.qkv_bias:
        q = q + layer["q_bias"].astype(dt)[None, None]
        k = k + layer["k_bias"].astype(dt)[None, None]
        v = v + layer["v_bias"].astype(dt)[None, None]
    return apply_rope(q, positions_BT, inv_freq), apply_rope(k, positions_BT, inv_freq), v


def attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, mask_BTS: Array) -> Array:
    """Grouped-query attention; softmax in float32. Returns [B, T, N, H] in q's dtype."""
    B, T, N, H = q_BTNH.shape
    K = k_BSKH.shape[2]
    q_BTKRH = q_BTNH.reshape(B, T, K, N // K, H)
    scores = jnp.einsum("BTKRH,BSKH->BKRTS", q_BTKRH, k_BSKH).astype(jnp.float32) / math.sqrt(H)
    scores = jnp.where(mask_BTS[:, None, None, :, :], scores, -1e30)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BSKH.dtype)
    out = jnp.einsum("BKRTS,BSKH->BTKRH", probs, v_BSKH)
    return out.reshape(B, T, N, H)


def _mlp(layer: Params, x_BTD: Array, cfg: ModelConfig, shard) -> Array:
    dt = cfg.dtype
    gate = jnp.einsum("BTD,DF->BTF", x_BTD, layer["gate"].astype(dt))
    up = jnp.einsum("BTD,DF->BTF", x_BTD, layer["up"].astype(dt))
    h = shard(jax.nn.silu(gate) * up, ("batch", "length", "mlp"))
    return jnp.einsum("BTF,FD->BTD", h, layer["down"].astype(dt))


def _block(layer: Params, x_BTD: Array, positions_BT: Array, mask_BTS: Array, cfg, inv_freq,
           shard, kv_BSKH=None):
    """One transformer block. With kv_BSKH=None attends to its own keys (full pass);
    otherwise attends to the given cache (which already contains this step's k/v)."""
    h = rms_norm(x_BTD, layer["attn_norm"], cfg.norm_eps)
    q, k, v = _qkv(layer, h, positions_BT, cfg, inv_freq)
    q = shard(q, ("batch", "length", "q_heads", "head_dim"))
    keys, values = (k, v) if kv_BSKH is None else kv_BSKH
    attn = attention(q, keys, values, mask_BTS)
    x_BTD = x_BTD + jnp.einsum("BTNH,NHD->BTD", attn, layer["o"].astype(cfg.dtype))
    x_BTD = shard(x_BTD, ("batch", "length", "embed"))
    h = rms_norm(x_BTD, layer["mlp_norm"], cfg.norm_eps)
    x_BTD = shard(x_BTD + _mlp(layer, h, cfg, shard), ("batch", "length", "embed"))
    return x_BTD, (k, v)


# ----------------------------------------------------------------------------- full passes

def _check_tokens(tokens, cfg: ModelConfig):
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be int [B, T], got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integers, got dtype {tokens.dtype}")


def _trunk(params: Params, tokens_BT: Array, cfg: ModelConfig, shard) -> tuple[Array, Any]:
    """Embeddings + all blocks over a causal full sequence; returns (x_BTD, (k, v) per layer)."""
    _check_tokens(tokens_BT, cfg)
    shard = shard or _identity_shard
    B, T = tokens_BT.shape
    positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((T, T), bool)), (B, T, T))
    inv_freq = rope_frequencies(cfg)
    x = shard(params["embed"].astype(cfg.dtype)[tokens_BT], ("batch", "length", "embed"))

    def body(x, layer):
        return _block(layer, x, positions, mask, cfg, inv_freq, shard)

    if cfg.remat:
        body = jax.checkpoint(body, prevent_cse=False)
    return jax.lax.scan(body, x, params["layers"])


def hidden_states(params: Params, tokens_BT: Array, cfg: ModelConfig, shard: ShardFn = None
                  ) -> Array:
    """Final-norm hidden states [B, T, D] (compute dtype) of a causal pass at positions 0..T-1.

    Apply `logits_from_hidden` in chunks over T to avoid a [B, T, V] float32 array, or put a
    value head on top.
    """
    x, _ = _trunk(params, tokens_BT, cfg, shard)
    return rms_norm(x, params["final_norm"], cfg.norm_eps)


def lm_head(params: Params, cfg: ModelConfig) -> Array:
    """The [D, V] output projection (the transposed embedding when tied)."""
    return params["embed"].T if cfg.tie_embeddings else params["lm_head"]


def logits_from_hidden(params: Params, h_xD: Array, cfg: ModelConfig) -> Array:
    """Logits [..., V] in the compute dtype from final hidden states [..., D]."""
    return jnp.einsum("...D,DV->...V", h_xD, lm_head(params, cfg).astype(h_xD.dtype))


def forward(params: Params, tokens_BT: Array, cfg: ModelConfig, shard: ShardFn = None
            ) -> Array:
    """Causal LM logits: int32 [B, T] -> float32 [B, T, V] (positions 0..T-1).

    Convenient for tests and small vocabularies; training code uses `hidden_states` with a
    chunked head instead.
    """
    h = hidden_states(params, tokens_BT, cfg, shard)
    return logits_from_hidden(params, h, cfg).astype(jnp.float32)


# ----------------------------------------------------------------------------- KV cache

def init_cache(cfg: ModelConfig, batch: int, length: int, dtype=None) -> dict[str, Array]:
    """Zeroed cache {"k", "v"}: [L, B, S, K, H] each, S = length."""
    if length > cfg.max_seq_len:
        raise ValueError(f"cache length {length} exceeds ModelConfig.max_seq_len "
                         f"{cfg.max_seq_len}")
    shape = (cfg.n_layers, batch, length, cfg.n_kv_heads, cfg.head_dim)
    dtype = dtype or cfg.dtype
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def cache_axes() -> dict[str, tuple]:
    names = ("layers", "batch", "cache_length", "kv_heads", "head_dim")
    return {"k": names, "v": names}


def prefill(params: Params, cache: dict, tokens_BT: Array, lengths_B: Array, cfg: ModelConfig,
            shard: ShardFn = None) -> tuple[Array, dict]:
    """Writes right-padded prompts into positions 0..T-1 of the cache.

    tokens_BT: prompts, row b valid for t < lengths_B[b] (padding after is ignored: its
    cache entries are overwritten by decoding before they can be attended to).
    Returns (logits_BV float32 at each row's last prompt token, new cache).
    """
    B, T = tokens_BT.shape
    if cache["k"].shape[1] != B or cache["k"].shape[2] < T:
        raise ValueError(f"cache {cache['k'].shape} cannot hold prompts of shape {(B, T)}")
    x, (k_LBTKH, v_LBTKH) = _trunk(params, tokens_BT, cfg, shard)
    last = jnp.take_along_axis(x, (lengths_B - 1)[:, None, None].astype(jnp.int32), axis=1)
    h = rms_norm(last[:, 0], params["final_norm"], cfg.norm_eps)
    cache = {
        "k": jax.lax.dynamic_update_slice(cache["k"], k_LBTKH.astype(cache["k"].dtype),
                                          (0, 0, 0, 0, 0)),
        "v": jax.lax.dynamic_update_slice(cache["v"], v_LBTKH.astype(cache["v"].dtype),
                                          (0, 0, 0, 0, 0)),
    }
    return logits_from_hidden(params, h, cfg).astype(jnp.float32), cache


def decode_step(params: Params, cache: dict, tokens_B: Array, positions_B: Array,
                cfg: ModelConfig, shard: ShardFn = None, head: bool = True
                ) -> tuple[Array, dict]:
    """One token per row at per-row positions; attends to cache positions <= its own.

    Returns (logits_BV in compute dtype -- or final hidden [B, D] when head=False -- and the
    new cache). The cache rides in the layer scan's carry and only the new position is
    written, so XLA updates it in place instead of copying it every step.
    """
    shard = shard or _identity_shard
    B = tokens_B.shape[0]
    S = cache["k"].shape[2]
    inv_freq = rope_frequencies(cfg)
    pos_B1 = positions_B.astype(jnp.int32)[:, None]
    mask_B1S = (jnp.arange(S, dtype=jnp.int32)[None, :] <= pos_B1)[:, None, :]
    x = params["embed"].astype(cfg.dtype)[tokens_B][:, None, :]
    rows = jnp.arange(B)

    def body(carry, layer):
        x, k_all, v_all, i = carry
        h = rms_norm(x, layer["attn_norm"], cfg.norm_eps)
        q, k, v = _qkv(layer, h, pos_B1, cfg, inv_freq)
        k_all = k_all.at[i, rows, positions_B].set(k[:, 0].astype(k_all.dtype))
        v_all = v_all.at[i, rows, positions_B].set(v[:, 0].astype(v_all.dtype))
        attn = attention(q, k_all[i].astype(q.dtype), v_all[i].astype(q.dtype), mask_B1S)
        x = x + jnp.einsum("BTNH,NHD->BTD", attn, layer["o"].astype(cfg.dtype))
        h = rms_norm(x, layer["mlp_norm"], cfg.norm_eps)
        x = shard(x + _mlp(layer, h, cfg, shard), ("batch", "length", "embed"))
        return (x, k_all, v_all, i + 1), None

    (x, k_all, v_all, _), _ = jax.lax.scan(
        body, (x, cache["k"], cache["v"], jnp.int32(0)), params["layers"])
    h = rms_norm(x[:, 0], params["final_norm"], cfg.norm_eps)
    out = logits_from_hidden(params, h, cfg) if head else h
    return out, {"k": k_all, "v": v_all}
