"""Rewards of R1's RL stages: rule rewards in the R1 format for reasoning prompts, and the
mixed batch of the last stage, where prompts without a rule (non-reasoning questions) are
scored by a Bradley-Terry preference reward model.

`reasoning_rewards` (stage 2 and the reasoning half of stage 5): accuracy + format (the R1
format, `rewards.r1_format_reward`, summary optional or required) + language consistency of
the chain of thought, each with its weight. `MixedReward` is a `reward_fn(problems, texts)`
for `train.run_grpo`: per completion, the reasoning reward for task problems and, for
non-reasoning problems (`r1_data.NONREASONING_TASK`), `rm_weight` x the reward model's score
plus `rule_weight` x `r1_data.nonreasoning_score` (0 in DeepSeek's recipe; > 0 mixes a rule
check into the model's score). Groups are per prompt, so the two scales never meet inside a
GRPO group. `bt_scorer` / `orm_scorer` turn verifier params into the scoring function.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import numpy as np

from r1jax import r1_data, rewards, tasks, verifiers

ScoreFn = Callable[[Sequence[str], Sequence[str]], np.ndarray]   # (prompts, completions) -> [N]


def reasoning_rewards(problems: Sequence[tasks.Problem], texts: Sequence[Sequence[str]], *,
                      accuracy_weight: float = 1.0, format_weight: float = 0.5,
                      language_weight: float = 0.0, language: str = "en",
                      require_summary: bool = False) -> dict[str, np.ndarray]:
    """Rule rewards [P, G] of reasoning completions: "correct", "format" (R1 format),
    "summary", "language" (share of the chain of thought in `language`) and their weighted
    sum "reward"."""
    correct = np.array([[tasks.task_accuracy_reward(p, t) for t in row]
                        for p, row in zip(problems, texts)], np.float32)
    fmt = np.array([[rewards.r1_format_reward(t, require_summary) for t in row]
                    for row in texts], np.float32)
    summary = np.array([[rewards.summary_reward(t) for t in row] for row in texts], np.float32)
    lang = np.array([[rewards.language_consistency_reward(t, language) for t in row]
                     for row in texts], np.float32)
    total = accuracy_weight * correct + format_weight * fmt + language_weight * lang
    return {"correct": correct, "format": fmt, "summary": summary, "language": lang,
            "reward": total.astype(np.float32)}


class MixedReward:
    """reward_fn(problems, texts) -> dict of [P, G] arrays for a batch mixing reasoning and
    non-reasoning problems (see the module doc). `score_fn(prompts, completions)` scores
    non-reasoning replies (a reward model; prompts are the problems' questions, rendered as the
    batch's template renders them, i.e. `prompt_of`). Entries of the other kind are NaN in
    the per-kind arrays ("reasoning_correct", "reasoning_format", "reasoning_summary",
    "reasoning_language": reasoning only; "rm_score", "nonreasoning_rule": non-reasoning
    only; named apart from the rule rewards' "correct" etc., which the GRPO loop averages)."""

    def __init__(self, score_fn: ScoreFn | None, *, rm_weight: float = 1.0,
                 rule_weight: float = 0.0, prompt_of: Callable[[tasks.Problem], str] = None,
                 **reasoning_kwargs):
        if score_fn is None and rm_weight:
            raise ValueError("rm_weight > 0 needs a score_fn (the reward model)")
        self.score_fn, self.rm_weight, self.rule_weight = score_fn, rm_weight, rule_weight
        self.prompt_of = prompt_of or (lambda p: p.question)
        self.reasoning_kwargs = reasoning_kwargs

    def __call__(self, problems: Sequence[tasks.Problem], texts: Sequence[Sequence[str]]
                 ) -> dict[str, np.ndarray]:
        P, G = len(problems), len(texts[0]) if texts else 0
        nan = lambda: np.full((P, G), np.nan, np.float32)  # noqa: E731
        out = {k: nan() for k in ("reasoning_correct", "reasoning_format", "reasoning_summary",
                                  "reasoning_language", "rm_score", "nonreasoning_rule")}
        out["reward"] = np.zeros((P, G), np.float32)
        nonr = np.array([p.task == r1_data.NONREASONING_TASK for p in problems], bool)
        idx_r, idx_n = np.flatnonzero(~nonr), np.flatnonzero(nonr)
        if len(idx_r):
            rr = reasoning_rewards([problems[i] for i in idx_r], [texts[i] for i in idx_r],
                                   **self.reasoning_kwargs)
            for k, v in rr.items():
                out["reward" if k == "reward" else f"reasoning_{k}"][idx_r] = v
        if len(idx_n):
            rule = np.array([[r1_data.nonreasoning_score(problems[i], t) for t in texts[i]]
                             for i in idx_n], np.float32)
            out["nonreasoning_rule"][idx_n] = rule
            total = self.rule_weight * rule
            if self.score_fn is not None:
                flat_prompts = [self.prompt_of(problems[i]) for i in idx_n for _ in range(G)]
                flat_texts = [t for i in idx_n for t in texts[i]]
                rm = np.asarray(self.score_fn(flat_prompts, flat_texts),
                                np.float32).reshape(len(idx_n), G)
                out["rm_score"][idx_n] = rm
                total = total + self.rm_weight * rm
            out["reward"][idx_n] = total
        return out


@functools.partial(jax.jit, static_argnames="cfg")
def _final_logits(vparams, cfg, tokens, lengths):
    return verifiers.final_logits(vparams, cfg, tokens, lengths)


def _scorer(vparams, cfg, tokenizer, squash: bool, batch_size: int, length: int) -> ScoreFn:
    def score(prompts_: Sequence[str], completions: Sequence[str]) -> np.ndarray:
        seqs = [verifiers.encode_solution(tokenizer, p, [c])[0][-length:]
                for p, c in zip(prompts_, completions)]
        out = []
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size]
            chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))   # one shape: one compile
            tokens, lengths = verifiers.pad_batch(chunk, tokenizer.pad_id, length)
            logits = np.asarray(_final_logits(vparams, cfg, tokens, lengths))
            out.append(logits[:len(seqs[start:start + batch_size])])
        v = np.concatenate(out) if out else np.zeros((0,), np.float32)
        return 1.0 / (1.0 + np.exp(-v)) if squash else v
    return score


