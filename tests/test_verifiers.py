"""Verifiers: encoding, scoring, aggregation, losses against hand-computed numbers, MC step
labels, ROC AUC; and tiny ORM / PRM / Bradley-Terry models that learn a toy task."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax import stats, verifiers
from r1jax.model import ModelConfig, hidden_states, init_params
from r1jax.tokenizer import ByteTokenizer


def _orm_scores(vparams, cfg, tokens, lengths):
    """The ORM's probability of correctness: the sigmoid of the value-head logit."""
    return jax.nn.sigmoid(verifiers.final_logits(vparams, cfg, tokens, lengths))


TOK = ByteTokenizer()
CFG = ModelConfig(vocab_size=259, d_model=48, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=12,
                  d_ff=96, max_seq_len=64)


@functools.lru_cache(maxsize=None)
def _trunk(seed=0):
    return jax.jit(init_params, static_argnums=0)(CFG, jax.random.key(seed))


values = jax.jit(verifiers.values, static_argnums=1)
prm_loss = jax.jit(verifiers.prm_loss, static_argnums=1)
orm_loss = jax.jit(verifiers.orm_loss, static_argnums=1)
bt_loss = jax.jit(verifiers.bt_loss, static_argnums=1)


def random_verifier(seed=0):
    return verifiers.init_verifier(_trunk(), CFG, jax.random.key(seed + 1), scale=1.0)


# ----------------------------------------------------------------------------- encoding

def test_encode_solution_marks_every_delimiter():
    ids, ends = verifiers.encode_solution(TOK, "Q:", ["1+1=2", "2+1=3\n", "<answer>3</answer>"])
    text = "Q:1+1=2\n2+1=3\n<answer>3</answer>\n"     # no doubled delimiter after step 2
    assert ids == TOK.encode(text, add_bos=True)
    assert [ids[e] for e in ends] == [ord("\n")] * 3
    assert ends == [i + 1 for i, c in enumerate(text) if c == "\n"]  # +1: BOS
    assert verifiers.solution_text("Q:", ["a", "b\n"]) == "Q:a\nb\n"
    ids, ends = verifiers.encode_solution(TOK, "Q", ["x", "y"], delimiter=" ## ", add_bos=False)
    assert TOK.decode(ids) == "Qx ## y ## " and ends == [5, 10]


