"""Search methods on toy step trees of token ids (no model): votes, Best-of-N, beam search,
DVTS, MCTS, token accounting; the PRM scorer on the sampled tokens of a tiny random verifier;
the sampler proposer's steps and KV reuse."""
import itertools
import math

import jax
import numpy as np
import pytest

from r1jax import search, verifiers
from r1jax.model import ModelConfig, init_params
from r1jax.search import Step
from r1jax.tokenizer import ByteTokenizer

# ----------------------------------------------------------------------------- toy tree
# Question p is the one token 1000 + p; the step to child i is the tokens (i,) * i + (DELIM,)
# with text "<i>\n" (i + 1 tokens); a solution is a path of child indices. Every node has
# BRANCH children; steps at depth DEPTH are final.
DELIM = 99


def Q(p: int) -> tuple[int, ...]:
    return (1000 + p,)


def child(i: int, final: bool = False) -> Step:
    return Step((i,) * i + (DELIM,), f"{i}\n", final)


def path_of(prefix: tuple[int, ...]) -> tuple[int, ...]:
    """The child indices of a prefix's steps (question token, then the steps' tokens)."""
    path, run = [], 0
    for t in prefix[1:]:
        if t == DELIM:
            path.append(run)
            run = 0
        else:
            run += 1
    return tuple(path)


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
            steps = [child(int(i), bool(d + 1 >= self.depth)) for i in row]
            self.proposed.extend(steps)
            out.append(steps)
        return out


class TableScorer:
    """Score of each step = table[question][path up to that step]; reads the question's and
    the steps' tokens."""

    def __init__(self, table):
        self.table, self.read = table, 0

    def score(self, questions, solutions):
        scores, tokens = [], []
        for q, steps in zip(questions, solutions):
            path = path_of(q + tuple(i for s in steps for i in s.ids))
            scores.append([self.table[q][path[:j + 1]] for j in range(len(path))])
            tokens.append(len(q) + sum(s.num_tokens for s in steps))
        self.read += sum(tokens)
        return scores, tokens


class ConstScorer(TableScorer):
    def __init__(self):
        super().__init__(None)

    def score(self, questions, solutions):
        tokens = [len(q) + sum(s.num_tokens for s in steps)
                  for q, steps in zip(questions, solutions)]
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
    questions = [Q(p) for p in range(P)]
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
    questions = [Q(0), Q(1)]
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
    questions = [Q(p) for p in range(5)]
    res = search.best_of_n(TreeProposer(4, 3), ConstScorer(), questions, 8, KEY,
                           answer_fn=answer_fn)
    sols, _ = search.sample_solutions(TreeProposer(4, 3), questions, 8, KEY)
    assert [r.steps for r in res] == [row[0] for row in sols]


def test_self_consistency_returns_the_majority_of_the_samples():
    questions = [Q(p) for p in range(6)]
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
    questions = [Q(p) for p in range(6)]
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
    table = {Q(0): {(0,): 0.9, (1,): 0.5, (0, 0): 0.1, (0, 1): 0.2, (1, 0): 0.8, (1, 1): 0.3}}
    kw = dict(beam_width=1, expansions=2, max_steps=2, answer_fn=answer_fn)
    greedy = search.beam_search(TreeProposer(2, 2, deterministic=True), TableScorer(table),
                                [Q(0)], KEY, **kw)[0]
    prop = TreeProposer(2, 2, deterministic=True)
    look = search.beam_search(prop, TableScorer(table), [Q(0)], KEY, lookahead=1, **kw)[0]
    assert greedy.answer == "01" and look.answer == "10"
    # The lookahead rollouts (one extra step per depth-1 candidate) are paid for.
    assert look.generated_tokens == sum(s.num_tokens for s in prop.proposed)
    assert look.generated_tokens > greedy.generated_tokens


