"""Search methods on toy step trees (no model): votes, Best-of-N, beam search, DVTS, MCTS,
token accounting; and the PRM scorer adapter on a tiny random verifier."""
import itertools
import math

import jax
import numpy as np
import pytest

from r1jax import search, stats, verifiers
from r1jax.model import ModelConfig, init_params
from r1jax.search import Step
from r1jax.tokenizer import ByteTokenizer

# ----------------------------------------------------------------------------- toy tree
# A question is "Q<p>:"; a step is "<child index>\n"; a solution is a path of child indices.
# Every node has BRANCH children; steps at depth DEPTH are final. Step i costs i + 1 tokens.


def path_of(prefix: str) -> tuple[int, ...]:
    body = prefix.split(":", 1)[1]
    return tuple(int(s) for s in body.split("\n")[:-1])


def answer_fn(text: str):
    return text.replace("\n", "") or None


class TreeProposer:
    """Samples children with probabilities probs[depth] (or enumerates them in order,
    cycling, when deterministic). Records every step it proposes."""

    def __init__(self, branch, depth, probs=None, deterministic=False):
        self.branch, self.depth, self.deterministic = branch, depth, deterministic
        self.probs = probs if probs is not None else [np.full(branch, 1 / branch)] * depth
        self.proposed = []

    def propose(self, prefixes, n, key):
        depths = np.array([len(path_of(p)) for p in prefixes])
        if self.deterministic:
            idx = np.tile(np.arange(n) % self.branch, (len(prefixes), 1))
        else:
            rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
            cdf = np.cumsum(np.stack([self.probs[d] for d in depths]), axis=1)
            u = rng.uniform(size=(len(prefixes), n))
            idx = (u[:, :, None] > cdf[:, None, :-1]).sum(-1)
        out = []
        for d, row in zip(depths, idx):
            steps = [Step(f"{i}\n", bool(d + 1 >= self.depth), int(i) + 1) for i in row]
            self.proposed.extend(steps)
            out.append(steps)
        return out


class TableScorer:
    """Score of each step = table[question][path up to that step]; reads len(text) tokens."""

    def __init__(self, table):
        self.table, self.read = table, 0

    def score(self, questions, solutions):
        scores, tokens = [], []
        for q, steps in zip(questions, solutions):
            path = tuple(int(s) for s in steps)
            scores.append([self.table[q][path[:j + 1]] for j in range(len(path))])
            tokens.append(len(q) + sum(len(s) for s in steps))
        self.read += sum(tokens)
        return scores, tokens


class ConstScorer(TableScorer):
    def __init__(self):
        super().__init__(None)

    def score(self, questions, solutions):
        tokens = [len(q) + sum(len(s) for s in steps) for q, steps in zip(questions, solutions)]
        self.read += sum(tokens)
        return [[0.5] * len(s) for s in solutions], tokens


def leaves(branch, depth):
    return list(itertools.product(range(branch), repeat=depth))


def oracle_table(leaf_value, branch, depth):
    """Value of every prefix = the best leaf below it (brute force)."""
    table = {}
    for d in range(1, depth + 1):
        for prefix in itertools.product(range(branch), repeat=d):
            table[prefix] = max(v for leaf, v in leaf_value.items() if leaf[:d] == prefix)
    return table


def random_leaf_values(seed, branch, depth):
    rng = np.random.default_rng(seed)
    return {leaf: float(rng.uniform()) for leaf in leaves(branch, depth)}


def path_probs(probs, depth):
    return {leaf: float(np.prod([probs[d][leaf[d]] for d in range(depth)]))
            for leaf in leaves(len(probs[0]), depth)}


KEY = jax.random.key(0)


# ----------------------------------------------------------------------------- votes, intervals

def test_majority_vote():
    assert search.majority_vote(["1", "2", "2", "1", "3"]) == "1"          # tie -> first seen
    assert search.majority_vote(["2", "1", "1", "2"]) == "2"
    assert search.majority_vote([None, None, "5", "7", "7", None]) == "7"  # None ignored
    assert search.majority_vote([None, "4", None]) == "4"
    assert search.majority_vote([None, None]) is None
    assert search.majority_vote([]) is None