def test_make_prm_batch_masks_and_targets():
    batch = verifiers.make_prm_batch(TOK, ["Q:", "QQ:"], [["a", "b"], ["c"]],
                                     [[1.0, 0.25], [0.0]], length=12)
    assert batch["tokens"].shape == (2, 12) and batch["tokens"].dtype == np.int32
    assert batch["lengths"].tolist() == [7, 6]
    assert np.flatnonzero(batch["step_mask"][0]).tolist() == [4, 6]
    assert np.flatnonzero(batch["step_mask"][1]).tolist() == [5]
    assert batch["targets"][0, [4, 6]].tolist() == [1.0, 0.25]
    assert batch["targets"].sum() == 1.25
    assert (batch["tokens"][1, 6:] == TOK.pad_id).all()
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        verifiers.make_prm_batch(TOK, ["Q:", "Q:"], [["a"], ["b"]], [[1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="more than length"):
        verifiers.make_prm_batch(TOK, ["Q:"], [["abcdef"]], length=4)


# ----------------------------------------------------------------------------- scoring

def test_scores_match_a_head_over_hidden_states_and_ignore_padding():
    vp = random_verifier()
    batch = verifiers.make_prm_batch(TOK, ["Q1:", "Q22:"], [["1+1=2", "x"], ["2+2=4"]],
                                     length=24)
    h = jax.jit(hidden_states, static_argnums=2)(vp["trunk"], batch["tokens"], CFG)
    h = np.asarray(h, np.float64)
    v = h @ np.asarray(vp["head"]["w"], np.float64) + float(vp["head"]["b"])
    np.testing.assert_allclose(values(vp, CFG, batch["tokens"]), v, rtol=1e-4, atol=1e-5)
    sig = 1 / (1 + np.exp(-v))
    prm = np.asarray(verifiers.prm_step_scores(vp, CFG, batch["tokens"], batch["step_mask"]))
    np.testing.assert_allclose(prm, np.where(batch["step_mask"], sig, 0.0), rtol=1e-5,
                               atol=1e-6)
    last = batch["lengths"] - 1
    orm = np.asarray(_orm_scores(vp, CFG, batch["tokens"], batch["lengths"]))
    np.testing.assert_allclose(orm, sig[[0, 1], last], rtol=1e-5)
    rm = np.asarray(verifiers.final_logits(vp, CFG, batch["tokens"], batch["lengths"]))
    np.testing.assert_allclose(rm, v[[0, 1], last], rtol=1e-4, atol=1e-5)
    # Causal: more padding after the real tokens changes nothing.
    longer = np.pad(batch["tokens"], ((0, 0), (0, 8)), constant_values=TOK.pad_id)
    np.testing.assert_allclose(_orm_scores(vp, CFG, longer, batch["lengths"]), orm,
                               rtol=1e-5)
    assert len(set(np.round(sig[0], 5))) > 5   # a non-degenerate random head


def test_aggregate_step_scores_by_hand():
    scores = np.array([[0.0, 0.9, 0.5, 0.8], [0.7, 0.0, 0.0, 0.0], [0.3, 0.3, 0.3, 0.3]])
    mask = np.array([[0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    agg = lambda how: verifiers.aggregate_step_scores(scores, mask, how)
    np.testing.assert_allclose(agg("min")[:2], [0.5, 0.7])
    np.testing.assert_allclose(agg("prod")[:2], [0.9 * 0.5 * 0.8, 0.7])
    np.testing.assert_allclose(agg("last")[:2], [0.8, 0.7])
    assert all(np.isnan(agg(h)[2]) for h in ("min", "prod", "last"))   # no steps
    # The jax path (device arrays in) agrees with the numpy path.
    for how in ("min", "prod", "last"):
        j = verifiers.aggregate_step_scores(jnp.asarray(scores), jnp.asarray(mask), how)
        np.testing.assert_allclose(np.asarray(j)[:2], agg(how)[:2], rtol=1e-6)
    with pytest.raises(ValueError, match="aggregation"):
        agg("mean")


def test_losses_match_hand_computed_values():
    vp = random_verifier(3)
    batch = verifiers.make_prm_batch(TOK, ["A:", "B:"], [["x", "yy"], ["z"]],
                                     [[1.0, 0.25], [0.0]], length=24)
    v = np.asarray(values(vp, CFG, batch["tokens"]), np.float64)
    p = 1 / (1 + np.exp(-v))
    m, t = batch["step_mask"], batch["targets"]
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    loss, _ = prm_loss(vp, CFG, batch["tokens"], m, t)
    np.testing.assert_allclose(float(loss), bce[m].mean(), rtol=1e-5)

    lengths = batch["lengths"]
    labels = np.array([1.0, 0.0], np.float32)
    last = p[[0, 1], lengths - 1]
    loss, metrics = orm_loss(vp, CFG, batch["tokens"], lengths, labels)
    np.testing.assert_allclose(float(loss), -(np.log(last[0]) + np.log(1 - last[1])) / 2,
                               rtol=1e-5)
    r = v[[0, 1], lengths - 1]
    loss, metrics = bt_loss(vp, CFG, batch["tokens"][:1], lengths[:1],
                                      batch["tokens"][1:], lengths[1:])
    np.testing.assert_allclose(float(loss), np.log1p(np.exp(-(r[0] - r[1]))), rtol=1e-5)
    assert float(metrics["accuracy"]) == float(r[0] > r[1])
    with pytest.raises(ValueError, match="kind"):
        verifiers.make_train_step("dpo", CFG, optax.sgd(0.1))


def test_train_step_keeps_the_callers_trunk():
    trunk = _trunk()
    before = np.asarray(trunk["embed"]).copy()
    vp = verifiers.init_verifier(trunk, CFG, jax.random.key(0))
    opt = optax.sgd(0.5)
    step = verifiers.make_train_step("orm", CFG, opt)
    batch = verifiers.make_orm_batch(TOK, ["Q:"] * 2, [["a"], ["b"]], [1.0, 0.0], length=8)
    vp, _, metrics = step(vp, opt.init(vp), batch)   # vparams are donated
    np.testing.assert_array_equal(np.asarray(trunk["embed"]), before)
    assert not np.allclose(np.asarray(vp["trunk"]["embed"]), before)
    assert np.isfinite(float(metrics["loss"]))


# ----------------------------------------------------------------------------- MC labels, AUC

def test_mc_step_labels_equal_hand_computed_labels():
    # A toy policy: from a prefix containing "bad" it always fails; otherwise the m-th
    # rollout of a prefix with j steps succeeds iff m < j (so prefix j has soft label j / k).
    calls = []

    def rollout_fn(prefixes, key):
        calls.append(list(prefixes))
        seen, out = {}, []
        for p in prefixes:
            m = seen[p] = seen.get(p, -1) + 1
            j = p.count("\n")
            ok = "bad" not in p and m < j
            out.append("<answer>7</answer>" if ok else "<answer>8</answer>")
        return out

    check = lambda text, ans: text.endswith(f"<answer>{ans}</answer>")
    steps = ["s1", "s2", "bad", "s4"]
    hard, soft = verifiers.mc_step_labels(rollout_fn, "Q:", steps, "7", 4, jax.random.key(0),
                                          check=check)
    assert soft == [0.25, 0.5, 0.0, 0.0] and hard == [1.0, 1.0, 0.0, 0.0]
    assert calls == [["Q:s1\n"] * 4 + ["Q:s1\ns2\n"] * 4 + ["Q:s1\ns2\nbad\n"] * 4
                     + ["Q:s1\ns2\nbad\ns4\n"] * 4]
    hard, soft = verifiers.mc_step_labels(rollout_fn, "Q:", ["a", "b", "c"], "7", 2,
                                          jax.random.key(0), check=check)
    assert soft == [0.5, 1.0, 1.0] and hard == [1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="k must"):
        verifiers.mc_step_labels(rollout_fn, "Q:", steps, "7", 0, jax.random.key(0))
    with pytest.raises(ValueError, match="completions"):
        verifiers.mc_step_labels(lambda p, k: [], "Q:", steps, "7", 2, jax.random.key(0))


# ----------------------------------------------------------------------------- learning
# Toy task: count up by one mod 10 from the digit in the question ("Q3:" -> "3+1=4", "4+1=5",
# ...). Half the solutions contain exactly one wrong step ("4+1=7"), after which they go on
# correctly from the wrong value. A step's label is whether every step up to it is right.

def chain(rng, wrong: bool):
    n, x = int(rng.integers(3, 6)), int(rng.integers(10))
    bad = int(rng.integers(n)) if wrong else -1
    steps, cur = [], x
    for i in range(n):
        nxt = (cur + 1) % 10 if i != bad else (cur + int(rng.integers(2, 10))) % 10
        steps.append(f"{cur}+1={nxt}")
        cur = nxt
    return f"Q{x}:", steps, [float(bad < 0 or i < bad) for i in range(n)], bad


def chains(seed, n):
    rng = np.random.default_rng(seed)
    return [chain(rng, i % 2 == 1) for i in range(n)]


def train(kind, batches, steps, lr=3e-3, seed=0):
    vp = verifiers.init_verifier(_trunk(seed), CFG, jax.random.key(seed + 7))
    opt = optax.adamw(lr, weight_decay=0.0)
    state = opt.init(vp)
    step = verifiers.make_train_step(kind, CFG, opt)
    for i in range(steps):
        vp, state, metrics = step(vp, state, batches[i % len(batches)])
    return vp, metrics


def prm_batches(examples, bs):
    out = []
    for i in range(0, len(examples), bs):
        ex = examples[i:i + bs]
        b = verifiers.make_prm_batch(TOK, [e[0] for e in ex], [e[1] for e in ex],
                                     [e[2] for e in ex], length=40)
        del b["lengths"]
        out.append(b)
    return out


@pytest.mark.slow
def test_prm_learns_to_flag_the_wrong_step():
    vp, _ = train("prm", prm_batches(chains(0, 64 * 16), 64), 240)
    held = chains(1, 300)
    batch = verifiers.make_prm_batch(TOK, [e[0] for e in held], [e[1] for e in held],
                                     [e[2] for e in held], length=40)
    s = np.asarray(verifiers.prm_step_scores(vp, CFG, batch["tokens"], batch["step_mask"]))
    step_scores = [s[b][batch["step_mask"][b]] for b in range(len(held))]
    at_wrong = [row[e[3]] for row, e in zip(step_scores, held) if e[3] >= 0]
    right = [x for row, e in zip(step_scores, held) for j, x in enumerate(row) if e[2][j] > 0]
    assert np.mean(at_wrong) < 0.25 and np.mean(right) > 0.75, (np.mean(at_wrong),
                                                               np.mean(right))
    auc = stats.roc_auc(np.concatenate(step_scores),
                            np.concatenate([e[2] for e in held]) > 0.5)
    assert auc >= 0.9, auc
    # Aggregated by "min", the PRM tells correct solutions from flawed ones.
    sol = np.asarray(verifiers.aggregate_step_scores(s, batch["step_mask"], "min"))
    assert stats.roc_auc(sol, [e[3] < 0 for e in held]) >= 0.9


@pytest.mark.slow
def test_orm_learns_correctness():
    train_ex, held = chains(2, 64 * 16), chains(3, 300)
    orm_batches = []
    for i in range(0, len(train_ex), 64):
        ex = train_ex[i:i + 64]
        orm_batches.append(verifiers.make_orm_batch(
            TOK, [e[0] for e in ex], [e[1] for e in ex], [float(e[3] < 0) for e in ex],
            length=40))
    vp, _ = train("orm", orm_batches, 240)
    hb = verifiers.make_orm_batch(TOK, [e[0] for e in held], [e[1] for e in held],
                                  [float(e[3] < 0) for e in held], length=40)
    orm = np.asarray(_orm_scores(vp, CFG, hb["tokens"], hb["lengths"]))
    assert stats.roc_auc(orm, hb["labels"] > 0.5) >= 0.9


@pytest.mark.slow
def test_bradley_terry_learns_the_preference():
    # Preferences: the correct chain over a flawed one with the same question and length.
    def pairs(seed, n):
        good = [chain(np.random.default_rng([seed, i]), False) for i in range(n)]
        bad = [chain(np.random.default_rng([seed, i]), True) for i in range(n)]
        assert all(g[0] == b[0] and len(g[1]) == len(b[1]) for g, b in zip(good, bad))
        return verifiers.make_pair_batch(TOK, [g[0] for g in good], [g[1] for g in good],
                                         [b[1] for b in bad], length=40)

    vp, _ = train("bt", [pairs(4 + i, 64) for i in range(16)], 240)
    hp = pairs(100, 300)
    rc = np.asarray(verifiers.final_logits(vp, CFG, hp["chosen_tokens"], hp["chosen_lengths"]))
    rr = np.asarray(verifiers.final_logits(vp, CFG, hp["rejected_tokens"],
                                         hp["rejected_lengths"]))
    assert np.mean(rc > rr) >= 0.9, np.mean(rc > rr)
