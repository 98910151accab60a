"""Does the early-stop score rank blocks as longer training does?

The paper's early-stop strategy rests on that claim, and on its redefined reward
(accuracy - mu * FLOPs term - rho * density term) ranking better than the early-stop
accuracy alone. This samples K distinct blocks (seeded, the config's exploration), trains
each with the early-stop recipe and with a longer one (``--long_factor`` x the epochs and
the decay interval, the same Adam recipe stretched), and reports the Spearman and Kendall
tau-b correlation of the longer-trained accuracy with the early-stop accuracy and with the
reward over a grid of (mu, rho). Writes ``early_stop_correlation.json`` and ``.png`` (a
scatter plot and a heat map; ``blockqnn_jax/analysis/rank_agreement.py``) into
``--workdir``.

  python -m experiments.early_stop_correlation --workdir=/tmp/esc \
      --config=configs/quickstart.py --k=16                          # digits, CPU
  python -m experiments.early_stop_correlation --workdir=/tmp/esc10 \
      --config=configs/cifar10.py --config.max_train_examples=5000 \
      --config.validation_examples=1000 --config.model.filters=8 --config.model.repeats=1 \
      --config.search.max_layers=4 --k=12                            # a CIFAR-10 subset
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from blockqnn_jax import check_config
from blockqnn_jax import child
from blockqnn_jax import nsc
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import rank_agreement

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/quickstart.py',
                                          'The search config: data, network, early stop.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the figure and JSON go.')
_K = flags.DEFINE_integer('k', 16, 'Distinct blocks to train twice.')
_LONG_FACTOR = flags.DEFINE_integer('long_factor', 4, 'Long recipe: this many times the '
                                    'early-stop epochs and decay interval.')
_MUS = flags.DEFINE_list('mus', ['0', '0.001', '0.01', '0.03', '0.1', '0.3', '1'],
                         'FLOPs weights of the grid.')
_RHOS = flags.DEFINE_list('rhos', ['0', '0.001', '0.01', '0.03', '0.1', '0.5', '1', '8'],
                          'Density weights of the grid.')
flags.mark_flag_as_required('workdir')

FILE = 'early_stop_correlation'


def measure(blocks: list[nsc.Block], config, long_config) -> list[dict]:
  """Trains every block with both recipes; one record per block."""
  early, longer = child.ChildEvaluator(config), child.ChildEvaluator(long_config)
  records = []
  for i, block in enumerate(blocks):
    short_result, long_result = early.evaluate(block), longer.evaluate(block)
    records.append({
        'codes': block.to_codes(),
        'early_accuracy': short_result['accuracy'],
        'long_accuracy': long_result['accuracy'],
        'ok': short_result['status'] == 'ok' and long_result['status'] == 'ok',
        'early_seconds': short_result['train_seconds'] + short_result['prepare_seconds'],
        'long_seconds': long_result['train_seconds'] + long_result['prepare_seconds'],
    })
    logging.info('block %d/%d: early %.4f, long %.4f', i + 1, len(blocks),
                 records[-1]['early_accuracy'], records[-1]['long_accuracy'])
  return records


def main(argv):
  del argv
  config = _CONFIG.value
  check_config.check_config(config)
  os.makedirs(_WORKDIR.value, exist_ok=True)
  start = time.time()
  blocks = rank_agreement.sample_blocks(config.search, _K.value, config.seed)
  long_config = rank_agreement.long_recipe(config, _LONG_FACTOR.value)
  records = measure(blocks, config, long_config)
  summary = rank_agreement.correlations(records, [float(m) for m in _MUS.value],
                                       [float(r) for r in _RHOS.value], config.model.filters)
  output = {
      'scale': {'dataset': config.dataset, 'max_train_examples': config.max_train_examples,
                'validation_examples': config.validation_examples,
                'filters': config.model.filters, 'repeats': config.model.repeats,
                'max_layers': config.search.max_layers,
                'exploration': config.search.exploration, 'k': _K.value,
                'early_epochs': config.early_stop.epochs,
                'long_epochs': long_config.early_stop.epochs},
      'hardware': benchmarking.hardware(),
      'seconds': time.time() - start,
      'correlations': summary,
      'records': records,
  }
  with open(os.path.join(_WORKDIR.value, f'{FILE}.json'), 'w') as f:
    json.dump(output, f, indent=1)
  rank_agreement.plot(records, summary, os.path.join(_WORKDIR.value, f'{FILE}.png'))
  early = summary['early_accuracy']
  print(f'{summary["blocks"]} blocks: early-stop accuracy vs {long_config.early_stop.epochs}'
        f'-epoch accuracy: Spearman {early["spearman"]:.3f}, Kendall {early["kendall"]:.3f};'
        f' figure and data in {_WORKDIR.value}/{FILE}.png/.json')


if __name__ == '__main__':
  app.run(main)
