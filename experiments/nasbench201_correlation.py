"""The paper's second claim at full scale: does the redefined reward rank cells as the
fully trained accuracy does better than the early-stop accuracy alone?

Over every cell of NAS-Bench-201 (a table, no training), for each data set: the Spearman
and Kendall tau-b correlation of the final accuracy (``{ds}_test200``, never seen by a
search) with the early-stop score (``{ds}_val12``), and with the redefined reward of that
score (blockqnn_jax/nasbench201.py) over a grid of (mu, rho), negative weights included.
Prints a table and, as its last line, one JSON object; writes ``nasbench201_correlation``
``.json`` and ``.png`` (Spearman over the grid, a panel per data set) into ``--workdir``.
With ``--write_table``, also writes the table with ``{ds}_redefined12`` columns: the
reward of ``{ds}_val12`` at ``--mu``/``--rho``, in percent like the column it stands in
for, so a search benchmark can use it as its reward column.

  PYTHONPATH=. python experiments/nasbench201_correlation.py \
      --table=../shared/data/nasbench201/nasbench201.csv --workdir=/tmp/nb201
"""

from __future__ import annotations

import csv
import functools
import json
import os
import time

from absl import app
from absl import flags
from matplotlib.figure import Figure
import numpy as np

from blockqnn_jax import correlation
from blockqnn_jax import nasbench201

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
DEFAULT_WEIGHTS = (0.01, 0.01)  # config.reward's mu and rho (configs/default.py)


def rank_correlations(x, y) -> dict:
  return {'spearman': correlation.spearman(x, y), 'kendall': correlation.kendall_tau_b(x, y)}


def study(table: dict, datasets: list[str], mus: list[float], rhos: list[float],
          score: str = 'val12', target: str = 'test200') -> dict:
  """Per data set: the score's and the reward's correlations with the target; the grid is
  indexed [mu][rho]. Accuracies are percent in the table, fractions in the reward."""
  ops = nasbench201.column(table, 'ops')
  terms = nasbench201.reward_terms(ops)  # once for the whole grid
  summary = {'cells': len(ops), 'score': score, 'target': target, 'mus': list(mus),
             'rhos': list(rhos), 'datasets': {}}
  for ds in datasets:
    accuracy = nasbench201.column(table, f'{ds}_{score}') / 100
    final = nasbench201.column(table, f'{ds}_{target}')
    reward = functools.partial(nasbench201.reward_from_terms, accuracy, terms)
    grid = {'spearman': np.zeros((len(mus), len(rhos))),
            'kendall': np.zeros((len(mus), len(rhos)))}
    for i, mu in enumerate(mus):
      for j, rho in enumerate(rhos):
        for name, value in rank_correlations(reward(mu, rho), final).items():
          grid[name][i, j] = value
    i, j = np.unravel_index(np.nanargmax(grid['spearman']), grid['spearman'].shape)
    summary['datasets'][ds] = {
        'accuracy': rank_correlations(accuracy, final),
        'best': {'mu': mus[i], 'rho': rhos[j], 'spearman': grid['spearman'][i, j],
                 'kendall': grid['kendall'][i, j]},
        'default': {'mu': DEFAULT_WEIGHTS[0], 'rho': DEFAULT_WEIGHTS[1],
                    **rank_correlations(reward(*DEFAULT_WEIGHTS), final)},
        'grid': {name: values.tolist() for name, values in grid.items()},
    }
  mu, rho = best_weights(summary)
  for ds, result in summary['datasets'].items():  # does one data set's best carry over?
    accuracy = nasbench201.column(table, f'{ds}_{score}') / 100
    result['transfer'] = {'mu': mu, 'rho': rho, **rank_correlations(
        nasbench201.reward_from_terms(accuracy, terms, mu, rho),
        nasbench201.column(table, f'{ds}_{target}'))}
  return summary


def reference(summary: dict) -> str:
  """The data set whose best (mu, rho) is the default elsewhere: cifar10, else the first."""
  return 'cifar10' if 'cifar10' in summary['datasets'] else next(iter(summary['datasets']))


def best_weights(summary: dict) -> tuple[float, float]:
  best = summary['datasets'][reference(summary)]['best']
  return best['mu'], best['rho']


