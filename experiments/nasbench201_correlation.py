"""The paper's second claim at full scale: does the redefined reward rank cells as the
fully trained accuracy does better than the early-stop accuracy alone?

Over every cell of NAS-Bench-201 (a table, no training), for each data set: the Spearman
and Kendall tau-b correlation of the final accuracy (``{ds}_test200``, never seen by a
search) with the early-stop score (``{ds}_val12``), and with the redefined reward of that
score (``blockqnn_jax/analysis/nasbench201.py``) over a grid of (mu, rho), negative
weights included.
Prints a table and, as its last line, one JSON object; writes ``nasbench201_correlation``
``.json`` and ``.png`` (Spearman over the grid, a panel per data set) into ``--workdir``.
With ``--write_table``, also writes the table with ``{ds}_redefined12`` columns: the
reward of ``{ds}_val12`` at ``--mu``/``--rho``, in percent like the column it stands in
for, so a search benchmark can use it as its reward column. The study, its table and
figure are ``blockqnn_jax/analysis/nasbench201_ranking.py``.

  python -m experiments.nasbench201_correlation \
      --table=../shared/data/nasbench201/nasbench201.csv --workdir=/tmp/nb201
"""

from __future__ import annotations

import json
import os
import time

from absl import app
from absl import flags

from blockqnn_jax.analysis import nasbench201
from blockqnn_jax.analysis import nasbench201_ranking

_TABLE = flags.DEFINE_string('table', None, 'The NAS-Bench-201 CSV (one row per cell).')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Where the figure and JSON go.')
_DATASETS = flags.DEFINE_list('datasets', ['cifar10', 'cifar100', 'imagenet16_120'],
                              'Column prefixes of the data sets.')
_SCORE = flags.DEFINE_string('score', 'val12', 'The early-stop score a search sees.')
_TARGET = flags.DEFINE_string('target', 'test200', 'The accuracy to rank by.')
# The optimum is near mu = -0.1, rho = -0.03 on this table; the grid brackets it.
_MUS = flags.DEFINE_list('mus', ['-0.5', '-0.3', '-0.2', '-0.15', '-0.1', '-0.07', '-0.05',
                                 '-0.02', '-0.01', '0', '0.01', '0.02', '0.05'],
                         'FLOPs weights (mu) of the grid.')
_RHOS = flags.DEFINE_list('rhos', ['-0.2', '-0.1', '-0.05', '-0.03', '-0.02', '-0.01', '0',
                                   '0.01', '0.02', '0.05'],
                          'Density weights (rho) of the grid.')
_WRITE_TABLE = flags.DEFINE_string('write_table', None, 'Also write the table with '
                                   '{ds}_redefined12 columns here.')
_MU = flags.DEFINE_float('mu', None, 'mu of --write_table; default: the best on cifar10 '
                         '(else the first of --datasets).')
_RHO = flags.DEFINE_float('rho', None, 'rho of --write_table; default as --mu.')
flags.mark_flags_as_required(['table', 'workdir'])

FILE = 'nasbench201_correlation'


def main(argv):
  del argv
  start = time.time()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  table = nasbench201.read_table(_TABLE.value)
  summary = nasbench201_ranking.study(
      table, _DATASETS.value, [float(m) for m in _MUS.value], [float(r) for r in _RHOS.value],
      _SCORE.value, _TARGET.value)
  summary['table'] = os.path.abspath(_TABLE.value)
  if _WRITE_TABLE.value:
    mu, rho = nasbench201_ranking.best_weights(summary)
    mu = mu if _MU.value is None else _MU.value
    rho = rho if _RHO.value is None else _RHO.value
    nasbench201.add_reward_columns(_TABLE.value, _WRITE_TABLE.value, _DATASETS.value, mu,
                                   rho, _SCORE.value)
    summary['written_table'] = {'path': os.path.abspath(_WRITE_TABLE.value), 'mu': mu,
                                'rho': rho}
  summary['seconds'] = time.time() - start
  with open(os.path.join(_WORKDIR.value, f'{FILE}.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  nasbench201_ranking.plot(summary, os.path.join(_WORKDIR.value, f'{FILE}.png'))
  print(nasbench201_ranking.report(summary))
  print(f'figure and data in {_WORKDIR.value}/{FILE}.png/.json')
  line = {key: value for key, value in summary.items() if key != 'datasets'}
  line['datasets'] = {ds: {k: v for k, v in result.items() if k != 'grid'}
                      for ds, result in summary['datasets'].items()}
  print(json.dumps(line))


if __name__ == '__main__':
  app.run(main)
