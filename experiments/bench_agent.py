"""Agent speed and quality on the synthetic landscape, no training involved.

Prints JSON: blocks/second sampled and learned from (propose + feedback + replay) in the
depth-23 space, the mean reward of Q-learning's epsilon <= 0.3 blocks, and the Q-learning
vs random margin: that mean minus random search's mean over as many blocks, per seed.
Those late blocks include repeats that a search serves from its cache; the distinct blocks
(what a search trains) and the mean of the ten best are printed beside, because a guided
search proposes distinct blocks only: at the same schedule it trains more of them, and
its late mean has no cached repeats of the best to lift it (docs/performance.md).

  python -m experiments.bench_agent [--schedule_scale=1.0] [--seeds=3] [--exploration=uniform]
      [--predictor]

With ``--predictor`` Q-learning proposes through the performance predictor
(``config.search.predictor.enabled``); random search stays unguided, the baseline.
"""

import json
import time

from absl import app
from absl import flags

from blockqnn_jax import strategies
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import surrogate
from configs import default

_SCALE = flags.DEFINE_float('schedule_scale', 1.0, 'Fraction of the paper schedule to run.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds for the Q-learning vs random comparison.')
_EXPLORATION = flags.DEFINE_enum('exploration', 'type_first', strategies.EXPLORATIONS,
                                 'config.search.exploration of both strategies.')
_PREDICTOR = flags.DEFINE_bool('predictor', False, 'Q-learning guided by the predictor.')


def run(strategy_name: str, seed: int, scale: float) -> tuple[list, float]:
  """One search on the landscape; returns its ``strategies.Sample``s and blocks/second."""
  config = default.get_config()
  config.search.strategy = strategy_name
  config.search.exploration = _EXPLORATION.value
  config.search.predictor.enabled = _PREDICTOR.value and strategy_name == 'qlearning'
  config.search.epsilon_schedule = tuple(
      (eps, max(1, round(n * scale))) for eps, n in config.search.epsilon_schedule)
  start = time.perf_counter()
  samples = surrogate.search_samples(config, seed)
  return samples, len(samples) / (time.perf_counter() - start)


def main(argv):
  del argv
  margins, late_means, rates, distinct, top_ten = [], [], [], [], []
  for seed in range(_SEEDS.value):
    learned, rate = run('qlearning', seed, _SCALE.value)
    baseline, _ = run('random', seed, _SCALE.value)
    late = [s.reward for s in learned if s.epsilon <= 0.3]
    tail = [s.reward for s in baseline][-len(late):]
    late_means.append(sum(late) / len(late))
    margins.append(late_means[-1] - sum(tail) / len(tail))
    rates.append(rate)
    fresh = sorted(s.reward for s in learned if s.fresh)
    distinct.append(len(fresh))
    top_ten.append(sum(fresh[-10:]) / len(fresh[-10:]))
  print(json.dumps({
      'hardware': f'{benchmarking.cpu()} (pure Python: one core used)',
      'exploration': _EXPLORATION.value,
      'predictor': _PREDICTOR.value,
      'blocks_per_search': len(learned),
      'qlearning_blocks_per_second': [round(r) for r in rates],
      'late_qlearning_reward': [round(m, 4) for m in late_means],
      'late_minus_random_reward': [round(m, 4) for m in margins],
      'distinct_qlearning_blocks': distinct,
      'top_ten_distinct_reward': [round(m, 4) for m in top_ten],
  }, indent=1))


if __name__ == '__main__':
  app.run(main)
