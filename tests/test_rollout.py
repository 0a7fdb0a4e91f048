"""Rollouts as tokens: packing against a straightforward host loop, alignment of the mask and
log-probs with `token_logprobs` targets, group selection and decoding."""
import jax
import numpy as np
import pytest

from r1jax import grpo, model, rollout, sampler
from r1jax.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
CFG = model.ModelConfig(vocab_size=264, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2,
                        head_dim=8, d_ff=64, max_seq_len=128)
PARAMS = model.init_params(CFG, jax.random.key(0))
PROMPTS = [TOK.encode("ab"), TOK.encode("cdefg"), TOK.encode("h")]


def _sample(G=3, M=8, length=24, stop=(), seed=0, **kw):
    sampling = sampler.SamplingConfig(max_new_tokens=M, num_samples=G, stop_tokens=stop, **kw)
    return rollout.sample(PARAMS, CFG, PROMPTS, jax.random.key(seed), sampling,
                          pad_id=TOK.pad_id, length=length)


def test_packing_matches_a_host_loop_over_the_sampler_output():
    stop = tuple(range(97, 110))          # some rows stop early, some run to M
    roll = _sample(stop=stop)
    out = sampler.generate(PARAMS, CFG, PROMPTS, jax.random.key(0), sampler.SamplingConfig(
        max_new_tokens=8, num_samples=3, stop_tokens=stop), pad_id=TOK.pad_id)
    toks, lens, lps, stopped = (np.asarray(x) for x in out)
    assert roll.tokens.shape == (9, 24) and roll.completion_mask.shape == (9, 23)
    assert roll.group_size == 3 and roll.num_groups == 3
    assert 0 < lens.min() < 8 == lens.max()
    for p, prompt in enumerate(PROMPTS):
        for g in range(3):
            b, n, n_p = p * 3 + g, int(lens[p, g]), len(prompt)
            row = [TOK.pad_id] * 24
            row[:n_p] = prompt
            row[n_p:n_p + n] = toks[p, g, :n].tolist()
            assert np.asarray(roll.tokens[b]).tolist() == row
            mask = np.zeros(23)
            mask[n_p - 1:n_p - 1 + n] = 1
            np.testing.assert_array_equal(roll.completion_mask[b], mask)
            lp = np.zeros(23)
            lp[n_p - 1:n_p - 1 + n] = lps[p, g, :n]
            np.testing.assert_allclose(roll.logprobs[b], lp, rtol=1e-6)
            assert int(roll.prompt_lengths[b]) == n_p and int(roll.lengths[b]) == n
            assert bool(roll.stopped[b]) == stopped[p, g]
            assert bool(roll.truncated[b]) == (n == 8 and not stopped[p, g])
            assert roll.completion_ids(b) == toks[p, g, :n].tolist()


def test_logprobs_are_the_policy_at_temperature_one():
    roll = _sample()
    lp = grpo.ref_logprobs_fn(PARAMS, CFG, roll.tokens, roll.completion_mask)
    np.testing.assert_allclose(lp, roll.logprobs, atol=1e-4)


def test_select_groups_texts_and_concat():
    roll = _sample()
    sub = roll.select_groups([2, 0, 2])
    assert sub.tokens.shape == (9, 24) and sub.group_size == 3
    np.testing.assert_array_equal(sub.tokens[:3], roll.tokens[6:])
    np.testing.assert_array_equal(sub.tokens[3:6], roll.tokens[:3])
    texts = roll.texts(TOK)
    assert len(texts) == 3 and all(len(r) == 3 for r in texts)
    assert texts[1][2] == TOK.decode(roll.completion_ids(5))
    both = rollout.concat([roll.select_groups([0]), roll.select_groups([1, 2])])
    np.testing.assert_array_equal(both.tokens, roll.tokens)
    with pytest.raises(ValueError, match="one group size"):
        rollout.concat([roll, _sample(G=2)])


def test_too_short_length_is_an_error():
    with pytest.raises(ValueError, match="exceeds the rollout length"):
        _sample(length=10)
