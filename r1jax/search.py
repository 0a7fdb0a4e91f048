"""Test-time search against verifiers, over reasoning steps, batched over problems.

Methods (each returns one `SearchResult` per question, with the generated and verifier tokens it
spent, so methods compare at equal compute):

* `self_consistency` (majority vote over N samples, Wang et al. 2022), `best_of_n` by a verifier
  whose step scores are aggregated by "min", "prod" or "last" (an ORM is a verifier read with
  "last"), weighted Best-of-N (`weighted=True`: the answer with the highest summed score);
* `beam_search` over steps scored by a PRM, with optional lookahead, and `dvts` (diverse
  verifier tree search: independent width-1 subtrees), as in Snell et al. 2024 and the Hugging
  Face "scaling test-time compute" blog;
* `mcts` over steps: PUCT/UCT selection, expansion by sampling, rollouts to a final answer,
  mean-value backpropagation, budget in simulations, nodes or generated tokens.

Search runs on token ids. A question is its prompt's token ids; a `Step` carries the token ids
it was sampled as (with its trailing delimiter, or the stop token of a final step) and their
text, decoded once where the step was sampled; a solution is a tuple of steps, and a prefix is
the question's ids followed by its steps' ids. Nothing is re-encoded from text: the verifier
scores exactly the sampled tokens, each step at the position of its last token. Text is read
only where a reward or a person reads it (answers for votes, final results).

Everything runs on two small protocols, so it works on toy trees without a model:
`StepProposer.propose(prefixes, n, key)` samples n next steps per prefix (token ids), and
`StepScorer.score(questions, solutions)` gives one score per step of each (partial) solution.
`SamplerProposer` adapts `r1jax.sampler`: each distinct prefix of a call is prefilled once for
all its samples, and the KV cache rows of the steps it sampled are kept, so a kept prefix is
continued from its cache row (only the prompt is ever prefilled). `PRMScorer` adapts
`r1jax.verifiers.prm_step_scores`; `RuleScorer` turns the rule reward into a value function.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, Protocol

import jax
import numpy as np

from r1jax import rewards, sampler, verifiers

Array = jax.Array
AnswerFn = Callable[[str], Optional[str]]


# ----------------------------------------------------------------------------- protocols

@dataclasses.dataclass(frozen=True)
class Step:
    """One reasoning step: the token ids generated for it (with its trailing delimiter, if
    any), their text, whether it ends the solution and its total log-probability under the
    proposer."""
    ids: tuple[int, ...]
    text: str
    is_final: bool
    logprob: float = 0.0

    @property
    def num_tokens(self) -> int:
        return len(self.ids)


Ids = tuple[int, ...]


class StepProposer(Protocol):
    def propose(self, prefixes: Sequence[Ids], n: int, key: Array) -> list[list[Step]]:
        """n sampled next steps for each prefix (question ids + its steps' ids):
        [len(prefixes)][n]."""
        ...


class StepScorer(Protocol):
    def score(self, questions: Sequence[Ids], solutions: Sequence[Sequence[Step]]
              ) -> tuple[list[list[float]], list[int]]:
        """One score per step of each (partial) solution ([B][num_steps]) and the tokens the
        verifier read for each solution ([B])."""
        ...


@dataclasses.dataclass
class SearchResult:
    """The chosen solution of one problem and the compute spent on that problem."""
    steps: tuple[Step, ...]
    answer: Optional[str]
    score: float            # verifier / value score of the chosen solution (NaN: none used)
    generated_tokens: int   # all tokens the proposer generated for this problem
    verifier_tokens: int    # all tokens the verifier read for this problem

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.steps)


Solution = tuple[Step, ...]


def _answer(solution: Solution, answer_fn: Optional[AnswerFn]) -> Optional[str]:
    """answer_fn (default `rewards.extract_answer`) of the solution text."""
    return (answer_fn or rewards.extract_answer)("".join(s.text for s in solution))


def _prefix(question: Ids, solution: Solution) -> Ids:
    """The token ids a proposer continues: the question's ids, then every step's ids."""
    return tuple(question) + tuple(i for s in solution for i in s.ids)


def _keys(key: Array):
    while True:
        key, sub = jax.random.split(key)
        yield sub


# ----------------------------------------------------------------------------- votes

def majority_vote(answers: Sequence[Optional[str]]) -> Optional[str]:
    """Most frequent answer, equivalent answers pooled as the answer checker judges them
    (`rewards.canonical_answer`, the key behind `answers_equal` and `accuracy_reward`: "1,000",
    "1000" and "1000.0" are one answer). Returns the first-seen original of the winning pool;
    None entries ignored; ties go to the pool seen first; None when every answer is None."""
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    for a in answers:
        if a is not None:
            k = rewards.canonical_answer(a)
            first.setdefault(k, a)
            counts[k] = counts.get(k, 0) + 1
    # max keeps the first maximal key, and dicts keep first-seen order.
    return first[max(counts, key=counts.__getitem__)] if counts else None


def weighted_vote(answers: Sequence[Optional[str]], scores: Sequence[float]) -> Optional[str]:
    """Answer with the highest summed score, scores summed per pool of equivalent answers (as
    in `majority_vote`); returns the first-seen original of the winning pool; None entries
    ignored; ties go to the pool seen first."""
    if len(answers) != len(scores):
        raise ValueError(f"{len(answers)} answers but {len(scores)} scores")
    totals: dict[str, float] = {}
    first: dict[str, str] = {}
    for a, s in zip(answers, scores):
        if a is not None:
            k = rewards.canonical_answer(a)
            first.setdefault(k, a)
            totals[k] = totals.get(k, 0.0) + float(s)
    return first[max(totals, key=totals.__getitem__)] if totals else None




# ----------------------------------------------------------------------------- sampling, scoring

def complete(proposer: StepProposer, questions: Sequence[Ids], partials: Sequence[Solution],
             key: Array, max_steps: int | Sequence[int]) -> tuple[list[Solution], list[int]]:
    """Extends each partial solution one sampled step at a time (one `propose` call per step,
    batched over all unfinished ones) until a final step or `max_steps` steps (one limit for
    all, or one per solution). Returns (solutions, generated tokens per solution)."""
    if isinstance(max_steps, int):
        max_steps = [max_steps] * len(partials)
    sols = list(partials)
    tokens = [0] * len(sols)
    keys = _keys(key)
    active = [i for i, s in enumerate(sols) if not _done(s, max_steps[i])]
    while active:
        steps = proposer.propose([_prefix(questions[i], sols[i]) for i in active], 1, next(keys))
        for i, (step,) in zip(active, steps):
            sols[i] = sols[i] + (step,)
            tokens[i] += step.num_tokens
        active = [i for i in active if not _done(sols[i], max_steps[i])]
    return sols, tokens


def _done(sol: Solution, max_steps: int) -> bool:
    return len(sol) >= max_steps or (len(sol) > 0 and sol[-1].is_final)


def sample_solutions(proposer: StepProposer, questions: Sequence[Ids], n: int, key: Array, *,
                     max_steps: int = 16) -> tuple[list[list[Solution]], list[int]]:
    """n complete solutions per question ([P][n]) and the tokens generated per question.
    The first step fans out with one `propose(questions, n)` call; later steps are sampled
    one at a time by `complete`."""
    if n < 1 or max_steps < 1:
        raise ValueError(f"n and max_steps must be >= 1, got n={n}, max_steps={max_steps}")
    k1, k2 = jax.random.split(key)
    first = proposer.propose([_prefix(q, ()) for q in questions], n, k1)
    flat_q = [q for q in questions for _ in range(n)]
    flat = [(step,) for row in first for step in row]
    sols, tok = complete(proposer, flat_q, flat, k2, max_steps)
    per_q = [sum(tok[p * n + j] + sols[p * n + j][0].num_tokens for j in range(n))
             for p in range(len(questions))]
    return [sols[p * n:(p + 1) * n] for p in range(len(questions))], per_q


def score_solutions(scorer: StepScorer, questions: Sequence[Ids],
                    solutions: Sequence[Sequence[Solution]], aggregation: str = "last"
                    ) -> tuple[list[list[float]], list[int]]:
    """Aggregated verifier score of every solution ([P][n]) in one `scorer.score` call, and the
    verifier tokens read per question."""
    flat_q = [q for q, row in zip(questions, solutions) for _ in row]
    flat = [sol for row in solutions for sol in row]
    scores, tokens = _score(scorer, flat_q, flat, aggregation)
    out, per_q, i = [], [], 0
    for row in solutions:
        out.append(scores[i:i + len(row)])
        per_q.append(sum(tokens[i:i + len(row)]))
        i += len(row)
    return out, per_q


def _score(scorer: StepScorer, questions: Sequence[Ids], sols: Sequence[Solution],
           aggregation: str) -> tuple[list[float], list[int]]:
    """Aggregated scores [len(sols)] and the verifier tokens read for each solution."""
    if aggregation not in verifiers.AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {verifiers.AGGREGATIONS}, "
                         f"got {aggregation!r}")
    if not sols:
        return [], []
    step_scores, tokens = scorer.score([tuple(q) for q in questions], list(sols))
    if len(step_scores) != len(sols) or len(tokens) != len(sols):
        raise ValueError(f"scorer returned {len(step_scores)} score rows and {len(tokens)} "
                         f"token counts for {len(sols)} solutions")
    agg = aggregate(step_scores, aggregation)
    return [float(x) for x in agg], [int(t) for t in tokens]


def aggregate(step_scores: Sequence[Sequence[float]], how: str) -> np.ndarray:
    """One score per solution, float64 [B], from ragged step scores ([B][num_steps]) by
    `verifiers.aggregate_step_scores` ("min", "prod" or "last"; NaN for a row without steps).
    """
    arr = np.zeros((len(step_scores), max(max(map(len, step_scores), default=1), 1)))
    mask = np.zeros(arr.shape, bool)
    for i, row in enumerate(step_scores):
        arr[i, :len(row)], mask[i, :len(row)] = row, True
    return np.asarray(verifiers.aggregate_step_scores(arr, mask, how), np.float64)


def _pick(sols: Sequence[Solution], scores: Sequence[float], weighted: bool,
          answer_fn: Optional[AnswerFn]) -> int:
    """Index of the chosen solution: the top score (first on ties), or with `weighted` the
    top-scored solution (first on ties) among those whose answer is in the weighted vote's
    winning pool (answers equivalent under `rewards.answers_equal`)."""
    scores = [(-math.inf if math.isnan(s) else s) for s in scores]
    if weighted:
        answers = [_answer(s, answer_fn) for s in sols]
        best = weighted_vote(answers, scores)
        if best is not None:
            key = rewards.canonical_answer(best)
            idx = [i for i, a in enumerate(answers)
                   if a is not None and rewards.canonical_answer(a) == key]
            return max(idx, key=lambda i: scores[i])
    return int(np.argmax(scores))


def pick_best(solutions: Sequence[Solution], scores: Sequence[float], *, weighted: bool = False,
              answer_fn: Optional[AnswerFn] = None) -> int:
    """Best-of-N's choice among pre-sampled solutions with their (aggregated) verifier scores:
    the index of the top-scored one (first on ties; NaN scores lose), or with `weighted` of the
    top-scored one among those in the weighted vote's winning pool of equivalent answers
    (`weighted_vote`)."""
    if len(solutions) != len(scores) or not len(solutions):
        raise ValueError(f"need as many scores as solutions (>= 1), got {len(solutions)} "
                         f"solutions and {len(scores)} scores")
    return _pick(solutions, scores, weighted, answer_fn)


# ----------------------------------------------------------------------------- N-sample methods

def self_consistency(proposer: StepProposer, questions: Sequence[Ids], n: int, key: Array, *,
                     max_steps: int = 16, answer_fn: Optional[AnswerFn] = None
                     ) -> list[SearchResult]:
    """Majority vote over n sampled solutions; the chosen solution is the first one giving the
    majority answer (the first sample when no sample has an answer)."""
    sols, gen = sample_solutions(proposer, questions, n, key, max_steps=max_steps)
    results = []
    for row, g in zip(sols, gen):
        answers = [_answer(s, answer_fn) for s in row]
        best = majority_vote(answers)
        i = answers.index(best) if best is not None else 0
        results.append(SearchResult(row[i], best, math.nan, g, 0))
    return results


def best_of_n(proposer: StepProposer, scorer: StepScorer, questions: Sequence[Ids], n: int,
              key: Array, *, aggregation: str = "last", weighted: bool = False,
              max_steps: int = 16, answer_fn: Optional[AnswerFn] = None
              ) -> list[SearchResult]:
    """Best-of-N: n sampled solutions per question scored by the verifier (step scores
    aggregated by `aggregation`; use "last" for an ORM); keeps the top-scored one (first on
    ties), or with `weighted` the answer with the highest summed score."""
    sols, gen = sample_solutions(proposer, questions, n, key, max_steps=max_steps)
    scores, ver = score_solutions(scorer, questions, sols, aggregation)
    results = []
    for row, sc, g, v in zip(sols, scores, gen, ver):
        i = pick_best(row, sc, weighted=weighted, answer_fn=answer_fn)
        results.append(SearchResult(row[i], _answer(row[i], answer_fn), sc[i], g, v))
    return results


# ----------------------------------------------------------------------------- beam search

@dataclasses.dataclass
class _Beams:
    active: list[Solution]
    done: list[tuple[Solution, float]]
    generated: int = 0
    verified: int = 0


def _beam_search(proposer: StepProposer, scorer: StepScorer, questions: Sequence[Ids],
                 key: Array, beam_width: int, expansions: int, max_steps: int, lookahead: int,
                 lookahead_proposer: Optional[StepProposer], aggregation: str) -> list[_Beams]:
    """Runs beam search for all questions in lockstep; returns each question's beams."""
    if min(beam_width, expansions, max_steps) < 1 or lookahead < 0:
        raise ValueError(f"beam_width, expansions, max_steps must be >= 1 and lookahead >= 0, "
                         f"got {beam_width}, {expansions}, {max_steps}, {lookahead}")
    keys = _keys(key)
    state = [_Beams([()], []) for _ in questions]
    for depth in range(max_steps):
        owners = [p for p, st in enumerate(state) for _ in st.active]
        if not owners:
            break
        parents = [b for st in state for b in st.active]
        # The root fans out to beam_width * expansions; afterwards each beam to expansions.
        n = beam_width * expansions if depth == 0 else expansions
        proposals = proposer.propose([_prefix(questions[p], b) for p, b in zip(owners, parents)],
                                     n, next(keys))
        cands, cand_owner = [], []
        for p, b, steps in zip(owners, parents, proposals):
            for step in steps:
                cands.append(b + (step,))
                cand_owner.append(p)
                state[p].generated += step.num_tokens
        # Lookahead: roll non-final candidates up to `lookahead` more steps and score the end.
        scored = cands
        if lookahead:
            look_max = [min(len(c) + lookahead, max_steps) for c in cands]
            scored = list(cands)
            todo = [i for i, c in enumerate(cands) if not _done(c, look_max[i])]
            ext, tok = complete(lookahead_proposer or proposer,
                                [questions[cand_owner[i]] for i in todo],
                                [cands[i] for i in todo], next(keys),
                                [look_max[i] for i in todo])
            for i, e, t in zip(todo, ext, tok):
                scored[i] = e
                state[cand_owner[i]].generated += t
        scores, vtok = _score(scorer, [questions[p] for p in cand_owner], scored, aggregation)
        for p, t in zip(cand_owner, vtok):
            state[p].verified += t
        by_owner: dict[int, list[int]] = {}
        for i, p in enumerate(cand_owner):
            by_owner.setdefault(p, []).append(i)
        for p, mine in by_owner.items():
            st = state[p]
            # Stable sort: equal scores keep sampling order.
            mine.sort(key=lambda i: -_finite(scores[i]))
            keep = mine[:beam_width - len(st.done)]
            st.done += [(cands[i], scores[i]) for i in keep if cands[i][-1].is_final]
            st.active = [cands[i] for i in keep if not cands[i][-1].is_final]
            if depth == max_steps - 1:  # out of steps: unfinished beams become candidates too
                st.done += [(cands[i], scores[i]) for i in keep if not cands[i][-1].is_final]
                st.active = []
    return state


def _finite(x: float) -> float:
    return -math.inf if math.isnan(x) else x


def _choose(st: _Beams, weighted: bool, answer_fn: Optional[AnswerFn]) -> SearchResult:
    sols = [s for s, _ in st.done]
    scores = [sc for _, sc in st.done]
    i = _pick(sols, scores, weighted, answer_fn)
    return SearchResult(sols[i], _answer(sols[i], answer_fn), scores[i], st.generated,
                        st.verified)


def beam_search(proposer: StepProposer, scorer: StepScorer, questions: Sequence[Ids],
                key: Array, *, beam_width: int = 4, expansions: int = 4, max_steps: int = 16,
                lookahead: int = 0, lookahead_proposer: Optional[StepProposer] = None,
                aggregation: str = "last", weighted: bool = False,
                answer_fn: Optional[AnswerFn] = None) -> list[SearchResult]:
    """Step-level beam search scored by a PRM.

    The root is expanded into beam_width * expansions first steps; afterwards each active beam
    into `expansions` next steps. All candidates are scored (step scores aggregated by
    `aggregation`, "last" by default as in the HF blog; with `lookahead` = k each non-final
    candidate is first rolled k more steps by `lookahead_proposer` -- e.g. a greedy one -- and
    the end of the rollout is scored, the rollout itself being discarded). The top
    (beam_width - finished) candidates are kept, ties in sampling order; kept final ones are
    finished. Stops when beam_width solutions are finished or after max_steps steps (unfinished
    beams then count as candidates). Returns the finished solution with the best score, or with
    `weighted` the answer with the highest summed score.
    """
    state = _beam_search(proposer, scorer, questions, key, beam_width, expansions, max_steps,
                         lookahead, lookahead_proposer, aggregation)
    return [_choose(st, weighted, answer_fn) for st in state]


def dvts(proposer: StepProposer, scorer: StepScorer, questions: Sequence[Ids], key: Array, *,
         n_subtrees: int = 4, expansions: int = 4, max_steps: int = 16, lookahead: int = 0,
         lookahead_proposer: Optional[StepProposer] = None, aggregation: str = "last",
         weighted: bool = False, answer_fn: Optional[AnswerFn] = None) -> list[SearchResult]:
    """Diverse verifier tree search: n_subtrees independent searches per question, each a
    greedy-by-verifier beam search of width 1 with `expansions` candidates per step (so the
    budget is n_subtrees * expansions samples per step, like BoN with N = that product). Each
    subtree yields one solution; the best-scored one is returned (or the weighted vote)."""
    flat_q = [q for q in questions for _ in range(n_subtrees)]
    state = _beam_search(proposer, scorer, flat_q, key, 1, expansions, max_steps, lookahead,
                         lookahead_proposer, aggregation)
    results = []
    for p in range(len(questions)):
        trees = state[p * n_subtrees:(p + 1) * n_subtrees]
        merged = _Beams([], [t.done[0] for t in trees], sum(t.generated for t in trees),
                        sum(t.verified for t in trees))
        results.append(_choose(merged, weighted, answer_fn))
    return results


# ----------------------------------------------------------------------------- MCTS

@dataclasses.dataclass(eq=False)
class Node:
    """A tree node: the solution prefix it stands for and its statistics."""
    solution: Solution
    parent: Optional["Node"] = None
    prior: float = 1.0
    children: list["Node"] = dataclasses.field(default_factory=list)
    visits: int = 0
    value_sum: float = 0.0
    terminal_value: Optional[float] = None   # cached value of a terminal node
    best: Optional[tuple[float, Solution]] = None   # best complete solution through here

    @property
    def q(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0

    def terminal(self, max_steps: int) -> bool:
        return _done(self.solution, max_steps)


def _select_child(node: Node, c: float, rule: str) -> Node:
    """PUCT: argmax Q + c P sqrt(N_parent) / (1 + N_child); UCT: argmax Q + c sqrt(ln N_parent /
    N_child), unvisited children first. Ties go to the first child."""
    total = max(node.visits, 1)
    best, best_u = None, -math.inf
    for ch in node.children:
        if rule == "puct":
            u = ch.q + c * ch.prior * math.sqrt(total) / (1 + ch.visits)
        else:
            u = math.inf if ch.visits == 0 else ch.q + c * math.sqrt(math.log(total) / ch.visits)
        if u > best_u:
            best, best_u = ch, u
    return best


def _expand(node: Node, steps: Sequence[Step]) -> int:
    """Adds one child per distinct step (same token ids; prior = its share of the n samples);
    returns the number of nodes created."""
    by_ids: dict[Ids, Node] = {}
    for step in steps:
        if step.ids in by_ids:
            by_ids[step.ids].prior += 1.0 / len(steps)
        else:
            by_ids[step.ids] = Node(node.solution + (step,), node, 1.0 / len(steps))
    node.children = list(by_ids.values())
    return len(node.children)


def mcts(proposer: StepProposer, value_fn: StepScorer, questions: Sequence[Ids], key: Array, *,
         num_simulations: int = 32, expansions: int = 4, c: float = 1.0, rule: str = "puct",
         max_nodes: Optional[int] = None, max_tokens: Optional[int] = None,
         max_steps: int = 16, aggregation: str = "last", final: str = "visits",
         rollout_proposer: Optional[StepProposer] = None,
         answer_fn: Optional[AnswerFn] = None, return_trees: bool = False) -> Any:
    """Monte Carlo Tree Search over reasoning steps, all questions in lockstep (each simulation
    round does one batched `propose` for the expansions and one per rollout step, and one
    `value_fn.score` call).

    One simulation: select from the root by `rule` ("puct" or "uct", exploration constant c)
    down to a leaf; expand a non-terminal leaf with `expansions` sampled next steps (identical
    steps merge; a child's prior is its share of the samples) and select one new child; roll it
    out to a final step (one step at a time, `rollout_proposer` or `proposer`, at most
    max_steps steps); value it with `value_fn` (ORM, PRM or `RuleScorer`; step scores
    aggregated by `aggregation`); add the value to every node on the path (Q = mean value).
    Terminal nodes (final step or max_steps deep) are valued once and cached.

    Budget per question: num_simulations, and optionally max_nodes (tree nodes created) and
    max_tokens (generated tokens); a question stops once any is reached (the last simulation
    may overshoot max_tokens by one expansion and rollout).

    final="visits" (default, the AlphaZero rule): follow the most visited child from the root
    (ties: higher Q, then first) to a terminal node, or to a leaf whose best rollout completes
    the solution; final="value": the complete solution with the highest value seen anywhere.
    Returns list[SearchResult], or (results, roots) with return_trees.
    """
    if rule not in ("puct", "uct"):
        raise ValueError(f"rule must be 'puct' or 'uct', got {rule!r}")
    if final not in ("visits", "value"):
        raise ValueError(f"final must be 'visits' or 'value', got {final!r}")
    if min(num_simulations, expansions, max_steps) < 1:
        raise ValueError("num_simulations, expansions and max_steps must be >= 1")
    keys = _keys(key)
    P = len(questions)
    roots = [Node(()) for _ in range(P)]
    nodes, gen, ver, sims = [1] * P, [0] * P, [0] * P, [0] * P

    def active(p):
        return (sims[p] < num_simulations
                and (max_nodes is None or nodes[p] < max_nodes)
                and (max_tokens is None or gen[p] < max_tokens))

    while True:
        live = [p for p in range(P) if active(p)]
        if not live:
            break
        leaves = {}
        for p in live:
            node = roots[p]
            while node.children and not node.terminal(max_steps):
                node = _select_child(node, c, rule)
            leaves[p] = node
        # Expansion, batched over questions.
        grow = [p for p in live if not leaves[p].terminal(max_steps)]
        if grow:
            props = proposer.propose([_prefix(questions[p], leaves[p].solution) for p in grow],
                                     expansions, next(keys))
            for p, steps in zip(grow, props):
                nodes[p] += _expand(leaves[p], steps)
                gen[p] += sum(s.num_tokens for s in steps)
                leaves[p] = _select_child(leaves[p], c, rule)
        # Rollouts from non-terminal leaves; cached values for terminal ones.
        need = [p for p in live if leaves[p].terminal_value is None]
        roll = [p for p in need if not leaves[p].terminal(max_steps)]
        ends = {p: leaves[p].solution for p in need}
        if roll:
            done, tok = complete(rollout_proposer or proposer, [questions[p] for p in roll],
                                 [leaves[p].solution for p in roll], next(keys), max_steps)
            for p, sol, t in zip(roll, done, tok):
                ends[p], gen[p] = sol, gen[p] + t
        vals, vtok = _score(value_fn, [questions[p] for p in need], [ends[p] for p in need],
                            aggregation)
        value = {p: 0.0 if math.isnan(v) else v for p, v in zip(need, vals)}
        for p, t in zip(need, vtok):
            ver[p] += t
        for p in live:
            leaf = leaves[p]
            if p in value:
                if leaf.terminal(max_steps):
                    leaf.terminal_value = value[p]
                end = ends[p]
            else:
                value[p], end = leaf.terminal_value, leaf.solution
            node = leaf
            while node is not None:
                node.visits += 1
                node.value_sum += value[p]
                if node.best is None or value[p] > node.best[0]:
                    node.best = (value[p], end)
                node = node.parent
            sims[p] += 1
    results = []
    for p in range(P):
        val, sol = _final_choice(roots[p], final, max_steps)
        results.append(SearchResult(sol, _answer(sol, answer_fn), val, gen[p], ver[p]))
    return (results, roots) if return_trees else results


def _final_choice(root: Node, final: str, max_steps: int) -> tuple[float, Solution]:
    if final == "value" or root.best is None:
        return root.best if root.best is not None else (math.nan, ())
    node = root
    while node.children and not node.terminal(max_steps):
        # max keeps the first of equal keys.
        node = max(node.children, key=lambda ch: (ch.visits, ch.q))
    if node.terminal(max_steps):
        return node.q, node.solution
    return node.best


# ----------------------------------------------------------------------------- adapters

@dataclasses.dataclass
class RuleScorer:
    """The rule reward as a value function: every step of a solution scores
    check(solution text, references[question ids]) (default `rewards.accuracy_reward`), so
    every aggregation gives the reward. Reads no tokens."""
    references: Mapping[Ids, str]
    check: Optional[Callable[[str, str], float]] = None

    def score(self, questions, solutions):
        check = self.check or rewards.accuracy_reward
        out = []
        for q, steps in zip(questions, solutions):
            r = float(check("".join(s.text for s in steps), self.references[tuple(q)]))
            out.append([r] * len(steps))
        return out, [0] * len(out)


@dataclasses.dataclass
class SamplerProposer:
    """`StepProposer` over `r1jax.sampler`: one call samples n next steps of every prefix (token
    ids) in one decoding run that stops each row at the delimiter string, at EOS or after
    `sampling.max_new_tokens` (`sampler.step_sampling`; `sampling` sets temperature, top-k/p
    and the per-step max_new_tokens). A step is final when its text does not end with the
    delimiter or when `final_fn(step text)` holds (default: it contains an answer).

    KV reuse: the cache rows that hold the prefixes a call extended (each prefix followed by a
    non-final step it sampled) are kept, keyed by those token ids, while the kept caches fit in
    `cache_bytes` (the least recently used calls' caches are dropped first). A prefix found
    there is continued from its row without any prefill (`sampler.continue_rows`); the others
    (the prompts, or prefixes whose rows were dropped) are prefilled once each
    (`sampler.prefill_rows`), however many times they occur in the call. With cache_bytes = 0
    every call prefills its prefixes.
    """
    params: Any
    cfg: Any
    tokenizer: Any
    sampling: Any
    delimiter: str = "\n"
    final_fn: Optional[Callable[[str], bool]] = None
    shard: Any = None
    cache_bytes: int = 1 << 30
    _index: dict = dataclasses.field(default_factory=dict, init=False, repr=False)
    _caches: collections.OrderedDict = dataclasses.field(
        default_factory=collections.OrderedDict, init=False, repr=False)

    def propose(self, prefixes, n, key):
        prefixes = [tuple(int(t) for t in p) for p in prefixes]
        sources = [self._lookup(p) for p in prefixes]
        misses = list(dict.fromkeys(p for p, src in zip(prefixes, sources) if src is None))
        if misses:
            cache = sampler.prefill_rows(self.params, self.cfg, misses, pad_id=self._pad_id(),
                                         shard=self.shard)
            fresh = {p: r for r, p in enumerate(misses)}
            self._keep(cache, fresh)
            sources = [src or (cache, fresh[p]) for p, src in zip(prefixes, sources)]
        sampling = dataclasses.replace(
            sampler.step_sampling(self.cfg, self.sampling, self.delimiter, self.tokenizer),
            num_samples=n)
        out, cache = sampler.continue_rows(self.params, self.cfg, prefixes, sources, key,
                                           sampling, tokenizer=self.tokenizer,
                                           pad_id=self._pad_id(), shard=self.shard)
        steps = self._steps(out)
        self._keep(cache, {p + step.ids: i * n + j
                           for i, (p, row) in enumerate(zip(prefixes, steps))
                           for j, step in enumerate(row) if not step.is_final})
        return steps

    def _lookup(self, prefix: Ids) -> Optional[tuple[dict, int]]:
        """(kept cache, row) holding `prefix`, or None."""
        if prefix not in self._index:
            return None
        c, row = self._index[prefix]
        self._caches.move_to_end(c)
        return self._caches[c], row

    def _pad_id(self) -> int:
        return sampler.pad_id_of(self.tokenizer, self.cfg.vocab_size)

    def _steps(self, out) -> list[list[Step]]:
        """Steps [P][n] of a `SampleOutput`; each step's text is decoded once, here."""
        tokens, lengths, logprobs = (np.asarray(x) for x in (out.tokens, out.lengths,
                                                             out.logprobs))
        final_fn = self.final_fn or (lambda text: rewards.extract_answer(text) is not None)
        steps = []
        for p in range(tokens.shape[0]):
            row = []
            for i in range(tokens.shape[1]):
                ids = tuple(int(t) for t in tokens[p, i, :lengths[p, i]])
                text = self.tokenizer.decode(list(ids))
                final = not text.endswith(self.delimiter) or bool(final_fn(text))
                row.append(Step(ids, text, final, float(logprobs[p, i, :len(ids)].sum())))
            steps.append(row)
        return steps

    def _keep(self, cache: dict, rows: Mapping[Ids, int]) -> None:
        """Keeps `cache` with the prefixes its rows hold; drops the least recently used caches
        while the kept ones take more than `cache_bytes`."""
        c = id(cache["k"])
        self._caches[c] = cache
        self._index.update({p: (c, r) for p, r in rows.items()})
        while self._caches and sum(x["k"].nbytes + x["v"].nbytes
                                   for x in self._caches.values()) > self.cache_bytes:
            old, _ = self._caches.popitem(last=False)
            self._index = {p: src for p, src in self._index.items() if src[0] != old}


@dataclasses.dataclass
class PRMScorer:
    """`StepScorer` over `verifiers.prm_step_scores` on the sampled tokens: a solution is its
    question's ids followed by its steps' ids (`verifiers.prm_batch_from_ids`), scored at the
    last token of every step, in batches of `batch_size` rows padded to a multiple of `bucket`
    tokens (few distinct shapes, so few compilations). With ORM params and aggregation "last"
    it is the ORM (the last step's last token is the final token). Counts the tokens read per
    solution."""
    vparams: Any
    cfg: Any
    pad_id: int = 0
    batch_size: int = 64
    bucket: int = 64

    def score(self, questions, solutions):
        if not solutions:
            return [], []
        batch = verifiers.prm_batch_from_ids(
            questions, [[s.ids for s in sol] for sol in solutions], pad_id=self.pad_id)
        tokens, mask = batch["tokens"], batch["step_mask"]
        if tokens.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"a solution has {tokens.shape[1]} tokens, more than "
                             f"max_seq_len={self.cfg.max_seq_len}")
        T = min(-(-tokens.shape[1] // self.bucket) * self.bucket, self.cfg.max_seq_len)
        B = len(solutions)
        rows = -(-B // self.batch_size) * self.batch_size
        tok = np.full((rows, T), self.pad_id, np.int32)
        msk = np.zeros((rows, T), bool)
        tok[:B, :tokens.shape[1]], msk[:B, :tokens.shape[1]] = tokens, mask
        scores = np.concatenate([
            np.asarray(verifiers.prm_step_scores(self.vparams, self.cfg,
                                                 tok[i:i + self.batch_size],
                                                 msk[i:i + self.batch_size]))
            for i in range(0, rows, self.batch_size)])
        out = [[float(x) for x in scores[b][msk[b]]] for b in range(B)]
        return out, [int(x) for x in batch["lengths"]]
