"""A performance predictor: a bootstrap ensemble of ridge regressions on a space's
feature vectors (``space.features``), giving a mean and a spread for any candidate.

Why this model. It is closed-form, so a fit is exact and deterministic; it learns from
tens of points; and on NAS-Bench-201 cells its held-out rank correlation after 100
training cells is what the search needs (docs/method.md, experiments/predictor_encodings.py).
Neither JAX (compile time, per-call dispatch far above a 400-wide solve) nor scikit-learn
(no incremental ridge) would be faster here.

How it stays cheap. Each member keeps P = (X^T C X + lambda I)^-1 and the sums X^T C y,
X^T C 1 and 1^T C y, where C holds the member's bootstrap counts; a new point is a
Sherman-Morrison update of P, O(members x d^2), so no refit ever solves a system. The
counts are online bagging's (Oza and Russell, 2001): a Poisson(1) count per member and
point, drawn from a generator seeded by (seed, the point's index), so the ensemble after n
points depends only on the n points in their order and the seed: replaying a search's
evaluations rebuilds it exactly.

Each member fits the rewards centred on its own weighted mean; the prediction is that
mean plus x . w. The spread is the members' standard
deviation.
"""

from __future__ import annotations

import numpy as np


class PredictorError(ValueError):
  """A fit that cannot be made: too few points, or features that cannot be used."""


class EnsemblePredictor:
  """``members`` ridge regressions (penalty ``ridge``) on bootstrap counts of the points
  added so far, in ``dimension``-wide feature space."""

  def __init__(self, dimension: int, members: int = 5, ridge: float = 1.0, seed: int = 0):
    if dimension < 1 or members < 1 or not ridge > 0:
      raise ValueError(f'predictor needs dimension >= 1, members >= 1 and ridge > 0, got '
                       f'{dimension}, {members}, {ridge}')
    self.dimension, self.members, self.ridge, self.seed = dimension, members, ridge, seed
    self.inverse = np.broadcast_to(np.eye(dimension) / ridge,
                                   (members, dimension, dimension)).copy()
    self.xy = np.zeros((members, dimension))      # X^T C y
    self.x_sum = np.zeros((members, dimension))   # X^T C 1
    self.y_sum = np.zeros(members)                # 1^T C y
    self.count = np.zeros(members)                # 1^T C 1
    self.points = 0
    self._first: np.ndarray | None = None  # the first point's features, until one differs
    self._weights: tuple[np.ndarray, np.ndarray] | None = None  # (w, mean) per member

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
    self._weights = None
    for m in np.flatnonzero(counts):  # a member that drew 0 copies is unchanged
      px = self.inverse[m] @ x
      self.inverse[m] -= np.outer(px * (counts[m] / (1.0 + counts[m] * (px @ x))), px)
    self.xy += counts[:, None] * reward * x
    self.x_sum += counts[:, None] * x
    self.y_sum += counts * reward
    self.count += counts

  def _fit(self) -> tuple[np.ndarray, np.ndarray]:
    if self._weights is None:
      if self.points < 2 or np.any(self.count == 0):
        raise PredictorError(f'{self.points} points: every one of the {self.members} '
                             'members needs at least one to fit')
      if self._first is not None:
        raise PredictorError(f'all {self.points} points have the same features: the '
                             'encoding cannot tell them apart')
      mean = self.y_sum / self.count
      weights = np.einsum('mij,mj->mi', self.inverse,
                          self.xy - mean[:, None] * self.x_sum)
      if not np.all(np.isfinite(weights)):
        raise PredictorError('the ridge weights are not finite')
      self._weights = (weights, mean)
    return self._weights

  def member_predictions(self, features: np.ndarray) -> np.ndarray:
    """Each member's prediction for each row of ``features``: (members, rows)."""
    weights, mean = self._fit()
    return weights @ np.asarray(features, dtype=np.float64).T + mean[:, None]

  def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean and the spread (the members' standard deviation) for each row."""
    predictions = self.member_predictions(features)
    return predictions.mean(axis=0), predictions.std(axis=0)
