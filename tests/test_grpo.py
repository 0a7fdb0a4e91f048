"""GRPO maths against numbers worked out by hand, analytic gradients, and a learning micro-run."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from r1jax import grpo
from r1jax.grpo import GRPOConfig, grpo_loss, group_advantages
from r1jax.logprobs import token_logprobs
from r1jax.model import ModelConfig, hidden_states, init_params, logits_from_hidden
from r1jax.train_state import TrainState, make_optimizer

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- advantages

def test_group_advantages_by_hand():
    rewards = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0]])
    # Row 0: mean 0.5, deviations ±0.5, sample variance 4 * 0.25 / 3 = 1/3, std 0.5773503.
    a0 = 0.5 / (math.sqrt(1 / 3) + 1e-6)                       # 0.8660239
    # Row 1: mean 0.25, deviations (-.25, -.25, -.25, .75), variance 0.75 / 3 = 0.25, std 0.5.
    expected = [[a0, -a0, -a0, a0],
                [-0.25 / 0.500001, -0.25 / 0.500001, -0.25 / 0.500001, 0.75 / 0.500001]]
    np.testing.assert_allclose(group_advantages(rewards), expected, rtol=1e-6)
    np.testing.assert_allclose(a0, 0.866024, atol=1e-6)
    np.testing.assert_allclose(group_advantages(rewards, scale="none"),
                               [[0.5, -0.5, -0.5, 0.5], [-0.25, -0.25, -0.25, 0.75]], atol=1e-7)
    # batch_std: all 8 rewards, mean 3/8, squared deviations 3 (5/8)^2 + 5 (3/8)^2 = 1.875,
    # sample variance 1.875 / 7.
    std = math.sqrt(1.875 / 7)
    np.testing.assert_allclose(group_advantages(rewards, scale="batch_std"),
                               np.array([[0.5, -0.5, -0.5, 0.5],
                                         [-0.25, -0.25, -0.25, 0.75]]) / (std + 1e-6), rtol=1e-6)


def test_group_advantages_equal_rewards_are_zero():
    adv = group_advantages(jnp.array([[2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]))
    np.testing.assert_array_equal(adv, np.zeros((2, 3)))


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match="'bogus'"):
        group_advantages(jnp.zeros((2, 4)), scale="bogus")
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"\[P, G\]"):
        group_advantages(jnp.zeros((8,)))


# ----------------------------------------------------------------------------- the loss, by hand

# Two sequences of three tokens; the last token of sequence 1 is padding (garbage values).
# ratios:     seq 0 (A = +1): 1.5, 0.5, 1.0      seq 1 (A = -2): 0.5, 1.5, pad
# ref - logp: seq 0:          0, ln2, -ln2      seq 1:          ln2, 0,   pad
EPS_LOW, EPS_HIGH, BETA = 0.2, 0.3, 0.1
LOGP = jnp.array([[-1.0, -2.0, -0.5], [-1.5, -0.7, 1000.0]])
OLD = LOGP - jnp.log(jnp.array([[1.5, 0.5, 1.0], [0.5, 1.5, 1.0]]))
OLD = OLD.at[1, 2].set(-1000.0)
REF = LOGP + jnp.array([[0.0, LN2, -LN2], [LN2, 0.0, 0.0]])
REF = REF.at[1, 2].set(jnp.inf)
ADV = jnp.array([1.0, -2.0])
MASK = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
# obj = min(ratio A, clip(ratio, 0.8, 1.3) A):
#   seq 0: min(1.5, 1.3) = 1.3 (clipped high), min(0.5, 0.8) = 0.5, 1.0
#   seq 1: min(-1.0, -1.6) = -1.6 (clipped low), min(-3.0, -2.6) = -3.0 (not clipped)
# k3 kl = e^d - d - 1: d = 0 -> 0; d = ln2 -> 1 - ln2; d = -ln2 -> ln2 - 1/2.
# l = -(obj - 0.1 kl):
L0 = [-1.3, -0.5 + 0.1 * (1 - LN2), -1.0 + 0.1 * (LN2 - 0.5)]   # sum -2.75
L1 = [1.6 + 0.1 * (1 - LN2), 3.0]                                # sum 4.6 + 0.1 (1 - ln2)


def _loss(aggregation, beta=BETA, **kw):
    return grpo_loss(LOGP, OLD, REF if beta else None, ADV, MASK, epsilon_low=EPS_LOW,
                     epsilon_high=EPS_HIGH, beta=beta, aggregation=aggregation, **kw)


def test_grpo_loss_by_hand_all_aggregations():
    s0, s1 = sum(L0), sum(L1)
    np.testing.assert_allclose(s0, -2.75, atol=1e-12)
    cases = {
        "seq_mean_token_mean": (s0 / 3 + s1 / 2) / 2,            # 0.6993380
        "token_mean": (s0 + s1) / 5,                              # 0.3761371
        "seq_mean_token_sum_norm": (s0 / 3 + s1 / 3) / 2,         # 0.3134476
    }
    for aggregation, expected in cases.items():
        loss, metrics = _loss(aggregation)
        np.testing.assert_allclose(loss, expected, rtol=1e-6, err_msg=aggregation)
        assert np.isfinite(float(loss))
    np.testing.assert_allclose(cases["seq_mean_token_mean"], 0.6993380, atol=1e-6)
    loss, _ = _loss("seq_mean_token_sum_norm", max_len=10)
    np.testing.assert_allclose(loss, (s0 / 10 + s1 / 10) / 2, rtol=1e-6)


def test_grpo_loss_metrics_by_hand():
    _, m = _loss("seq_mean_token_mean")
    np.testing.assert_allclose(m["kl"], (0 + (1 - LN2) + (LN2 - 0.5) + (1 - LN2) + 0) / 5,
                               rtol=1e-6)
    np.testing.assert_allclose(m["ratio_mean"], (1.5 + 0.5 + 1.0 + 0.5 + 1.5) / 5, rtol=1e-6)
    np.testing.assert_allclose(m["clip_frac_high"], 0.2)
    np.testing.assert_allclose(m["clip_frac_low"], 0.2)
    np.testing.assert_allclose(m["clip_frac"], 0.4)
    np.testing.assert_allclose(m["num_tokens"], 5.0)
    # policy term alone: seq 0 -(1.3 + 0.5 + 1.0) / 3, seq 1 (1.6 + 3.0) / 2
    np.testing.assert_allclose(m["pg_loss"], (-2.8 / 3 + 4.6 / 2) / 2, rtol=1e-6)


def test_grpo_loss_beta_zero_needs_no_reference():
    loss, m = _loss("seq_mean_token_mean", beta=0.0)
    np.testing.assert_allclose(loss, (-2.8 / 3 + 4.6 / 2) / 2, rtol=1e-6)   # 0.6833333
    assert float(m["kl"]) == 0.0
    with pytest.raises(ValueError, match="ref_logprobs is None"):
        grpo_loss(LOGP, OLD, None, ADV, MASK, beta=0.04)


def test_grpo_loss_bad_input():
    with pytest.raises(ValueError, match="'sum'"):
        grpo_loss(LOGP, OLD, REF, ADV, MASK, aggregation="sum")
    with pytest.raises(ValueError, match="old_logprobs"):
        grpo_loss(LOGP, OLD[:, :2], REF, ADV, MASK)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(LOGP, OLD, REF, ADV[:1], MASK)


# ----------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("aggregation", grpo.AGGREGATIONS)
def test_gradient_at_equal_policies(aggregation):
    """At logp == old == ref, ratio = 1 and d kl / d logp = 1 - e^0 = 0, so
    d loss / d logp_it = -A_i * w_i with w_i = 1/(|o_i| B), 1/N_tokens or 1/(max_len B)."""
    lp = jnp.array([[-1.0, -2.0, -0.5, -0.3], [-0.2, -0.9, -1.1, -4.0]])
    mask = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    adv = jnp.array([0.7, -1.3])
    grad = jax.grad(lambda x: grpo_loss(x, lp, lp, adv, mask, beta=0.04,
                                        aggregation=aggregation)[0])(lp)
    weight = {"seq_mean_token_mean": np.array([[1 / 3], [1 / 1]]) / 2,
              "token_mean": np.full((2, 1), 1 / 4),
              "seq_mean_token_sum_norm": np.full((2, 1), 1 / 4) / 2}[aggregation]
    expected = -np.array([[0.7], [-1.3]]) * weight * np.asarray(mask)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)


def test_gradient_clipped_tokens_are_zero_and_kl_gradient():
    grad = jax.grad(lambda x: _loss_at(x, beta=0.0))(LOGP)
    # d(-ratio A)/d logp = -ratio A, weight 1/(|o_i| B); clipped tokens give 0.
    expected = [[0.0, -0.5 * 1.0 / 6, -1.0 * 1.0 / 6],
                [0.0, -1.5 * -2.0 / 4, 0.0]]
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-7)
    # The KL term alone (A = 0): d/dlogp beta (e^d - d - 1) = beta (1 - e^d), d = ref - logp.
    g_kl = jax.grad(lambda x: grpo_loss(x, OLD, REF, jnp.zeros(2), MASK, beta=BETA)[0])(LOGP)
    expected_kl = BETA * np.array([[0.0, 1 - 2.0, 1 - 0.5], [1 - 2.0, 0.0, 0.0]]) \
        * np.array([[1 / 6], [1 / 4]])
    np.testing.assert_allclose(g_kl, expected_kl, rtol=1e-6, atol=1e-7)


def _loss_at(logp, beta):
    return grpo_loss(logp, OLD, None, ADV, MASK, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
                     beta=beta)[0]


# ----------------------------------------------------------------------------- DAPO helpers

def test_dynamic_sampling_filter():
    rewards = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.5, 0.4]])
    np.testing.assert_array_equal(grpo.dynamic_sampling_filter(rewards),
                                  [False, True, False, True])


def test_overlong_penalty_by_hand():
    # L_max = 10, L_cache = 4: free up to 6, ramp (6 - |y|) / 4 up to 10, -1 beyond.
    pen = grpo.overlong_penalty(jnp.array([5, 6, 7, 9, 10, 11]), max_len=10, cache_len=4)
    np.testing.assert_allclose(pen, [0.0, 0.0, -0.25, -0.75, -1.0, -1.0])
    with pytest.raises(ValueError, match="cache_len"):
        grpo.overlong_penalty(jnp.array([1]), max_len=4, cache_len=5)


def test_overlong_filter_mask():
    truncated = jnp.array([False, True, False, False])
    mask = jnp.ones((4, 3))
    np.testing.assert_array_equal(grpo.overlong_filter_mask(mask, truncated),
                                  [[1, 1, 1], [0, 0, 0], [1, 1, 1], [1, 1, 1]])


@pytest.mark.parametrize("field, value", [
    ("num_generations", 1), ("beta", -0.1), ("epsilon_low", 1.0), ("epsilon_high", -0.1),
    ("num_iterations", 0), ("aggregation", "sum"), ("advantage_scale", "rank"),
    ("grad_accum", 0), ("logprob_chunk", 0), ("max_len", 0), ("overlong_cache_len", -1)])
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=f"GRPOConfig.{field}"):
        GRPOConfig(**{field: value})


# ----------------------------------------------------------------------------- the jitted step

CFG = ModelConfig(vocab_size=8, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                  d_ff=64, max_seq_len=16)
PROMPTS = jnp.array([[1, 4], [2, 5]], jnp.int32)     # P = 2 prompts of length 2
NEW = 2                                              # generated tokens per sample
_init = jax.jit(lambda key: init_params(CFG, key))   # one compile, not op-by-op


@jax.jit
def _sample(params, key, prompts_PT):
    """Categorical sampling at temperature 1, a plain loop: tokens [P*G, T], logps [P*G, NEW]."""
    G = 8
    tokens = jnp.repeat(prompts_PT, G, axis=0)
    logps = []
    for i in range(NEW):
        logits = logits_from_hidden(params, hidden_states(params, tokens, CFG)[:, -1], CFG)
        key, sub = jax.random.split(key)
        nxt = jax.random.categorical(sub, logits)
        logps.append(jnp.take_along_axis(jax.nn.log_softmax(logits), nxt[:, None], axis=1))
        tokens = jnp.concatenate([tokens, nxt[:, None].astype(jnp.int32)], axis=1)
    return tokens, jnp.concatenate(logps, axis=1)


def _rollouts(params, key, rewards_fn=lambda t: jnp.mean(t == 3, axis=-1), scale="group_std"):
    tokens, logps = _sample(params, key, PROMPTS)
    B, T = tokens.shape
    prompt_len = PROMPTS.shape[1]
    mask = jnp.zeros((B, T - 1)).at[:, prompt_len - 1:].set(1.0)    # targets = generated tokens
    old = jnp.zeros((B, T - 1)).at[:, prompt_len - 1:].set(logps)
    rewards = rewards_fn(tokens[:, prompt_len:]).reshape(PROMPTS.shape[0], -1)
    adv = group_advantages(rewards, scale=scale).reshape(-1)
    return {"tokens": tokens, "completion_mask": mask, "old_logprobs": old, "advantages": adv}


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


@jax.jit
def _p3(params):
    logits = logits_from_hidden(params, hidden_states(params, PROMPTS, CFG)[:, -1], CFG)
    return jax.nn.softmax(logits)[:, 3]


def test_sampler_logprobs_are_the_old_policy_at_temperature_one():
    params = _init(jax.random.key(0))
    batch = _rollouts(params, jax.random.key(1))
    recomputed = grpo.compute_old_logprobs(params, CFG, batch["tokens"], batch["completion_mask"],
                                           chunk=2)
    np.testing.assert_allclose(recomputed, batch["old_logprobs"], atol=1e-5)


def test_step_matches_loss_and_does_not_recompile():
    params = _init(jax.random.key(0))
    gcfg = GRPOConfig(num_generations=8, beta=0.04, logprob_chunk=2)
    tx = make_optimizer(1e-2, total_steps=10, schedule="constant")
    step = grpo.make_grpo_step(CFG, tx, gcfg)
    ref = _copy(params)     # the state's buffers are donated: never share them with ref
    batch = _rollouts(params, jax.random.key(1))
    lp = jax.jit(lambda p, t: token_logprobs(p, CFG, t, chunk=2))(params, batch["tokens"])
    ref_lp = grpo.ref_logprobs_fn(ref, CFG, batch["tokens"])
    expected, _ = jax.jit(lambda *a: grpo_loss(*a, beta=0.04))(
        lp, batch["old_logprobs"], ref_lp, batch["advantages"], batch["completion_mask"])
    state = TrainState.create(_copy(params), tx)
    for i in range(3):       # the caller's mu iterations: same rollouts, old log-probs fixed
        state, metrics = step(state, ref, batch)
        if i == 0:
            np.testing.assert_allclose(metrics["loss"], expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(metrics["ratio_mean"], 1.0, atol=1e-5)
    assert int(state.step) == 3
    assert step._cache_size() == 1
    # Reference log-probs precomputed once (for mu > 1) give the same update, no ref_params.
    states = [TrainState.create(_copy(params), tx) for _ in range(2)]
    a = step(states[0], ref, batch)
    b = step(states[1], None, dict(batch, ref_logprobs=ref_lp))
    np.testing.assert_allclose(a[1]["loss"], b[1]["loss"], rtol=1e-6)
    np.testing.assert_allclose(a[1]["kl"], b[1]["kl"], rtol=1e-6)


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_grad_accum_equals_full_batch(aggregation):
    params = _init(jax.random.key(0))
    batch = _rollouts(params, jax.random.key(1))
    # Unequal token counts per micro-batch: drop the second generated token in a few rows,
    # and overlong-filter one row.
    batch["completion_mask"] = batch["completion_mask"].at[:5, -1].set(0.0)
    batch["truncated"] = jnp.zeros(16, bool).at[2].set(True)
    # Perturb old log-probs so ratios differ from 1 and clipping is active somewhere.
    batch["old_logprobs"] = batch["old_logprobs"] + 0.3 * jnp.sin(jnp.arange(48.0)).reshape(16, 3)
    tx = optax.sgd(1.0)     # params move by exactly -grad (Adam's first step is ~sign(grad))
    out = []
    for accum in (1, 4):
        gcfg = GRPOConfig(beta=0.04, aggregation=aggregation, grad_accum=accum,
                          overlong_filter=True, logprob_chunk=2)
        state, metrics = grpo.make_grpo_step(CFG, tx, gcfg)(
            TrainState.create(_copy(params), tx), params, batch)
        out.append((state.params, metrics))
    np.testing.assert_allclose(out[0][1]["loss"], out[1][1]["loss"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(out[0][1]["grad_norm"], out[1][1]["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(out[0][0]), jax.tree.leaves(out[1][0])):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_step_beta_zero_skips_reference_and_sharded_equals_unsharded():
    params = _init(jax.random.key(0))
    batch = _rollouts(params, jax.random.key(1))
    tx = make_optimizer(1e-2, total_steps=10, schedule="constant")
    gcfg = GRPOConfig(beta=0.0, aggregation="token_mean", logprob_chunk=2)
    state, metrics = grpo.make_grpo_step(CFG, tx, gcfg)(TrainState.create(_copy(params), tx),
                                                        None, batch)
    assert float(metrics["kl"]) == 0.0
    with pytest.raises(ValueError, match="ref_params is None and the batch has no"):
        grpo.make_grpo_step(CFG, tx, GRPOConfig(beta=0.1))(TrainState.create(params, tx),
                                                           None, batch)
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    rows = NamedSharding(mesh, PartitionSpec("data"))
    state0 = TrainState.create(_copy(params), tx)
    state_sh = jax.tree.map(lambda _: replicated, state0)
    batch_sh = jax.tree.map(lambda _: rows, batch)
    sharded_step = grpo.make_grpo_step(CFG, tx, gcfg, state_sharding=state_sh,
                                       batch_sharding=batch_sh)
    state2, metrics2 = sharded_step(jax.device_put(state0, state_sh), None,
                                    jax.device_put(batch, batch_sh))
    np.testing.assert_allclose(metrics2["loss"], metrics["loss"], rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(state2.params)):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_grpo_learns_to_emit_token_3():
    """Reward = share of generated tokens equal to 3; GRPO on its own samples raises p(3)."""
    params = _init(jax.random.key(0))
    gcfg = GRPOConfig(num_generations=8, beta=0.04, num_iterations=2, logprob_chunk=2)
    tx = make_optimizer(3e-2, total_steps=30, schedule="constant")
    step = grpo.make_grpo_step(CFG, tx, gcfg)
    ref = _copy(params)     # the state's buffers are donated: never share them with ref
    state = TrainState.create(params, tx)
    p_start = _p3(params)
    key = jax.random.key(42)
    for _ in range(30):
        key, sub = jax.random.split(key)
        batch = _rollouts(state.params, sub)
        for _ in range(gcfg.num_iterations):
            state, metrics = step(state, ref, batch)
    p_end = _p3(state.params)
    assert float(jnp.max(p_start)) < 0.3, p_start
    assert float(jnp.min(p_end)) > 0.8, (p_start, p_end)
    assert step._cache_size() == 1


def test_logprob_passes_even_out_rows():
    assert grpo.logprob_passes(256, 768) == (7, 37)        # 32768 // 768 = 42 rows at most
    assert grpo.logprob_passes(64, 4096) == (8, 8)
    assert grpo.logprob_passes(16, 3) == (1, 16)
    assert grpo.logprob_passes(16, 3, 5) == (4, 4)
    with pytest.raises(ValueError, match="micro_batch"):
        grpo.logprob_passes(16, 3, -2)
    with pytest.raises(ValueError, match="GRPOConfig.logprob_micro_batch"):
        GRPOConfig(logprob_micro_batch=-1)


def test_ref_logprobs_in_micro_batches_equal_one_pass():
    """Row blocks of 3 (16 rows: 6 passes, 2 padding rows) give the one-pass log-probs; the
    loop's call signature is unchanged."""
    params = _init(jax.random.key(0))
    batch = _rollouts(params, jax.random.key(1))
    args = (params, CFG, batch["tokens"], batch["completion_mask"])
    whole = grpo.ref_logprobs_fn(*args, chunk=2)
    parts = grpo.compute_old_logprobs(*args, chunk=2, shard=None, micro_batch=3)
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    np.testing.assert_allclose(whole, batch["old_logprobs"], atol=1e-5)
    unmasked = grpo.ref_logprobs_fn(params, CFG, batch["tokens"], micro_batch=5)
    np.testing.assert_allclose(unmasked * batch["completion_mask"], whole, atol=1e-6)
