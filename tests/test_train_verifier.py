"""The verifier loop (`train.run_verifier`): a tiny ORM learns, a preempted run resumes to the
parameters of an uninterrupted one, a NaN batch stops with the last good checkpoint intact."""
import os
import signal

import jax
import numpy as np
import pytest

from r1jax import checkpoint, train, verifiers
from r1jax.model import ModelConfig, init_params
from r1jax.reporting import MetricWriter, read_metrics


def _orm_scores(vparams, cfg, tokens, lengths):
    """The ORM's probability of correctness: the sigmoid of the value-head logit."""
    return jax.nn.sigmoid(verifiers.final_logits(vparams, cfg, tokens, lengths))


CFG = ModelConfig(vocab_size=264, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16,
                  d_ff=64, max_seq_len=64)


def _vparams(seed=0):
    return verifiers.init_verifier(init_params(CFG, jax.random.key(seed)), CFG,
                                   jax.random.key(seed + 1), scale=1.0)


def _orm_data(n=64, seed=0):
    """Random byte prompts and one-token steps: the solution is right iff its last token is
    "Y" (a rule the value head can learn)."""
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(97, 123, rng.integers(3, 9)).tolist() for _ in range(n)]
    labels = rng.integers(0, 2, n)
    steps = [[rng.integers(97, 123, 2).tolist(), [ord("Y") if y else ord("N")]] for y in labels]
    return verifiers.orm_batch_from_ids(prompts, steps, labels.astype(float), length=16)


def _prm_data(n=32, seed=1):
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(97, 123, 4).tolist() for _ in range(n)]
    steps = [[rng.integers(97, 123, 2).tolist() for _ in range(3)] for _ in range(n)]
    labels = rng.integers(0, 2, (n, 3)).astype(float).tolist()
    return verifiers.prm_batch_from_ids(prompts, steps, labels, length=16)


def _assert_trees_equal(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_a_tiny_orm_learns(tmp_path):
    loop = train.LoopConfig(steps=60, learning_rate=1e-2, warmup_steps=5, checkpoint_every=30,
                            log_every=5)
    writer = MetricWriter(str(tmp_path), tensorboard=False)
    vparams = train.run_verifier(_vparams(), CFG, "orm", _orm_data(), loop,
                                 str(tmp_path / "orm"), batch_size=16, writer=writer,
                                 show_progress=False)
    writer.close()
    losses = [r["loss"] for r in read_metrics(str(tmp_path / "metrics.jsonl"), stage="orm")]
    assert len(losses) >= 10 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    data = _orm_data(seed=7)   # held-out rows of the same rule
    scores = np.asarray(_orm_scores(vparams, CFG, data["tokens"], data["lengths"]))
    assert np.mean((scores > 0.5) == (data["labels"] > 0.5)) >= 0.9
    assert checkpoint.CheckpointManager(str(tmp_path / "orm")).all_steps() == [30, 60]


def test_resume_after_preemption_equals_uninterrupted(tmp_path, monkeypatch):
    data = _prm_data()
    loop = train.LoopConfig(steps=6, learning_rate=1e-2, checkpoint_every=100, seed=3)
    full = train.run_verifier(_vparams(), CFG, "prm", data, loop, str(tmp_path / "a"),
                              batch_size=8, show_progress=False)
    calls = {"n": 0}
    real = verifiers.make_train_step

    def preempting(*args, **kwargs):   # delivers SIGTERM during the third step
        fn = real(*args, **kwargs)

        def step(vparams, opt_state, batch):
            calls["n"] += 1
            if calls["n"] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return fn(vparams, opt_state, batch)
        return step

    monkeypatch.setattr(verifiers, "make_train_step", preempting)
    with pytest.raises(train.Preempted, match="prm step 3"):
        train.run_verifier(_vparams(), CFG, "prm", data, loop, str(tmp_path / "b"),
                           batch_size=8, show_progress=False)
    monkeypatch.setattr(verifiers, "make_train_step", real)
    resumed = train.run_verifier(_vparams(), CFG, "prm", data, loop, str(tmp_path / "b"),
                                 batch_size=8, show_progress=False)
    _assert_trees_equal(full, resumed)


def test_nan_batch_stops_with_the_last_good_checkpoint(tmp_path):
    data = _orm_data()
    loop = train.LoopConfig(steps=6, learning_rate=1e-2, checkpoint_every=2, seed=0)
    # Poison rows that step 3 draws and no earlier step does.
    drawn = [set(np.random.default_rng((loop.seed, s)).integers(0, 64, 8)) for s in range(4)]
    rows = sorted(drawn[3] - drawn[0] - drawn[1] - drawn[2])
    assert rows
    data["labels"][rows] = np.nan
    with pytest.raises(train.NonFiniteError, match="step 3"):
        train.run_verifier(_vparams(), CFG, "orm", data, loop, str(tmp_path), batch_size=8,
                           show_progress=False)
    assert checkpoint.CheckpointManager(str(tmp_path)).latest_step() == 2
    with pytest.raises(ValueError, match="kind"):
        train.run_verifier(_vparams(), CFG, "dpo", data, loop, str(tmp_path / "x"),
                           batch_size=8, show_progress=False)
