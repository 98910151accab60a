"""Rank correlations against hand-computed cases and scipy.stats."""

import numpy as np
import pytest
from scipy import stats

from blockqnn_jax import correlation


def test_ties_share_their_average_rank():
  np.testing.assert_array_equal(correlation.average_ranks([0.3, 0.1, 0.3, 0.2, 0.3]),
                                [4, 1, 4, 2, 4])


@pytest.mark.parametrize('x, y, rho, tau', [
    # Same order, reversed order.
    ([1, 2, 3, 4], [10, 20, 30, 40], 1.0, 1.0),
    ([1, 2, 3, 4], [4, 3, 2, 1], -1.0, -1.0),
    # One swap of a neighbouring pair: d = (0, 1, -1, 0), rho = 1 - 6 * 2 / (4 * 15);
    # 5 concordant, 1 discordant of 6 pairs.
    ([1, 2, 3, 4], [1, 3, 2, 4], 0.8, 4 / 6),
    # A tie in y: centred ranks (-1, 0, 1) and (-1, 0.5, 0.5), so
    # rho = (1 + 0 + 0.5) / sqrt(2 * 1.5); pairs (1,2) and (1,3) are concordant, (2,3) tied
    # in y: tau_b = 2 / sqrt(3 * 2).
    ([1, 2, 3], [5, 7, 7], np.sqrt(3) / 2, 2 / np.sqrt(6)),
])
def test_hand_computed_cases(x, y, rho, tau):
  assert correlation.spearman(x, y) == pytest.approx(rho)
  assert correlation.kendall_tau_b(x, y) == pytest.approx(tau)


def test_random_samples_with_ties_match_scipy():
  rng = np.random.default_rng(0)
  for n in (2, 5, 17, 40):
    x = rng.integers(0, 6, size=n).astype(float)  # many ties on both sides
    y = x + rng.integers(-3, 4, size=n)
    if len(set(x)) < 2 or len(set(y)) < 2:
      continue
    assert correlation.spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert correlation.kendall_tau_b(x, y) == pytest.approx(
        stats.kendalltau(x, y, variant='b').statistic)


def test_a_constant_score_has_no_ranking():
  assert np.isnan(correlation.spearman([1, 2, 3], [0.5, 0.5, 0.5]))
  assert np.isnan(correlation.kendall_tau_b([0.5, 0.5, 0.5], [1, 2, 3]))


def test_mismatched_lengths_are_a_clear_error():
  with pytest.raises(ValueError, match=r'one length >= 2, got shapes \(3,\) and \(2,\)'):
    correlation.spearman([1, 2, 3], [1, 2])
