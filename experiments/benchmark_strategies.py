"""Search strategies on a tabular benchmark (NAS-Bench-201 or any table of the same form).

For each strategy and budget, ``--runs`` seeded runs, each until ``budget`` distinct
architectures are evaluated; a run's result is the report column (e.g. the 200-epoch test
accuracy) of the architecture it found with the highest reward (e.g. the 12-epoch
validation accuracy). Writes ``benchmark_strategies.json`` and ``.png`` (the best-so-far
report against evaluations, mean and 95% interval) into ``--workdir``; the last stdout
line is one JSON object with the results. Ctrl-C or SIGTERM while the runs execute stops
it with its worker processes, and nothing is written. ``--first_seed`` moves the seeds:
choose a setting on one range and report it on another.

  python -m experiments.benchmark_strategies \
    --table=../shared/data/nasbench201/nasbench201.csv --key_column=ops \
    --reward_column=cifar10_val12 --report_column=cifar10_test200 \
    --budgets=100,500 --runs=500 --strategies=qlearning,random,evolution --workdir=/tmp/bs

The agent's fields come from ``--config`` (``configs/default.py``), e.g.
``--config.search.learning_rate=0.5``; ``qlearning_paper`` is Q-learning with the
published values (``strategies.PAPER_QLEARNING``). A name with the suffix ``+predictor``
(``qlearning+predictor``, ``evolution+predictor``, ``random+predictor``) is that strategy
guided by the predictor (``config.search.predictor``, e.g.
``--config.search.predictor.kappa=1``); the JSON results use those names.
"""

from __future__ import annotations

import json
import os
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import strategy_comparison
from blockqnn_jax.analysis import tabular

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/default.py',
                                          'The config whose config.search the runs use.')
_TABLE = flags.DEFINE_string('table', None, 'The CSV: one row per architecture.')
_KEY = flags.DEFINE_string('key_column', 'ops', 'Column of digit keys, one per decision.')
_REWARD = flags.DEFINE_string('reward_column', None, 'What the search sees.')
_REPORT = flags.DEFINE_string('report_column', None, 'What is reported for its pick.')
_SIZES = flags.DEFINE_list('sizes', None, 'Choices per position (default: from the keys).')
_BUDGETS = flags.DEFINE_list('budgets', ['100', '500'], 'Distinct architectures per run.')
_RUNS = flags.DEFINE_integer('runs', 500, 'Seeded runs per strategy and budget.')
_FIRST_SEED = flags.DEFINE_integer(
    'first_seed', 0, 'The runs\' seeds are first_seed..first_seed+runs-1: choose a setting '
    'on one range, report it on another.')
_STRATEGIES = flags.DEFINE_list('strategies', ['qlearning', 'random', 'evolution'],
                                f'Any of {strategy_comparison.STRATEGIES}.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the JSON and the figure go.')
_BLOCKS = flags.DEFINE_integer(
    'blocks_per_iteration', 1, 'Architectures proposed per iteration (a table answers at '
    'once, so one by default); the replay scales with it.')
_PROCESSES = flags.DEFINE_integer('processes', 0, 'Worker processes (0: one per core).')
for _flag in ('table', 'reward_column', 'report_column', 'workdir'):
  flags.mark_flag_as_required(_flag)

FILE = 'benchmark_strategies'


def main(argv):
  del argv
  for name in _STRATEGIES.value:
    if name not in strategy_comparison.STRATEGIES:
      raise app.UsageError(f'--strategies: {name!r} is unknown, allowed '
                           f'{strategy_comparison.STRATEGIES}')
  if _FIRST_SEED.value < 0:
    raise app.UsageError(f'--first_seed: {_FIRST_SEED.value} is negative')
  budgets = sorted(int(b) for b in _BUDGETS.value)
  if budgets[0] < 1:
    raise app.UsageError(f'--budgets: {budgets[0]} is not a positive integer')
  try:
    table = tabular.load_table(_TABLE.value, _KEY.value, _REWARD.value, _REPORT.value,
                               [int(s) for s in _SIZES.value] if _SIZES.value else None)
  except (tabular.TableError, OSError) as error:
    raise app.UsageError(str(error)) from None
  start = time.time()
  search_config = _CONFIG.value.search
  try:
    curves = strategy_comparison.run_all(table, search_config, _STRATEGIES.value, budgets,
                                         _RUNS.value, _BLOCKS.value, _PROCESSES.value or None,
                                         _FIRST_SEED.value)
  except strategy_comparison.WorkerDied as error:
    sys.exit(f'benchmark_strategies: {error}; nothing written to {_WORKDIR.value}')
  output = {
      'results': strategy_comparison.summarize(curves),
      'table': os.path.abspath(_TABLE.value),
      'reward_column': _REWARD.value,
      'report_column': _REPORT.value,
      'optimum': table.best_report,
      'architectures': len(table.rewards),
      'blocks_per_iteration': _BLOCKS.value,
      'first_seed': _FIRST_SEED.value,
      'search_config': search_config.to_dict(),
      'seconds': round(time.time() - start, 1),
      'hardware': benchmarking.cpu(),
  }
  os.makedirs(_WORKDIR.value, exist_ok=True)
  with open(os.path.join(_WORKDIR.value, f'{FILE}.json'), 'w') as f:
    json.dump({**output, 'curves': {s: {str(b): strategy_comparison.mean_and_interval(c)[0]
                                        .tolist() for b, c in by_budget.items()}
                                    for s, by_budget in curves.items()}}, f)
  strategy_comparison.plot(
      curves, table.best_report, os.path.join(_WORKDIR.value, f'{FILE}.png'),
      f'{os.path.basename(_TABLE.value)}: {_REWARD.value} -> {_REPORT.value}')
  for strategy, by_budget in output['results'].items():
    print(strategy, ', '.join(f'{b}: {r["mean"]:.2f} +- {r["std"]:.2f}'
                              for b, r in by_budget.items()))
  print(json.dumps(output))


if __name__ == '__main__':
  app.run(main)