def test_weighted_vote():
    assert search.weighted_vote(["a", "b", "b", None], [0.9, 0.5, 0.5, 5.0]) == "b"  # 1.0 > .9
    assert search.weighted_vote(["a", "b", "b"], [0.9, 0.4, 0.4]) == "a"
    assert search.weighted_vote(["b", "a"], [0.5, 0.5]) == "b"              # tie -> first seen
    assert search.weighted_vote([None], [1.0]) is None
    with pytest.raises(ValueError, match="scores"):
        search.weighted_vote(["a"], [1.0, 2.0])


# ----------------------------------------------------------------------------- Best-of-N

@pytest.mark.parametrize("aggregation", ["last", "min", "prod"])
def test_best_of_n_picks_top_aggregated_score(aggregation):
    branch, depth, P, n = 3, 3, 4, 6
    rng = np.random.default_rng(1)
    questions = [f"Q{p}:" for p in range(P)]
    table = {q: {pre: float(rng.uniform()) for d in range(1, depth + 1)
                 for pre in itertools.product(range(branch), repeat=d)} for q in questions}
    prop = TreeProposer(branch, depth)
    res = search.best_of_n(prop, TableScorer(table), questions, n, KEY,
                           aggregation=aggregation, answer_fn=answer_fn)
    sols, _ = search.sample_solutions(TreeProposer(branch, depth), questions, n, KEY)
    agg = {"last": lambda v: v[-1], "min": min, "prod": np.prod}[aggregation]
    for q, row, r in zip(questions, sols, res):
        paths = [tuple(int(s.text) for s in sol) for sol in row]
        ref = [agg([table[q][p[:j + 1]] for j in range(depth)]) for p in paths]
        best = int(np.argmax(ref))
        assert r.answer == "".join(map(str, paths[best]))
        assert math.isclose(r.score, ref[best], rel_tol=1e-6)


def test_weighted_best_of_n_sums_scores_per_answer():
    questions = ["Q0:", "Q1:"]
    probs = [np.array([0.6, 0.3, 0.1])]
    value = {(0,): 0.2, (1,): 0.5, (2,): 0.9}
    table = {q: value for q in questions}
    n = 12
    res = search.best_of_n(TreeProposer(3, 1, probs), TableScorer(table), questions, n, KEY,
                           weighted=True, answer_fn=answer_fn)
    sols, _ = search.sample_solutions(TreeProposer(3, 1, probs), questions, n, KEY)
    for row, r in zip(sols, res):
        picks = [int(sol[0].text) for sol in row]
        totals = {i: picks.count(i) * value[(i,)] for i in dict.fromkeys(picks)}
        assert r.answer == str(max(totals, key=totals.get))


def test_best_of_n_with_constant_verifier_is_the_first_sample():
    questions = [f"Q{p}:" for p in range(5)]
    res = search.best_of_n(TreeProposer(4, 3), ConstScorer(), questions, 8, KEY,
                           answer_fn=answer_fn)
    sols, _ = search.sample_solutions(TreeProposer(4, 3), questions, 8, KEY)
    assert [r.steps for r in res] == [row[0] for row in sols]


def test_self_consistency_returns_the_majority_of_the_samples():
    questions = [f"Q{p}:" for p in range(6)]
    probs = [np.array([0.45, 0.35, 0.2])]
    res = search.self_consistency(TreeProposer(3, 1, probs), questions, 9, KEY,
                                  answer_fn=answer_fn)
    sols, gen = search.sample_solutions(TreeProposer(3, 1, probs), questions, 9, KEY)
    for row, r, g in zip(sols, res, gen):
        answers = [answer_fn(sol[0].text) for sol in row]
        assert r.answer == search.majority_vote(answers)
        assert r.generated_tokens == g and r.verifier_tokens == 0


# ----------------------------------------------------------------------------- beam search, DVTS

