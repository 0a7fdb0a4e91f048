"""Sharded equals unsharded on 8 simulated CPU devices; layouts follow the rules table."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax import model, sharding

CFG = model.ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=8, n_kv_heads=2,
                        head_dim=16, d_ff=128, qkv_bias=True, tie_embeddings=False,
                        max_seq_len=64)
MESHES = [dict(data=2, fsdp=2, tensor=2), dict(fsdp=8), dict(data=8, fsdp=1),
          dict(data=2, fsdp=1, tensor=4)]  # the last: 2 kv heads over tensor=4 fall back


def _loss(params, tokens_BT, shard=None):
    logits = model.forward(params, tokens_BT[:, :-1], CFG, shard)
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens_BT[:, 1:, None], axis=-1))


def _logits_loss_grads(params, tokens_BT, shard=None):
    def loss_fn(p):
        logits = model.forward(p, tokens_BT[:, :-1], CFG, shard)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(logp, tokens_BT[:, 1:, None], axis=-1)), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return logits, loss, grads


@pytest.fixture(scope="module")
def reference():
    params = jax.jit(lambda k: model.init_params(CFG, k))(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (8, 17), 0, CFG.vocab_size)
    return (params, tokens) + jax.jit(_logits_loss_grads)(params, tokens)


def _close(a, b, tol=2e-5):
    a, b = np.asarray(a), np.asarray(b)
    scale = max(float(np.abs(b).max()), 1e-6)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


SLOW = pytest.mark.slow
MESH_CASES = [MESHES[0]] + [pytest.param(m, marks=SLOW) for m in MESHES[1:]]


@pytest.mark.parametrize("axes", MESH_CASES,
                         ids=lambda a: "x".join(f"{k}{v}" for k, v in a.items()))
def test_sharded_forward_loss_grads_equal_unsharded(reference, axes):
    params0, tokens, logits0, loss0, grads0 = reference
    mesh = sharding.make_mesh(axes)
    params, p_sh = sharding.init_params_sharded(CFG, jax.random.key(0), mesh)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
                 params, params0)
    shard = sharding.make_shard_fn(mesh)
    b_sh = sharding.batch_sharding(mesh, shape=tokens.shape)
    fn = jax.jit(lambda p, t: _logits_loss_grads(p, t, shard), in_shardings=(p_sh, b_sh),
                 out_shardings=(None, None, p_sh))
    logits, loss, grads = fn(params, jax.device_put(tokens, b_sh))
    _close(logits, logits0)
    _close(loss, loss0)
    jax.tree.map(_close, grads, grads0)
    jax.tree.map(lambda g, s: _assert_spec(g, s.spec), grads, p_sh)


def _assert_spec(x, spec):
    assert x.sharding.is_equivalent_to(NamedSharding(x.sharding.mesh, spec), x.ndim), \
        (x.sharding, spec)


def test_parameter_layout_follows_rules():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    params, _ = sharding.init_params_sharded(CFG, jax.random.key(0), mesh)
    layers = params["layers"]
    expected = {
        "q": P(None, "fsdp", "tensor", None), "k": P(None, "fsdp", "tensor", None),
        "o": P(None, "tensor", None, "fsdp"), "gate": P(None, "fsdp", "tensor"),
        "down": P(None, "tensor", "fsdp"), "attn_norm": P(None, None),
        "q_bias": P(None, "tensor", None),
    }
    for name, spec in expected.items():
        assert layers[name].sharding.spec == spec, name
    assert params["embed"].sharding.spec == P("tensor", "fsdp")
    assert params["lm_head"].sharding.spec == P("fsdp", "tensor")
    # Each device holds exactly its block: [L, D/2, N/2, H] for q.
    shard_shapes = {s.data.shape for s in layers["q"].addressable_shards}
    assert shard_shapes == {(2, 32, 4, 16)}


def test_indivisible_axis_falls_back_to_replication_and_plan_says_so():
    mesh = sharding.make_mesh(dict(data=2, fsdp=1, tensor=4))
    p_sh = sharding.param_shardings(CFG, mesh)
    assert p_sh["layers"]["k"].spec == P(None, "fsdp", None, None)  # 2 kv heads, tensor=4
    assert p_sh["layers"]["q"].spec == P(None, "fsdp", "tensor", None)  # 8 heads divide
    rows = {r.path: r for r in sharding.plan(CFG, mesh)}
    assert any("kv_heads=2" in n and "tensor=4" in n for n in rows["layers/k"].notes)
    assert rows["layers/q"].notes == ()
    # q: [2, 64, 8, 16] float32 split 4 ways over tensor.
    assert rows["layers/q"].bytes_per_device == 2 * 64 * 8 * 16 * 4 // 4
    assert rows["layers/k"].bytes_per_device == 2 * 64 * 2 * 16 * 4


def test_init_sharded_writes_straight_into_the_requested_layout():
    mesh = sharding.make_mesh(dict(fsdp=8))
    p_sh = sharding.param_shardings(CFG, mesh)
    params = sharding.init_sharded(lambda k: model.init_params(CFG, k), p_sh,
                                   jax.random.key(0))
    jax.tree.map(lambda x, s: _assert_spec(x, s.spec), params, p_sh)
    embed = params["embed"]  # [V, D] -> D over fsdp=8
    assert {s.data.shape for s in embed.addressable_shards} == {(256, 8)}
    with pytest.raises(ValueError, match="structure"):
        sharding.init_sharded(lambda k: model.init_params(CFG, k), {"embed": p_sh["embed"]},
                              jax.random.key(0))


@pytest.mark.slow
def test_opt_state_shardings_and_donated_train_step_match_unsharded(reference):
    params0, tokens0, *_ = reference
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    opt = optax.adamw(1e-2)
    params, p_sh = sharding.init_params_sharded(CFG, jax.random.key(0), mesh)
    o_abs = jax.eval_shape(opt.init, params)
    o_sh = sharding.opt_state_shardings(o_abs, params, p_sh)
    adam = o_sh[0]
    assert adam.mu["layers"]["q"].spec == P(None, "fsdp", "tensor", None)
    assert adam.nu["embed"].spec == P("tensor", "fsdp")
    assert adam.count.spec == P()
    opt_state = sharding.init_sharded(opt.init, o_sh, params)
    shard = sharding.make_shard_fn(mesh)
    b_sh = sharding.batch_sharding(mesh)

    def step(state, tokens, shard=None):
        p, o = state
        loss, g = jax.value_and_grad(_loss)(p, tokens, shard)
        updates, o = opt.update(g, o, p)
        return (optax.apply_updates(p, updates), o), loss

    step_fn = jax.jit(lambda s, t: step(s, t, shard), in_shardings=((p_sh, o_sh), b_sh),
                      out_shardings=((p_sh, o_sh), None), donate_argnums=(0,))
    (new_p, new_o), loss = step_fn((params, opt_state), jax.device_put(tokens0, b_sh))
    assert params["embed"].is_deleted()  # donated
    (ref_p, _), ref_loss = jax.jit(step)((params0, opt.init(params0)), tokens0)
    _close(loss, ref_loss)
    jax.tree.map(lambda a, b: _close(a, b, 1e-4), new_p, ref_p)
    _assert_spec(new_o[0].mu["layers"]["down"], P(None, "tensor", "fsdp"))


def test_shard_fn_constrains_known_names_and_leaves_unknown_ones_free():
    mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=2))
    shard = sharding.make_shard_fn(mesh)
    x = jnp.ones((8, 4, 64))
    out = jax.jit(lambda x: shard(x, ("batch", "length", "embed")))(x)
    # fsdp already shards batch, so embed (also fsdp) stays whole in activations.
    _assert_spec(out, P(("data", "fsdp"), None, None))
    odd = jax.jit(lambda x: shard(x, ("batch", "length", "mlp")))(jnp.ones((3, 4, 6)))
    _assert_spec(odd, P(None, None, "tensor"))  # batch 3 divides neither data nor fsdp
    free = jax.jit(lambda x: shard(x, ("not_a_rule", "length", "mlp")))(jnp.ones((8, 4, 6)))
    assert free.shape == (8, 4, 6)
    with pytest.raises(ValueError, match="logical names"):
        shard(x, ("batch", "embed"))


def test_mesh_config_validation_and_custom_rules():
    assert sharding.make_mesh(dict(data=2, fsdp=-1, tensor=2)).shape == dict(
        data=2, fsdp=2, tensor=2)
    assert sharding.MeshConfig(data=-1, fsdp=1, tensor=4).sizes(16) == (4, 1, 4)
    with pytest.raises(ValueError, match="at most one"):
        sharding.MeshConfig(data=-1, fsdp=-1).sizes(8)
    with pytest.raises(ValueError, match="needs 6 devices"):
        sharding.make_mesh(dict(data=2, fsdp=3, tensor=1))
    with pytest.raises(ValueError, match="unknown mesh axes"):
        sharding.make_mesh(dict(pipeline=2))
    rules = {**sharding.DEFAULT_RULES, "embed": None, "batch": "data"}
    assert sharding.logical_to_spec(("batch", "embed"), rules) == P("data", None)
    mesh = sharding.make_mesh(dict(data=8, fsdp=1))
    assert sharding.batch_sharding(mesh, ndim=3).spec == P(("data", "fsdp"), None, None)
