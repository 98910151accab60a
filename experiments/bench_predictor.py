"""The predictor's speed at ``--points`` evaluated architectures, on one core: a full
refit (every point replayed into a fresh predictor, as a resumed search rebuilds it), one
more point and its new weights (what a search pays per evaluation; the mean over
``MORE`` more, so that folding P's pending terms counts its share), and the ranking of
``--candidates`` candidates (their features and predictions). On NAS-Bench-201 cells
(405 features) and random NSC blocks (516), the rewards floored as the search's default
config floors them. Prints one JSON object.

  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python -m experiments.bench_predictor
"""

from __future__ import annotations

import copy
import json
import time

from absl import app
from absl import flags
import numpy as np

from blockqnn_jax import predictor
from blockqnn_jax import search_space
from blockqnn_jax.analysis import benchmarking
from configs import default

_POINTS = flags.DEFINE_integer('points', 1000, 'Evaluated architectures.')
_CANDIDATES = flags.DEFINE_integer('candidates', 200, 'Candidates ranked per proposal.')
_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timings per figure; the fastest is kept.')
_FOLD = flags.DEFINE_integer('fold', predictor.FOLD,
                             "Pending rank-one terms per fold of the predictor's P.")

MORE = 64  # points added after --points, one at a time, for the cost of one more
FLOOR_QUANTILE = default.get_config().search.predictor.floor_quantile


def random_architectures(space, count: int, rng: np.random.Generator) -> list:
  """Uniform random sequences, or NSC blocks drawn decision by decision."""
  archs = []
  for _ in range(count):
    state, taken = space.start, []
    while state is not None:
      actions = space.actions(state).actions
      taken.append(actions[rng.integers(len(actions))])
      state = space.step(state, taken[-1])
    archs.append(space.build(taken))
  return archs


def fastest(function, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    function()
    times.append(time.perf_counter() - start)
  return min(times)


def measure(space) -> dict:
  rng = np.random.default_rng(0)
  archs = random_architectures(space, _POINTS.value + MORE + _CANDIDATES.value, rng)
  features = np.stack([space.features(a) for a in archs[:_POINTS.value + MORE]])
  rewards = rng.random(len(features))

  def refit():
    model = predictor.EnsemblePredictor(space.feature_size, fold=_FOLD.value,
                                        floor_quantile=FLOOR_QUANTILE)
    for x, reward in zip(features[:_POINTS.value], rewards):
      model.add(x, reward)
    return model

  model = refit()

  def one_more():
    grown = copy.deepcopy(model)
    start = time.perf_counter()
    for x, reward in zip(features[_POINTS.value:], rewards[_POINTS.value:]):
      grown.add(x, reward)
      grown.predict(features[:1])
    return (time.perf_counter() - start) / MORE

  def rank():
    candidates = np.stack([space.features(a) for a in archs[-_CANDIDATES.value:]])
    return model.predict(candidates)

  return {
      'features': space.feature_size,
      'refit_s': round(fastest(refit, _REPEATS.value), 3),
      'one_more_point_ms': round(1e3 * min(one_more() for _ in range(_REPEATS.value)), 2),
      'rank_candidates_ms': round(1e3 * fastest(rank, _REPEATS.value), 2),
  }


def main(argv):
  del argv
  print(json.dumps({
      'points': _POINTS.value, 'candidates': _CANDIDATES.value,
      'nasbench201': measure(search_space.SequenceSpace([5] * 6)),
      'nsc': measure(search_space.NSCSpace()),
      'hardware': benchmarking.cpu(),
  }))


if __name__ == '__main__':
  app.run(main)