@pytest.mark.parametrize("beam_width,expansions", [(1, 3), (2, 3), (3, 4)])
def test_beam_search_with_oracle_prm_finds_the_brute_force_optimum(beam_width, expansions):
    branch, depth = 3, 4
    questions = [f"Q{p}:" for p in range(6)]
    values = {q: random_leaf_values(i, branch, depth) for i, q in enumerate(questions)}
    table = {q: oracle_table(values[q], branch, depth) for q in questions}
    res = search.beam_search(TreeProposer(branch, depth, deterministic=True), TableScorer(table),
                             questions, KEY, beam_width=beam_width, expansions=expansions,
                             max_steps=depth, answer_fn=answer_fn)
    for q, r in zip(questions, res):
        best = max(values[q], key=values[q].get)
        assert r.answer == "".join(map(str, best))
        assert math.isclose(r.score, values[q][best], rel_tol=1e-6)


def test_beam_search_lookahead_sees_past_a_myopic_trap():
    # Step scores: prefix 0 looks best (0.9) but its leaves are poor; prefix 1 leads to 0.8.
    table = {"Q0:": {(0,): 0.9, (1,): 0.5, (0, 0): 0.1, (0, 1): 0.2, (1, 0): 0.8, (1, 1): 0.3}}
    kw = dict(beam_width=1, expansions=2, max_steps=2, answer_fn=answer_fn)
    greedy = search.beam_search(TreeProposer(2, 2, deterministic=True), TableScorer(table),
                                ["Q0:"], KEY, **kw)[0]
    prop = TreeProposer(2, 2, deterministic=True)
    look = search.beam_search(prop, TableScorer(table), ["Q0:"], KEY, lookahead=1, **kw)[0]
    assert greedy.answer == "01" and look.answer == "10"
    # The lookahead rollouts (one extra step per depth-1 candidate) are paid for.
    assert look.generated_tokens == sum(s.num_tokens for s in prop.proposed)
    assert look.generated_tokens > greedy.generated_tokens


def test_dvts_with_oracle_prm_and_budget():
    branch, depth, subtrees, expansions = 3, 3, 4, 3
    questions = [f"Q{p}:" for p in range(5)]
    values = {q: random_leaf_values(10 + i, branch, depth) for i, q in enumerate(questions)}
    table = {q: oracle_table(values[q], branch, depth) for q in questions}
    prop = TreeProposer(branch, depth)
    res = search.dvts(prop, TableScorer(table), questions, KEY, n_subtrees=subtrees,
                      expansions=expansions, max_steps=depth, answer_fn=answer_fn)
    valid = {"".join(map(str, leaf)) for leaf in leaves(branch, depth)}
    # Every subtree proposes exactly `expansions` steps per depth: the whole budget.
    assert len(prop.proposed) == len(questions) * subtrees * expansions * depth
    assert sum(r.generated_tokens for r in res) == sum(s.num_tokens for s in prop.proposed)
    for q, r in zip(questions, res):
        assert r.answer in valid
        # With an oracle and random expansions DVTS reaches the optimum on this small tree
        # whenever any subtree's expansions covered it; its score is the oracle value.
        assert math.isclose(r.score, values[q][tuple(int(c) for c in r.answer)])
    hits = sum(r.answer == "".join(map(str, max(values[q], key=values[q].get)))
               for q, r in zip(questions, res))
    assert hits >= 4


def test_search_with_constant_verifier_samples_like_the_policy():
    """Beam search of width 1 and DVTS keep the first of i.i.d. samples when every score ties,
    so their returned paths follow the policy's path distribution exactly."""
    branch, depth, P = 2, 3, 3000
    probs = [np.array([0.7, 0.3]), np.array([0.4, 0.6]), np.array([0.9, 0.1])]
    exact = path_probs(probs, depth)
    questions = ["Q0:"] * P
    for method, kw in [(search.beam_search, dict(beam_width=1, expansions=3)),
                       (search.dvts, dict(n_subtrees=2, expansions=2))]:
        res = method(TreeProposer(branch, depth, probs), ConstScorer(), questions, KEY,
                     max_steps=depth, answer_fn=answer_fn, **kw)
        counts = {leaf: 0 for leaf in exact}
        for r in res:
            counts[tuple(int(c) for c in r.answer)] += 1
        freq = np.array([counts[leaf] / P for leaf in exact])
        # Binomial std <= sqrt(0.25 / 3000) = 0.009 per path.
        np.testing.assert_allclose(freq, list(exact.values()), atol=0.035)
    # And a real verifier does change the distribution (the test can fail).
    table = {"Q0:": {pre: float(pre[-1] == 1) for d in range(1, depth + 1)
                     for pre in itertools.product(range(2), repeat=d)}}
    res = search.beam_search(TreeProposer(branch, depth, probs), TableScorer(table),
                             questions[:300], KEY, beam_width=1, expansions=3,
                             max_steps=depth, answer_fn=answer_fn)
    # Greedy by a verifier that prefers child 1: P(some sample is 1) at every depth.
    p111 = np.prod([1 - (1 - pr[1]) ** 3 for pr in probs])           # 0.167 vs 0.018
    assert abs(np.mean([r.answer == "111" for r in res]) - p111) < 0.07


