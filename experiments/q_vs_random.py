"""Q-learning against random search at equal budget: the paper's efficiency figure.

Runs both strategies through ``search.run_search`` with the same config (so the same
number of sampled blocks) for each of ``--seeds`` seeds, then draws the mean and top-k
validation accuracy of each iteration's blocks against the iteration, averaged over seeds
(shaded: one standard deviation), both strategies on one plot with Q-learning's epsilon
schedule marked (the statistics and figure: ``blockqnn_jax/analysis/search_curves.py``).
Also reports each search's best ``--top_k`` distinct architectures, the comparison that
matters for picking a block. Writes ``q_vs_random.png`` and ``.json`` into ``--workdir``
(each search's own workdir, resumable, under it).

  python -m experiments.q_vs_random --workdir=/tmp/qvr --config=configs/quickstart.py
  python -m experiments.q_vs_random --workdir=/tmp/qvr_surrogate --surrogate \
      --config=configs/default.py        # the paper's space and schedule, no training
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
import ml_collections
import numpy as np
from ml_collections import config_flags

from blockqnn_jax import check_config
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import search_curves
from blockqnn_jax.analysis import surrogate

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/quickstart.py',
                                          'The search config both strategies run.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the searches, figure and JSON go.')
_SEEDS = flags.DEFINE_integer('seeds', 3, 'Seeds 0..N-1, one search per strategy each.')
_TOP_K = flags.DEFINE_integer('top_k', 5, 'k of the top-k accuracy.')
_SURROGATE = flags.DEFINE_bool('surrogate', False, 'Score blocks with the synthetic landscape '
                               '(blockqnn_jax/analysis/surrogate.py) instead of training.')
flags.mark_flag_as_required('workdir')

FILE = 'q_vs_random'

def run_one(config, strategy: str, seed: int, workdir: str, evaluate_fn) -> list[dict]:
  """One search (resumed if its workdir holds one); its results log."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.search.strategy, config.seed = strategy, seed
  search.run_search(config, workdir, evaluate_fn)
  return results.read_results(workdir)


def main(argv):
  del argv
  config = _CONFIG.value
  if not _SURROGATE.value:
    check_config.check_config(config)
  evaluate_fn = surrogate.synthetic_accuracy if _SURROGATE.value else None
  start = time.time()
  output = {'surrogate': _SURROGATE.value, 'seeds': _SEEDS.value, 'top_k': _TOP_K.value,
            'hardware': benchmarking.cpu() if _SURROGATE.value else benchmarking.hardware(),
            'scale': {'dataset': 'synthetic landscape' if _SURROGATE.value else config.dataset,
                      'max_layers': config.search.max_layers,
                      'exploration': config.search.exploration,
                      'blocks_per_search': config.search.blocks_per_iteration * sum(
                          n for _, n in config.search.epsilon_schedule)}}
  for strategy in search_curves.STRATEGIES:
    per_seed, best, evaluated = [], [], []
    for seed in range(_SEEDS.value):
      records = run_one(config, strategy, seed,
                        os.path.join(_WORKDIR.value, f'{strategy}_seed{seed}'), evaluate_fn)
      per_seed.append(search_curves.iteration_stats(records, _TOP_K.value))
      best.append(search_curves.best_distinct(records, _TOP_K.value))
      evaluated.append(len({r['hash'] for r in records}))
    output[strategy] = {**search_curves.across_seeds(per_seed), 'best_distinct': best,
                        'best_distinct_mean': [float(np.mean(b)) for b in best],
                        'architectures_trained': evaluated}
  output['seconds'] = time.time() - start
  with open(os.path.join(_WORKDIR.value, f'{FILE}.json'), 'w') as f:
    json.dump(output, f, indent=1)
  search_curves.plot(output, config.search.epsilon_schedule, _TOP_K.value,
                     os.path.join(_WORKDIR.value, f'{FILE}.png'))
  for strategy in search_curves.STRATEGIES:
    print(f'{strategy}: mean of the best {_TOP_K.value} distinct blocks per seed '
          f'{[round(v, 4) for v in output[strategy]["best_distinct_mean"]]}')
  print(f'figure and data in {_WORKDIR.value}/{FILE}.png/.json')


if __name__ == '__main__':
  app.run(main)
