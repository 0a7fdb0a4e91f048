"""Held-out evaluation of a policy on task problems: accuracy with its interval (greedy or
sampled), pass@k and majority@k, format rate, response length and language consistency, and
the per-problem accuracies that paired comparisons between two policies need."""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import numpy as np

from r1jax import prompts, rewards, rollout, sampler, search, stats, tasks

PASS_KS = (1, 4, 16)


def sample_completions(params, cfg, tokenizer, prompt_texts: Sequence[str], key: jax.Array,
                       sampling: sampler.SamplingConfig, *, length: Optional[int] = None,
                       shard=None) -> rollout.Rollout:
    """Encodes the prompts and samples G = sampling.num_samples completions each, stopping at
    EOS; returns the packed `Rollout` (sequences of `length` tokens; see `rollout.sample`)."""
    prompt_ids = [tokenizer.encode(p) for p in prompt_texts]
    stop = tuple(sorted(set(sampling.stop_tokens) | {tokenizer.eos_id}))
    sampling = dataclasses.replace(sampling, stop_tokens=stop)
    return rollout.sample(params, cfg, prompt_ids, key, sampling, tokenizer=tokenizer,
                          pad_id=tokenizer.pad_id, length=length, shard=shard)


def sample_texts(params, cfg, tokenizer, prompt_texts: Sequence[str], key: jax.Array,
                 sampling: sampler.SamplingConfig, *, batch_size: int = 64,
                 shard=None) -> list[list[str]]:
    """`sample_completions` in chunks of batch_size prompts (chunk j with fold_in(key, j)),
    decoded: [len(prompt_texts)][sampling.num_samples] completion texts."""
    texts = []
    for j, start in enumerate(range(0, len(prompt_texts), batch_size)):
        roll = sample_completions(params, cfg, tokenizer, prompt_texts[start:start + batch_size],
                                  jax.random.fold_in(key, j), sampling, shard=shard)
        texts += roll.texts(tokenizer)
    return texts


def score_completions(problems: Sequence[tasks.Problem], texts: Sequence[Sequence[str]],
                      lang: Optional[str] = "en") -> dict[str, np.ndarray]:
    """Rule scores [P, G] of each completion: correct, format, language consistency."""
    correct = np.array([[tasks.task_accuracy_reward(pr, t) for t in row]
                        for pr, row in zip(problems, texts)], np.float32)
    fmt = np.array([[rewards.format_reward(t) for t in row] for row in texts], np.float32)
    out = {"correct": correct, "format": fmt}
    if lang is not None:
        out["language"] = np.array([[rewards.language_consistency_reward(t, lang) for t in row]
                                    for row in texts], np.float32)
    return out


def _interval(values: np.ndarray) -> list[float]:
    """95% Wilson interval of the mean of per-problem values in [0, 1] (problems as units)."""
    return list(stats.wilson_interval(min(float(values.sum()), values.size), values.size))


def _mean_interval(values: np.ndarray) -> list[float]:
    """Mean +- 1.96 standard errors of per-problem values (problems as units)."""
    if values.size < 2:
        return [float(values.mean()), float(values.mean())]
    half = 1.96 * float(values.std(ddof=1)) / np.sqrt(values.size)
    return [float(values.mean()) - half, float(values.mean()) + half]


def pass_and_majority(problems: Sequence[tasks.Problem], texts: Sequence[Sequence[str]],
                      correct_PG: np.ndarray, ks: Sequence[int] = PASS_KS) -> dict:
    """pass@k (unbiased, from G samples) and majority@k (the vote of disjoint groups of k
    samples, averaged over the groups) for every k <= G, each with its interval over problems.
    The vote pools equivalent answers (`search.majority_vote`)."""
    P, G = correct_PG.shape
    out = {}
    for k in (k for k in ks if k <= G):
        pk = np.array([stats.pass_at_k(G, int(c), k) for c in correct_PG.sum(axis=1)])
        maj = np.zeros(P)
        for p, (problem, row) in enumerate(zip(problems, texts)):
            groups = [row[i:i + k] for i in range(0, G - k + 1, k)]
            votes = [search.majority_vote([rewards.extract_answer(t) for t in g]) for g in groups]
            maj[p] = np.mean([tasks.check(problem, v) if v is not None else False
                              for v in votes])
        out[f"pass@{k}"] = float(pk.mean())
        out[f"pass@{k}_ci"] = _interval(pk)
        out[f"majority@{k}"] = float(maj.mean())
        out[f"majority@{k}_ci"] = _interval(maj)
    return out


