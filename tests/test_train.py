"""Training loops: exact resume after preemption, NaN stops with the checkpoint intact,
the GRPO batch layout, and dynamic sampling."""
import os
import signal

import jax
import numpy as np
import pytest

from r1jax import checkpoint, evaluation, grpo, model, rewards, sampler, sharding, tasks, train
from r1jax.reporting import MetricWriter, read_metrics
from r1jax.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
CFG = model.ModelConfig(vocab_size=264, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                        head_dim=8, d_ff=64, max_seq_len=256)


def _sft_data(n=64, length=96):
    pairs = tasks.base_corpus(0, n, {"arithmetic": 1.0}, difficulty={"arithmetic": {
        "num_ops": 1, "digits": 1}})
    return train.encode_pairs(TOK, pairs, length)


def _params(seed=0):
    return model.init_params(CFG, jax.random.key(seed))


def _assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_encode_pairs_masks_the_completion_and_eos():
    tokens, mask = train.encode_pairs(TOK, [("Q:1+1", " 2")], 12)
    assert TOK.decode(tokens[0, :5].tolist()) == "Q:1+1"
    np.testing.assert_array_equal(tokens[0, 5:8], TOK.encode(" 2") + [TOK.eos_id])
    np.testing.assert_array_equal(mask[0], [0] * 5 + [1] * 3 + [0] * 4)
    with pytest.raises(ValueError, match="example 0"):
        train.encode_pairs(TOK, [("x" * 20, "y")], 12)


def test_sft_resume_after_preemption_equals_uninterrupted(tmp_path):
    tokens, mask = _sft_data()
    loop = train.LoopConfig(steps=6, learning_rate=1e-2, checkpoint_every=100, seed=3)
    full = train.run_sft(_params(), CFG, tokens, mask, loop, str(tmp_path / "a"), batch_size=8,
                         show_progress=False)

    calls = {"n": 0}
    real_step = train.sft.make_sft_step

    def preempting_step(*args, **kwargs):  # delivers SIGTERM during the third step
        fn = real_step(*args, **kwargs)

        def step(state, batch):
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return fn(state, batch)
        return step

    train.sft.make_sft_step = preempting_step
    try:
        with pytest.raises(train.Preempted, match="at sft step 3; run the same command"):
            train.run_sft(_params(), CFG, tokens, mask, loop, str(tmp_path / "b"), batch_size=8,
                          show_progress=False)
    finally:
        train.sft.make_sft_step = real_step
    resumed = train.run_sft(_params(), CFG, tokens, mask, loop, str(tmp_path / "b"),
                            batch_size=8, show_progress=False)
    _assert_trees_equal(full, resumed)


def test_length_buckets_group_examples_by_rounded_length():
    lengths = [5, 12, 3, 20, 16]
    mask = np.zeros((5, 24), np.float32)
    for i, n in enumerate(lengths):
        mask[i, 1:n] = 1.0  # loss through position n - 1: length n
    groups = {w: sorted(m.tolist()) for m, w in train.length_buckets(mask, 8)}
    assert groups == {8: [0, 2], 16: [1, 4], 24: [3]}
    assert {w for _, w in train.length_buckets(mask, 32)} == {24}  # capped at the array width


def test_bucketed_batches_keep_each_example_equally_likely():
    mask = np.zeros((6, 40), np.float32)
    for i, n in enumerate([4, 6, 20, 22, 24, 40]):  # groups of 2, 3 and 1 examples
        mask[i, :n] = 1.0
    buckets = train.length_buckets(mask, 8)
    counts = np.zeros(6)
    for step in range(3000):
        idx, width = train._batch_indices(np.random.default_rng((0, step)), 6, 4, buckets)
        assert mask[idx, width:].sum() == 0 and len(set(mask[idx].sum(1) > width)) == 1
        counts += np.bincount(idx, minlength=6)
    freq = counts / counts.sum()
    np.testing.assert_allclose(freq, 1 / 6, atol=0.015)