def bt_scorer(vparams, cfg, tokenizer, batch_size: int = 64, length: int = 256,
              squash: bool = False) -> ScoreFn:
    """The Bradley-Terry reward r (the value head at the last token of prompt + completion,
    encoded as `verifiers.make_pair_batch` encodes pairs, padded to `length` tokens; a longer
    one keeps its last `length` tokens) of each (prompt, completion); with `squash`,
    sigmoid(r) in (0, 1) (the same order: the probability of beating a reply scored 0)."""
    return _scorer(vparams, cfg, tokenizer, squash, batch_size, length)


def orm_scorer(vparams, cfg, tokenizer, batch_size: int = 64, length: int = 256) -> ScoreFn:
    """The ORM's probability of correctness (sigmoid of the value head at the last token)."""
    return _scorer(vparams, cfg, tokenizer, True, batch_size, length)


def pairwise_accuracy(score_fn: ScoreFn, pairs: Sequence[dict]) -> dict:
    """Share of preference pairs {"prompt", "chosen", "rejected", ...} the scorer orders
    correctly (chosen strictly above rejected), overall and per "rejected_kind"."""
    prompts_ = [p["prompt"] for p in pairs]
    chosen = score_fn(prompts_, [p["chosen"] for p in pairs])
    rejected = score_fn(prompts_, [p["rejected"] for p in pairs])
    right = np.asarray(chosen) > np.asarray(rejected)
    out = {"pairwise_accuracy": float(right.mean()) if len(pairs) else float("nan"),
           "num_pairs": len(pairs)}
    for kind in sorted({p.get("rejected_kind", "") for p in pairs} - {""}):
        sel = np.array([p.get("rejected_kind") == kind for p in pairs])
        out[f"pairwise_accuracy_{kind}"] = float(right[sel].mean())
    return out
