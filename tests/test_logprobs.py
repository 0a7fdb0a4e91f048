"""token_logprobs against log_softmax of the full forward pass; no [B, T, V] array anywhere."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.logprobs import token_logprobs
from r1jax.model import ModelConfig, forward, init_params

CFG = ModelConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
                  d_ff=64, max_seq_len=64)
B, T = 3, 13
_init = jax.jit(lambda key: init_params(CFG, key))   # one compile, not op-by-op


@pytest.fixture(scope="module")
def setup():
    params = _init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, CFG.vocab_size, jnp.int32)
    return params, tokens


@jax.jit
def _reference(params, tokens):
    """Unchunked: log_softmax of model.forward, gathered at the next token."""
    logp = jax.nn.log_softmax(forward(params, tokens, CFG), axis=-1)[:, :-1]
    lp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
    return lp, entropy


@pytest.mark.parametrize("chunk", [4, 5, 128])   # T - 1 = 12: divides, does not, larger
def test_equals_log_softmax_of_forward(setup, chunk):
    params, tokens = setup
    lp, ent = jax.jit(lambda p, t: token_logprobs(p, CFG, t, chunk=chunk, with_entropy=True))(
        params, tokens)
    ref_lp, ref_ent = _reference(params, tokens)
    assert lp.shape == ent.shape == (B, T - 1) and lp.dtype == jnp.float32
    np.testing.assert_allclose(lp, ref_lp, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(ent, ref_ent, atol=1e-5, rtol=1e-5)
    lp_only = jax.jit(lambda p, t: token_logprobs(p, CFG, t, chunk=chunk))(params, tokens)
    np.testing.assert_allclose(lp_only, lp, atol=1e-6)


def test_gradients_match_unchunked(setup):
    params, tokens = setup
    w = jax.random.normal(jax.random.key(2), (B, T - 1))
    g_chunk = jax.jit(jax.grad(lambda p: jnp.sum(w * token_logprobs(p, CFG, tokens, chunk=4))))(
        params)
    g_ref = jax.jit(jax.grad(lambda p: jnp.sum(w * _reference(p, tokens)[0])))(params)
    for a, b in zip(jax.tree.leaves(g_chunk), jax.tree.leaves(g_ref)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)


def _all_avals(jaxpr):
    """Shapes of every intermediate in a jaxpr, sub-jaxprs (scan bodies, remat) included."""
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            yield v.aval.shape
        for p in eqn.params.values():
            subs = p if isinstance(p, (tuple, list)) else (p,)
            for sub in subs:
                if hasattr(sub, "eqns"):                          # Jaxpr
                    yield from _all_avals(sub)
                elif hasattr(getattr(sub, "jaxpr", None), "eqns"):  # ClosedJaxpr
                    yield from _all_avals(sub.jaxpr)


def test_no_full_length_vocab_array_forward_or_backward(setup):
    params, tokens = setup
    chunk, block = 5, 4        # T - 1 = 12 positions: three LM-head blocks of 4, no padding

    def loss(p):
        lp, ent = token_logprobs(p, CFG, tokens, chunk=chunk, with_entropy=True)
        return jnp.sum(lp) + jnp.sum(ent)

    shapes = list(_all_avals(jax.make_jaxpr(jax.grad(loss))(params).jaxpr))
    vocab_shapes = [s for s in shapes if CFG.vocab_size in s]
    assert any(s[-1] == CFG.vocab_size and block in s for s in vocab_shapes)  # chunked blocks
    lengths = {T, T - 1}
    assert not [s for s in vocab_shapes if lengths & set(s)], vocab_shapes
    activations = [s for s in vocab_shapes if len(s) >= 3]             # not the [D, V] head
    assert max(int(np.prod(s)) for s in activations) <= B * block * CFG.vocab_size


def test_bad_input():
    params = _init(jax.random.key(0))
    with pytest.raises(ValueError, match="tokens"):
        token_logprobs(params, CFG, jnp.zeros((2, 1), jnp.int32))
    with pytest.raises(ValueError, match="chunk"):
        token_logprobs(params, CFG, jnp.zeros((2, 5), jnp.int32), chunk=0)
