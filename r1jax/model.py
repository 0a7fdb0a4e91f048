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
REMAT_POLICIES = ("none", "block", "dots")
ATTENTION_IMPLS = ("auto", "xla", "dot_product", "chunked")


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
      remat: what the backward pass recomputes instead of storing (a policy name; True and
        False are accepted as "block" and "none"):
          "none"   store every activation (fastest when memory allows: tiny CPU runs);
          "block"  store only each layer's input and recompute the layer in the backward:
                   activations O(L * B * T * D) plus one layer's working set, whose MLP
                   part is bounded by running passes over more than `mlp_chunk` tokens
                   in sequence chunks (`swiglu`);
          "dots"   store the outputs of the weight matmuls (q/k/v/o projections, MLP), and
                   recompute attention and the elementwise ops
                   (`jax.checkpoint_policies.dots_with_no_batch_dims_saveable`).
      attention: how attention is computed (all give the same values; see `attention`):
          "xla"          einsum + float32 softmax; materialises [B, N, T, S] scores (and the
                         backward keeps them): the reference the others are tested against.
          "dot_product"  `jax.nn.dot_product_attention`: cuDNN flash attention on GPU for
                         bf16/fp16 causal passes where cuDNN supports the shape ("chunked"
                         when cuDNN declines), its XLA implementation elsewhere (decode
                         steps included).
          "chunked"      flash-style: online softmax over key blocks of `attention_block`
                         positions, query blocks likewise, causally masked blocks skipped,
                         and a custom backward that keeps only the output and the
                         log-sum-exp [B, N, T]: no [B, N, T, S] array in forward or backward.
          "auto"         (default) causal passes (training, log-probs, prefill): cuDNN
                         "dot_product" on GPU in bf16/fp16, else "chunked" (as fast as "xla"
                         forward at short lengths, and its backward stores no scores);
                         decode steps "xla" (one query row: its scores are [B, N, 1, S]).
      attention_block: query / key block length of "chunked" attention (blocks are evened
        out so that padding stays below one block / number of blocks).
      mlp_chunk: tokens (rows x positions) per MLP chunk under remat "block".
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
    remat: str = "none"
    attention: str = "auto"
    attention_block: int = 512
    mlp_chunk: int = 16384

    def __post_init__(self):
        if isinstance(self.remat, bool):  # the historical flag (configs, old checkpoints)
            object.__setattr__(self, "remat", "block" if self.remat else "none")
        for name, choices in (("remat", REMAT_POLICIES), ("attention", ATTENTION_IMPLS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"ModelConfig.{name} must be one of {choices}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "head_dim", "d_ff", "max_seq_len", "attention_block", "mlp_chunk"):
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
        """Named shapes: "tiny" (laptop), "micro" (a smaller student), "qwen2.5-0.5b", "qwen2.5-1.5b", "llama3.2-1b"."""
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
    # 0.17M parameters, the same byte vocabulary: the student of tiny distillation
    # (configs/distill.py), pretrained on the same corpus.
    "micro": ModelConfig(vocab_size=264, d_model=64, n_layers=3, n_heads=4, n_kv_heads=2,
                         head_dim=16, d_ff=192, rope_theta=10000.0, tie_embeddings=True,
                         max_seq_len=512),
    "qwen2.5-0.5b": ModelConfig(vocab_size=151936, d_model=896, n_layers=24, n_heads=14,
                                n_kv_heads=2, head_dim=64, d_ff=4864, rope_theta=1e6,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768,
                                param_dtype="bfloat16", compute_dtype="bfloat16", remat="block"),
    "qwen2.5-1.5b": ModelConfig(vocab_size=151936, d_model=1536, n_layers=28, n_heads=12,
                                n_kv_heads=2, head_dim=128, d_ff=8960, rope_theta=1e6,
                                qkv_bias=True, tie_embeddings=True, max_seq_len=32768,
                                param_dtype="bfloat16", compute_dtype="bfloat16", remat="block"),
    "llama3.2-1b": ModelConfig(vocab_size=128256, d_model=2048, n_layers=16, n_heads=32,
                               n_kv_heads=8, head_dim=64, d_ff=8192, rope_theta=500000.0,
                               rope_scaling=(32.0, 1.0, 4.0, 8192), norm_eps=1e-5,
                               tie_embeddings=True, max_seq_len=131072,
                               param_dtype="bfloat16", compute_dtype="bfloat16", remat="block"),
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


def _dense(x_BTX: Array, w: Array, n_in: int = 1) -> Array:
    """x [..., *in] @ w [*in, *out] -> [..., *out] as one 2-D matmul over the flattened rows
    (XLA:CPU runs the backward of rank-3 einsums through slow transposing copies)."""
    lead, k = x_BTX.shape[:-n_in], math.prod(x_BTX.shape[-n_in:])
    out = w.shape[n_in:]
    y = x_BTX.reshape(-1, k) @ w.reshape(k, -1)
    return y.reshape(*lead, *out)


def _qkv(layer: Params, x_BTD: Array, positions_BT: Array, cfg: ModelConfig, inv_freq: Array):
    dt = cfg.dtype
    q = _dense(x_BTD, layer["q"].astype(dt))
    k = _dense(x_BTD, layer["k"].astype(dt))
    v = _dense(x_BTD, layer["v"].astype(dt))
    if cfg.qkv_bias:
        q = q + layer["q_bias"].astype(dt)[None, None]
        k = k + layer["k_bias"].astype(dt)[None, None]
        v = v + layer["v_bias"].astype(dt)[None, None]
    return apply_rope(q, positions_BT, inv_freq), apply_rope(k, positions_BT, inv_freq), v


_MASKED = -1e30   # score of an invisible key (finite: a row with no visible key stays finite)


def _visible(positions_BT: Array, start, length: int, S: int) -> Array:
    """bool [B, T, length]: key start + s is visible to query (b, t) iff it is a real key
    (< S) at or before the query's position."""
    keys = start + jnp.arange(length, dtype=jnp.int32)
    return (keys[None, None, :] <= positions_BT[:, :, None]) & (keys < S)[None, None, :]


def xla_attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, positions_BT: Array) -> Array:
    """Grouped-query attention as einsums with a float32 softmax over the whole [T, S] score
    matrix. Key s is visible to query (b, t) iff s <= positions_BT[b, t]."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    q_BTKRH = q_BTNH.reshape(B, T, K, N // K, H)
    scores = jnp.einsum("BTKRH,BSKH->BKRTS", q_BTKRH, k_BSKH).astype(jnp.float32) / math.sqrt(H)
    mask_BTS = _visible(positions_BT, 0, S, S)
    scores = jnp.where(mask_BTS[:, None, None, :, :], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BSKH.dtype)
    out = jnp.einsum("BKRTS,BSKH->BTKRH", probs, v_BSKH)
    return out.reshape(B, T, N, H)



def _blocks(n: int, block: int) -> tuple[int, int]:
    """(number of blocks, block length) covering n positions with blocks <= block, evened out
    so that the padding is less than the number of blocks."""
    count = -(-n // block)
    return count, -(-n // count)


def _pad_axis1(x: Array, total: int, value=0) -> Array:
    pad = total - x.shape[1]
    if not pad:
        return x
    widths = [(0, 0)] * x.ndim
    widths[1] = (0, pad)
    return jnp.pad(x, widths, constant_values=value)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def chunked_attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, positions_BT: Array,
                      block: int = 512) -> Array:
    """`xla_attention` computed flash-style: query blocks in sequence, each running an online
    softmax over the key blocks that hold a visible key (blocks wholly after the block's last
    query position are skipped), `block` positions each (evened out, see `_blocks`).

    The backward pass (custom VJP) recomputes the scores block by block from q, k, v, the
    output and the per-query log-sum-exp, so neither pass stores a [B, N, T, S] array: the
    largest temporaries are float32 [B, N, block, block] score blocks. (In the code Q and C
    are the query and key block lengths.)
    """
    return _chunked_fwd(q_BTNH, k_BSKH, v_BSKH, positions_BT, block)[0]


def _chunked_layout(q_BTNH, k_BSKH, v_BSKH, positions_BT, block):
    """Padded, blocked operands: q [nq, B, Cq, K, R, H], positions [nq, B or 1, Cq], k and v
    [B, nk * Ck, K, H], and the block sizes."""
    B, T, N, H = q_BTNH.shape
    S, K = k_BSKH.shape[1], k_BSKH.shape[2]
    nq, Cq = _blocks(T, block)
    nk, Ck = _blocks(S, block)
    q = _pad_axis1(q_BTNH, nq * Cq).reshape(B, nq, Cq, K, N // K, H).swapaxes(0, 1)
    rows = positions_BT.shape[0]   # B, or 1 when every row has the same positions
    pos = _pad_axis1(positions_BT.astype(jnp.int32), nq * Cq).reshape(rows, nq, Cq)
    pos = pos.swapaxes(0, 1)
    k = _pad_axis1(k_BSKH, nk * Ck)
    v = _pad_axis1(v_BSKH, nk * Ck)
    return q, pos, k, v, (nq, Cq, nk, Ck, S)


def _key_blocks_needed(pos_BQ: Array, Ck: int, nk: int) -> Array:
    """Key blocks 0..n-1 hold every key visible to these queries (positions are >= 0)."""
    return jnp.clip(jnp.max(pos_BQ) // Ck + 1, 1, nk)


def _over_key_blocks(body, pos_BQ: Array, Ck: int, nk: int, init):
    """body(j, carry) over the key blocks the queries need; a plain call for one block."""
    if nk == 1:
        return body(0, init)
    return jax.lax.fori_loop(0, _key_blocks_needed(pos_BQ, Ck, nk), body, init)


def _block_scores(q_BQKRH, k_blk, pos_BQ, j, Ck, S, scale):
    """float32 scores [B, K, R, Q, C] of one (query block, key block j), masked."""
    s = jnp.einsum("BQKRH,BCKH->BKRQC", q_BQKRH, k_blk,
                   preferred_element_type=jnp.float32) * scale
    vis = _visible(pos_BQ, j * Ck, Ck, S)[:, None, None]
    return s, vis


def _chunked_fwd(q_BTNH, k_BSKH, v_BSKH, positions_BT, block):
    B, T, N, H = q_BTNH.shape
    q, pos, k, v, (nq, Cq, nk, Ck, S) = _chunked_layout(q_BTNH, k_BSKH, v_BSKH, positions_BT,
                                                         block)
    K, R = q.shape[3], q.shape[4]
    scale = 1.0 / math.sqrt(H)

    def query_block(args):
        q_BQKRH, pos_BQ = args

        def key_block(j, carry):
            m, l, acc = carry
            k_blk = jax.lax.dynamic_slice_in_dim(k, j * Ck, Ck, axis=1)
            v_blk = jax.lax.dynamic_slice_in_dim(v, j * Ck, Ck, axis=1)
            s, vis = _block_scores(q_BQKRH, k_blk, pos_BQ, j, Ck, S, scale)
            s = jnp.where(vis, s, _MASKED)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            p = jnp.exp(s - m_new[..., None])
            corr = jnp.exp(m - m_new)
            l = l * corr + jnp.sum(p, axis=-1)
            pv = jnp.einsum("BKRQC,BCKH->BKRQH", p.astype(v.dtype), v_blk,
                            preferred_element_type=jnp.float32)
            return m_new, l, acc * corr[..., None] + pv

        init = (jnp.full((B, K, R, Cq), _MASKED, jnp.float32),
                jnp.zeros((B, K, R, Cq), jnp.float32),
                jnp.zeros((B, K, R, Cq, H), jnp.float32))
        m, l, acc = _over_key_blocks(key_block, pos_BQ, Ck, nk, init)
        return acc / l[..., None], m + jnp.log(l)

    if nq == 1:
        out, lse = jax.tree.map(lambda x: x[None], query_block((q[0], pos[0])))
    else:
        out, lse = jax.lax.map(query_block, (q, pos))     # [nq, B, K, R, Cq, (H)]
    out_BTNH = out.transpose(1, 0, 4, 2, 3, 5).reshape(B, nq * Cq, N, H)[:, :T]
    out_BTNH = out_BTNH.astype(q_BTNH.dtype)
    return out_BTNH, (q_BTNH, k_BSKH, v_BSKH, positions_BT, out_BTNH, lse)


def _chunked_bwd(block, res, dout_BTNH):
    q_BTNH, k_BSKH, v_BSKH, positions_BT, out_BTNH, lse = res
    B, T, N, H = q_BTNH.shape
    q, pos, k, v, (nq, Cq, nk, Ck, S) = _chunked_layout(q_BTNH, k_BSKH, v_BSKH, positions_BT,
                                                         block)
    K, R = q.shape[3], q.shape[4]
    scale = 1.0 / math.sqrt(H)
    # D = rowsum(dO * O) per query and head, [nq, B, K, R, Cq] like lse.
    delta = jnp.sum(dout_BTNH.astype(jnp.float32) * out_BTNH.astype(jnp.float32), axis=-1)
    delta = _pad_axis1(delta, nq * Cq).reshape(B, nq, Cq, K, R).transpose(1, 0, 3, 4, 2)
    do = _pad_axis1(dout_BTNH, nq * Cq).reshape(B, nq, Cq, K, R, H).swapaxes(0, 1)

    def query_block(carry, xs):
        dk, dv = carry
        q_BQKRH, pos_BQ, do_BQKRH, lse_BKRQ, delta_BKRQ = xs

        def key_block(j, inner):
            dq, dk, dv = inner
            k_blk = jax.lax.dynamic_slice_in_dim(k, j * Ck, Ck, axis=1)
            v_blk = jax.lax.dynamic_slice_in_dim(v, j * Ck, Ck, axis=1)
            s, vis = _block_scores(q_BQKRH, k_blk, pos_BQ, j, Ck, S, scale)
            p = jnp.where(vis, jnp.exp(s - lse_BKRQ[..., None]), 0.0)
            dp = jnp.einsum("BQKRH,BCKH->BKRQC", do_BQKRH, v_blk,
                            preferred_element_type=jnp.float32)
            ds = (p * (dp - delta_BKRQ[..., None]) * scale).astype(q.dtype)
            dq = dq + jnp.einsum("BKRQC,BCKH->BKRQH", ds, k_blk,
                                 preferred_element_type=jnp.float32)
            dk_blk = jnp.einsum("BKRQC,BQKRH->BKCH", ds, q_BQKRH,
                                preferred_element_type=jnp.float32)
            dv_blk = jnp.einsum("BKRQC,BQKRH->BKCH", p.astype(do.dtype), do_BQKRH,
                                preferred_element_type=jnp.float32)
            dk = jax.lax.dynamic_update_slice_in_dim(
                dk, jax.lax.dynamic_slice_in_dim(dk, j * Ck, Ck, axis=2) + dk_blk, j * Ck, 2)
            dv = jax.lax.dynamic_update_slice_in_dim(
                dv, jax.lax.dynamic_slice_in_dim(dv, j * Ck, Ck, axis=2) + dv_blk, j * Ck, 2)
            return dq, dk, dv

        dq = jnp.zeros((B, K, R, Cq, H), jnp.float32)   # the layout the einsum gives
        dq, dk, dv = _over_key_blocks(key_block, pos_BQ, Ck, nk, (dq, dk, dv))
        return (dk, dv), dq

    zeros = jnp.zeros((B, K, k.shape[1], H), jnp.float32)   # dk, dv as the einsums give them
    xs = (q, pos, do, lse, delta)
    if nq == 1:
        (dk, dv), dq = query_block((zeros, zeros), jax.tree.map(lambda x: x[0], xs))
        dq = dq[None]
    else:
        (dk, dv), dq = jax.lax.scan(query_block, (zeros, zeros), xs)
    # [nq, B, K, R, Cq, H] -> [B, T, N, H]
    dq_BTNH = dq.transpose(1, 0, 4, 2, 3, 5).reshape(B, nq * Cq, N, H)[:, :T]
    dq_BTNH = dq_BTNH.astype(q_BTNH.dtype)
    dk_BSKH, dv_BSKH = (d[:, :, :S].swapaxes(1, 2) for d in (dk, dv))
    return (dq_BTNH, dk_BSKH.astype(k_BSKH.dtype), dv_BSKH.astype(v_BSKH.dtype), None)


chunked_attention.defvjp(_chunked_fwd, _chunked_bwd)


def _cudnn_ok(cfg: ModelConfig, dtype) -> bool:
    """Whether a causal pass may go to cuDNN flash attention (GPU, half precision, head_dim
    a multiple of 8 up to 128; cuDNN itself may still decline, see `dot_product_attention`)."""
    return (jax.default_backend() == "gpu" and jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16)
            and cfg.head_dim % 8 == 0 and cfg.head_dim <= 128)


def dot_product_attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, positions_BT: Array,
                          causal: bool, cfg: ModelConfig) -> Array:
    """`jax.nn.dot_product_attention`: cuDNN flash attention for a causal pass (positions
    0..T-1, S == T) where `_cudnn_ok`, else its XLA implementation (which materialises the
    scores like `xla_attention`). Falls back to "chunked" when cuDNN declines the call."""
    if causal and _cudnn_ok(cfg, q_BTNH.dtype):
        try:
            return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, is_causal=True,
                                                implementation="cudnn")
        except (NotImplementedError, RuntimeError, ValueError, TypeError):
            return chunked_attention(q_BTNH, k_BSKH, v_BSKH, positions_BT, cfg.attention_block)
    if causal:
        return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, is_causal=True,
                                            implementation="xla")
    mask = _visible(positions_BT, 0, k_BSKH.shape[1], k_BSKH.shape[1])[:, None]
    return jax.nn.dot_product_attention(q_BTNH, k_BSKH, v_BSKH, mask=mask, implementation="xla")


def attention_impl(cfg: ModelConfig, causal: bool, dtype) -> str:
    """The implementation cfg.attention resolves to ("auto": see `ModelConfig`)."""
    if cfg.attention != "auto":
        return cfg.attention
    if not causal:
        return "xla"
    return "dot_product" if _cudnn_ok(cfg, dtype) else "chunked"


def attention(q_BTNH: Array, k_BSKH: Array, v_BSKH: Array, positions_BT: Array,
              cfg: ModelConfig, causal: bool = False) -> Array:
    """Grouped-query attention, softmax in float32; returns [B, T, N, H] in q's dtype.

    Key s is visible to query (b, t) iff s <= positions_BT[b, t] (causal full passes:
    positions 0..T-1 and causal=True, S = T; decode: each row's position in the cache).
    positions_BT may be [1, T] when all rows share their positions.
    cfg.attention picks the implementation (`attention_impl`).
    """
    impl = attention_impl(cfg, causal, q_BTNH.dtype)
    if impl == "xla":
        return xla_attention(q_BTNH, k_BSKH, v_BSKH, positions_BT)
    if impl == "chunked":
        return chunked_attention(q_BTNH, k_BSKH, v_BSKH, positions_BT, cfg.attention_block)
    return dot_product_attention(q_BTNH, k_BSKH, v_BSKH, positions_BT, causal, cfg)


def _to_chunks(x_BTX: Array, n: int, c: int) -> Array:
    """[B, T, ...] -> [n, B, c, ...]: n sequence chunks of c positions (T padded)."""
    x = _pad_axis1(x_BTX, n * c)
    return x.reshape(x.shape[0], n, c, *x.shape[2:]).swapaxes(0, 1)


def _from_chunks(x_nBcX: Array, T: int) -> Array:
    n, B, c = x_nBcX.shape[:3]
    return x_nBcX.swapaxes(0, 1).reshape(B, n * c, *x_nBcX.shape[3:])[:, :T]


def _swiglu_gate_up(x_BTD, gate_DF, up_DF):
    return _dense(x_BTD, gate_DF), _dense(x_BTD, up_DF)


def _swiglu_out(g_BTF, u_BTF, down_FD, shard):
    h = shard(jax.nn.silu(g_BTF) * u_BTF, ("batch", "length", "mlp"))
    return _dense(h, down_FD)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def swiglu(x_BTD: Array, gate_DF: Array, up_DF: Array, down_FD: Array, chunks: int = 1,
           shard=_identity_shard) -> Array:
    """The SwiGLU MLP down(silu(x gate) * (x up)) with a custom backward.

    chunks == 1: the backward keeps x and the two [B, T, F] matmul outputs (autodiff keeps
    about five [B, T, F] arrays: sigmoid, silu and their products too) and recomputes the
    elementwise part. chunks > 1: both passes run over sequence chunks in turn (a lax.map /
    lax.scan), and the backward keeps only x, recomputing each chunk's matmuls: the MLP's
    working set is that of one chunk.
    """
    return _swiglu_fwd(x_BTD, gate_DF, up_DF, down_FD, chunks, shard)[0]


def _swiglu_fwd(x_BTD, gate_DF, up_DF, down_FD, chunks, shard):
    weights = (gate_DF, up_DF, down_FD)
    if chunks == 1:
        g, u = _swiglu_gate_up(x_BTD, gate_DF, up_DF)
        return _swiglu_out(g, u, down_FD, shard), (x_BTD, g, u, weights)
    T = x_BTD.shape[1]
    n, c = _blocks(T, -(-T // chunks))
    y = jax.lax.map(lambda x: _swiglu_out(*_swiglu_gate_up(x, gate_DF, up_DF), down_FD, shard),
                    _to_chunks(x_BTD, n, c))
    return _from_chunks(y, T), (x_BTD, None, None, weights)


def _swiglu_bwd(chunks, shard, res, dy_BTD):
    x_BTD, g_BTF, u_BTF, (gate_DF, up_DF, down_FD) = res

    def wgrad(a, b):   # a^T b over all rows and positions, float32
        return jnp.einsum("ix,iy->xy", a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]),
                          preferred_element_type=jnp.float32)

    def grads(x, g, u, dy):
        """(dx, (d gate, d up, d down)) of one chunk."""
        sig = jax.nn.sigmoid(g)
        act = g * sig
        h = shard(act * u, ("batch", "length", "mlp"))
        dh = shard(_dense(dy, down_FD.T), ("batch", "length", "mlp"))
        du = dh * act
        dg = dh * u * (sig * (1 + g * (1 - sig)))
        dx = _dense(dg, gate_DF.T) + _dense(du, up_DF.T)
        return dx, (wgrad(x, dg), wgrad(x, du), wgrad(h, dy))

    if g_BTF is not None:
        dx, dws = grads(x_BTD, g_BTF, u_BTF, dy_BTD)
    else:
        T = x_BTD.shape[1]
        n, c = _blocks(T, -(-T // chunks))

        def chunk(acc, xs):
            x, dy = xs
            dx, dws = grads(x, *_swiglu_gate_up(x, gate_DF, up_DF), dy)
            return jax.tree.map(jnp.add, acc, dws), dx

        zeros = tuple(jnp.zeros(w.shape, jnp.float32) for w in (gate_DF, up_DF, down_FD))
        dws, dx = jax.lax.scan(chunk, zeros, (_to_chunks(x_BTD, n, c),
                                              _to_chunks(dy_BTD, n, c)))
        dx = _from_chunks(dx, T)
    return (dx.astype(x_BTD.dtype),) + tuple(
        d.astype(w.dtype) for d, w in zip(dws, (gate_DF, up_DF, down_FD)))


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)


def _mlp(layer: Params, x_BTD: Array, cfg: ModelConfig, shard) -> Array:
    """`swiglu`; under remat "block" (the block is recomputed in the backward anyway) a pass
    over more than cfg.mlp_chunk tokens runs in sequence chunks."""
    dt = cfg.dtype
    weights = (layer["gate"].astype(dt), layer["up"].astype(dt), layer["down"].astype(dt))
    B, T = x_BTD.shape[:2]
    chunks = min(T, -(-B * T // cfg.mlp_chunk)) if cfg.remat == "block" else 1
    return swiglu(x_BTD, *weights, chunks, shard)


def _block(layer: Params, x_BTD: Array, positions_BT: Array, cfg, inv_freq, shard,
           kv_BSKH=None):
    """One transformer block. With kv_BSKH=None a causal pass over its own keys (positions
    0..T-1); otherwise attends to the given cache (which already contains this step's k/v)."""
    h = rms_norm(x_BTD, layer["attn_norm"], cfg.norm_eps)
    q, k, v = _qkv(layer, h, positions_BT, cfg, inv_freq)
    q = shard(q, ("batch", "length", "q_heads", "head_dim"))
    keys, values = (k, v) if kv_BSKH is None else kv_BSKH
    attn = attention(q, keys, values, positions_BT, cfg, causal=kv_BSKH is None)
    x_BTD = x_BTD + _dense(attn, layer["o"].astype(cfg.dtype), n_in=2)
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
    T = tokens_BT.shape[1]
    positions = jnp.arange(T, dtype=jnp.int32)[None]   # [1, T]: the same for every row
    inv_freq = rope_frequencies(cfg)
    x = shard(params["embed"].astype(cfg.dtype)[tokens_BT], ("batch", "length", "embed"))

    def body(x, layer):
        return _block(layer, x, positions, cfg, inv_freq, shard)

    if cfg.remat == "block":
        body = jax.checkpoint(body, prevent_cse=False)
    elif cfg.remat == "dots":
        body = jax.checkpoint(body, prevent_cse=False,
                              policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
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
    inv_freq = rope_frequencies(cfg)
    pos_B1 = positions_B.astype(jnp.int32)[:, None]
    x = params["embed"].astype(cfg.dtype)[tokens_B][:, None, :]
    rows = jnp.arange(B)

    def body(carry, layer):
        x, k_all, v_all, i = carry
        h = rms_norm(x, layer["attn_norm"], cfg.norm_eps)
        q, k, v = _qkv(layer, h, pos_B1, cfg, inv_freq)
        k_all = k_all.at[i, rows, positions_B].set(k[:, 0].astype(k_all.dtype))
        v_all = v_all.at[i, rows, positions_B].set(v[:, 0].astype(v_all.dtype))
        attn = attention(q, k_all[i].astype(q.dtype), v_all[i].astype(q.dtype), pos_B1, cfg)
        x = x + _dense(attn, layer["o"].astype(cfg.dtype), n_in=2)
        h = rms_norm(x, layer["mlp_norm"], cfg.norm_eps)
        x = shard(x + _mlp(layer, h, cfg, shard), ("batch", "length", "embed"))
        return (x, k_all, v_all, i + 1), None

    (x, k_all, v_all, _), _ = jax.lax.scan(
        body, (x, cache["k"], cache["v"], jnp.int32(0)), params["layers"])
    h = rms_norm(x[:, 0], params["final_norm"], cfg.norm_eps)
    out = logits_from_hidden(params, h, cfg) if head else h
    return out, {"k": k_all, "v": v_all}
