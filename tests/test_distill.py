"""Distillation losses (r1jax.distill) against NumPy references on hand-made distributions."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import distill, model
from r1jax.train_state import TrainState

# Two positions over a vocabulary of 4: hand-made teacher and student logits.
TEACHER = np.array([[2.0, 0.5, -1.0, 0.0], [0.0, 3.0, 1.0, -2.0]])
STUDENT = np.array([[0.5, 1.0, 0.0, -0.5], [1.0, 1.0, 0.5, 0.0]])
TARGETS = np.array([1, 2])


def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl(logp, logq):
    return (np.exp(logp) * (logp - logq)).sum(-1)


def np_loss(s, t, targets, loss, tau=1.0, alpha=1.0, beta=0.5):
    """The per-position loss, written out in float64."""
    logq, logp = np_log_softmax(s / tau), np_log_softmax(t / tau)
    if loss == "forward":
        div = np_kl(logp, logq) * tau ** 2
        nll = -np_log_softmax(s)[np.arange(len(targets)), targets]
        return alpha * div + (1 - alpha) * nll
    if loss == "reverse":
        return np_kl(logq, logp) * tau ** 2
    m = beta * np.exp(logp) + (1 - beta) * np.exp(logq)
    return (beta * np_kl(logp, np.log(m)) + (1 - beta) * np_kl(logq, np.log(m))) * tau ** 2


def jax_loss(s, t, targets, **kw):
    cfg = distill.DistillConfig(**kw)
    return distill.token_divergence(jnp.asarray(s, jnp.float32), jnp.asarray(t, jnp.float32),
                                    jnp.asarray(targets), cfg)


CASES = [dict(loss="forward"), dict(loss="forward", temperature=2.0),
         dict(loss="forward", temperature=0.5, alpha=0.3), dict(loss="reverse"),
         dict(loss="reverse", temperature=2.0), dict(loss="jsd", beta=0.5),
         dict(loss="jsd", beta=0.2, temperature=1.5)]


@pytest.mark.parametrize("kw", CASES)
def test_loss_matches_numpy(kw):
    ref = np_loss(STUDENT, TEACHER, TARGETS, kw["loss"], kw.get("temperature", 1.0),
                  kw.get("alpha", 1.0), kw.get("beta", 0.5))
    np.testing.assert_allclose(jax_loss(STUDENT, TEACHER, TARGETS, **kw), ref, rtol=1e-5,
                               atol=1e-6)


def test_forward_kl_by_hand():
    # p = (1/2, 1/2), q = (1/4, 3/4): KL = 1/2 log 2 + 1/2 log(2/3).
    t, s = np.log([[0.5, 0.5]]), np.log([[0.25, 0.75]])
    want = 0.5 * np.log(2.0) + 0.5 * np.log(2.0 / 3.0)
    np.testing.assert_allclose(jax_loss(s, t, [0], loss="forward"), [want], rtol=1e-6)
    # Reverse: 1/4 log(1/2) + 3/4 log(3/2).
    np.testing.assert_allclose(jax_loss(s, t, [0], loss="reverse"),
                               [0.25 * np.log(0.5) + 0.75 * np.log(1.5)], rtol=1e-6)


@pytest.mark.parametrize("kw", [dict(loss="forward", temperature=2.0),
                                dict(loss="reverse", temperature=0.7)])
def test_gradient_analytic(kw):
    """d/ds of tau^2 KL(p || q): tau (q - p); of tau^2 KL(q || p): tau q (log q - log p - KL)."""
    tau = kw["temperature"]
    g = jax.grad(lambda s: jnp.sum(jax_loss(s, TEACHER, TARGETS, **kw)))(
        jnp.asarray(STUDENT, jnp.float32))
    logq, logp = np_log_softmax(STUDENT / tau), np_log_softmax(TEACHER / tau)
    q, p = np.exp(logq), np.exp(logp)
    if kw["loss"] == "forward":
        want = tau * (q - p)
    else:
        kl = np_kl(logq, logp)[:, None]
        want = tau * q * (logq - logp - kl)
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw", [dict(loss="jsd", beta=0.3, temperature=1.3),
                                dict(loss="forward", temperature=1.5, alpha=0.4)])
def test_gradient_finite_differences(kw):
    g = np.asarray(jax.grad(lambda s: jnp.sum(jax_loss(s, TEACHER, TARGETS, **kw)))(
        jnp.asarray(STUDENT, jnp.float32)))
    eps, fd = 1e-5, np.zeros_like(STUDENT)
    for idx in np.ndindex(*STUDENT.shape):
        d = np.zeros_like(STUDENT)
        d[idx] = eps
        f = lambda s: np_loss(s, TEACHER, TARGETS, kw["loss"], kw["temperature"],  # noqa
                              kw.get("alpha", 1.0), kw.get("beta", 0.5)).sum()
        fd[idx] = (f(STUDENT + d) - f(STUDENT - d)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-3, atol=1e-5)


def test_teacher_gets_no_gradient():
    g = jax.grad(lambda t: jnp.sum(jax_loss(STUDENT, t, TARGETS, loss="reverse")))(
        jnp.asarray(TEACHER, jnp.float32))
    np.testing.assert_array_equal(g, 0.0)


def test_jsd_limits_are_the_kls():
    for beta, loss in ((0.0, "forward"), (1.0, "reverse")):
        np.testing.assert_allclose(jax_loss(STUDENT, TEACHER, TARGETS, loss="jsd", beta=beta),
                                   jax_loss(STUDENT, TEACHER, TARGETS, loss=loss), rtol=1e-6)


def test_bad_config_fails_naming_field():
    for kw, name in ((dict(loss="kl"), "loss"), (dict(temperature=0.0), "temperature"),
                     (dict(alpha=1.5), "alpha"), (dict(beta=-0.1), "beta"),
                     (dict(chunk=0), "chunk")):
        with pytest.raises(ValueError, match=f"DistillConfig.{name}"):
            distill.DistillConfig(**kw)


# ----------------------------------------------------------------------------- with models

def _models():
    t_cfg = model.ModelConfig.preset("tiny")
    s_cfg = t_cfg.replace(d_model=64, n_layers=2, d_ff=128)
    return (s_cfg, model.init_params(s_cfg, jax.random.key(0)),
            t_cfg, model.init_params(t_cfg, jax.random.key(1)))


def _batch(B=3, T=13):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 256, (B, T)).astype(np.int32)
    mask = np.zeros((B, T - 1), np.float32)
    for b, (start, stop) in enumerate(((2, 9), (4, 12), (0, 5))):   # prompt, then padding
        mask[b, start:stop] = 1.0
    return {"tokens": jnp.asarray(tokens), "completion_mask": jnp.asarray(mask)}


@pytest.mark.parametrize("loss", distill.LOSSES)
def test_chunked_equals_unchunked(loss):
    s_cfg, s_params, t_cfg, t_params = _models()
    batch = _batch()
    dcfg = distill.DistillConfig(loss=loss, temperature=1.5, alpha=0.7, chunk=4)
    chunked = distill.per_token_loss(s_params, t_params, s_cfg, t_cfg, batch["tokens"], dcfg)
    full_s = model.forward(s_params, batch["tokens"], s_cfg)[:, :-1]
    full_t = model.forward(t_params, batch["tokens"], t_cfg)[:, :-1]
    unchunked = distill.token_divergence(full_s, full_t, batch["tokens"][:, 1:], dcfg)
    np.testing.assert_allclose(chunked, unchunked, rtol=1e-5, atol=1e-6)
    # The gradient through the blocks equals the one through whole logits.
    g1 = jax.grad(lambda p: distill.distill_loss(p, t_params, s_cfg, t_cfg, batch, dcfg)[0])(
        s_params)
    mask = batch["completion_mask"]

    def whole(p):
        per = distill.token_divergence(model.forward(p, batch["tokens"], s_cfg)[:, :-1], full_t,
                                       batch["tokens"][:, 1:], dcfg)
        return jnp.sum(per * mask) / jnp.sum(mask)
    g2 = jax.grad(whole)(s_params)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("loss", distill.LOSSES)
def test_zero_when_student_is_teacher(loss):
    _, _, t_cfg, t_params = _models()
    batch = _batch()
    dcfg = distill.DistillConfig(loss=loss, temperature=2.0, chunk=5)
    value, metrics = distill.distill_loss(t_params, t_params, t_cfg, t_cfg, batch, dcfg)
    assert abs(float(value)) < 1e-5
    assert float(metrics["num_tokens"]) == float(jnp.sum(batch["completion_mask"]))


def test_mask_excludes_prompt_and_padding():
    s_cfg, s_params, t_cfg, t_params = _models()
    batch = _batch()
    dcfg = distill.DistillConfig(loss="reverse", chunk=4)
    per = np.asarray(distill.per_token_loss(s_params, t_params, s_cfg, t_cfg, batch["tokens"],
                                            dcfg))
    mask = np.asarray(batch["completion_mask"])
    value, _ = distill.distill_loss(s_params, t_params, s_cfg, t_cfg, batch, dcfg)
    np.testing.assert_allclose(value, per[mask > 0].mean(), rtol=1e-5)
    # Padding after the completion changes nothing: tokens past row 0's last target.
    tokens = np.asarray(batch["tokens"]).copy()
    tokens[0, 10:] = 7
    again, _ = distill.distill_loss(s_params, t_params, s_cfg, t_cfg,
                                    dict(batch, tokens=jnp.asarray(tokens)), dcfg)
    np.testing.assert_allclose(again, value, rtol=1e-6)


def test_step_lowers_the_loss_and_accumulates_exactly():
    s_cfg, s_params, t_cfg, t_params = _models()
    batch = _batch(B=4)
    tx = optax.adam(1e-2)
    losses = []
    for accum in (1, 2):
        dcfg = distill.DistillConfig(loss="forward", chunk=4, grad_accum=accum)
        step = distill.make_distill_step(s_cfg, t_cfg, tx, dcfg)
        state = TrainState.create(jax.tree.map(jnp.copy, s_params), tx)
        state, m = step(state, t_params, batch)
        losses.append((float(m["loss"]), float(m["grad_norm"])))
        for _ in range(5):
            state, m2 = step(state, t_params, batch)
        assert float(m2["loss"]) < losses[-1][0]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)


def test_vocab_mismatch_and_bad_batch_fail():
    s_cfg, s_params, t_cfg, t_params = _models()
    dcfg = distill.DistillConfig()
    batch = _batch()
    with pytest.raises(ValueError, match="vocabulary"):
        distill.per_token_loss(s_params, t_params, s_cfg.replace(vocab_size=300), t_cfg,
                               batch["tokens"], dcfg)
    with pytest.raises(ValueError, match="completion_mask"):
        distill.distill_loss(s_params, t_params, s_cfg, t_cfg,
                             {"tokens": batch["tokens"]}, dcfg)
