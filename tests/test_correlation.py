"""Rank correlations against hand-computed cases, ties included."""

import warnings

import numpy as np
import pytest

from blockqnn_jax.analysis import correlation


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
    # Ties on both sides: average ranks (1.5, 1.5, 3, 4) and (1, 2.5, 2.5, 4), centred
    # (-1, -1, .5, 1.5) and (-1.5, 0, 0, 1.5): rho = 3.75 / sqrt(4.5 * 4.5). Of 6 pairs, 4
    # concordant, one tied in x, one in y: tau_b = 4 / sqrt(5 * 5) (tau_a 4/6, tau_c 0.75).
    ([1, 1, 2, 3], [1, 2, 2, 3], 5 / 6, 0.8),
    # Reversed with a shared tie: every untied pair discordant.
    ([1, 1, 2], [3, 3, 1], -1.0, -1.0),
])
def test_hand_computed_cases(x, y, rho, tau):
  assert correlation.spearman(x, y) == pytest.approx(rho)
  assert correlation.kendall_tau_b(x, y) == pytest.approx(tau)


def test_a_constant_score_has_no_ranking():
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # quietly: scipy's ConstantInputWarning is not raised
    for f in (correlation.spearman, correlation.kendall_tau_b):
      assert np.isnan(f([1, 2, 3], [0.5, 0.5, 0.5]))
      assert np.isnan(f([0.5, 0.5, 0.5], [1, 2, 3]))


def test_mismatched_lengths_are_a_clear_error():
  for f in (correlation.spearman, correlation.kendall_tau_b):
    with pytest.raises(ValueError, match=r'one length >= 2, got shapes \(3,\) and \(2,\)'):
      f([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r'got shapes \(1,\) and \(1,\)'):
      f([1], [2])