# ----------------------------------------------------------------------------- MCTS

MCTS_VALUES = {(0, 0): 0.2, (0, 1): 0.3, (0, 2): 0.1,
               (1, 0): 0.9, (1, 1): 0.8, (1, 2): 0.7,
               (2, 0): 0.4, (2, 1): 0.5, (2, 2): 0.3}


@pytest.mark.parametrize("rule,c", [("puct", 1.0), ("uct", 0.5)])
def test_mcts_concentrates_visits_on_the_best_branch(rule, c):
    questions = ["Q0:", "Q1:"]
    table = {q: {**{(i,): 0.0 for i in range(3)}, **MCTS_VALUES} for q in questions}
    res, roots = search.mcts(TreeProposer(3, 2, deterministic=True), TableScorer(table),
                             questions, KEY, num_simulations=60, expansions=3, c=c, rule=rule,
                             max_steps=2, answer_fn=answer_fn, return_trees=True)
    for r, root in zip(res, roots):
        visits = search.visit_counts(root)
        assert root.visits == 60 and sum(visits) == 60
        assert visits[1] / sum(visits) >= 0.6, visits
        assert r.answer == "10" and math.isclose(r.score, 0.9)
    value = search.mcts(TreeProposer(3, 2, deterministic=True), TableScorer(table), questions,
                        KEY, num_simulations=60, expansions=3, c=c, rule=rule, max_steps=2,
                        final="value", answer_fn=answer_fn)
    assert [r.answer for r in value] == ["10", "10"]


def test_mcts_rollouts_and_budgets():
    branch, depth = 3, 4
    questions = [f"Q{p}:" for p in range(3)]
    values = {q: random_leaf_values(20 + i, branch, depth) for i, q in enumerate(questions)}
    table = {q: {**{pre: 0.0 for d in range(1, depth)
                    for pre in itertools.product(range(branch), repeat=d)}, **values[q]}
             for q in questions}
    expand, roll = TreeProposer(branch, depth, deterministic=True), TreeProposer(branch, depth)
    scorer = TableScorer(table)
    res, roots = search.mcts(expand, scorer, questions, KEY, num_simulations=1000,
                             expansions=3, max_nodes=25, max_steps=depth, rollout_proposer=roll,
                             answer_fn=answer_fn, return_trees=True)

    def count(node):
        return 1 + sum(count(ch) for ch in node.children)

    for r, root in zip(res, roots):
        assert count(root) == 25                          # 1 + 3 per expansion: hits 25
        assert root.visits >= 8                           # terminal leaves add no nodes
        assert len(r.answer) == depth                     # rollouts reach final answers
    proposed = expand.proposed + roll.proposed
    assert len(roll.proposed) > 0
    assert sum(r.generated_tokens for r in res) == sum(s.num_tokens for s in proposed)
    assert sum(r.verifier_tokens for r in res) == scorer.read
    res = search.mcts(TreeProposer(branch, depth, deterministic=True), TableScorer(table),
                      questions, KEY, num_simulations=1000, expansions=3, max_tokens=60,
                      max_steps=depth, rollout_proposer=TreeProposer(branch, depth),
                      answer_fn=answer_fn)
    # One simulation costs 6 tokens of expansion + at most 3 rollout steps of <= 3 tokens.
    assert all(60 <= r.generated_tokens < 60 + 15 for r in res)


# ----------------------------------------------------------------------------- token accounting

