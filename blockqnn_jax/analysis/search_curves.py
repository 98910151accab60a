"""Searches compared by their results logs: the accuracy per iteration of each strategy's
searches (mean and top-k), averaged over seeds, the best distinct architectures found, and
the figure of both strategies against the iteration with the epsilon phases marked
(``python -m experiments.q_vs_random`` runs the searches and uses these)."""

from __future__ import annotations

from matplotlib.figure import Figure
import numpy as np

STRATEGIES = ('qlearning', 'random')


def iteration_stats(records: list[dict], top_k: int) -> dict:
  """Per iteration: the mean accuracy of its blocks and the mean of its top_k (fewer where
  the iteration has fewer blocks)."""
  by_iteration: dict[int, list[float]] = {}
  for record in records:
    by_iteration.setdefault(record['iteration'], []).append(record['accuracy'])
  iterations = sorted(by_iteration)
  accuracies = [sorted(by_iteration[i], reverse=True) for i in iterations]
  return {'iteration': iterations,
          'mean': [float(np.mean(a)) for a in accuracies],
          'top_k': [float(np.mean(a[:top_k])) for a in accuracies]}


def best_distinct(records: list[dict], top_k: int) -> list[float]:
  """The top_k accuracies of distinct architectures over a whole search, best first."""
  best: dict[str, float] = {}
  for record in records:
    best[record['hash']] = max(best.get(record['hash'], 0.0), record['accuracy'])
  return sorted(best.values(), reverse=True)[:top_k]


def across_seeds(per_seed: list[dict]) -> dict:
  """Mean and standard deviation over seeds of each per-iteration statistic."""
  summary = {'iteration': per_seed[0]['iteration']}
  for name in ('mean', 'top_k'):
    values = np.array([s[name] for s in per_seed])
    summary[name] = values.mean(axis=0).tolist()
    summary[f'{name}_std'] = values.std(axis=0).tolist()
  return summary


def epsilon_changes(schedule) -> list[tuple[int, float]]:
  """(first iteration, epsilon) of each phase of the schedule."""
  changes, start = [], 0
  for epsilon, iterations in schedule:
    changes.append((start, float(epsilon)))
    start += int(iterations)
  return changes


def plot(summary: dict, schedule, top_k: int, path: str) -> Figure:
  """Mean and top-k accuracy per iteration, both strategies; epsilon phases marked.
  Returns the Figure, so tests can read what is drawn."""
  figure = Figure(figsize=(9, 5), layout='constrained')
  axes = figure.subplots()
  for strategy, color in zip(STRATEGIES, ('tab:blue', 'tab:orange')):
    stats = summary[strategy]
    x = np.array(stats['iteration'])
    for name, style, label in (('mean', '-', 'mean'), ('top_k', '--', f'top-{top_k}')):
      y, std = np.array(stats[name]), np.array(stats[f'{name}_std'])
      axes.plot(x, y, style, color=color, label=f'{strategy}: {label}')
      axes.fill_between(x, y - std, y + std, color=color, alpha=0.15, linewidth=0)
  for start, epsilon in epsilon_changes(schedule):
    axes.axvline(start - 0.5, color='grey', linestyle=':', linewidth=0.8)
    axes.annotate(f'ε={epsilon:g}', (start - 0.4, 1.0), xycoords=('data', 'axes fraction'),
                  rotation=90, va='top', fontsize=7, color='grey')
  axes.set(xlabel="iteration (Q-learning's epsilon phases marked)",
           ylabel='validation accuracy of the iteration\'s blocks',
           title=f'Q-learning vs random search, mean over {summary["seeds"]} seeds '
                 f'(shaded: 1 std)')
  axes.legend(loc='center left', fontsize=8)
  figure.savefig(path, dpi=120)
  return figure
