"""Rank correlations (Spearman, Kendall tau-b), to measure how well one score ranks blocks
by another, e.g. the early-stop reward by the accuracy after longer training.

Both handle ties as scipy.stats does (average ranks; tau-b's tie correction), so small
samples of rounded accuracies are scored fairly. Pure NumPy: O(n^2) Kendall is fine for
the tens of blocks one can afford to train twice. A constant input has no ranking: NaN.
"""

from __future__ import annotations

import numpy as np


def _pair(x, y) -> tuple[np.ndarray, np.ndarray]:
  x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
  if x.ndim != 1 or x.shape != y.shape or len(x) < 2:
    raise ValueError(f'rank correlation needs two 1-D sequences of one length >= 2, got '
                     f'shapes {x.shape} and {y.shape}')
  return x, y


def average_ranks(values) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of the ranks they span."""
  values = np.asarray(values, dtype=np.float64)
  order = np.argsort(values, kind='stable')
  ranks = np.empty(len(values))
  start = 0
  while start < len(values):
    end = start
    while end + 1 < len(values) and values[order[end + 1]] == values[order[start]]:
      end += 1
    ranks[order[start:end + 1]] = (start + end) / 2 + 1
    start = end + 1
  return ranks


def spearman(x, y) -> float:
  """Pearson's correlation of the average ranks."""
  x, y = _pair(x, y)
  rx, ry = average_ranks(x) - (len(x) + 1) / 2, average_ranks(y) - (len(y) + 1) / 2
  denominator = np.sqrt(np.sum(rx * rx) * np.sum(ry * ry))
  return float(np.sum(rx * ry) / denominator) if denominator > 0 else float('nan')


def kendall_tau_b(x, y) -> float:
  """(concordant - discordant) / sqrt((pairs - ties in x) (pairs - ties in y))."""
  x, y = _pair(x, y)
  upper = np.triu_indices(len(x), k=1)
  sx = np.sign(x[:, None] - x[None, :])[upper]
  sy = np.sign(y[:, None] - y[None, :])[upper]
  denominator = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
  return float(np.sum(sx * sy) / denominator) if denominator > 0 else float('nan')