def test_bucketed_sft_equals_the_same_rows_at_full_width(tmp_path):
    """Cutting a batch to its group's width changes no number: replaying the batches the
    bucketed run drew, padded back to full width, gives the same parameters."""
    pairs = tasks.base_corpus(0, 48, {"arithmetic": 1.0}, difficulty={"arithmetic": {
        "num_ops": (1, 4), "digits": (1, 2)}})
    tokens, mask = train.encode_pairs(TOK, pairs, 192)
    loop = train.LoopConfig(steps=5, learning_rate=1e-2, checkpoint_every=100, seed=1)
    seen = []
    real_step = train.sft.make_sft_step

    def recording_step(*args, **kwargs):
        fn = real_step(*args, **kwargs)

        def step(state, batch):
            seen.append({k: np.asarray(v) for k, v in batch.items()})
            return fn(state, batch)
        return step

    train.sft.make_sft_step = recording_step
    try:
        bucketed = train.run_sft(_params(), CFG, tokens, mask, loop, str(tmp_path),
                                 batch_size=8, show_progress=False, length_bucket=32)
    finally:
        train.sft.make_sft_step = real_step
    widths = {b["tokens"].shape[1] for b in seen}
    assert widths <= {32, 64, 96, 128, 160, 192} and len(widths) > 1 and max(widths) < 192

    state = train.TrainState.create(_params(), train._optimizer(loop))
    step = real_step(CFG, train._optimizer(loop))
    for b in seen:
        w = b["tokens"].shape[1]
        full = {"tokens": np.full((8, 192), TOK.pad_id, np.int32),
                "loss_mask": np.zeros((8, 192), np.float32)}
        full["tokens"][:, :w], full["loss_mask"][:, :w] = b["tokens"], b["loss_mask"]
        state, _ = step(state, full)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-5, atol=1e-6),
                 bucketed, state.params)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    tokens, mask = _sft_data()
    loop = train.LoopConfig(steps=6, learning_rate=1e-2, checkpoint_every=2, seed=0)
    # Poison rows that step 3 draws and no earlier step does.
    drawn = [set(np.random.default_rng((loop.seed, s)).integers(0, len(tokens), 8))
             for s in range(4)]
    rows = sorted(drawn[3] - drawn[0] - drawn[1] - drawn[2])
    assert rows
    bad_mask = mask.copy()
    bad_mask[rows] = np.nan
    with pytest.raises(train.NonFiniteError, match="step 3"):
        train.run_sft(_params(), CFG, tokens, bad_mask, loop, str(tmp_path), batch_size=8,
                      show_progress=False)
    manager = checkpoint.CheckpointManager(str(tmp_path))
    assert manager.latest_step() == 2
    state = train.TrainState.create(_params(), train._optimizer(loop))
    restored = manager.restore(target={"params": state.params, "opt_state": state.opt_state})
    assert restored.step == 2
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))


def _rollouts(prompts_text, G=3, M=6, seed=0):
    sampling = sampler.SamplingConfig(max_new_tokens=M, num_samples=G, temperature=1.0)
    return evaluation.sample_completions(_params(), CFG, TOK, prompts_text,
                                         jax.random.key(seed), sampling)


def test_grpo_batch_takes_the_rollout_and_its_policy_logprobs():
    roll = _rollouts(["ab", "cdef"])
    adv = np.arange(6, dtype=np.float32).reshape(2, 3)
    batch = train.grpo_batch(roll, adv)
    assert batch["tokens"].shape == roll.tokens.shape
    np.testing.assert_array_equal(batch["advantages"], adv.reshape(6))
    # The sampler's log-probs (temperature 1) are the policy's own at those positions.
    lp = grpo.ref_logprobs_fn(_params(), CFG, batch["tokens"], batch["completion_mask"])
    np.testing.assert_allclose(lp, batch["old_logprobs"], atol=1e-4)


def _toy_rollout(**kw):
    return train.RolloutConfig(prompts_per_step=2, max_new_tokens=6, max_prompt_tokens=32, **kw)


def test_dynamic_sampling_refills_with_informative_groups():
    problems = tasks.generate("arithmetic", 0, 8, num_ops=1, digits=1)
    calls = []

    def draw(round_):
        calls.append(round_)
        return problems[2 * round_:2 * round_ + 2]

    gcfg = grpo.GRPOConfig(num_generations=3, dynamic_sampling=True)
    probs, roll, rew, stats = train.collect_rollouts(_params(), CFG, TOK, draw, jax.random.key(0),
                                                     _toy_rollout(max_refills=3), gcfg)
    # An untrained model never answers correctly and never formats: every group is uniform,
    # so all refill rounds are used and the fallback keeps the batch shape.
    assert calls == [0, 1, 2, 3]
    assert stats["groups_kept"] == 0 and rew["reward"].shape == (2, 3)
    assert roll.tokens.shape == (6, train.rollout_length(_toy_rollout()))
    assert roll.group_size == 3


def _length_reward(problems, texts):
    """A reward that varies within groups even for an untrained model."""
    return {"reward": np.array([[len(t) % 3 / 2 for t in row] for row in texts], np.float32)}


