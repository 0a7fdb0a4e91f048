"""SFT loss against a hand-rolled masked cross-entropy, memorisation, accumulation, optimizer."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax.model import ModelConfig, forward, init_params
from r1jax.sft import make_sft_step, sft_loss
from r1jax.train_state import TrainState, accumulate_gradients, make_optimizer, make_schedule

CFG = ModelConfig(vocab_size=16, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                  d_ff=64, max_seq_len=32)
_init = jax.jit(lambda key: init_params(CFG, key))   # one compile, not op-by-op


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


@pytest.fixture(scope="module")
def setup():
    params = _init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (4, 10), 0, CFG.vocab_size, jnp.int32)
    # Prompts of lengths 3, 2, 5, 4 then completions; the last rows are right-padded.
    lens = np.array([10, 8, 10, 6])
    prompt = np.array([3, 2, 5, 4])
    t = np.arange(10)[None, :]
    mask = ((t >= prompt[:, None]) & (t < lens[:, None])).astype(np.float32)
    return params, {"tokens": tokens, "loss_mask": jnp.asarray(mask)}


def test_loss_equals_hand_rolled_masked_cross_entropy(setup):
    params, batch = setup
    loss, metrics = jax.jit(lambda p, b: sft_loss(p, CFG, b, chunk=4))(params, batch)
    logits = np.asarray(forward(params, batch["tokens"], CFG), np.float64)
    tokens, mask = np.asarray(batch["tokens"]), np.asarray(batch["loss_mask"])
    total, count = 0.0, 0
    for b in range(tokens.shape[0]):
        for t in range(1, tokens.shape[1]):          # token t is predicted at position t - 1
            if mask[b, t]:
                row = logits[b, t - 1]
                lse = np.log(np.sum(np.exp(row - row.max()))) + row.max()
                total += lse - row[tokens[b, t]]
                count += 1
    np.testing.assert_allclose(loss, total / count, rtol=1e-5)
    assert float(metrics["num_tokens"]) == count == 7 + 6 + 5 + 2


def test_mask_column_zero_is_ignored(setup):
    params, batch = setup
    other = dict(batch, loss_mask=batch["loss_mask"].at[:, 0].set(1.0))
    f = jax.jit(lambda p, b: sft_loss(p, CFG, b)[0])
    np.testing.assert_allclose(f(params, other), f(params, batch), rtol=1e-6)


def test_grad_accum_equals_full_batch(setup):
    params, batch = setup
    # Unequal token counts per micro-batch (13 and 7): weights by tokens keep it exact.
    loss_fn = lambda p, b: sft_loss(p, CFG, b, chunk=4)   # noqa: E731
    weight = lambda b: jnp.sum(b["loss_mask"][:, 1:])     # noqa: E731
    full = jax.jit(lambda p, b: accumulate_gradients(loss_fn, p, b, 1))(params, batch)
    accum = jax.jit(lambda p, b: accumulate_gradients(loss_fn, p, b, 2, weight))(params, batch)
    np.testing.assert_allclose(full[0], accum[0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(full[1]), jax.tree.leaves(accum[1])):
        np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="grad_accum=3"):
        accumulate_gradients(loss_fn, params, batch, 3)


def test_sft_memorises_a_sequence_without_recompiling():
    params = _init(jax.random.key(3))
    seq = jnp.array([[1, 7, 3, 3, 9, 12, 4, 0, 15, 2, 6, 11]] * 2, jnp.int32)
    batch = {"tokens": seq, "loss_mask": jnp.ones_like(seq).at[:, :2].set(0)}
    tx = make_optimizer(1e-2, weight_decay=0.01, warmup_steps=5, total_steps=60)
    step = make_sft_step(CFG, tx, grad_accum=2, chunk=4)
    state = TrainState.create(params, tx)
    losses = []
    for _ in range(60):
        state, metrics = step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[0] > 2.0 and losses[-1] < 0.05, (losses[0], losses[-1])
    assert int(state.step) == 60
    assert step._cache_size() == 1


def test_bad_batch():
    params = _init(jax.random.key(0))
    with pytest.raises(ValueError, match="loss_mask"):
        sft_loss(params, CFG, {"tokens": jnp.zeros((2, 4), jnp.int32)})
    with pytest.raises(ValueError, match="must match"):
        sft_loss(params, CFG, {"tokens": jnp.zeros((2, 4), jnp.int32),
                               "loss_mask": jnp.zeros((2, 3))})


def test_schedule_values():
    cos = make_schedule(1.0, warmup_steps=10, total_steps=110)
    np.testing.assert_allclose([cos(0), cos(5), cos(10), cos(60), cos(110)],
                               [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)   # cos(pi/2): half way
    const = make_schedule(2.0, warmup_steps=4, total_steps=100, schedule="constant")
    np.testing.assert_allclose([const(2), const(4), const(99)], [1.0, 2.0, 2.0], atol=1e-6)
    with pytest.raises(ValueError, match="'linear'"):
        make_schedule(1.0, 0, 10, schedule="linear")


def test_optimizer_clips_and_decays_matrices_only():
    params = {"w": jnp.ones((2, 2)), "norm": jnp.ones((2,))}
    tx = make_optimizer(0.1, weight_decay=0.5, grad_clip=1.0, total_steps=10, schedule="constant")
    state = TrainState.create(params, tx)
    zero = jax.tree.map(jnp.zeros_like, params)
    new = state.apply_gradients(zero, tx)
    # Zero gradient: AdamW moves only by decay, lr * wd * p = 0.05 on the matrix, 0 on the norm.
    np.testing.assert_allclose(new.params["w"], 0.95 * np.ones((2, 2)), rtol=1e-6)
    np.testing.assert_allclose(new.params["norm"], np.ones(2))
    clip = optax.clip_by_global_norm(1.0)
    big = {"w": jnp.full((2, 2), 10.0), "norm": jnp.zeros((2,))}
    clipped, _ = clip.update(big, clip.init(big))
    np.testing.assert_allclose(optax.global_norm(clipped), 1.0, rtol=1e-6)
    assert int(new.step) == 1