def test_dvts_with_oracle_prm_and_budget():
    branch, depth, subtrees, expansions = 3, 3, 4, 3
    questions = [Q(p) for p in range(5)]
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
    questions = [Q(0)] * P
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
    table = {Q(0): {pre: float(pre[-1] == 1) for d in range(1, depth + 1)
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
    questions = [Q(0), Q(1)]
    table = {q: {**{(i,): 0.0 for i in range(3)}, **MCTS_VALUES} for q in questions}
    res, roots = search.mcts(TreeProposer(3, 2, deterministic=True), TableScorer(table),
                             questions, KEY, num_simulations=60, expansions=3, c=c, rule=rule,
                             max_steps=2, answer_fn=answer_fn, return_trees=True)
    for r, root in zip(res, roots):
        visits = [child.visits for child in root.children]
        assert root.visits == 60 and sum(visits) == 60
        assert visits[1] / sum(visits) >= 0.6, visits
        assert r.answer == "10" and math.isclose(r.score, 0.9)
    value = search.mcts(TreeProposer(3, 2, deterministic=True), TableScorer(table), questions,
                        KEY, num_simulations=60, expansions=3, c=c, rule=rule, max_steps=2,
                        final="value", answer_fn=answer_fn)
    assert [r.answer for r in value] == ["10", "10"]


def test_mcts_rollouts_and_budgets():
    branch, depth = 3, 4
    questions = [Q(p) for p in range(3)]
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
    questions = [Q(p) for p in range(4)]
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


def _text_steps(*texts):
    return tuple(Step(tuple(t.encode()), t, False) for t in texts)


def test_rule_scorer_values_final_answers():
    scorer = search.RuleScorer({Q(0): "12"}, check=lambda text, ans: float(
        answer_fn(text) == ans))
    scores, tokens = scorer.score([Q(0), Q(0)], [_text_steps("1\n", "2\n"),
                                                 _text_steps("2\n", "1\n", "0\n")])
    assert scores == [[1.0, 1.0], [0.0, 0.0, 0.0]] and tokens == [0, 0]
    # Default: rewards.accuracy_reward on the solution text.
    scores, _ = search.RuleScorer({Q(0): "1000"}).score(
        [Q(0), Q(0)], [_text_steps("so\n", "<answer>1,000</answer>"),
                       _text_steps("<answer>999</answer>")])
    assert scores == [[1.0, 1.0], [0.0]]


def test_pick_best_is_best_of_ns_choice():
    sols = [(child(i, True),) for i in (0, 1, 1, 2)]
    assert search.pick_best(sols, [0.2, 0.5, 0.5, float("nan")]) == 1      # first of the top
    assert search.pick_best(sols, [0.2, 0.3, 0.3, 0.5], weighted=True, answer_fn=answer_fn) == 1
    with pytest.raises(ValueError, match="scores"):
        search.pick_best(sols, [0.1])


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="aggregation"):
        search.best_of_n(TreeProposer(2, 1), ConstScorer(), [Q(0)], 2, KEY, aggregation="mean")
    with pytest.raises(ValueError, match="rule"):
        search.mcts(TreeProposer(2, 1), ConstScorer(), [Q(0)], KEY, rule="ucb2")
    with pytest.raises(ValueError, match="beam_width"):
        search.beam_search(TreeProposer(2, 1), ConstScorer(), [Q(0)], KEY, beam_width=0)


# ----------------------------------------------------------------------------- PRM adapter

def test_prm_scorer_scores_the_sampled_tokens():
    """The verifier reads the question's ids and every step's ids as they are and scores each
    step at its last token (nothing re-encoded, no delimiter appended: the last step ends with
    EOS)."""
    tok = ByteTokenizer()
    cfg = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2,
                      head_dim=16, d_ff=64, max_seq_len=128)
    trunk = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(1))
    vparams = verifiers.init_verifier(trunk, cfg, jax.random.key(2), scale=1.0)
    questions = [tuple(tok.encode(q)) for q in ("Q1:", "Q22:", "Q:")]
    sols = [_text_steps("1+1=2\n", "2+1=3\n"), _text_steps("a\n"),
            _text_steps("x\n", "y") + (Step((tok.eos_id,), "", True),)]
    scorer = search.PRMScorer(vparams, cfg, tok.pad_id, batch_size=2, bucket=16)
    scores, tokens = scorer.score(questions, sols)
    # Reference: every row alone, padded to another length (causal: padding changes nothing).
    rows = [q + tuple(i for s in sol for i in s.ids) for q, sol in zip(questions, sols)]
    ids, _ = verifiers.pad_batch(rows, tok.pad_id, length=40)
    ref = np.asarray(verifiers.prm_step_scores(vparams, cfg, ids, np.ones(ids.shape, bool)))
    for b, (q, sol) in enumerate(zip(questions, sols)):
        ends = len(q) - 1 + np.cumsum([s.num_tokens for s in sol])
        np.testing.assert_allclose(scores[b], ref[b, ends], rtol=1e-5, atol=1e-6)
        assert tokens[b] == len(rows[b]) and len(scores[b]) == len(sol)
    assert rows[2][-1] == tok.eos_id and ends[-1] == len(rows[2]) - 1
    assert len({round(x, 6) for row in scores for x in row}) > 3   # not constant