@pytest.mark.parametrize("method,kw", [
    (search.best_of_n, dict(n=5, aggregation="min")),
    (search.self_consistency, dict(n=5)),
    (search.beam_search, dict(beam_width=2, expansions=3, lookahead=1)),
    (search.dvts, dict(n_subtrees=3, expansions=2)),
    (search.mcts, dict(num_simulations=7, expansions=2)),
])
def test_token_counts_add_up(method, kw):
    branch, depth = 3, 4
    questions = [f"Q{p}:" for p in range(4)]
    table = {q: {pre: float(np.random.default_rng(sum(pre)).uniform()) for d in range(1, 5)
                 for pre in itertools.product(range(branch), repeat=d)} for q in questions}
    prop, scorer = TreeProposer(branch, depth), TableScorer(table)
    args = (prop, questions) if method is search.self_consistency else (prop, scorer, questions)
    n = kw.pop("n", None)
    args = args + ((n,) if n else ())
    res = method(*args, KEY, max_steps=depth, answer_fn=answer_fn, **kw)
    assert len(res) == len(questions)
    assert sum(r.generated_tokens for r in res) == sum(s.num_tokens for s in prop.proposed)
    assert sum(r.verifier_tokens for r in res) == scorer.read
    for r in res:
        assert r.answer is not None and len(r.answer) == depth


def test_rule_scorer_values_final_answers():
    scorer = search.RuleScorer({"Q:": "12"}, check=lambda text, ans: float(
        answer_fn(text) == ans))
    scores, tokens = scorer.score(["Q:", "Q:"], [["1\n", "2\n"], ["2\n", "1\n", "0\n"]])
    assert scores == [[1.0, 1.0], [0.0, 0.0, 0.0]] and tokens == [0, 0]
    # Default: rewards.accuracy_reward on the solution text.
    scores, _ = search.RuleScorer({"Q:": "1000"}).score(
        ["Q:", "Q:"], [["so\n", "<answer>1,000</answer>"], ["<answer>999</answer>"]])
    assert scores == [[1.0, 1.0], [0.0]]


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="aggregation"):
        search.best_of_n(TreeProposer(2, 1), ConstScorer(), ["Q:"], 2, KEY, aggregation="mean")
    with pytest.raises(ValueError, match="rule"):
        search.mcts(TreeProposer(2, 1), ConstScorer(), ["Q:"], KEY, rule="ucb2")
    with pytest.raises(ValueError, match="beam_width"):
        search.beam_search(TreeProposer(2, 1), ConstScorer(), ["Q:"], KEY, beam_width=0)


# ----------------------------------------------------------------------------- PRM adapter

def test_prm_scorer_matches_prm_step_scores():
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                      head_dim=16, d_ff=64, max_seq_len=128)
    trunk = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(1))
    vparams = verifiers.init_verifier(trunk, cfg,
                                      jax.random.key(2), scale=1.0)
    questions = ["Q1:", "Q22:", "Q:"]
    sols = [["1+1=2\n", "2+1=3\n"], ["a\n"], ["x\n", "y", "<answer>z</answer>"]]
    scorer = search.PRMScorer(vparams, cfg, tok, batch_size=2, bucket=16)
    scores, tokens = scorer.score(questions, sols)
    # Reference: every row alone, padded to another length (causal: padding changes nothing).
    enc = [verifiers.encode_solution(tok, q, steps) for q, steps in zip(questions, sols)]
    ids, _ = verifiers.pad_batch([e[0] for e in enc], tok.pad_id, length=40)
    ref = np.asarray(verifiers.prm_step_scores(vparams, cfg, ids, np.ones(ids.shape, bool)))
    for b, ((row_ids, ends), steps) in enumerate(zip(enc, sols)):
        np.testing.assert_allclose(scores[b], ref[b, ends], rtol=1e-5, atol=1e-6)
        assert tokens[b] == len(row_ids) and len(scores[b]) == len(steps)
    assert len({round(x, 6) for row in scores for x in row}) > 3   # not constant


# ----------------------------------------------------------------------------- sampler adapter

