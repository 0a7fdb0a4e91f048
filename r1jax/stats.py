"""Statistics for held-out results: intervals, paired differences, AUC and pass@k.

Pure numpy / Python, no model: every recipe reports its numbers with these. The problems are
the unit of independence throughout (each problem contributes one value per method).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def wilson_interval(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion k/n (95% at z = 1.96);
    (0.0, 1.0) when n = 0. k may be fractional (an average of per-problem accuracies times n)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def paired_difference(a: Sequence[float], b: Sequence[float], z: float = 1.96
                      ) -> tuple[float, float, float]:
    """(mean, lo, hi) of the per-problem difference a - b on the same problems: mean +- z
    standard errors (normal approximation; the problems are the unit of independence). Much
    tighter than comparing two unpaired intervals when a and b succeed on the same problems."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim != 1 or d.size < 2:
        raise ValueError(f"need two equal-length 1-D sequences of >= 2 problems, got {d.shape}")
    half = z * float(d.std(ddof=1)) / math.sqrt(d.size)
    return float(d.mean()), float(d.mean()) - half, float(d.mean()) + half


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """Area under the ROC curve: P(score of a random positive > a random negative), ties
    counting one half (Mann-Whitney U with average ranks).
    ValueError unless both classes are present and the lengths match."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in length")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs both classes, got {n_pos} positives and "
                         f"{n_neg} negatives")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, np.float64)
    # Average rank (1-based) for every run of tied scores.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    result = 1.0
    for i in range(n - c + 1, n + 1):
        result *= 1.0 - k / i
    return 1.0 - result