# ----------------------------------------------------------------------------- sampler adapter

def test_sampler_proposer_parses_steps_and_continues_kept_rows(monkeypatch):
    """Steps carry the sampled ids; the prompts of a call are prefilled once however often
    they occur; a prefix that extends a non-final step of an earlier call is continued from
    that call's cache row (no prefill); final steps are never kept."""
    from r1jax import sampler
    tok = ByteTokenizer()
    rows = [tok.encode("ab\n"), tok.encode("<answer>1</answer>") + [tok.eos_id],
            tok.encode("xyz1"), tok.encode("<answer>2</answer>\n")]
    M = max(len(r) for r in rows)
    calls = []

    def fake_prefill(params, cfg, prompts, *, pad_id=0, shard=None):
        calls.append(("prefill", [tuple(p) for p in prompts]))
        return {"k": np.zeros((1, len(prompts))), "v": np.zeros((1, len(prompts)))}

    def fake_continue(params, cfg, prefixes, sources, key, sampling, *, tokenizer=None,
                      pad_id=0, shard=None):
        calls.append(("continue", prefixes, sources, sampling, pad_id))
        P, G = len(prefixes), sampling.num_samples
        tokens = np.full((P, G, M), pad_id, np.int32)
        lengths = np.zeros((P, G), np.int32)
        for i in range(P * G):
            r = rows[i % len(rows)]
            tokens[i // G, i % G, :len(r)] = r
            lengths[i // G, i % G] = len(r)
        logprobs = np.where(tokens != pad_id, -0.5, 0.0).astype(np.float32)
        cache = {"k": np.zeros((1, P * G)), "v": np.zeros((1, P * G))}
        return sampler.SampleOutput(tokens, lengths, logprobs, lengths > 0), cache

    monkeypatch.setattr(sampler, "prefill_rows", fake_prefill)
    monkeypatch.setattr(sampler, "continue_rows", fake_continue)
    cfg = ModelConfig(vocab_size=259, d_model=8, n_layers=1, n_heads=1, n_kv_heads=1,
                      head_dim=8, d_ff=8)
    base = sampler.SamplingConfig(max_new_tokens=M, temperature=0.7, stop_strings=("##",))
    prop = search.SamplerProposer(None, cfg, tok, base)
    q1, q2 = tuple(tok.encode("Q1:")), tuple(tok.encode("Q2:a\n"))
    steps = prop.propose([q1, q2, q1], 2, KEY)
    assert calls[0] == ("prefill", [q1, q2])                 # q1 once
    _, prefixes, sources, s, pad_id = calls[1]
    assert prefixes == [q1, q2, q1] and [r for _, r in sources] == [0, 1, 0]
    assert s.num_samples == 2 and s.temperature == 0.7 and s.max_new_tokens == M
    assert s.stop_strings == ("##", "\n") and s.stop_tokens == (tok.eos_id,)
    assert pad_id == tok.pad_id
    texts = ["ab\n", "<answer>1</answer>", "xyz1", "<answer>2</answer>\n"]
    assert [[x.text for x in row] for row in steps] == [texts[:2], texts[2:], texts[:2]]
    assert [x.ids for x in steps[0] + steps[1]] == [tuple(r) for r in rows]
    # Final: stopped by EOS, truncated without a delimiter, or holding an answer.
    assert [[x.is_final for x in row] for row in steps] == [[False, True], [True, True],
                                                            [False, True]]
    assert [x.logprob for row in steps[:2] for x in row] == [-0.5 * len(r) for r in rows]
    # Row 4 of the last cache holds q1 + "ab\n" (prefix 2, sample 0): continued, not prefilled.
    kept = q1 + steps[0][0].ids
    prop.propose([kept, q2 + steps[1][0].ids], 1, KEY)
    assert calls[2][0] == "prefill" and calls[2][1] == [q2 + steps[1][0].ids]
    _, prefixes, sources, _, _ = calls[3]
    assert sources[0][1] == 4 and sources[0][0] is not sources[1][0]


def _step_model():
    """A tiny model whose every token is "\n" about half the time (one residual dimension
    dominates, and only it reaches the "\n" logit): random steps of a few tokens."""
    cfg = ModelConfig(vocab_size=259, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1,
                      head_dim=16, d_ff=64, max_seq_len=256, tie_embeddings=False)
    params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.key(3))
    params["embed"] = params["embed"].at[:, 0].add(10.0)
    params["lm_head"] = params["lm_head"].at[:].set(0.0).at[0, ord("\n")].set(1.2)
    return cfg, params


def test_beam_search_on_the_sampler_prefills_only_the_prompts():
    """With the KV cache kept, beam search prefills each prompt once and continues every kept
    beam from its cache row (one token run again per continued row); it samples what the same
    search samples when every prefix is prefilled from scratch (cache_bytes=0)."""
    from r1jax import sampler
    tok = ByteTokenizer()
    cfg, params = _step_model()
    sampling = sampler.SamplingConfig(max_new_tokens=8, temperature=1.0)
    prompts = [tuple(tok.encode(q)) for q in ("Q1: 2+3=", "Q22: what?")]
    kw = dict(beam_width=2, expansions=2, max_steps=3, answer_fn=lambda t: t or None)
    runs = {}
    for cache_bytes in (1 << 30, 0):
        prop = search.SamplerProposer(params, cfg, tok, sampling, cache_bytes=cache_bytes)
        counting = TreeCounter(prop)
        for k in sampler.PREFILL_TOKENS:
            sampler.PREFILL_TOKENS[k] = 0
        res = search.beam_search(counting, search.RuleScorer(dict.fromkeys(prompts, "5")),
                                 prompts, KEY, **kw)
        runs[cache_bytes] = (res, dict(sampler.PREFILL_TOKENS), counting)
    (res, counts, counting), (fresh, fresh_counts, _) = runs[1 << 30], runs[0]
    assert counting.calls == 3 and max(len(r.steps) for r in res) == 3   # beams went deep
    assert counts["prompt"] == sum(map(len, prompts))
    assert counts["refed"] == counting.rows
    assert fresh_counts["prompt"] > 2 * counts["prompt"]
    assert [r.steps for r in res] == [r.steps for r in fresh]
    assert all(s.num_tokens == len(s.ids) > 0 for r in res for s in r.steps)
    assert sum(r.generated_tokens for r in res) == counting.tokens


class TreeCounter:
    """Wraps a proposer and counts its calls, the rows it samples and the tokens of every
    step it returns."""

    def __init__(self, inner):
        self.inner, self.tokens, self.calls, self.rows = inner, 0, 0, 0

    def propose(self, prefixes, n, key):
        out = self.inner.propose(prefixes, n, key)
        self.calls += 1
        self.rows += len(prefixes)
        self.tokens += sum(s.num_tokens for row in out for s in row)
        return out


# ----------------------------------------------------------------------------- votes pool equivalent answers

# Answers written differently that the checker (rewards.answers_equal) may or may not equate.
HAND_MADE_ANSWERS = [
    "1000", "1,000", "1000.0", "1000.", "$1000$", "\\boxed{1000}", "2000/2", "\\frac{2000}{2}",
    " 1 000 ", "1e3", "999", "0999", "+999", "0.5", ".5", "1/2", "\\dfrac{1}{2}", "-0.5",
    "\u22120.5", "-1/2", "x + 1", "x+1", "1+x", "\\left(1,2\\right)", "(1,2)", "(1, 2)", "abc",
    "ABC", "", "$$", "\\text{abc}", "{abc}",
]


def test_votes_pool_answers_the_checker_equates():
    from r1jax import rewards
    answers = ["999", "999", "1,000", "1000", "1000.0"]
    assert search.majority_vote(answers) == "1,000"        # first seen of the pool of three
    assert search.majority_vote(list(reversed(answers))) == "1000.0"
    assert all(rewards.accuracy_reward(f"<answer>{a}</answer>", "1000") == 1.0
               for a in answers[2:])
    # weighted: scores are summed per pool (0.9 > 0.8), not per string (0.4 each for "999")
    assert search.weighted_vote(answers, [0.4, 0.4, 0.3, 0.3, 0.3]) == "1,000"
    assert search.weighted_vote(answers, [0.5, 0.5, 0.3, 0.3, 0.3]) == "999"
    assert search.weighted_vote(["$\\frac{1}{2}$", "0.7", "0.5"], [0.5, 0.9, 0.5]) \
        == "$\\frac{1}{2}$"


def test_vote_pools_ties_and_none():
    assert search.majority_vote(["2", "1.0", "1", "2.0"]) == "2"          # 2 vs 2: first pool
    assert search.majority_vote(["1.0", "2", "1", "2.0"]) == "1.0"
    assert search.majority_vote([None, "3", None, "7", "7.00", None, "3", "7.0"]) == "7"
    assert search.majority_vote([None, "5.0", None]) == "5.0"
    assert search.majority_vote([None]) is None
    assert search.weighted_vote(["0.5", "3", "1/2"], [0.25, 0.5, 0.25]) == "0.5"  # tie: first
    assert search.weighted_vote(["3", "0.5", "1/2"], [0.5, 0.25, 0.25]) == "3"
    assert search.weighted_vote([None, "1/2", None, "3", "0.5"],
                                [9.0, 0.25, 9.0, 0.4, 0.25]) == "1/2"
    assert search.weighted_vote([None, None], [1.0, 2.0]) is None


def test_vote_pools_are_the_classes_of_answers_equal():
    """Pooling agrees with the checker on every pair of hand-made answers: the vote pools a
    and b exactly when rewards.answers_equal(a, b)."""
    from r1jax import rewards
    for a in HAND_MADE_ANSWERS:
        for b in HAND_MADE_ANSWERS:
            want = a if rewards.answers_equal(a, b) else b
            assert search.majority_vote([a, b, b]) == want, (a, b)
            assert search.weighted_vote([a, b], [0.5, 0.75]) == want, (a, b)
    # the classes are not trivial (and "1e3" is not 1000 to the checker, so not to the vote)
    thousand = [a for a in HAND_MADE_ANSWERS if rewards.answers_equal(a, "1000")]
    assert thousand == ["1000", "1,000", "1000.0", "1000.", "$1000$", "\\boxed{1000}", "2000/2",
                        "\\frac{2000}{2}", " 1 000 "]
    assert search.majority_vote(["1e3", "1000", "1000.0"]) == "1000"


def _pooled_answer(text):
    """Toy answers: the one-step tree's children 0, 1, 2 answer "1,000", "1000", "999"."""
    return {"0": "1,000", "1": "1000", "2": "999"}.get(text.replace("\n", ""))


def test_pick_weighted_chooses_inside_the_pooled_answer():
    sols = [(Step((1,), t, True),) for t in ["1,000", "999", "1000.0", "", "1000"]]
    scores = [0.3, 0.5, 0.4, 0.9, 0.1]
    # pool {1,000; 1000.0; 1000} sums to 0.8 > 0.5: its top-scored member is "1000.0"
    assert search._pick(sols, scores, True, lambda t: t or None) == 2
    assert search._pick(sols, scores, False, lambda t: t or None) == 3
    assert search._pick(sols, [0.3, 0.9, 0.4, 0.0, 0.1], True, lambda t: t or None) == 1


def test_weighted_best_of_n_chooses_inside_the_pooled_answer():
    questions = [Q(0), Q(1)]
    # deterministic children 0, 1, 2, 0, 1, 2: answers "1,000", "1000", "999" twice each
    value = {(0,): 0.25, (1,): 0.3, (2,): 0.5}
    res = search.best_of_n(TreeProposer(3, 1, deterministic=True),
                           TableScorer({q: value for q in questions}), questions, 6, KEY,
                           weighted=True, answer_fn=_pooled_answer)
    for r in res:   # pool 1000: 2 * (0.25 + 0.3) = 1.1 > 1.0 = 2 * 0.5; best member "1000"
        assert r.answer == "1000" and r.text == "1\n" and r.score == pytest.approx(0.3)
    plain = search.best_of_n(TreeProposer(3, 1, deterministic=True),
                             TableScorer({q: value for q in questions}), questions, 6, KEY,
                             answer_fn=_pooled_answer)
    assert all(r.answer == "999" for r in plain)
