"""The predictor study of ``experiments.predictor_study``: how well the predictor ranks
trained blocks it was not trained on, per encoding, against the number it was trained on.
"""

from __future__ import annotations

from matplotlib.figure import Figure
import numpy as np

from blockqnn_jax import predictor
from blockqnn_jax.analysis import correlation

MEASURES = ('spearman', 'kendall')


def distinct_results(records: list[dict]) -> list[dict]:
  """Each architecture's own evaluation once, in log order: cached repeats and transient
  results (a worker that died) left out."""
  seen, kept = set(), []
  for record in records:
    if not record['cached'] and not record.get('transient') and record['hash'] not in seen:
      seen.add(record['hash'])
      kept.append(record)
  return kept


def held_out_curves(features: np.ndarray, rewards: np.ndarray, sizes: list[int],
                    held_out: int, repeats: int, members: int, ridge: float) -> dict:
  """``repeats`` random splits (split r is permutation r of the rows, so every encoding of
  the same rows gets the same splits): its first ``held_out`` rows scored, the predictor
  trained on the next ``size`` rows for each size (nested training sets, one held-out
  set). Returns size -> measure -> the list of ``repeats`` values."""
  if held_out < 2 or max(sizes) + held_out > len(rewards) or min(sizes) < 2:
    raise ValueError(f'training sizes {sizes} and {held_out} held out need sizes >= 2, '
                     f'held_out >= 2 and at most {len(rewards)} blocks in all')
  curves = {size: {m: [] for m in MEASURES} for size in sizes}
  for repeat in range(repeats):
    order = np.random.default_rng(repeat).permutation(len(rewards))
    test = order[:held_out]
    for size in sizes:
      train = order[held_out:held_out + size]
      model = predictor.EnsemblePredictor(features.shape[1], members, ridge, repeat)
      for i in train:
        model.add(features[i], rewards[i])
      result = correlation.rank_correlations(model.predict(features[test])[0], rewards[test])
      for m in MEASURES:
        curves[size][m].append(result[m])
  return curves


def summarize(curves: dict) -> dict:
  """size -> measure -> {'mean', 'std'} over the splits."""
  return {size: {m: {'mean': round(float(np.mean(v)), 3), 'std': round(float(np.std(v)), 3)}
                 for m, v in by_measure.items()} for size, by_measure in curves.items()}


def plot(curves_by_encoding: dict, path: str, title: str) -> Figure:
  """Mean held-out Spearman and Kendall against the training size, one line per encoding,
  bars one standard deviation over the splits."""
  figure = Figure(figsize=(9, 4))
  for axes, measure in zip(figure.subplots(1, 2), MEASURES):
    for encoding, curves in curves_by_encoding.items():
      sizes = sorted(curves)
      axes.errorbar(sizes, [np.mean(curves[s][measure]) for s in sizes],
                    yerr=[np.std(curves[s][measure]) for s in sizes], marker='o', capsize=3,
                    label=encoding)
    axes.axhline(0.0, color='black', linewidth=0.8)
    axes.set_xlabel('blocks the predictor was trained on')
    axes.set_ylabel(f'held-out {measure}')
    axes.grid(alpha=0.3)
    axes.legend(loc='lower right')
  figure.suptitle(title)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  return figure