def test_grpo_resume_after_preemption_equals_uninterrupted(tmp_path):
    problems = tasks.generate("arithmetic", 0, 64, num_ops=1, digits=1)

    def train_problems(step, round_):
        return problems[2 * step:2 * step + 2]

    loop = train.LoopConfig(steps=4, learning_rate=1e-2, checkpoint_every=100, seed=1)
    gcfg = grpo.GRPOConfig(num_generations=3, beta=0.04)
    rollout = _toy_rollout()
    full = train.run_grpo(_params(), CFG, TOK, train_problems, loop, rollout, gcfg,
                          str(tmp_path / "a"), reward_fn=_length_reward, show_progress=False)
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a - b)).max(), full,
                                         _params()))
    assert max(moved) > 1e-4  # the rewards vary, so the policy really is updated

    def preempting(step, round_):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return train_problems(step, round_)

    writer = MetricWriter(str(tmp_path / "b"))
    with pytest.raises(train.Preempted, match="at grpo step 3; run the same command"):
        train.run_grpo(_params(), CFG, TOK, preempting, loop, rollout, gcfg, str(tmp_path / "b"),
                       writer=writer, reward_fn=_length_reward, show_progress=False)
    resumed = train.run_grpo(_params(), CFG, TOK, train_problems, loop, rollout, gcfg,
                             str(tmp_path / "b"), writer=writer, reward_fn=_length_reward,
                             show_progress=False)
    writer.close()
    _assert_trees_equal(full, resumed)
    rows = read_metrics(str(tmp_path / "b" / "metrics.jsonl"), "grpo")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_grpo_on_a_mesh_equals_single_device(tmp_path):
    problems = tasks.generate("arithmetic", 0, 64, num_ops=1, digits=1)
    loop = train.LoopConfig(steps=2, learning_rate=1e-2, checkpoint_every=100, seed=1)
    gcfg = grpo.GRPOConfig(num_generations=2, beta=0.04)
    rollout = train.RolloutConfig(prompts_per_step=4, max_new_tokens=6, max_prompt_tokens=32)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})

    def run(path, mesh):
        return train.run_grpo(_params(), CFG, TOK, lambda s, r: problems[4 * s:4 * s + 4], loop,
                              rollout, gcfg, str(path), reward_fn=_length_reward, mesh=mesh,
                              show_progress=False)

    single = run(tmp_path / "a", None)
    sharded = run(tmp_path / "b", mesh)
    expected = sharding.param_shardings(CFG, mesh)["layers"]["q"]
    assert sharded["layers"]["q"].sharding.is_equivalent_to(expected, 4)
    # Adam's normalised steps (lr 1e-2) amplify float32 reduction-order noise in near-zero
    # gradients, so compare at a tolerance well below one update.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         atol=5e-4), single, sharded)


def _first_iteration_metrics(tmp_path, **rollout_kw):
    problems = tasks.generate("arithmetic", 0, 16, num_ops=1, digits=1)
    loop = train.LoopConfig(steps=1, learning_rate=1e-2, checkpoint_every=100, seed=0)
    gcfg = grpo.GRPOConfig(num_generations=4, beta=0.0)
    writer = MetricWriter(str(tmp_path))
    train.run_grpo(_params(), CFG, TOK, lambda s, r: problems[:2], loop,
                   _toy_rollout(**rollout_kw), gcfg, str(tmp_path), writer=writer,
                   reward_fn=_length_reward, show_progress=False)
    writer.close()
    return read_metrics(str(tmp_path / "metrics.jsonl"), "grpo")[0]


@pytest.mark.parametrize("setting", [{"temperature": 0.7}, {"top_p": 0.9},
                                     {"temperature": 0.7, "top_k": 20}])
def test_first_iteration_ratio_is_one_at_every_sampling_setting(tmp_path, setting):
    """Tempered / truncated sampling: the loop recomputes old log-probs at temperature 1."""
    m = _first_iteration_metrics(tmp_path, **setting)
    assert abs(m["first_ratio_mean"] - 1.0) < 1e-5
    assert m["first_clip_frac"] == 0.0


def test_tempered_sampler_logprobs_would_give_wrong_ratios():
    """The reason for the recomputation: at temperature 0.7 the sampler's log-probs differ
    from the temperature-1 policy's by far more than the clip range."""
    sampling = sampler.SamplingConfig(max_new_tokens=6, num_samples=4, temperature=0.7)
    roll = evaluation.sample_completions(_params(), CFG, TOK, ["ab", "cd"], jax.random.key(0),
                                         sampling)
    lp = grpo.ref_logprobs_fn(_params(), CFG, roll.tokens, roll.completion_mask)
    on = np.asarray(roll.completion_mask) > 0
    ratio = np.exp(np.asarray(lp)[on] - np.asarray(roll.logprobs)[on])
    assert np.mean(np.abs(ratio - 1) > 0.2) > 0.2