def write_table(source: str, path: str, datasets: list[str], mu: float, rho: float,
                score: str = 'val12') -> None:
  """Copies the CSV row by row (every value as written: ``ops`` keeps its leading zeros),
  adding ``{ds}_redefined12``: the reward of ``{ds}_{score}``, in percent."""
  table = nasbench201.read_table(source)
  added = {f'{ds}_redefined12': 100 * nasbench201.redefined_reward(
      nasbench201.column(table, f'{ds}_{score}') / 100, table['ops'], mu, rho)
           for ds in datasets}
  with open(source, newline='') as f:
    rows = list(csv.reader(f))
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f, lineterminator='\n')
    writer.writerow(rows[0] + list(added))
    for k, row in enumerate(rows[1:]):
      writer.writerow(row + [f'{values[k]:.4f}' for values in added.values()])


def plot(summary: dict, path: str) -> None:
  """Spearman over the (mu, rho) grid, a panel per data set, the score alone in titles."""
  datasets = summary['datasets']
  figure = Figure(figsize=(5 * len(datasets), 4.5), layout='constrained')
  axes = np.atleast_1d(figure.subplots(1, len(datasets)))
  for axis, (ds, result) in zip(axes, datasets.items()):
    values = np.array(result['grid']['spearman'], dtype=float)
    image = axis.imshow(values, cmap='viridis', origin='lower', aspect='auto')
    bright = np.nanmin(values) + 0.6 * (np.nanmax(values) - np.nanmin(values))
    for (i, j), value in np.ndenumerate(values):
      axis.text(j, i, f'{value:.3f}', ha='center', va='center', fontsize=6,
                color='k' if value > bright else 'w')
    best = result['best']
    axis.plot(summary['rhos'].index(best['rho']), summary['mus'].index(best['mu']), 'rs',
              fillstyle='none', markersize=14)
    axis.set(xticks=range(len(summary['rhos'])), yticks=range(len(summary['mus'])),
             xticklabels=summary['rhos'], yticklabels=summary['mus'],
             xlabel='rho (density weight)', ylabel='mu (FLOPs weight)',
             title=f'{ds}: {summary["score"]} alone {result["accuracy"]["spearman"]:.3f}, '
                   f'best {best["spearman"]:.3f}')
    axis.tick_params(axis='x', labelrotation=90)
    figure.colorbar(image, ax=axis, label=f'Spearman with {summary["target"]}')
  figure.savefig(path, dpi=120)


def report(summary: dict) -> str:
  lines = [f'{summary["cells"]} cells: rank correlation with {summary["target"]} '
           '(Spearman / Kendall tau-b)',
           f'{"data set":16}{summary["score"] + " alone":>16}{"mu=rho=0.01":>16}'
           f'{"best (mu, rho)":>18}{"best":>16}']
  pair = lambda r: f'{r["spearman"]:.3f} / {r["kendall"]:.3f}'
  for ds, result in summary['datasets'].items():
    best = result['best']
    weights = f'({best["mu"]:g}, {best["rho"]:g})'
    lines.append(f'{ds:16}{pair(result["accuracy"]):>16}{pair(result["default"]):>16}'
                 f'{weights:>18}{pair(best):>16}')
  mu, rho = best_weights(summary)
  lines.append(f'at {reference(summary)}\'s best ({mu:g}, {rho:g}): ' + ', '.join(
                   f'{ds} {pair(r["transfer"])}' for ds, r in summary['datasets'].items()))
  return '\n'.join(lines)


def main(argv):
  del argv
  start = time.time()
  os.makedirs(_WORKDIR.value, exist_ok=True)
  table = nasbench201.read_table(_TABLE.value)
  summary = study(table, _DATASETS.value, [float(m) for m in _MUS.value],
                  [float(r) for r in _RHOS.value], _SCORE.value, _TARGET.value)
  summary['table'] = os.path.abspath(_TABLE.value)
  if _WRITE_TABLE.value:
    mu, rho = best_weights(summary)
    mu = mu if _MU.value is None else _MU.value
    rho = rho if _RHO.value is None else _RHO.value
    write_table(_TABLE.value, _WRITE_TABLE.value, _DATASETS.value, mu, rho, _SCORE.value)
    summary['written_table'] = {'path': os.path.abspath(_WRITE_TABLE.value), 'mu': mu,
                                'rho': rho}
  summary['seconds'] = time.time() - start
  with open(os.path.join(_WORKDIR.value, f'{FILE}.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  plot(summary, os.path.join(_WORKDIR.value, f'{FILE}.png'))
  print(report(summary))
  print(f'figure and data in {_WORKDIR.value}/{FILE}.png/.json')
  line = {key: value for key, value in summary.items() if key != 'datasets'}
  line['datasets'] = {ds: {k: v for k, v in result.items() if k != 'grid'}
                      for ds, result in summary['datasets'].items()}
  print(json.dumps(line))


if __name__ == '__main__':
  app.run(main)