def test_sampler_proposer_parses_steps(monkeypatch):
    from r1jax import sampler
    tok = ByteTokenizer()
    rows = [tok.encode("ab\n"), tok.encode("<answer>1</answer>") + [tok.eos_id],
            tok.encode("xyz1"), tok.encode("<answer>2</answer>\n")]
    M = max(len(r) for r in rows)
    seen = {}

    def fake_generate(params, cfg, prompts, key, sampling, *, tokenizer=None, pad_id=0,
                      shard=None):
        seen.update(prompts=prompts, sampling=sampling, pad_id=pad_id)
        P, N = len(prompts), sampling.num_samples
        tokens = np.full((P, N, M), pad_id, np.int32)
        lengths = np.zeros((P, N), np.int32)
        for i in range(P * N):
            r = rows[i % len(rows)]
            tokens[i // N, i % N, :len(r)] = r
            lengths[i // N, i % N] = len(r)
        logprobs = np.where(tokens != pad_id, -0.5, 0.0).astype(np.float32)
        return sampler.SampleOutput(tokens, lengths, logprobs, lengths > 0)

    monkeypatch.setattr(sampler, "generate", fake_generate)
    cfg = ModelConfig(vocab_size=259, d_model=8, n_layers=1, n_heads=1, n_kv_heads=1,
                      head_dim=8, d_ff=8)
    base = sampler.SamplingConfig(max_new_tokens=M, temperature=0.7, stop_strings=("##",))
    prop = search.SamplerProposer(None, cfg, tok, base)
    steps = prop.propose(["Q1:", "Q2:a\n"], 2, KEY)
    assert seen["prompts"] == [tok.encode("Q1:", add_bos=True), tok.encode("Q2:a\n", add_bos=True)]
    s = seen["sampling"]
    assert s.num_samples == 2 and s.temperature == 0.7 and s.max_new_tokens == M
    assert s.stop_strings == ("##", "\n") and s.stop_tokens == (tok.eos_id,)
    assert seen["pad_id"] == tok.pad_id
    texts = ["ab\n", "<answer>1</answer>", "xyz1", "<answer>2</answer>\n"]
    assert [[x.text for x in row] for row in steps] == [texts[:2], texts[2:]]
    # Final: stopped by EOS, truncated without a delimiter, or holding an answer.
    assert [[x.is_final for x in row] for row in steps] == [[False, True], [True, True]]
    assert [x.num_tokens for row in steps for x in row] == [len(r) for r in rows]
    assert [x.logprob for row in steps for x in row] == [-0.5 * len(r) for r in rows]


@pytest.mark.slow
def test_sampler_proposer_and_prm_scorer_drive_beam_search():
    from r1jax import sampler
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                      head_dim=16, d_ff=64, max_seq_len=128)
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(1))
    sampling = sampler.SamplingConfig(max_new_tokens=6, temperature=1.0)
    # The adapter's steps are exactly what one batched generate call samples with that key.
    prop = search.SamplerProposer(params, cfg, tok, sampling)
    steps = prop.propose(["Q1:", "Q22:"], 3, KEY)
    ref = sampler.generate(params, cfg, [tok.encode("Q1:", add_bos=True),
                                         tok.encode("Q22:", add_bos=True)], KEY,
                           sampler.SamplingConfig(max_new_tokens=6, num_samples=3,
                                                  stop_tokens=(tok.eos_id,),
                                                  stop_strings=("\n",)),
                           tokenizer=tok, pad_id=tok.pad_id)
    for p in range(2):
        for i in range(3):
            L = int(ref.lengths[p, i])
            assert steps[p][i].text == tok.decode(np.asarray(ref.tokens[p, i, :L]).tolist())
            assert steps[p][i].num_tokens == L
    vparams = verifiers.init_verifier(params, cfg, jax.random.key(2), scale=1.0)
    counting = TreeCounter(prop)
    scorer = search.PRMScorer(vparams, cfg, tok, batch_size=8, bucket=32)
    res = search.beam_search(counting, scorer, ["Q1:", "Q2:"], KEY, beam_width=2,
                             expansions=2, max_steps=3, answer_fn=lambda t: t or None)
    assert sum(r.generated_tokens for r in res) == counting.tokens > 0
    assert all(r.verifier_tokens > 0 and 0 < r.score < 1 for r in res)


class TreeCounter:
    """Wraps a proposer and counts the tokens of every step it returns."""

    def __init__(self, inner):
        self.inner, self.tokens = inner, 0

    def propose(self, prefixes, n, key):
        out = self.inner.propose(prefixes, n, key)
        self.tokens += sum(s.num_tokens for row in out for s in row)
        return out
