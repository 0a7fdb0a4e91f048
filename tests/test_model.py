"""Model invariants: causality, cache == full pass, real-size shapes, no retracing; every
attention implementation and remat policy gives the reference's logits and gradients."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax import model

SMALL = model.ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                          head_dim=8, d_ff=64, max_seq_len=64)


@pytest.mark.parametrize("variant", [dict(), dict(qkv_bias=True, tie_embeddings=False),
                                     dict(n_kv_heads=4), dict(rope_scaling=(8.0, 1.0, 4.0, 16))])
def test_causality(variant):
    cfg = SMALL.replace(**variant)
    params = model.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 10), 0, cfg.vocab_size)
    changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % cfg.vocab_size)
    a = model.forward(params, tokens, cfg)
    b = model.forward(params, changed, cfg)
    np.testing.assert_allclose(a[:, :6], b[:, :6], atol=1e-6)
    assert np.abs(a[:, 6:] - b[:, 6:]).max() > 1e-3


def test_causality_through_gradients():
    """Logits at position 3 have zero gradient with respect to the inputs at positions > 3."""
    cfg = SMALL
    params = model.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8,), 0, cfg.vocab_size)

    def logits_at_3(delta_TD):
        # Give every position its own embedding row (ids V..V+7) so inputs can be perturbed.
        table = jnp.concatenate([params["embed"], params["embed"][tokens] + delta_TD], axis=0)
        wide = cfg.replace(vocab_size=cfg.vocab_size + 8)
        ids = cfg.vocab_size + jnp.arange(8)[None]
        return model.forward(dict(params, embed=table), ids, wide)[0, 3, :cfg.vocab_size].sum()

    grad = jax.grad(logits_at_3)(jnp.zeros((8, cfg.d_model)))
    assert np.abs(grad[:4]).max() > 0
    np.testing.assert_array_equal(grad[4:], 0.0)


@pytest.mark.parametrize("variant", [dict(), dict(qkv_bias=True, tie_embeddings=False),
                                     dict(attention="xla"), dict(attention="dot_product"),
                                     dict(attention="chunked", attention_block=4)])
def test_cached_prefill_and_decode_equal_full_forward(variant):
    cfg = SMALL.replace(**variant)
    params = model.init_params(cfg, jax.random.key(2))
    B, T = 3, 12
    tokens = jax.random.randint(jax.random.key(3), (B, T), 0, cfg.vocab_size)
    full = model.forward(params, tokens, cfg)
    lengths = jnp.array([5, 8, 2])
    padded = jnp.where(jnp.arange(T)[None] < lengths[:, None], tokens, 0)
    cache = model.init_cache(cfg, B, 16)
    logits, cache = jax.jit(model.prefill, static_argnums=4)(params, cache, padded, lengths, cfg)
    rows = jnp.arange(B)
    np.testing.assert_allclose(logits, full[rows, lengths - 1], atol=1e-5)
    positions = lengths
    decode_step = jax.jit(model.decode_step, static_argnums=4)
    for _ in range(4):
        logits, cache = decode_step(params, cache, tokens[rows, positions], positions, cfg)
        np.testing.assert_allclose(logits, full[rows, positions], atol=1e-5)
        positions = positions + 1


@pytest.mark.parametrize("name,expected", [("qwen2.5-0.5b", 494e6), ("qwen2.5-1.5b", 1.54e9),
                                           ("llama3.2-1b", 1.24e9)])
def test_real_presets_shapes_and_sizes(name, expected):
    cfg = model.ModelConfig.preset(name)
    n = cfg.num_params()
    assert abs(n - expected) / expected < 0.01, n
    tokens = jax.ShapeDtypeStruct((2, 16), jnp.int32)
    shapes = model.param_shapes(cfg)
    out = jax.eval_shape(lambda p, t: model.forward(p, t, cfg), shapes, tokens)
    assert out.shape == (2, 16, cfg.vocab_size) and out.dtype == jnp.float32
    axes = model.param_axes(cfg)
    jax.tree.map(lambda s, a: None if len(s.shape) == len(a) else pytest.fail(f"{a} {s.shape}"),
                 shapes, axes, is_leaf=lambda x: isinstance(x, tuple))


def test_tiny_preset_is_laptop_sized():
    assert 5e5 < model.ModelConfig.preset("tiny").num_params() < 2e7


def test_one_trace_for_repeated_shapes():
    cfg = SMALL
    params = model.init_params(cfg, jax.random.key(0))
    traces = []

    @jax.jit
    def f(p, t):
        traces.append(1)
        return model.forward(p, t, cfg)

    for seed in range(3):
        f(params, jax.random.randint(jax.random.key(seed), (2, 8), 0, cfg.vocab_size))
    assert len(traces) == 1


def test_remat_gives_the_same_gradients():
    params = model.init_params(SMALL, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, SMALL.vocab_size)

    def grads(cfg):
        return jax.grad(lambda p: model.forward(p, tokens, cfg).std())(params)

    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                 grads(SMALL), grads(SMALL.replace(remat=True)))


def test_bf16_compute_runs_and_is_close():
    cfg = SMALL
    params = model.init_params(cfg, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 8), 0, cfg.vocab_size)
    a = model.forward(params, tokens, cfg)
    b = model.forward(params, tokens, cfg.replace(compute_dtype="bfloat16"))
    assert b.dtype == jnp.float32
    assert np.abs(a - b).max() < 0.1


@pytest.mark.parametrize("field,value", [("d_model", 0), ("n_heads", 3), ("head_dim", 7),
                                         ("compute_dtype", "fp8"), ("rope_scaling", (1.0,)),
                                         ("vocab_size", 2.5), ("remat", "full"),
                                         ("attention", "flash"), ("attention_block", 0),
                                         ("mlp_chunk", -1)])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SMALL.replace(**{field: value})


def test_unknown_preset_and_bad_tokens():
    with pytest.raises(ValueError, match="preset"):
        model.ModelConfig.preset("gpt5")
    params = model.init_params(SMALL, jax.random.key(0))
    with pytest.raises(ValueError, match="tokens"):
        model.forward(params, jnp.zeros((2, 3, 4), jnp.int32), SMALL)
    with pytest.raises(ValueError, match="max_seq_len"):
        model.init_cache(SMALL, 1, 1000)


def test_remat_flag_is_a_policy_name():
    assert SMALL.replace(remat=True).remat == "block"
    assert SMALL.replace(remat=False) == SMALL and SMALL.remat == "none"


VARIANT_CFG = SMALL.replace(qkv_bias=True)


@functools.cache
def _logits_and_grads(cfg):
    """(logits, grads of a scalar of them) of VARIANT_CFG's weights on fixed tokens."""
    params = model.init_params(VARIANT_CFG, jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (2, 11), 0, cfg.vocab_size)

    def loss(p):
        logits = model.forward(p, tokens, cfg)
        return jnp.std(logits) + jnp.mean(logits[:, -3:] ** 2), logits

    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return logits, grads


