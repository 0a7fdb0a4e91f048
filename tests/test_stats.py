"""Statistics: Wilson intervals, paired differences, ROC AUC and pass@k against hand-computed
and brute-force references."""
import itertools
import math

import numpy as np
import pytest

from r1jax import stats


def test_wilson_interval_reference_values():
    # Published values (e.g. Newcombe 1998, Table I): 8/10 -> 0.4902-0.9433; 0/10 -> 0-0.2775.
    np.testing.assert_allclose(stats.wilson_interval(8, 10), (0.4902, 0.9433), atol=1e-4)
    np.testing.assert_allclose(stats.wilson_interval(0, 10), (0.0, 0.2775), atol=1e-4)
    lo, hi = stats.wilson_interval(50, 100)
    assert lo < 0.5 < hi and math.isclose(lo + hi, 1.0)
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


def test_pass_at_k_against_brute_force():
    for n, c, k in [(5, 0, 1), (5, 5, 3), (6, 2, 1), (6, 2, 3), (10, 3, 5), (4, 1, 4)]:
        combos = list(itertools.combinations([1] * c + [0] * (n - c), k))
        ref = sum(any(x) for x in combos) / len(combos)
        assert stats.pass_at_k(n, c, k) == pytest.approx(ref)
    with pytest.raises(ValueError):
        stats.pass_at_k(3, 4, 1)


def test_roc_auc_against_pairwise_count():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)        # many ties
    labels = rng.uniform(size=200) < 0.3 + 0.1 * scores
    pos, neg = scores[labels], scores[~labels]
    ref = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    assert abs(stats.roc_auc(scores, labels) - ref) < 1e-12
    assert stats.roc_auc([0.1, 0.2, 0.9, 0.8], [0, 0, 1, 1]) == 1.0
    assert stats.roc_auc([0.9, 0.8, 0.1], [0, 0, 1]) == 0.0
    assert stats.roc_auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        stats.roc_auc([0.1, 0.2], [1, 1])


def test_paired_difference_hand_computed():
    mean, lo, hi = stats.paired_difference([1, 1, 0, 1], [0, 1, 0, 0])
    # d = [1, 0, 0, 1]: mean 0.5, sample sd sqrt(1/3), se sqrt(1/3) / 2
    assert mean == 0.5
    assert (lo, hi) == pytest.approx((0.5 - 1.96 * np.sqrt(1 / 3) / 2,
                                      0.5 + 1.96 * np.sqrt(1 / 3) / 2))
    assert stats.paired_difference([0.5, 0.5], [0.5, 0.5]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal-length"):
        stats.paired_difference([1.0], [0.0])
