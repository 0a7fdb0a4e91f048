"""Held-out evaluation of a policy on task problems: accuracy with a confidence interval,
format rate, response length and language consistency, from sampled completions."""
from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import jax
import numpy as np

from r1jax import prompts, rewards, sampler, tasks
from r1jax.stats import wilson_interval


@dataclasses.dataclass(frozen=True)
class Rollouts:
    """Sampled completions of P prompts x N samples, decoded, with their token arrays.

    prompt_ids: P token lists. out: the sampler output (tokens [P, N, M], lengths [P, N],
    logprobs [P, N, M], stopped [P, N]) as numpy arrays. texts: P lists of N strings.
    """
    prompt_ids: list[list[int]]
    out: sampler.SampleOutput
    texts: list[list[str]]


def sample_completions(params, cfg, tokenizer, prompt_texts: Sequence[str], key: jax.Array,
                       sampling: sampler.SamplingConfig, *, shard=None) -> Rollouts:
    """Encodes the prompts, samples N completions each (stopping at EOS) and decodes them."""
    prompt_ids = [tokenizer.encode(p) for p in prompt_texts]
    stop = tuple(sorted(set(sampling.stop_tokens) | {tokenizer.eos_id}))
    sampling = dataclasses.replace(sampling, stop_tokens=stop)
    out = sampler.generate(params, cfg, prompt_ids, key, sampling, tokenizer=tokenizer,
                           pad_id=tokenizer.pad_id, shard=shard)
    out = sampler.SampleOutput(*(np.asarray(x) for x in out))
    texts = [[tokenizer.decode(out.tokens[p, n, :out.lengths[p, n]].tolist())
              for n in range(out.tokens.shape[1])] for p in range(len(prompt_ids))]
    return Rollouts(prompt_ids, out, texts)


def score_completions(problems: Sequence[tasks.Problem], texts: Sequence[Sequence[str]],
                      lang: Optional[str] = "en") -> dict[str, np.ndarray]:
    """Rule scores [P, N] of each completion: correct, format, language consistency."""
    correct = np.array([[tasks.task_accuracy_reward(pr, t) for t in row]
                        for pr, row in zip(problems, texts)], np.float32)
    fmt = np.array([[rewards.format_reward(t) for t in row] for row in texts], np.float32)
    out = {"correct": correct, "format": fmt}
    if lang is not None:
        out["language"] = np.array([[rewards.language_consistency_reward(t, lang) for t in row]
                                    for row in texts], np.float32)
    return out


def evaluate(params, cfg, tokenizer, problems: Sequence[tasks.Problem], key: jax.Array, *,
             template: str = "r1_zero_short", max_new_tokens: int = 96, num_samples: int = 1,
             temperature: float = 1.0, batch_size: int = 128, lang: Optional[str] = "en",
             shard=None) -> dict:
    """Samples `num_samples` completions per held-out problem and scores them.

    Returns accuracy (mean correctness over all samples; at temperature 0 the greedy
    accuracy), its 95% Wilson interval over problems x samples, format_rate, mean_length
    (tokens), language_consistency, and `examples` (a few decoded completions).
    """
    sampling = sampler.SamplingConfig(max_new_tokens=max_new_tokens, num_samples=num_samples,
                                      temperature=temperature)
    scores, lengths, examples = [], [], []
    for i, start in enumerate(range(0, len(problems), batch_size)):
        chunk = problems[start:start + batch_size]
        roll = sample_completions(params, cfg, tokenizer,
                                  [prompts.render(template, p.question) for p in chunk],
                                  jax.random.fold_in(key, i), sampling, shard=shard)
        scores.append(score_completions(chunk, roll.texts, lang))
        lengths.append(roll.out.lengths)
        examples += [(p.question, row[0]) for p, row in zip(chunk[:2], roll.texts)]
    correct = np.concatenate([s["correct"] for s in scores])
    k, n = int(correct.sum()), correct.size
    result = {
        "accuracy": k / n,
        "accuracy_ci": wilson_interval(k, n),
        "format_rate": float(np.concatenate([s["format"] for s in scores]).mean()),
        "mean_length": float(np.concatenate(lengths).mean()),
        "num_problems": len(problems),
        "num_samples": num_samples,
        "examples": examples[:4],
    }
    if lang is not None:
        result["language_consistency"] = float(
            np.concatenate([s["language"] for s in scores]).mean())
    return result
