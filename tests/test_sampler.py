"""Sampler tests against brute-force references: argmax loops over full forwards, exact
sampling distributions computed with a full sort in numpy, and host-side stop-string search."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import stats

from r1jax import model, sampler
from r1jax.sampler import SamplingConfig, continue_steps, generate
from r1jax.tokenizer import ByteTokenizer

CFG = model.ModelConfig(vocab_size=32, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                        head_dim=16, d_ff=128, max_seq_len=256)
PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11] * 12]


@pytest.fixture(scope="module")
def params():
    return model.init_params(CFG, jax.random.key(0))


_forward = jax.jit(model.forward, static_argnums=2)


def full_logits(params, cfg, seq, width=32):
    """Full forward (no cache) logits [len(seq), V]; the row is right-padded to `width` so
    that one compilation serves every length (causal: padding cannot affect earlier rows)."""
    padded = jnp.array([list(seq) + [0] * (width - len(seq))])
    return _forward(params, padded, cfg)[0, :len(seq)]


def argmax_loop(params, cfg, prompt, n, width=32):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(jnp.argmax(full_logits(params, cfg, seq, width)[-1])))
    return seq[len(prompt):]


def reference_dist(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    """The sampling distribution by brute force: full sort, then top-k, top-p, min-p."""
    x = np.asarray(logits, np.float64) / temperature
    p = np.exp(x - x.max())
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    keep = np.zeros_like(p, bool)
    keep[order[:top_k or len(p)]] = True
    p = np.where(keep, p, 0) / p[keep].sum()
    if top_p < 1:
        sp = p[order]
        kept = (np.cumsum(sp) - sp) < top_p
        keep = np.zeros_like(keep)
        keep[order[kept]] = True
        p = np.where(keep, p, 0) / p[keep].sum()
    if min_p > 0:
        p = np.where(p >= min_p * p.max(), p, 0)
        p /= p.sum()
    return p


def test_greedy_equals_argmax_loop_over_full_forwards(params):
    out = generate(params, CFG, PROMPTS, jax.random.key(1),
                   SamplingConfig(max_new_tokens=9, num_samples=2, temperature=0))
    assert out.tokens.shape == (3, 2, 9) and out.tokens.dtype == jnp.int32
    for i, prompt in enumerate(PROMPTS):
        want = argmax_loop(params, CFG, prompt, 9)
        for n in range(2):
            assert out.tokens[i, n].tolist() == want
    np.testing.assert_array_equal(out.lengths, 9)
    assert not out.stopped.any()


def test_greedy_at_max_seq_len_fallback_bucket_keeps_every_token(params):
    """Prompt + rounded-up buffer exceeds max_seq_len and max_new_tokens is not a multiple of
    the chunk: the buffer Gb is then not a multiple of CHUNK and the last scan chunk runs past
    it. Every generated token and log-prob must still equal the full-forward reference."""
    cfg = CFG.replace(max_seq_len=100)
    G = 40
    prompts = [[(7 * i + 3) % 31 + 1 for i in range(60)], [(5 * i + 2) % 31 + 1 for i in range(45)]]
    Tb, Gb = sampler._buckets(60, G, cfg)
    assert 60 + max(sampler.GEN_BUCKET_FLOOR, sampler._next_pow2(G)) > cfg.max_seq_len
    assert Gb % sampler.CHUNK != 0 and Gb > sampler.CHUNK  # the branch this test is about
    out = generate(params, cfg, prompts, jax.random.key(1),
                   SamplingConfig(max_new_tokens=G, num_samples=2, temperature=0), pad_id=0)
    np.testing.assert_array_equal(out.lengths, G)
    assert not out.stopped.any()
    for i, prompt in enumerate(prompts):
        want = argmax_loop(params, cfg, prompt, G, width=cfg.max_seq_len)
        full = full_logits(params, cfg, prompt + want, width=cfg.max_seq_len)
        logp = jax.nn.log_softmax(full[len(prompt) - 1:len(prompt) - 1 + G], axis=-1)
        logp = np.asarray(logp[jnp.arange(G), jnp.array(want)])
        for n in range(2):
            assert out.tokens[i, n].tolist() == want, (i, n)
            np.testing.assert_allclose(out.logprobs[i, n], logp, atol=2e-5)


def test_decode_logits_equal_full_forward_at_every_step(params):
    raw = sampler._generate_arrays(params, CFG, PROMPTS, jax.random.key(2),
                                   SamplingConfig(max_new_tokens=6, num_samples=1),
                                   record_logits=True)
    for i, prompt in enumerate(PROMPTS):
        gen = raw["tokens"][i, :6].tolist()
        full = full_logits(params, CFG, prompt + gen)
        want = full[len(prompt) - 1:len(prompt) + 5]
        np.testing.assert_allclose(raw["logits"][i, :6], want, atol=2e-5, rtol=1e-5)
        # logprobs at temperature 1 with no truncation are the full forward's log-softmax
        logp = jax.nn.log_softmax(want, axis=-1)[jnp.arange(6), jnp.array(gen)]
        np.testing.assert_allclose(raw["logprobs"][i, :6], logp, atol=2e-5)


def test_top_k_1_equals_greedy(params):
    greedy = generate(params, CFG, PROMPTS, jax.random.key(3),
                      SamplingConfig(max_new_tokens=8, temperature=0))
    top1 = generate(params, CFG, PROMPTS, jax.random.key(4),
                    SamplingConfig(max_new_tokens=8, temperature=1.3, top_k=1))
    np.testing.assert_array_equal(greedy.tokens, top1.tokens)
    np.testing.assert_allclose(top1.logprobs, 0.0, atol=1e-6)  # a point mass


@pytest.mark.parametrize("knobs,window", [
    (dict(), sampler.TOP_P_WINDOW),
    pytest.param(dict(temperature=0.7, top_k=6), sampler.TOP_P_WINDOW, marks=pytest.mark.slow),
    pytest.param(dict(top_p=0.6), 8, marks=pytest.mark.slow),  # nucleus inside the window
    (dict(top_p=0.97), 4),         # nucleus wider than the 4-token window: exact fallback
    pytest.param(dict(temperature=1.5, min_p=0.3), sampler.TOP_P_WINDOW,
                 marks=pytest.mark.slow),
    (dict(top_k=10, top_p=0.8, min_p=0.2), sampler.TOP_P_WINDOW),
])
def test_first_token_frequencies_match_distribution(params, knobs, window, monkeypatch):
    monkeypatch.setattr(sampler, "TOP_P_WINDOW", window)
    prompt = [3, 1, 4]
    n = 4096
    raw = sampler._generate_arrays(params, CFG, [prompt], jax.random.key(5),
                                   SamplingConfig(max_new_tokens=1, num_samples=n, **knobs))
    logits = full_logits(params, CFG, prompt)[-1]
    p = reference_dist(logits, **knobs)
    tok = np.asarray(raw["tokens"][:n, 0])
    counts = np.bincount(tok, minlength=CFG.vocab_size)
    assert counts[p == 0].sum() == 0, "sampled a token outside the truncated support"
    expected = p * n
    big = expected >= 5
    obs = np.append(counts[big], counts[~big].sum())
    exp = np.append(expected[big], expected[~big].sum())
    obs, exp = (obs, exp) if exp[-1] > 0 else (obs[:-1], exp[:-1])
    assert stats.chisquare(obs, exp).pvalue > 1e-3
    # log-probs are those of the distribution sampled from
    np.testing.assert_allclose(raw["logprobs"][:n, 0], np.log(p[tok]), atol=1e-4)


def test_samples_differ_and_same_key_reproduces(params):
    s = SamplingConfig(max_new_tokens=12, num_samples=4, temperature=1.0)
    a = generate(params, CFG, PROMPTS, jax.random.key(6), s)
    b = generate(params, CFG, PROMPTS, jax.random.key(6), s)
    c = generate(params, CFG, PROMPTS, jax.random.key(7), s)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert not np.array_equal(a.tokens, c.tokens)
    for i in range(len(PROMPTS)):
        rows = {tuple(r) for r in np.asarray(a.tokens[i]).tolist()}
        assert len(rows) == 4, "samples of one prompt should differ"


def test_stop_tokens(params):
    base = generate(params, CFG, PROMPTS, jax.random.key(8),
                    SamplingConfig(max_new_tokens=10, num_samples=2))
    toks = np.asarray(base.tokens)
    stop = int(toks[0, 0, 3])
    out = generate(params, CFG, PROMPTS, jax.random.key(8),
                   SamplingConfig(max_new_tokens=10, num_samples=2, stop_tokens=(stop, 31)),
                   pad_id=0)
    for i in range(len(PROMPTS)):
        for n in range(2):
            row = toks[i, n].tolist()
            hits = [t for t, x in enumerate(row) if x in (stop, 31)]
            length = hits[0] + 1 if hits else 10
            assert out.lengths[i, n] == length
            assert bool(out.stopped[i, n]) == bool(hits)
            assert out.tokens[i, n, :length].tolist() == row[:length]
            assert (np.asarray(out.tokens[i, n, length:]) == 0).all()
            np.testing.assert_array_equal(out.logprobs[i, n, :length], base.logprobs[i, n, :length])
            assert (np.asarray(out.logprobs[i, n, length:]) == 0).all()
    assert out.lengths[0, 0] <= 4


class PieceTokenizer:
    """A toy tokenizer whose tokens are multi-character strings (to test spanning matches)."""

    pieces = ["a", "b", "c", "\n", "ab", "b\n", "\n\n", "x", "y", "<END>", "\nq", "qq", "q",
              "ba", "abc", "c\n\n", "z", "zz", " ", "é", "\n a", "END", ">", "<", "E", "N",
              "D", "yx", "xy", "a\n", "\na", "!"]
    vocab_size = len(pieces)
    eos_id = 31
    pad_id = 0

    def decode(self, ids, skip_special=True):
        return "".join(self.pieces[i] for i in ids if 0 <= i < self.vocab_size)


def first_stop(text_pieces, strings):
    """Host reference: index of the token whose text completes the first stop string."""
    text = ""
    for t, piece in enumerate(text_pieces):
        text += piece
        if any(s in text for s in strings):
            return t
    return None


@pytest.mark.parametrize("strings", [
    ("\n\n",), ("ab", "END", "q\n"), pytest.param(("b\n\n",), marks=pytest.mark.slow)])
def test_stop_strings_spanning_tokens(params, strings):
    tok = PieceTokenizer()
    s = SamplingConfig(max_new_tokens=24, num_samples=16, temperature=2.0)
    base = generate(params, CFG, PROMPTS, jax.random.key(9), s)
    out = generate(params, CFG, PROMPTS, jax.random.key(9),
                   dataclasses.replace(s, stop_strings=strings), tokenizer=tok, pad_id=0)
    spans = 0
    for i in range(len(PROMPTS)):
        for n in range(16):
            row = np.asarray(base.tokens[i, n]).tolist()
            t = first_stop([tok.pieces[x] for x in row], strings)
            length = 24 if t is None else t + 1
            assert out.lengths[i, n] == length, (row, strings)
            assert bool(out.stopped[i, n]) == (t is not None)
            assert out.tokens[i, n, :length].tolist() == row[:length]
            assert (np.asarray(out.tokens[i, n, length:]) == 0).all()
            if t is not None and not any(x in tok.pieces[row[t]] for x in strings):
                spans += 1
    assert spans > 0, "no stop string spanned a token boundary; pick other strings"


def test_stop_string_byte_tokenizer_two_tokens():
    cfg = CFG.replace(vocab_size=264)
    p = model.init_params(cfg, jax.random.key(10))
    prompts = [[104 + i, 105] for i in range(16)]
    greedy = np.asarray(generate(p, cfg, prompts, jax.random.key(0),
                                 SamplingConfig(max_new_tokens=12, temperature=0)).tokens[:, 0])
    # a prompt whose greedy bytes 4 and 5 are ASCII and form a string not seen earlier
    i = next(i for i, r in enumerate(greedy.tolist())
             if max(r[4:6]) < 128 and bytes(r[4:6]) not in bytes(r[:5]))
    row = greedy[i].tolist()
    stop = bytes(row[4:6]).decode("ascii")
    out = generate(p, cfg, [prompts[i]], jax.random.key(0),
                   SamplingConfig(max_new_tokens=12, temperature=0, stop_strings=(stop,)),
                   tokenizer=ByteTokenizer(), pad_id=256)
    assert out.lengths[0, 0] == 6 and bool(out.stopped[0, 0])
    assert out.tokens[0, 0, :6].tolist() == row[:6]
    assert (np.asarray(out.tokens[0, 0, 6:]) == 256).all()


def test_continue_steps_stops_at_delimiter_or_eos(params):
    tok = PieceTokenizer()
    out = continue_steps(params, CFG, PROMPTS, jax.random.key(11),
                         SamplingConfig(max_new_tokens=20, num_samples=8, temperature=2.0),
                         "\n\n", tok)
    n_stopped = 0
    for i in range(len(PROMPTS)):
        for n in range(8):
            length = int(out.lengths[i, n])
            ids = np.asarray(out.tokens[i, n, :length]).tolist()
            text = tok.decode(ids)
            if out.stopped[i, n]:
                n_stopped += 1
                assert "\n\n" in text or ids[-1] == tok.eos_id
                assert "\n\n" not in tok.decode(ids[:-1]) and tok.eos_id not in ids[:-1]
            else:
                assert length == 20 and "\n\n" not in text and tok.eos_id not in ids
    assert n_stopped > 0


def test_trace_count_stays_at_one_within_a_bucket(params):
    s = SamplingConfig(max_new_tokens=5, num_samples=3, temperature=0.9, top_k=7)
    generate(params, CFG, [[1, 2], [3, 4, 5]], jax.random.key(0), s)
    before = dict(sampler.TRACE_COUNTS)
    for prompts, max_new, temp in [([[1] * 9, [2] * 16], 7, 0.5), ([[5], [6, 7, 8, 9]], 16, 1.2),
                                   ([[3] * 4, [4]], 1, 0.8)]:
        out = generate(params, CFG, prompts, jax.random.key(1),
                       dataclasses.replace(s, max_new_tokens=max_new, temperature=temp))
        assert out.tokens.shape == (2, 3, max_new)
    assert sampler.TRACE_COUNTS == before


def test_runs_on_8_device_mesh_with_batch_sharded(params):
    mesh = Mesh(np.array(jax.devices()[:8]), ("data",))

    def shard(x, names):
        spec = PartitionSpec(*["data" if n == "batch" else None for n in names])
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    s = SamplingConfig(max_new_tokens=8, num_samples=4, temperature=1.0, top_p=0.9)
    prompts = PROMPTS[:2]
    want = generate(params, CFG, prompts, jax.random.key(12), s)
    got = generate(params, CFG, prompts, jax.random.key(12), s, shard=shard)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
    raw = sampler._generate_arrays(params, CFG, prompts, jax.random.key(12), s, shard=shard)
    assert raw["cache"]["k"].sharding.spec[1] == "data"  # the cache's batch axis is split


@pytest.mark.parametrize("field,value", [
    ("max_new_tokens", 0), ("num_samples", -1), ("temperature", -0.1), ("top_k", -1),
    ("top_p", 0.0), ("top_p", 1.5), ("min_p", 1.0), ("stop_tokens", (-1,)),
    ("stop_strings", ("",)), ("stop_strings", "\n"),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingConfig(**{field: value})


def test_bad_inputs_raise(params):
    with pytest.raises(ValueError, match="tokenizer"):
        generate(params, CFG, [[1]], jax.random.key(0), SamplingConfig(stop_strings=("a",)))
    with pytest.raises(ValueError, match=r"prompts\[1\]"):
        generate(params, CFG, [[1], []], jax.random.key(0), SamplingConfig())
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(params, CFG, [[1] * 200], jax.random.key(0), SamplingConfig(max_new_tokens=64))