@pytest.mark.parametrize("variant", [
    dict(attention="chunked", attention_block=4),       # 11 positions: 3 query x 3 key blocks
    dict(attention="chunked", remat="block", attention_block=5, mlp_chunk=8),  # chunked MLP
    dict(attention="chunked", remat="dots"),
    dict(attention="dot_product", remat="block"),
    dict(attention="auto", remat="block", mlp_chunk=64)])
def test_attention_and_remat_variants_equal_xla(variant):
    """Logits and gradients of every attention implementation / remat policy equal the
    materialised-scores reference in float32."""
    ref_logits, ref_grads = _logits_and_grads(VARIANT_CFG.replace(attention="xla"))
    logits, grads = _logits_and_grads(VARIANT_CFG.replace(**variant))
    np.testing.assert_allclose(logits, ref_logits, atol=2e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4)


def test_chunked_attention_with_ragged_positions():
    """Per-row query positions (decode-like, several queries per row, keys past a row's
    position masked), uneven blocks: output and VJP equal the einsum reference."""
    B, T, S, N, K, H = 3, 5, 13, 4, 2, 8
    ks = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(ks[0], (B, T, N, H))
    k = jax.random.normal(ks[1], (B, S, K, H))
    v = jax.random.normal(ks[2], (B, S, K, H))
    pos = jnp.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11], [2, 2, 12, 5, 0]], jnp.int32)
    dout = jax.random.normal(ks[3], (B, T, N, H))

    def out_and_vjp(fn):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, pos), q, k, v)
        return out, vjp(dout)

    ref, ref_grads = jax.jit(lambda: out_and_vjp(model.xla_attention))()
    for block in (3, 4, 64):
        out, grads = jax.jit(lambda: out_and_vjp(
            lambda *a: model.chunked_attention(*a, block)))()
        np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
        for a, b in zip(grads, ref_grads):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_chunked_attention_backward_keeps_no_score_matrix():
    """XLA's own buffer accounting: the training pass of "xla" attention holds [B, N, T, T]
    float32 scores; "chunked" needs less than one such matrix in all."""
    B, T, N, K, H = 2, 512, 4, 2, 16
    shapes = [jax.ShapeDtypeStruct((B, T, N, H), jnp.float32),
              jax.ShapeDtypeStruct((B, T, K, H), jnp.float32),
              jax.ShapeDtypeStruct((B, T, K, H), jnp.float32)]
    pos = jnp.broadcast_to(jnp.arange(T), (B, T))
    scores = B * N * T * T * 4

    def temp_bytes(fn):
        grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v, pos) ** 2), (0, 1, 2)))
        return grad.lower(*shapes).compile().memory_analysis().temp_size_in_bytes

    assert temp_bytes(model.xla_attention) >= scores
    assert temp_bytes(lambda *a: model.chunked_attention(*a, 64)) < scores / 2
