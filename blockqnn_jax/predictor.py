"""A performance predictor: a bootstrap ensemble of ridge regressions on a space's
feature vectors (``space.features``), giving a mean and a spread for any candidate.

Why this model. It is closed-form, so a fit is exact and deterministic; it learns from
tens of points; and on NAS-Bench-201 cells its held-out rank correlation after 100
training cells is what the search needs (docs/method.md, experiments/predictor_encodings.py).
Neither JAX (compile time, per-call dispatch far above a 400-wide solve) nor scikit-learn
(no incremental ridge) would be faster here.

What it fits. Rewards below the ``floor_quantile`` quantile of those seen are raised to
it before each fit: a linear model with tens of points cannot fit both the failures (a
NAS-Bench-201 cell at 10% beside good ones at 90%) and the small differences between
good architectures, and it is only the latter that the search asks of it. At 0 the fit
is the plain ridge regression of the rewards. Measured on NAS-Bench-201
(docs/reproducing.md#the-predictors-floor-floor_quantile-075).

How it stays cheap. A fit is recursive least squares: with P = (X^T C X + lambda I)^-1,
C holding a member's bootstrap counts, each member keeps P X^T C 1 and the two parts of
P X^T C t, t the floored rewards: P X^T C (y of the points above the floor) and
P X^T C (1 of those below it), which the floor multiplies; the weights are a sum of the
three. A new point x updates P (Sherman-Morrison) and all three in O(d) given P x, and so
does a point that crosses the floor when it moves (0.3-0.4 a point added, on random
rewards at 0.75), so no fit ever solves a system or multiplies by P. P itself is kept as
a matrix less up to ``fold`` pending rank-one terms, folded in by one matrix product when
full; P x reads only the rows of P where x is non-zero (the encodings are mostly zeros).
A point costs a fraction of a plain rank-one update of P, and a fit no matrix product at
all (docs/performance.md#the-predictor). The counts are online bagging's (Oza and
Russell, 2001): a Poisson(1) count per member and point, drawn from a generator seeded
by (seed, the point's index), so the ensemble after n points depends only on the n
points in their order and the seed: replaying a search's evaluations rebuilds it
exactly.

Each member fits the floored rewards centred on their weighted mean; the prediction is
that mean plus x . w. The spread is the members' standard deviation.
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
  added so far, in ``dimension``-wide feature space, fit to the rewards floored at their
  ``floor_quantile`` quantile."""

  def __init__(self, dimension: int, members: int = 5, ridge: float = 1.0, seed: int = 0,
               fold: int = FOLD, floor_quantile: float = 0.0):
    if (dimension < 1 or members < 1 or not ridge > 0 or fold < 1
        or not 0 <= floor_quantile < 1):
      raise ValueError(f'predictor needs dimension >= 1, members >= 1, ridge > 0, fold '
                       f'>= 1 and 0 <= floor_quantile < 1, got {dimension}, {members}, '
                       f'{ridge}, {fold}, {floor_quantile}')
    self.dimension, self.members, self.ridge, self.seed = dimension, members, ridge, seed
    self.fold, self.floor_quantile = fold, floor_quantile
    # P per member is inverse[m] - pending[m][:, :pending_count[m]] @ its transpose.
    self.inverse = np.broadcast_to(np.eye(dimension) / ridge,
                                   (members, dimension, dimension)).copy()
    self.pending = np.zeros((members, dimension, fold))
    self.pending_count = np.zeros(members, dtype=np.int64)
    # The parts above and below the floor (a reward at the floor may be in either).
    self.above_part = np.zeros((members, dimension))  # P X^T C (y in the part above, else 0)
    self.below_part = np.zeros((members, dimension))  # P X^T C (1 in the part below, else 0)
    self.v = np.zeros((members, dimension))           # P X^T C 1
    self.above_sum = np.zeros(members)                # 1^T C (y in the part above)
    self.below_count = np.zeros(members)              # 1^T C (1 in the part below)
    self.count = np.zeros(members)                    # 1^T C 1
    self.floor = -np.inf
    self.points = 0
    # Each point's non-zero features, reward, bootstrap counts and whether it is in the part
    # below (arrays grown by doubling, valid up to ``points``): a point that crosses the
    # floor needs its P x again.
    self._nonzeros: list[tuple[np.ndarray, np.ndarray]] = []
    self._rewards = np.zeros(16)
    self._counts = np.zeros((16, members), dtype=np.int64)
    self._is_below = np.zeros(16, dtype=bool)
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
    reward = float(reward)
    counts = np.random.default_rng([self.seed, self.points]).poisson(1.0, self.members)
    is_below = reward < self.floor  # as the floor stands: most points then need no crossing
    nonzero = np.flatnonzero(x)
    values = x[nonzero]
    self._keep(nonzero, values, reward, counts, is_below)
    for m in np.flatnonzero(counts):  # a member that drew 0 copies is unchanged
      px = self._times_p(m, nonzero, values)
      gain = counts[m] / (1.0 + counts[m] * (px[nonzero] @ values))
      for part, target in ((self.above_part, 0.0 if is_below else reward),
                           (self.below_part, float(is_below)), (self.v, 1.0)):
        part[m] += gain * (target - part[m][nonzero] @ values) * px
      self._subtract_from_p(m, np.sqrt(gain) * px)
    self.count += counts
    self._move_sums(counts, reward, is_below, 1)
    self._move_floor()

  def _keep(self, nonzero: np.ndarray, values: np.ndarray, reward: float,
            counts: np.ndarray, is_below: bool) -> None:
    """Records a point for when it crosses the floor."""
    if self.points == len(self._rewards):
      self._rewards = np.concatenate([self._rewards, np.zeros_like(self._rewards)])
      self._counts = np.concatenate([self._counts, np.zeros_like(self._counts)])
      self._is_below = np.concatenate([self._is_below, np.zeros_like(self._is_below)])
    self._nonzeros.append((nonzero, values))
    self._rewards[self.points] = reward
    self._counts[self.points] = counts
    self._is_below[self.points] = is_below
    self.points += 1

  def _move_sums(self, counts: np.ndarray, reward: float, is_below: bool, sign: int) -> None:
    """Adds (sign 1) or removes (-1) a point's share of the sum above or the count below."""
    if is_below:
      self.below_count += sign * counts
    else:
      self.above_sum += sign * counts * reward

  def _move_floor(self) -> None:
    """The floor at the rewards' ``floor_quantile`` quantile, and each point whose target
    changes moved between the parts: its weight in P X^T C t goes from c y to c floor, or
    back. A reward at the floor has the same target in either part, so it stays where it
    is (else a group of equal rewards would cross at each move of the floor)."""
    n = self.points
    rewards, was_below = self._rewards[:n], self._is_below[:n]
    self.floor = float(np.quantile(rewards, self.floor_quantile))
    is_below = np.where(was_below, rewards <= self.floor, rewards < self.floor)
    for i in np.flatnonzero(is_below != was_below):
      (nonzero, values), reward, counts = self._nonzeros[i], rewards[i], self._counts[i]
      sign = 1.0 if is_below[i] else -1.0  # into the part below, or out of it
      for m in np.flatnonzero(counts):
        px = counts[m] * self._times_p(m, nonzero, values)
        self.above_part[m] -= sign * reward * px
        self.below_part[m] += sign * px
      self._move_sums(counts, reward, not is_below[i], -1)
      self._move_sums(counts, reward, bool(is_below[i]), 1)
    self._is_below[:n] = is_below

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
    """Each member's weights and weighted mean target."""
    if self.points < 2 or np.any(self.count == 0):
      raise PredictorError(f'{self.points} points: every one of the {self.members} '
                           'members needs at least one to fit')
    if self._first is not None:
      raise PredictorError(f'all {self.points} points have the same features: the '
                           'encoding cannot tell them apart')
    mean = (self.above_sum + self.floor * self.below_count) / self.count
    weights = self.above_part + self.floor * self.below_part - mean[:, None] * self.v
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
