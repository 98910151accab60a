"""Does the early-stop score rank blocks as longer training does? Which blocks to train,
the longer recipe, the rank correlations of the longer-trained accuracy with the early-stop
accuracy and with the reward over a (mu, rho) grid, and their figure
(``python -m experiments.early_stop_correlation`` trains the blocks and uses these)."""

from __future__ import annotations

from matplotlib.figure import Figure
import ml_collections
import numpy as np

from blockqnn_jax import nsc
from blockqnn_jax import reward as reward_lib
from blockqnn_jax import strategies
from blockqnn_jax.analysis import correlation


def sample_blocks(search_config, k: int, seed: int) -> list[nsc.Block]:
  """k architectures (distinct canonical hashes) drawn as random search draws them."""
  sampler = strategies.make_strategy(ml_collections.ConfigDict(
      {**search_config.to_dict(), 'strategy': 'random'}), seed)
  blocks, seen = [], set()
  for _ in range(100 * k):
    block = sampler.propose()
    if block.canonical_hash() not in seen:
      seen.add(block.canonical_hash())
      blocks.append(block)
      if len(blocks) == k:
        return blocks
  raise ValueError(f'--k={k} is more distinct blocks than the space gave in {100 * k} draws')


def long_recipe(config, factor: int):
  """The early-stop recipe stretched: factor x the epochs and the decay interval."""
  long_config = ml_collections.ConfigDict(config.to_dict())
  long_config.early_stop.epochs = config.early_stop.epochs * factor
  long_config.early_stop.lr_decay_epochs = config.early_stop.lr_decay_epochs * factor
  return long_config


def correlations(records: list[dict], mus: list[float], rhos: list[float],
                 filters: int) -> dict:
  """The longer-trained accuracy's rank correlation with the early-stop accuracy, and with
  the reward at every (mu, rho); failed children are left out."""
  ok = [r for r in records if r['ok']]
  blocks = [nsc.Block.from_codes(r['codes']) for r in ok]
  early = [r['early_accuracy'] for r in ok]
  final = [r['long_accuracy'] for r in ok]
  grid = {'spearman': [], 'kendall': []}
  for mu in mus:
    row = {'spearman': [], 'kendall': []}
    for rho in rhos:
      weights = ml_collections.ConfigDict({'flops_weight': mu, 'density_weight': rho})
      rewards = [reward_lib.reward_terms(b, a, weights, filters)['reward']
                 for b, a in zip(blocks, early)]
      for name, value in correlation.rank_correlations(rewards, final).items():
        row[name].append(value)
    for name in grid:
      grid[name].append(row[name])
  return {'blocks': len(ok), 'early_accuracy': correlation.rank_correlations(early, final),
          'mus': list(mus), 'rhos': list(rhos), 'reward': grid}


def plot(records: list[dict], summary: dict, path: str) -> Figure:
  """Scatter of long vs early-stop accuracy; heat map of Spearman's rho over (mu, rho).
  Returns the Figure, so tests can read what is drawn."""
  figure = Figure(figsize=(11, 4.5), layout='constrained')
  scatter, heat = figure.subplots(1, 2)
  ok = [r for r in records if r['ok']]
  scatter.scatter([r['early_accuracy'] for r in ok], [r['long_accuracy'] for r in ok])
  early = summary['early_accuracy']
  scatter.set(xlabel='early-stop validation accuracy',
              ylabel='longer-trained validation accuracy',
              title=f'{len(ok)} blocks: Spearman {early["spearman"]:.2f}, '
                    f'Kendall {early["kendall"]:.2f}')
  values = np.array(summary['reward']['spearman'], dtype=float)
  image = heat.imshow(values, cmap='viridis', vmin=-1, vmax=1, origin='lower')
  for (i, j), value in np.ndenumerate(values):
    heat.text(j, i, f'{value:.2f}', ha='center', va='center', fontsize=7,
              color='black' if value > 0.3 else 'white')
  heat.set_xticks(range(len(summary['rhos'])), [f'{v:g}' for v in summary['rhos']])
  heat.set_yticks(range(len(summary['mus'])), [f'{v:g}' for v in summary['mus']])
  heat.set(xlabel='rho (density weight)', ylabel='mu (FLOPs weight)',
           title="reward's Spearman correlation with longer-trained accuracy")
  figure.colorbar(image, ax=heat)
  figure.savefig(path, dpi=120)
  return figure
