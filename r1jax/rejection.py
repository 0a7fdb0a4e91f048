"""Rejection sampling (DeepSeek-R1's stage 3): N completions per training prompt from a policy,
kept only when correct by the rule reward, well formed (the R1 format), language-consistent
and not degenerate (repeated n-grams), at most k distinct ones per prompt; the counts of what
was kept and why the rest was rejected.

`filter_completions` is the pure filter (one problem's completions); `rejection_sample` samples
from a policy and applies it to every problem. Problems without a rule (no gold answer) are
scored by `score_fn` instead (a reward model: kept when its score >= `min_score`).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from typing import Optional

from r1jax import evaluation, prompts, rewards, sampler, tasks

REASONS = ("malformed", "wrong", "language", "repetitive", "low_score", "duplicate",
           "over_limit")


def rejection_reason(problem: Optional[tasks.Problem], text: str, *, language: str = "en",
                     min_language: float = 1.0, max_repetition: float = 0.2,
                     require_summary: bool = True, score: Optional[float] = None,
                     min_score: float = 0.5) -> Optional[str]:
    """Why `text` is rejected (the first failing check, in the order of REASONS), or None.

    malformed: not in the R1 format (`rewards.r1_format_reward`, summary required with
    `require_summary`); wrong: the answer does not solve `problem` (with `problem` None, the
    completion is judged by `score` >= `min_score` instead: "low_score"); language: the chain
    of thought's share in `language` is below `min_language`; repetitive: the share of
    repeated word 3-grams (`-rewards.repetition_penalty`) is above `max_repetition`."""
    if not rewards.r1_format_reward(text, require_summary):
        return "malformed"
    if problem is not None:
        if not tasks.task_accuracy_reward(problem, text):
            return "wrong"
    elif score is None or score < min_score:
        return "low_score"
    if rewards.language_consistency_reward(text, language) < min_language:
        return "language"
    if -rewards.repetition_penalty(text) > max_repetition:
        return "repetitive"
    return None


def filter_completions(problem: Optional[tasks.Problem], texts: Sequence[str], keep: int,
                       scores: Optional[Sequence[float]] = None, **checks
                       ) -> tuple[list[str], Counter]:
    """(kept, counts): up to `keep` distinct completions of one problem that pass
    `rejection_reason` (in sampling order), and a Counter with "kept" and one entry per
    rejection reason (a passing completion equal to a kept one: "duplicate"; passing ones
    after `keep` were kept: "over_limit")."""
    kept, counts = [], Counter()
    for i, text in enumerate(texts):
        reason = rejection_reason(problem, text,
                                  score=None if scores is None else scores[i], **checks)
        if reason is None:
            norm = " ".join(text.split())
            if norm in {" ".join(k.split()) for k in kept}:
                reason = "duplicate"
            elif len(kept) == keep:
                reason = "over_limit"
        if reason is None:
            kept.append(text)
            counts["kept"] += 1
        else:
            counts[reason] += 1
    return kept, counts


def rejection_sample(params, cfg, tokenizer, problems: Sequence[tasks.Problem], key, *,
                     num_samples: int, keep: int, template: str, max_new_tokens: int,
                     temperature: float = 1.0, batch_size: int = 64, shard=None,
                     score_fn: Optional[Callable] = None, **checks) -> tuple[list[dict], dict]:
    """Samples `num_samples` completions per problem from the policy and filters them
    (`filter_completions`). Returns (examples, counts): examples {"problem" (index),
    "prompt", "completion"}; counts: "kept", each reason of REASONS, "samples",
    "problems_with_kept" and "problems"."""
    sampling = sampler.SamplingConfig(max_new_tokens=max_new_tokens, num_samples=num_samples,
                                      temperature=temperature)
    examples, total = [], Counter()
    solved = 0
    rendered = [prompts.render(template, p.question) for p in problems]
    sampled = evaluation.sample_texts(params, cfg, tokenizer, rendered, key, sampling,
                                      batch_size=batch_size, shard=shard)
    for i, (problem, prompt, texts) in enumerate(zip(problems, rendered, sampled)):
        scores = None
        if problem is None or not problem.answer:
            scores = score_fn([prompt] * len(texts), texts) if score_fn else None
            problem = None
        kept, counts = filter_completions(problem, texts, keep, scores, **checks)
        total.update(counts)
        solved += bool(kept)
        examples += [{"problem": i, "prompt": prompt, "completion": t} for t in kept]
    counts = {r: int(total.get(r, 0)) for r in ("kept",) + REASONS}
    counts.update(samples=len(problems) * num_samples, problems_with_kept=solved,
                  problems=len(problems))
    return examples, counts
