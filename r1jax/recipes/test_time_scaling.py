"""The test-time scaling experiment: accuracy against generated tokens for every search method.

`run(config, workdir)` takes a `configs/test_time_scaling.py` config and

1. gets the base policy (`base_policy`): the newest checkpoint of `<base_workdir>/base`, or
   `pretrain.base_model` (the tiny model pretrained into `<workdir>/base`, reused when it is
   there; or a local HF folder);
2. trains an ORM and a PRM (value heads over copies of the policy trunk, `r1jax.verifiers`) on
   the policy's own samples on train problems, on the sampled token ids: outcome labels from
   the task checker, step labels from Monte Carlo rollouts (`verifiers.mc_step_labels`; see
   configs/verifier.py for the labelling and its shortcut), with `train.run_verifier`
   (checkpoints and exact resume in `<workdir>/orm` and `<workdir>/prm`), and reports their
   ROC AUC on held-out samples;
3. on held-out test problems measures accuracy and generated tokens per problem for greedy
   decoding, majority vote, Best-of-N by ORM and by PRM, weighted BoN (PRM), beam search, DVTS
   and MCTS. Vote/BoN: max(budgets) samples are drawn once per problem and split into disjoint
   groups of N; accuracy and tokens are averaged over the groups, each group's choice made by
   `r1jax.search` (`majority_vote`, `pick_best`). Tree search: one run per N in
   `search_budgets`, on token prefixes (`search.SamplerProposer` keeps the KV cache of kept
   prefixes), beam search and DVTS shaped by `tree_shape`;
4. writes `results.json`, `results.md` (a markdown table) and `tts.png` (accuracy against
   generated tokens, log x, 95% Wilson bands) into the workdir.

Intervals are 95% Wilson intervals over the P held-out problems (for the group-averaged
vote/BoN accuracies, k = accuracy * P: the problems are the unit of independence).
Tokens are generated tokens per problem (prompt tokens and verifier reads not counted; the
verifier tokens are reported beside them).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any, Optional, Sequence

import jax
import numpy as np

from r1jax import prompts as prompts_lib
from r1jax import pretrain, rewards, sampler, search, stats, tasks, train, verifiers
from r1jax.reporting import MetricWriter, read_metrics

Solution = tuple[search.Step, ...]
VOTE_METHODS = ("majority", "bon_orm", "bon_prm", "weighted_bon")
SEARCH_METHODS = ("beam", "dvts", "mcts")
LABELS = {"greedy": "greedy", "majority": "majority vote", "bon_orm": "BoN (ORM)",
          "bon_prm": "BoN (PRM)", "weighted_bon": "weighted BoN (PRM)", "beam": "beam search (PRM)",
          "dvts": "DVTS (PRM)", "mcts": "MCTS", "pass_at_n": "pass@N (oracle)"}


def _log(msg: str) -> None:
    print(f"[tts] {msg}", flush=True)


# ----------------------------------------------------------------------------- sampling

def split_steps(tokenizer, ids: Sequence[int], logprobs: Sequence[float], delimiter: str
                ) -> Solution:
    """A sampled completion (ids up to and including its stop token) as search Steps of the
    sampled ids: a step ends at the token that completes a `delimiter` (the delimiter stays in
    the step, as with `search.SamplerProposer`); the last step is final. The steps' ids add up
    to `ids`."""
    steps, start, tail = [], 0, ""
    ids = [int(t) for t in ids]

    def step(end, final):
        return search.Step(tuple(ids[start:end]), tokenizer.decode(ids[start:end]), final,
                           float(np.sum(logprobs[start:end])))

    for i, t in enumerate(ids[:-1]):
        tail += tokenizer.decode([t])
        if delimiter in tail:
            steps.append(step(i + 1, False))
            start, tail = i + 1, ""
    steps.append(step(len(ids), True))
    return tuple(steps)


def _generate_chunks(params, cfg, tokenizer, prompts: Sequence[Sequence[int]], key,
                     sampling: sampler.SamplingConfig, batch_rows: int):
    """`sampler.generate` over chunks of at most batch_rows = prompts x samples rows; yields
    (tokens, lengths, logprobs) of each prompt as numpy arrays [G, M], [G], [G, M]."""
    size = max(1, batch_rows // sampling.num_samples)
    for c, s in enumerate(range(0, len(prompts), size)):
        o = sampler.generate(params, cfg, [list(p) for p in prompts[s:s + size]],
                             jax.random.fold_in(key, c), sampling, tokenizer=tokenizer,
                             pad_id=tokenizer.pad_id)
        yield from zip(*(np.asarray(x) for x in (o.tokens, o.lengths, o.logprobs)))


def sample_solutions(params, cfg, tokenizer, prompts: Sequence[Sequence[int]], n: int, key,
                     *, max_new_tokens: int, temperature: float, delimiter: str,
                     batch_rows: int = 2048) -> list[list[Solution]]:
    """n whole completions of each prompt (token ids) ([P][n]), each split into steps; one
    `generate` call per chunk of prompts (at most batch_rows = prompts x n rows), stopping at
    EOS."""
    sampling = sampler.SamplingConfig(max_new_tokens=max_new_tokens, num_samples=n,
                                      temperature=temperature, stop_tokens=(tokenizer.eos_id,))
    return [[split_steps(tokenizer, toks[i, :lens[i]], lps[i, :lens[i]], delimiter)
             for i in range(n)]
            for toks, lens, lps in _generate_chunks(params, cfg, tokenizer, prompts, key,
                                                    sampling, batch_rows)]


@dataclasses.dataclass
class ChunkedProposer:
    """A `search.StepProposer` that splits large `propose` calls into chunks of at most
    max_rows = prefixes x n rows (bounds the sampler's KV-cache memory)."""
    inner: Any
    max_rows: int

    def propose(self, prefixes, n, key):
        size = max(1, self.max_rows // n)
        out = []
        for c, s in enumerate(range(0, len(prefixes), size)):
            out += self.inner.propose(list(prefixes[s:s + size]), n, jax.random.fold_in(key, c))
        return out


def make_proposer(c, cfg, tokenizer, params) -> ChunkedProposer:
    """The tree searches' proposer: `search.SamplerProposer` (one step per row at
    c.tts.temperature, its KV cache kept for c.tts.cache_bytes) in chunks of c.tts.batch_rows
    rows."""
    t = c.tts
    sampling = sampler.SamplingConfig(max_new_tokens=t.step_max_new_tokens,
                                      temperature=t.temperature)
    return ChunkedProposer(search.SamplerProposer(
        params, cfg, tokenizer, sampling, delimiter=tasks.STEP_DELIMITER,
        cache_bytes=t.cache_bytes), t.batch_rows)


def _text(sol: Solution) -> str:
    return "".join(s.text for s in sol)


def _ids(sol: Solution) -> tuple[int, ...]:
    return tuple(i for s in sol for i in s.ids)


def _correct(problem: tasks.Problem, answer: Optional[str]) -> bool:
    return tasks.check(problem, answer)


# ----------------------------------------------------------------------------- verifier data

def label_samples(c, cfg, tokenizer, params, problems: Sequence[tasks.Problem], key
                  ) -> list[dict]:
    """Labelled verifier examples from the policy's samples (or worked solutions with
    c.verifier.labels == "gold"): dicts with prompt (token ids), prompt_text, solution (search
    Steps, as sampled), outcome (0/1), step labels (one per step) and the problem's index."""
    vc = c.verifier
    delim = tasks.STEP_DELIMITER
    prompt_texts = [prompts_lib.render(c.task.template, p.question) for p in problems]
    prompt_ids = [tuple(tokenizer.encode(t)) for t in prompt_texts]
    if vc.labels == "gold":
        return _gold_examples(c, tokenizer, problems, prompt_texts)
    if vc.labels != "mc":
        raise ValueError(f"config.verifier.labels must be 'mc' or 'gold', got {vc.labels!r}")
    k_sample, k_roll = jax.random.split(key)
    sols = sample_solutions(params, cfg, tokenizer, prompt_ids, vc.samples_per_problem,
                            k_sample, max_new_tokens=c.tts.max_new_tokens,
                            temperature=vc.temperature, delimiter=delim,
                            batch_rows=c.tts.batch_rows)
    examples = []
    for i, (problem, row) in enumerate(zip(problems, sols)):
        for sol in row:
            ok = _correct(problem, rewards.extract_answer(_text(sol)))
            examples.append({"problem": i, "prompt": prompt_ids[i], "prompt_text": prompt_texts[i],
                             "solution": sol, "outcome": float(ok)})
    # Rollouts from each non-final step prefix: hard labels of correct samples are all 1 (the
    # sample completes each of its prefixes correctly), so only the others need rollouts.
    need = [e for e in examples
            if len(e["solution"]) > 1 and (vc.soft_labels or not e["outcome"])]
    # Each prefix by the text `mc_step_labels` names it by, with its sampled ids.
    prefixes = {verifiers.solution_text(e["prompt_text"], [s.text for s in e["solution"][:j + 1]],
                                        delim): e["prompt"] + _ids(e["solution"][:j + 1])
                for e in need for j in range(len(e["solution"]) - 1)}
    completions = _rollouts(c, cfg, tokenizer, params, prefixes, k_roll)
    need_ids = {id(e) for e in need}
    for e in examples:
        if id(e) not in need_ids:
            e["labels"] = [e["outcome"]] * len(e["solution"])
            continue
        pools = {}

        def rollout_fn(texts, _key, pools=pools):
            return [pools.setdefault(t, iter(completions[t])).__next__() for t in texts]

        problem = problems[e["problem"]]
        hard, soft = verifiers.mc_step_labels(
            rollout_fn, e["prompt_text"], [s.text for s in e["solution"][:-1]], problem.answer,
            vc.mc_rollouts, key, delimiter=delim,
            check=lambda text, _a, p=problem: tasks.task_accuracy_reward(p, text))
        e["labels"] = (soft if vc.soft_labels else hard) + [e["outcome"]]
    return examples


def _rollouts(c, cfg, tokenizer, params, prefixes: dict[str, tuple[int, ...]], key
              ) -> dict[str, list[str]]:
    """k = c.verifier.mc_rollouts completions (texts) of every prefix ({text: token ids}),
    sampled from its ids."""
    k = c.verifier.mc_rollouts
    sampling = sampler.SamplingConfig(max_new_tokens=c.tts.max_new_tokens, num_samples=k,
                                      temperature=c.verifier.temperature,
                                      stop_tokens=(tokenizer.eos_id,))
    chunks = _generate_chunks(params, cfg, tokenizer, list(prefixes.values()), key, sampling,
                              c.verifier.rollout_batch * k)
    return {text: [tokenizer.decode(toks[i, :lens[i]].tolist()) for i in range(k)]
            for text, (toks, lens, _) in zip(prefixes, chunks)}


def _gold_examples(c, tokenizer, problems, prompt_texts) -> list[dict]:
    """Worked solutions with per-step errors (`tasks.solve`), split into steps at the
    delimiter and encoded step by step, the last ending with EOS like a sampled one."""
    import random
    rng = random.Random(f"verifier_gold/{c.tts.seed}")
    delim = tasks.STEP_DELIMITER
    examples = []
    for i, (problem, prompt) in enumerate(zip(problems, prompt_texts)):
        for _ in range(c.verifier.samples_per_problem):
            s = tasks.solve(problem, rng, c.verifier.gold_error_rate)
            pieces = prompts_lib.r1_completion(s.reasoning, s.answer).split(delim)
            texts = [p + delim for p in pieces[:-1]] + [pieces[-1]]
            ids = [tokenizer.encode(t) for t in texts[:-1]] + [
                tokenizer.encode(texts[-1]) + [tokenizer.eos_id]]
            sol = tuple(search.Step(tuple(x), t, j == len(texts) - 1)
                        for j, (x, t) in enumerate(zip(ids, texts)))
            ok = float(tasks.check(problem, s.answer))
            examples.append({"problem": i, "prompt": tuple(tokenizer.encode(prompt)),
                             "prompt_text": prompt, "solution": sol, "outcome": ok,
                             "labels": [float(x) for x in s.step_correct[:-1]] + [ok]})
    return examples


# ----------------------------------------------------------------------------- verifier training

def _bucket(n: int, bucket: int, cap: int) -> int:
    return min(-(-n // bucket) * bucket, cap)


def verifier_batch(kind: str, examples: Sequence[dict], pad_id: int, length: int
                   ) -> dict[str, np.ndarray]:
    """The ORM ("orm": outcome labels) or PRM ("prm": step labels) batch of `examples` (from
    `label_samples`), on their sampled token ids, padded to `length` tokens."""
    q = [e["prompt"] for e in examples]
    st = [[s.ids for s in e["solution"]] for e in examples]
    if kind == "orm":
        return verifiers.orm_batch_from_ids(q, st, [e["outcome"] for e in examples], pad_id,
                                            length)
    if kind == "prm":
        return verifiers.prm_batch_from_ids(q, st, [e["labels"] for e in examples], pad_id,
                                            length)
    raise ValueError(f"verifier kind must be 'orm' or 'prm', got {kind!r}")


def train_verifier(kind: str, trunk, cfg, tokenizer, examples: Sequence[dict], vc, key,
                   workdir: str, writer: Optional[MetricWriter] = None,
                   show_progress: bool = True):
    """Trains an ORM ("orm") or PRM ("prm") over a copy of `trunk` on `examples` with
    `train.run_verifier` (checkpoints, exact resume and NaN stop in `workdir`); returns the
    verifier params."""
    if vc.steps < 1:
        raise ValueError(f"config.verifier.steps must be >= 1, got {vc.steps}")
    T = _bucket(max(len(e["prompt"]) + len(_ids(e["solution"])) for e in examples),
                vc.seq_bucket, cfg.max_seq_len)
    k_init, k_data = jax.random.split(key)
    loop = train.LoopConfig(steps=vc.steps, learning_rate=vc.learning_rate,
                            warmup_steps=min(vc.warmup_steps, vc.steps - 1),
                            weight_decay=vc.weight_decay, grad_clip=vc.grad_clip,
                            checkpoint_every=vc.checkpoint_every,
                            seed=int(jax.random.randint(k_data, (), 0, 2**31 - 1)))
    vparams = verifiers.init_verifier(trunk, cfg, k_init, vc.head_init_scale)
    return train.run_verifier(vparams, cfg, kind,
                              verifier_batch(kind, examples, tokenizer.pad_id, T), loop,
                              workdir, batch_size=vc.batch_size, writer=writer,
                              show_progress=show_progress)


def _auc(scores, labels) -> Optional[float]:
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return None
    return stats.roc_auc(np.nan_to_num(np.asarray(scores, np.float64), nan=-1.0), labels)


# ----------------------------------------------------------------------------- evaluation

def _point(n: int, per_problem: Sequence[float], tokens: float, vtokens: float = 0.0) -> dict:
    """A curve point from per-problem accuracies (0/1, or a group average in [0, 1])."""
    P = len(per_problem)
    correct_sum = min(max(float(np.sum(per_problem)), 0.0), float(P))  # float sums may overshoot
    lo, hi = stats.wilson_interval(correct_sum, P)
    return {"n": n, "accuracy": correct_sum / P, "ci": [lo, hi], "tokens": tokens,
            "verifier_tokens": vtokens, "per_problem": [round(float(x), 6) for x in per_problem]}


def vote_curves(problems, sols, orm, prm, budgets: Sequence[int],
                read: Optional[Sequence[Sequence[int]]] = None) -> dict[str, list[dict]]:
    """Majority vote, BoN-ORM, BoN-PRM, weighted BoN and pass@N from S samples per problem
    (sols [P][S], orm/prm [P][S] solution scores, read [P][S] tokens a verifier reads per
    sample) at each N in budgets (N <= S): the samples are split into S // N disjoint groups;
    accuracy (per problem: the share of its groups that are right) and tokens are averaged over
    the groups. Each group's choice is the library's: `search.majority_vote` and
    `search.pick_best` (Best-of-N, weighted with weighted=True). BoN methods report the
    verifier tokens of one verifier (the ORM and the PRM read the same tokens)."""
    P, S = len(sols), len(sols[0])
    answers = [[rewards.extract_answer(_text(s)) for s in row] for row in sols]
    ok_cache: dict[tuple[int, Optional[str]], bool] = {}

    def ok(p, a):
        if (p, a) not in ok_cache:
            ok_cache[(p, a)] = _correct(problems[p], a)
        return ok_cache[(p, a)]

    curves = {m: [] for m in VOTE_METHODS + ("pass_at_n",)}
    for n in budgets:
        if not 1 <= n <= S:
            raise ValueError(f"budget N={n} needs 1 <= N <= samples per problem ({S})")
        G = S // n
        acc = {m: np.zeros(P) for m in curves}
        tokens = vtokens = 0.0
        for p in range(P):
            for g in range(G):
                idx = range(g * n, (g + 1) * n)
                group = [sols[p][i] for i in idx]
                ans = [answers[p][i] for i in idx]
                o = [orm[p][i] for i in idx]
                r = [prm[p][i] for i in idx]
                acc["majority"][p] += ok(p, search.majority_vote(ans)) / G
                acc["bon_orm"][p] += ok(p, ans[search.pick_best(group, o)]) / G
                acc["bon_prm"][p] += ok(p, ans[search.pick_best(group, r)]) / G
                acc["weighted_bon"][p] += ok(p, ans[search.pick_best(group, r, weighted=True)]) / G
                acc["pass_at_n"][p] += any(ok(p, a) for a in ans) / G
                tokens += sum(sum(s.num_tokens for s in sols[p][i]) for i in idx) / G
                vtokens += sum(read[p][i] for i in idx) / G if read is not None else 0.0
        for m in curves:
            verified = vtokens / P if m in ("bon_orm", "bon_prm", "weighted_bon") else 0.0
            curves[m].append(_point(n, acc[m], tokens / P, verified))
    return curves


def _search_point(name, n, problems, results) -> dict:
    ok = [float(_correct(p, r.answer)) for p, r in zip(problems, results)]
    return _point(n, ok, float(np.mean([r.generated_tokens for r in results])),
                  float(np.mean([r.verifier_tokens for r in results])))


def tree_shape(n: int, expansions: int) -> tuple[int, int]:
    """(W, M) of tree search at budget N: M = min(expansions, N // 2) (at least 1) next steps
    per node and W = N // M beams (beam search) or subtrees (DVTS). With N >= 4, W >= 2 and
    M >= 2, so the two differ: beam search keeps the top W of all W * M candidates (a beam may
    take several places), DVTS the best of each subtree's M."""
    m = max(1, min(expansions, n // 2))
    return max(n // m, 1), m


def run_search(name: str, n: int, c, proposer, prm_scorer, orm_scorer, prompts, key):
    """One tree-search method at budget N on prompts (token ids); `tree_shape` maps N to the
    beam width / subtrees and expansions of beam search and DVTS, N is MCTS's simulations."""
    t = c.tts
    width, m = tree_shape(n, t.beam_expansions)
    common = dict(max_steps=t.max_steps, aggregation=t.aggregation)
    if name == "beam":
        return search.beam_search(proposer, prm_scorer, prompts, key, beam_width=width,
                                  expansions=m, lookahead=t.lookahead, **common)
    if name == "dvts":
        return search.dvts(proposer, prm_scorer, prompts, key, n_subtrees=width, expansions=m,
                           lookahead=t.lookahead, **common)
    if name == "mcts":
        value_fn = prm_scorer if t.mcts_value == "prm" else orm_scorer
        agg = t.aggregation if t.mcts_value == "prm" else "last"
        return search.mcts(proposer, value_fn, prompts, key, num_simulations=n,
                           expansions=t.mcts_expansions, c=t.mcts_c, rule=t.mcts_rule,
                           max_steps=t.max_steps, aggregation=agg, final=t.mcts_final)
    raise ValueError(f"unknown search method {name!r}; known: {SEARCH_METHODS}")


# ----------------------------------------------------------------------------- the experiment

def _check(c) -> None:
    t = c.tts
    if not t.budgets or min(t.budgets) < 1:
        raise ValueError(f"config.tts.budgets must be N >= 1, got {t.budgets}")
    if t.search_budgets and min(t.search_budgets) < 1:
        raise ValueError(f"config.tts.search_budgets must be N >= 1, got {t.search_budgets}")
    if t.aggregation not in verifiers.AGGREGATIONS:
        raise ValueError(f"config.tts.aggregation must be one of {verifiers.AGGREGATIONS}")
    if t.mcts_value not in ("prm", "orm"):
        raise ValueError(f"config.tts.mcts_value must be 'prm' or 'orm', got {t.mcts_value!r}")


def _verifier_trunk(c, cfg, params):
    if not c.verifier.trunk_path:
        return cfg, params
    from r1jax import hf
    vcfg, vparams = hf.load_hf(c.verifier.trunk_path)
    return vcfg.replace(compute_dtype=c.model.compute_dtype), vparams


def base_policy(c, workdir: str, show_progress: bool = True):
    """(model cfg, tokenizer, params) of the policy. With c.base_workdir (and no model.path)
    the newest checkpoint in <base_workdir>/base is read as it is (never trained further or
    written); otherwise `pretrain.base_model` pretrains into (or resumes from) <workdir>/base."""
    if c.base_workdir and not c.model.path:
        from r1jax import checkpoint, model
        from r1jax.tokenizer import ByteTokenizer
        cfg = model.ModelConfig.preset(c.model.preset, compute_dtype=c.model.compute_dtype)
        target = jax.eval_shape(lambda: model.init_params(cfg, jax.random.key(0)))
        with checkpoint.CheckpointManager(os.path.join(c.base_workdir, "base")) as manager:
            restored = manager.restore(target={"params": target})
        _log(f"base model: step {restored.step} of {c.base_workdir}/base")
        return cfg, ByteTokenizer(), restored.params
    writer = MetricWriter(workdir, tensorboard=False)
    try:
        return pretrain.base_model(c, workdir, writer, show_progress)
    finally:
        writer.close()


def run(c, workdir: str, show_progress: bool = True) -> dict:
    """Runs the experiment of config `c` in `workdir`; returns (and writes) the results."""
    _check(c)
    t0 = time.time()
    timings = {}
    os.makedirs(workdir, exist_ok=True)
    cfg, tok, params = base_policy(c, workdir, show_progress)
    timings["base"] = time.time() - t0
    t = c.tts
    k_verifiers, k_test, k_greedy, k_search = jax.random.split(jax.random.key(t.seed), 4)
    orm_scorer, prm_scorer, verifier_info = train_verifiers(
        c, cfg, tok, params, k_verifiers, workdir, timings, show_progress)

    # 3. Held-out problems: S samples once, scored by both verifiers; greedy; tree search.
    problems = pretrain.load_problems(c, "test", t.num_problems, seed=c.seed + 1 + 1000 * t.seed)
    prompts = [tuple(tok.encode(prompts_lib.render(c.task.template, p.question)))
               for p in problems]
    curves, held_out = vote_evaluation(c, cfg, tok, params, problems, prompts, orm_scorer,
                                       prm_scorer, k_test, timings)
    curves["greedy"] = [_greedy_point(c, cfg, tok, params, problems, prompts, k_greedy)]
    _log(f"greedy: {curves['greedy'][0]['accuracy']:.3f}")
    proposer = make_proposer(c, cfg, tok, params)
    for mi, name in enumerate(SEARCH_METHODS):
        curves[name] = []
        for n in sorted(t.search_budgets):
            tic = time.time()
            res = run_search(name, n, c, proposer, prm_scorer, orm_scorer, prompts,
                             jax.random.fold_in(k_search, 1000 * mi + n))
            pt = _search_point(name, n, problems, res)
            curves[name].append(pt)
            timings[f"{name}_{n}"] = time.time() - tic
            _log(f"{name} N={n}: {pt['accuracy']:.3f} [{pt['ci'][0]:.3f}, {pt['ci'][1]:.3f}], "
                 f"{pt['tokens']:.0f} tokens/problem ({timings[f'{name}_{n}']:.0f} s)")

    timings["total"] = time.time() - t0
    results = {
        "num_problems": len(problems), "seed": t.seed, **held_out,
        "aggregation": t.aggregation, "verifier": verifier_info,
        "curves": curves, "summary": summarize(curves),
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    _write(results, workdir)
    _log(f"done in {timings['total']:.0f} s: {workdir}")
    return results


def train_verifiers(c, cfg, tok, params, key, workdir: str, timings: dict,
                    show_progress: bool = True):
    """2. An ORM and a PRM trained on the policy's own samples of train problems (into
    <workdir>/orm and <workdir>/prm, metrics in <workdir>/metrics.jsonl); returns their
    scorers and what to report of them (losses, validation AUCs)."""
    k_train, k_orm, k_prm = jax.random.split(key, 3)
    tic = time.time()
    train_problems = pretrain.load_problems(c, "train", c.verifier.num_problems,
                                           seed=10_007 + c.tts.seed)
    examples = label_samples(c, cfg, tok, params, train_problems, k_train)
    n_val = int(round(len(train_problems) * c.verifier.validation_fraction))
    fit = [e for e in examples if e["problem"] >= n_val]
    val = [e for e in examples if e["problem"] < n_val]
    timings["verifier_data"] = time.time() - tic
    _log(f"verifier data: {len(examples)} samples of {len(train_problems)} train problems, "
         f"{np.mean([e['outcome'] for e in examples]):.3f} correct "
         f"({timings['verifier_data']:.0f} s)")
    tic = time.time()
    vcfg, trunk = _verifier_trunk(c, cfg, params)
    writer = MetricWriter(workdir, tensorboard=False)
    try:
        scorers = [search.PRMScorer(
            train_verifier(kind, trunk, vcfg, tok, fit, c.verifier, k,
                           os.path.join(workdir, kind), writer, show_progress),
            vcfg, tok.pad_id, batch_size=c.tts.score_batch, bucket=32)
            for kind, k in (("orm", k_orm), ("prm", k_prm))]
    finally:
        writer.close()
    timings["verifier_training"] = time.time() - tic
    info = {"labels": c.verifier.labels, "train_samples": len(fit), "validation_samples": len(val),
            "train_correct_rate": float(np.mean([e["outcome"] for e in examples]))}
    for kind in ("orm", "prm"):
        info[f"{kind}_loss"] = [r["loss"] for r in read_metrics(
            os.path.join(workdir, "metrics.jsonl"), stage=kind)]
    if val:
        vq, vs = [e["prompt"] for e in val], [e["solution"] for e in val]
        prm_val, _ = scorers[1].score(vq, vs)
        info["prm_step_auc_validation"] = _auc(
            [x for r in prm_val for x in r], [y > 0.5 for e in val for y in e["labels"]])
        info["orm_auc_validation"] = _auc(search.aggregate(scorers[0].score(vq, vs)[0], "last"),
                                          [e["outcome"] for e in val])
    _log(f"verifiers trained ({timings['verifier_training']:.0f} s): "
         f"{ {k: v for k, v in info.items() if 'auc' in k} }")
    return scorers[0], scorers[1], info


def vote_evaluation(c, cfg, tok, params, problems, prompts, orm_scorer, prm_scorer, key,
                    timings: dict) -> tuple[dict, dict]:
    """S = max(budgets) samples of every held-out prompt (token ids), scored by both
    verifiers: the `vote_curves`, and what to report of the samples (sample accuracy,
    held-out AUCs)."""
    t = c.tts
    P, S = len(problems), max(t.budgets)
    tic = time.time()
    sols = sample_solutions(params, cfg, tok, prompts, S, key, max_new_tokens=t.max_new_tokens,
                            temperature=t.temperature, delimiter=tasks.STEP_DELIMITER,
                            batch_rows=t.batch_rows)
    flat_q = [q for q in prompts for _ in range(S)]
    flat = [s for row in sols for s in row]
    prm_steps, read = prm_scorer.score(flat_q, flat)
    orm_flat = search.aggregate(orm_scorer.score(flat_q, flat)[0], "last")
    prm_flat = search.aggregate(prm_steps, t.aggregation)
    correct = [_correct(pr, rewards.extract_answer(_text(s)))
               for pr, row in zip(problems, sols) for s in row]
    timings["samples"] = time.time() - tic
    auc = {"orm": _auc(orm_flat, correct),
           **{f"prm_{h}": _auc(search.aggregate(prm_steps, h), correct)
              for h in verifiers.AGGREGATIONS}}
    _log(f"{S} samples x {P} problems, sample accuracy {np.mean(correct):.3f}; held-out AUC "
         f"{ {k: round(v, 3) for k, v in auc.items() if v is not None} } "
         f"({timings['samples']:.0f} s)")
    curves = vote_curves(problems, sols, orm_flat.reshape(P, S), prm_flat.reshape(P, S),
                         sorted(t.budgets), np.reshape(read, (P, S)))
    for m in VOTE_METHODS:
        _log(f"{m}: " + ", ".join(f"N={x['n']} {x['accuracy']:.3f}" for x in curves[m]))
    return curves, {"samples_per_problem": S, "sample_accuracy": float(np.mean(correct)),
                    "auc": auc}


def _greedy_point(c, cfg, tok, params, problems, prompts, key) -> dict:
    t = c.tts
    greedy = sample_solutions(params, cfg, tok, prompts, 1, key, max_new_tokens=t.max_new_tokens,
                              temperature=0.0, delimiter=tasks.STEP_DELIMITER,
                              batch_rows=t.batch_rows)
    ok = [float(_correct(pr, rewards.extract_answer(_text(row[0]))))
          for pr, row in zip(problems, greedy)]
    return _point(1, ok, float(np.mean([len(_ids(row[0])) for row in greedy])))


def _write(results: dict, workdir: str) -> None:
    """results.json, results.md (the table) and tts.png (the plot) into the workdir."""
    with open(os.path.join(workdir, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(results_table(results) + "\n")
    plot(results["curves"], os.path.join(workdir, "tts.png"),
         f"Test-time scaling, {results['num_problems']} held-out problems (95% Wilson bands)")


def _at(curve: Sequence[dict], n: int) -> Optional[dict]:
    return next((x for x in curve if x["n"] == n), None)


def summarize(curves: dict) -> dict:
    """The headline comparisons: majority@16 vs greedy, weighted BoN vs BoN at the largest N,
    and each tree search against BoN-PRM at the nearest token budget (interpolated in log
    tokens along the BoN-PRM curve)."""
    out = {}
    g = curves["greedy"][0]
    maj = _at(curves["majority"], 16) or curves["majority"][-1]
    out["greedy"] = g["accuracy"]
    out["majority_n"] = maj["n"]
    out["majority"] = maj["accuracy"]
    out["majority_minus_greedy"] = maj["accuracy"] - g["accuracy"]
    out["majority_minus_greedy_ci"] = list(stats.paired_difference(
        maj["per_problem"], g["per_problem"])[1:])
    big = curves["weighted_bon"][-1]["n"]
    out["largest_n"] = big
    out["weighted_bon_largest_n"] = curves["weighted_bon"][-1]["accuracy"]
    out["bon_prm_largest_n"] = curves["bon_prm"][-1]["accuracy"]
    out["bon_orm_largest_n"] = curves["bon_orm"][-1]["accuracy"]
    out["weighted_bon_minus_bon_prm_largest_n_ci"] = list(stats.paired_difference(
        curves["weighted_bon"][-1]["per_problem"], curves["bon_prm"][-1]["per_problem"])[1:])
    bx = np.log([x["tokens"] for x in curves["bon_prm"]])
    by = [x["accuracy"] for x in curves["bon_prm"]]
    for name in SEARCH_METHODS:
        for pt in curves.get(name, []):
            ref = float(np.interp(math.log(max(pt["tokens"], 1.0)), bx, by))
            out[f"{name}_{pt['n']}_minus_bon_prm_at_equal_tokens"] = pt["accuracy"] - ref
    return out


def results_table(results: dict) -> str:
    """Markdown table: accuracy [95% CI] and generated tokens per problem, a row per method."""
    curves = results["curves"]
    ns = sorted({x["n"] for cv in curves.values() for x in cv})
    head = "| method | " + " | ".join(f"N={n}" for n in ns) + " |"
    lines = [head, "|" + "---|" * (len(ns) + 1)]
    order = ["greedy", *VOTE_METHODS, *SEARCH_METHODS, "pass_at_n"]
    for m in [m for m in order if m in curves]:
        cells = []
        for n in ns:
            x = _at(curves[m], n)
            cells.append("" if x is None else f"{x['accuracy']:.3f} [{x['ci'][0]:.2f}, "
                         f"{x['ci'][1]:.2f}] / {x['tokens']:.0f} tok")
        lines.append(f"| {LABELS[m]} | " + " | ".join(cells) + " |")
    auc = results["auc"]
    sm = results["summary"]
    lo, hi = sm["majority_minus_greedy_ci"]
    wlo, whi = sm["weighted_bon_minus_bon_prm_largest_n_ci"]
    lines.append("")
    lines.append(f"Paired over problems (95%): majority@{sm['majority_n']} - greedy = "
                 f"{sm['majority_minus_greedy']:+.3f} [{lo:+.3f}, {hi:+.3f}]; weighted BoN - BoN "
                 f"(PRM) at N={sm['largest_n']} = "
                 f"{sm['weighted_bon_largest_n'] - sm['bon_prm_largest_n']:+.3f} "
                 f"[{wlo:+.3f}, {whi:+.3f}].")
    lines.append(f"Held-out sample ROC AUC: ORM {_fmt(auc.get('orm'))}, PRM min "
                 f"{_fmt(auc.get('prm_min'))}, prod {_fmt(auc.get('prm_prod'))}, last "
                 f"{_fmt(auc.get('prm_last'))}; {results['num_problems']} problems x "
                 f"{results['samples_per_problem']} samples, sample accuracy "
                 f"{results['sample_accuracy']:.3f}.")
    return "\n".join(lines)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def plot(curves: dict, path: str, title: str = "") -> None:
    """Accuracy against generated tokens per problem (log x), a line per method with its 95%
    interval as a band (a point with error bars for single-budget methods)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    order = ["greedy", *VOTE_METHODS, *SEARCH_METHODS, "pass_at_n"]
    for m in [m for m in order if curves.get(m)]:
        xs = [x["tokens"] for x in curves[m]]
        ys = [x["accuracy"] for x in curves[m]]
        lo = [x["ci"][0] for x in curves[m]]
        hi = [x["ci"][1] for x in curves[m]]
        style = dict(linestyle=":" if m == "pass_at_n" else "-", marker="o", markersize=3.5,
                     label=LABELS[m])
        if len(xs) == 1:
            ax.errorbar(xs, ys, yerr=[[ys[0] - lo[0]], [hi[0] - ys[0]]], capsize=3, **style)
        else:
            (line,) = ax.plot(xs, ys, **style)
            if m != "pass_at_n":
                ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.10)
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem")
    ax.set_ylabel("held-out accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
