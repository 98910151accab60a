"""A performance predictor: a bootstrap ensemble of ridge regressions on a space's
feature vectors (``space.features``), giving a mean and a spread for any candidate.

Why this model. It is closed-form, so a fit is exact and deterministic; it learns from
tens of points; and on NAS-Bench-201 cells its held-out rank correlation after 100
training cells is what the search needs (docs/method.md, experiments/predictor_encodings.py).
Neither JAX (compile time, per-call dispatch far above a 400-wide solve) nor scikit-learn
(no incremental ridge) would be faster here.

How it stays cheap. A fit is recursive least squares: each member keeps its weights'
two parts, u = P X^T C y and v = P X^T C 1, where P = (X^T C X + lambda I)^-1 and C holds
the member's bootstrap counts; a new point x updates P (Sherman-Morrison) and u and v in
O(d) given P x, so no fit ever solves a system and the weights are u - mean x v. P itself
is kept as a matrix less up to ``fold`` pending rank-one terms, folded in by one matrix
product when full; P x reads only the rows of P where x is non-zero (the encodings are
mostly zeros). A point costs a quarter of a plain rank-one update of P, and a fit no
matrix product at all (docs/performance.md#the-predictor). The counts
are online bagging's (Oza and Russell, 2001): a Poisson(1) count per member and point,
drawn from a generator seeded by (seed, the point's index), so the ensemble after n points
depends only on the n points in their order and the seed: replaying a search's
evaluations rebuilds it exactly.

Each member fits the rewards centred on its own weighted mean; the prediction is that
mean plus x . w. The spread is the members' standard deviation.
"""

from __future__ import annotations

import numpy as np


# Rank-one terms of P held before one matrix product folds them in (``fold``): 32 measured
# fastest of 8 to 128 at 405 features (docs/performance.md).
FOLD = 32


class PredictorError(ValueError):
  """A fit that cannot be made: too few points, or features that cannot be used."""


class EnsemblePredictor:
  """``members`` ridge regressions (penalty ``ridge``) on bootstrap counts of the points
  added so far, in ``dimension``-wide feature space."""

  def __init__(self, dimension: int, members: int = 5, ridge: float = 1.0, seed: int = 0,
               fold: int = FOLD):
    if dimension < 1 or members < 1 or not ridge > 0 or fold < 1:
      raise ValueError(f'predictor needs dimension >= 1, members >= 1, ridge > 0 and fold '
                       f'>= 1, got {dimension}, {members}, {ridge}, {fold}')
    self.dimension, self.members, self.ridge, self.seed = dimension, members, ridge, seed
    self.fold = fold
    # P per member is inverse[m] - pending[m][:, :pending_count[m]] @ its transpose.
    self.inverse = np.broadcast_to(np.eye(dimension) / ridge,
                                   (members, dimension, dimension)).copy()
    self.pending = np.zeros((members, dimension, fold))
    self.pending_count = np.zeros(members, dtype=np.int64)
    self.u = np.zeros((members, dimension))  # P X^T C y
    self.v = np.zeros((members, dimension))  # P X^T C 1
    self.y_sum = np.zeros(members)           # 1^T C y
    self.count = np.zeros(members)           # 1^T C 1
    self.points = 0
    self._first: np.ndarray | None = None  # the first point's features, until one differs

  def add(self, features: np.ndarray, reward: float) -> None:
    """One evaluated point; a one-line PredictorError for a vector that cannot be used."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape != (self.dimension,) or not np.all(np.isfinite(x)) or not np.isfinite(reward):
      raise PredictorError(f'features of shape {x.shape} (finite: '
                           f'{bool(np.all(np.isfinite(x)))}) and reward {reward!r}: the '
                           f'predictor needs {self.dimension} finite values and a finite reward')
    if self.points == 0:
      self._first = x
    elif self._first is not None and not np.array_equal(x, self._first):
      self._first = None
    counts = np.random.default_rng([self.seed, self.points]).poisson(1.0, self.members)
    self.points += 1
    nonzero = np.flatnonzero(x)
    values = x[nonzero]
    for m in np.flatnonzero(counts):  # a member that drew 0 copies is unchanged
      px = self._times_p(m, nonzero, values)
      gain = counts[m] / (1.0 + counts[m] * (px[nonzero] @ values))
      self.u[m] += gain * (reward - self.u[m][nonzero] @ values) * px
      self.v[m] += gain * (1.0 - self.v[m][nonzero] @ values) * px
      self._subtract_from_p(m, np.sqrt(gain) * px)
    self.y_sum += counts * reward
    self.count += counts

  def _times_p(self, m: int, nonzero: np.ndarray, values: np.ndarray) -> np.ndarray:
    """P x for member m, from the rows of P where x is non-zero (P is symmetric)."""
    px = values @ self.inverse[m][nonzero]
    held = self.pending_count[m]
    if held:
      columns = self.pending[m][:, :held]
      px -= columns @ (values @ columns[nonzero])
    return px

  def _subtract_from_p(self, m: int, column: np.ndarray) -> None:
    """P -= column column^T: held pending, folded into the matrix ``fold`` at a time."""
    held = self.pending_count[m]
    self.pending[m][:, held] = column
    self.pending_count[m] = held + 1
    if held + 1 == self.fold:
      self.inverse[m] -= self.pending[m] @ self.pending[m].T
      self.pending_count[m] = 0

  def _fit(self) -> tuple[np.ndarray, np.ndarray]:
    """Each member's weights and weighted mean reward."""
    if self.points < 2 or np.any(self.count == 0):
      raise PredictorError(f'{self.points} points: every one of the {self.members} '
                           'members needs at least one to fit')
    if self._first is not None:
      raise PredictorError(f'all {self.points} points have the same features: the '
                           'encoding cannot tell them apart')
    mean = self.y_sum / self.count
    weights = self.u - mean[:, None] * self.v
    if not np.all(np.isfinite(weights)):
      raise PredictorError('the ridge weights are not finite')
    return weights, mean

  def member_predictions(self, features: np.ndarray) -> np.ndarray:
    """Each member's prediction for each row of ``features``: (members, rows)."""
    weights, mean = self._fit()
    return weights @ np.asarray(features, dtype=np.float64).T + mean[:, None]

  def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the spread (the members' standard deviation) for each row."""
    predictions = self.member_predictions(features)
    return predictions.mean(axis=0), predictions.std(axis=0)