def evaluate(params, cfg, tokenizer, problems: Sequence[tasks.Problem], key: jax.Array, *,
             template: str = "r1_zero_short", max_new_tokens: int = 96, num_samples: int = 1,
             temperature: float = 1.0, batch_size: int = 128, lang: Optional[str] = "en",
             pass_ks: Sequence[int] = (), shard=None,
             extra_scores: Optional[Callable[[tasks.Problem, str], dict]] = None) -> dict:
    """Samples `num_samples` completions per held-out problem (temperature 0: greedy) and
    scores them.

    Returns accuracy (mean correctness over all samples), its 95% Wilson interval over
    problems (`accuracy_ci`; per-problem accuracies as the unit), `per_problem` (mean
    correctness of each problem, in order: for `stats.paired_difference` between policies),
    format_rate, mean_length (tokens) with its interval over problems (`mean_length_ci`),
    language_consistency, pass@k / majority@k with
    intervals for each k in `pass_ks` that is <= num_samples, and `examples` (a few decoded
    completions). With `extra_scores(problem, completion) -> {name: value in [0, 1]}`, each
    name's mean over all completions, its interval over problems (`<name>_ci`) and its
    per-problem means (`per_problem_<name>`) are added.
    """
    sampling = sampler.SamplingConfig(max_new_tokens=max_new_tokens, num_samples=num_samples,
                                      temperature=temperature)
    scores, lengths, texts, examples, extra_problems = [], [], [], [], []
    for i, start in enumerate(range(0, len(problems), batch_size)):
        chunk = problems[start:start + batch_size]
        roll = sample_completions(params, cfg, tokenizer,
                                  [prompts.render(template, p.question) for p in chunk],
                                  jax.random.fold_in(key, i), sampling, shard=shard)
        chunk_texts = roll.texts(tokenizer)
        scores.append(score_completions(chunk, chunk_texts, lang))
        lengths.append(np.asarray(roll.lengths))
        texts += chunk_texts
        extra_problems += chunk
        examples += [(p.question, row[0]) for p, row in zip(chunk[:2], chunk_texts)]
    correct = np.concatenate([s["correct"] for s in scores])
    per_problem = correct.mean(axis=1)
    result = {
        "accuracy": float(correct.mean()),
        "accuracy_ci": _interval(per_problem),
        "per_problem": [round(float(x), 6) for x in per_problem],
        "format_rate": float(np.concatenate([s["format"] for s in scores]).mean()),
        "mean_length": float(np.concatenate(lengths).mean()),
        "mean_length_ci": _mean_interval(np.concatenate(lengths).reshape(len(problems), -1)
                                         .mean(axis=1)),
        "num_problems": len(problems),
        "num_samples": num_samples,
        "temperature": temperature,
        "examples": examples[:4],
    }
    result.update(pass_and_majority(problems, texts, correct, pass_ks))
    if lang is not None:
        result["language_consistency"] = float(
            np.concatenate([s["language"] for s in scores]).mean())
    if extra_scores is not None:
        rows = [[extra_scores(p, t) for t in row] for p, row in zip(extra_problems, texts)]
        for name in (rows[0][0] if rows and rows[0] else {}):
            per = np.array([[float(r[name]) for r in row] for row in rows]).mean(axis=1)
            result[name] = float(per.mean())
            result[f"{name}_ci"] = _interval(per)
            result[f"per_problem_{name}"] = [round(float(x), 6) for x in per]
    return result
