"""How well the redefined reward ranks NAS-Bench-201 cells by their final accuracy, next
to the early-stop score alone (the paper's second claim, over every cell of a table).

``study`` correlates (Spearman, Kendall tau-b) the final accuracy with the score and with
the reward of the score over a (mu, rho) grid for each data set; ``report`` and ``plot``
show it (``python -m experiments.nasbench201_correlation`` runs it on a table).
"""

from __future__ import annotations

import functools

from matplotlib.figure import Figure
import numpy as np

from blockqnn_jax.analysis import correlation
from blockqnn_jax.analysis import nasbench201

DEFAULT_WEIGHTS = (0.01, 0.01)  # config.reward's mu and rho (configs/default.py)


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
        for name, value in correlation.rank_correlations(reward(mu, rho), final).items():
          grid[name][i, j] = value
    i, j = np.unravel_index(np.nanargmax(grid['spearman']), grid['spearman'].shape)
    summary['datasets'][ds] = {
        'accuracy': correlation.rank_correlations(accuracy, final),
        'best': {'mu': mus[i], 'rho': rhos[j], 'spearman': grid['spearman'][i, j],
                 'kendall': grid['kendall'][i, j]},
        'default': {'mu': DEFAULT_WEIGHTS[0], 'rho': DEFAULT_WEIGHTS[1],
                    **correlation.rank_correlations(reward(*DEFAULT_WEIGHTS), final)},
        'grid': {name: values.tolist() for name, values in grid.items()},
    }
  mu, rho = best_weights(summary)
  for ds, result in summary['datasets'].items():  # does one data set's best carry over?
    accuracy = nasbench201.column(table, f'{ds}_{score}') / 100
    result['transfer'] = {'mu': mu, 'rho': rho, **correlation.rank_correlations(
        nasbench201.reward_from_terms(accuracy, terms, mu, rho),
        nasbench201.column(table, f'{ds}_{target}'))}
  return summary


def reference(summary: dict) -> str:
  """The data set whose best (mu, rho) is the default elsewhere: cifar10, else the first."""
  return 'cifar10' if 'cifar10' in summary['datasets'] else next(iter(summary['datasets']))


def best_weights(summary: dict) -> tuple[float, float]:
  """The reference data set's best (mu, rho)."""
  best = summary['datasets'][reference(summary)]['best']
  return best['mu'], best['rho']


def plot(summary: dict, path: str) -> Figure:
  """Spearman over the (mu, rho) grid, a panel per data set, the score alone in titles;
  the best cell framed."""
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
  return figure


def report(summary: dict) -> str:
  """The summary as a table, a row per data set, and how the reference's best transfers."""
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