def test_overlong_cache_len_adds_dapo_soft_penalty():
    """Every completion of an untrained model runs to max_new_tokens = 6: with L_cache = 4 the
    penalty is (6 - 4 - 6) / 4 = -1 at length 6 (L_max), added to the reward."""
    problems = tasks.generate("arithmetic", 0, 4, num_ops=1, digits=1)
    rollout = _toy_rollout()
    plain = grpo.GRPOConfig(num_generations=3)
    shaped = grpo.GRPOConfig(num_generations=3, overlong_cache_len=4)
    args = (_params(), CFG, TOK, lambda r: problems[:2], jax.random.key(0), rollout)
    _, roll, base, _ = train.collect_rollouts(*args, plain, reward_fn=_length_reward)
    _, _, rew, _ = train.collect_rollouts(*args, shaped, reward_fn=_length_reward)
    lengths = np.asarray(roll.lengths).reshape(2, 3)
    expected = np.where(lengths <= 2, 0.0, np.where(lengths <= 6, (2 - lengths) / 4, -1.0))
    np.testing.assert_allclose(rew["overlong_penalty"], expected)
    np.testing.assert_allclose(rew["reward"], base["reward"] + expected)
    assert (lengths == 6).any() and (rew["overlong_penalty"] < 0).any()


def test_rule_reward_matrix_repetition_and_cosine_terms():
    problems = tasks.generate("arithmetic", 0, 1, num_ops=1, digits=1)
    good = f"<think>a b c</think> <answer>{problems[0].answer}</answer>"
    texts = [[good, "x y z x y z x y z"]]
    lengths = np.array([[10, 90]])
    r = train.rule_reward_matrix(problems, texts, train.RolloutConfig(
        repetition_weight=2.0, length_reward="cosine", max_new_tokens=100), lengths)
    cos_good = rewards.cosine_length_reward(10, True, 100)
    cos_bad = rewards.cosine_length_reward(90, False, 100)
    rep = rewards.repetition_penalty("x y z x y z x y z")
    np.testing.assert_allclose(r["reward"][0], [cos_good + 0.5, cos_bad + 2.0 * rep], rtol=1e-6)
    with pytest.raises(ValueError, match="length_reward"):
        train.RolloutConfig(length_reward="cos")
    with pytest.raises(ValueError, match="temperature"):
        train.RolloutConfig(temperature=0.0)


def test_policy_checkpoints_store_their_model_config(tmp_path):
    """What export_hf.py reads: every SFT / GRPO checkpoint knows its ModelConfig."""
    tokens, mask = _sft_data(16)
    loop = train.LoopConfig(steps=2, learning_rate=1e-2, checkpoint_every=1, seed=0)
    train.run_sft(_params(), CFG, tokens, mask, loop, str(tmp_path), batch_size=4,
                  show_progress=False)
    with checkpoint.CheckpointManager(str(tmp_path)) as manager:
        for step in manager.all_steps():
            meta = manager.read_meta(step)
            assert checkpoint.model_config_from_dict(meta["model_config"]) == CFG


def test_grpo_logs_the_learning_rate(tmp_path):
    problems = tasks.generate("arithmetic", 0, 8, num_ops=1, digits=1)
    loop = train.LoopConfig(steps=2, learning_rate=1e-2, warmup_steps=2, checkpoint_every=100,
                            schedule="constant")
    writer = MetricWriter(str(tmp_path))
    train.run_grpo(_params(), CFG, TOK, lambda s, r: problems[:2], loop, _toy_rollout(),
                   grpo.GRPOConfig(num_generations=3, beta=0.0), str(tmp_path), writer=writer,
                   reward_fn=_length_reward, show_progress=False)
    writer.close()
    rows = read_metrics(str(tmp_path / "metrics.jsonl"), "grpo")
    assert [r["learning_rate"] for r in rows] == pytest.approx([0.0, 5e-3])


def test_partial_format_credit_in_the_reward():
    problems = tasks.generate("arithmetic", 0, 1, num_ops=1, digits=1)
    texts = [["<think>no answer tag here</think>", "plain text"]]
    strict = train.rule_reward_matrix(problems, texts, train.RolloutConfig())
    partial = train.rule_reward_matrix(problems, texts,
                                       train.RolloutConfig(partial_format=True))
    want = [0.5 * rewards.format_reward_partial(t) for t in texts[0]]
    np.testing.assert_allclose(partial["reward"][0], want)
    assert want[0] > 0 and strict["reward"][0, 0] == 0.0
    np.testing.assert_array_equal(partial["format"], strict["format"])  # the metric stays strict
