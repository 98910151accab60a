"""How well the predictor ranks architectures it has not seen, per encoding and ridge
penalty: held-out Spearman and Kendall tau-b against the number of training architectures.

Sequences (NAS-Bench-201, each data set's 12-epoch validation accuracy): ``one_hot``
(each edge's operation) against ``features`` (one-hot plus each pair of edges'
operations). NSC blocks (the synthetic landscape, ``analysis.surrogate``; random blocks as
random search draws them): operation counts, the canonical form's operations by position
and its adjacency, and both (``features``). Each point: ``--repeats`` random training
sets, the same ``--held_out`` architectures scored. Prints one JSON object.

  python -m experiments.predictor_encodings \
    --table=../shared/data/nasbench201/nasbench201.csv --train=25,50,100,200,400
"""

from __future__ import annotations

import json

from absl import app
from absl import flags
import ml_collections
import numpy as np

from blockqnn_jax import predictor
from blockqnn_jax import search_space
from blockqnn_jax import strategies
from blockqnn_jax.analysis import correlation
from blockqnn_jax.analysis import surrogate
from blockqnn_jax.analysis import tabular

_TABLE = flags.DEFINE_string('table', None, 'NAS-Bench-201 as one CSV (its README).')
_DATASETS = flags.DEFINE_list('datasets', ['cifar10', 'cifar100', 'imagenet16_120'],
                              'Column prefixes: <name>_val12 is the reward.')
_TRAIN = flags.DEFINE_list('train', ['25', '50', '100', '200', '400'],
                           'Training architectures per fit.')
_RIDGES = flags.DEFINE_list('ridges', ['0.1', '1', '10'], 'Ridge penalties compared.')
_REPEATS = flags.DEFINE_integer('repeats', 10, 'Random training sets per point.')
_HELD_OUT = flags.DEFINE_integer('held_out', 2000, 'Architectures scored, never trained on.')
_MEMBERS = flags.DEFINE_integer('members', 5, 'Ensemble members.')
flags.mark_flag_as_required('table')


def held_out_correlations(features: np.ndarray, rewards: np.ndarray, train: int,
                          ridge: float, repeats: int, held_out: int) -> dict:
  """Mean Spearman and Kendall of the predicted against the real rewards of ``held_out``
  architectures, over ``repeats`` fits on ``train`` others drawn at random."""
  rng = np.random.default_rng(0)
  order = rng.permutation(len(rewards))
  test, pool = order[:held_out], order[held_out:]
  scores = []
  for repeat in range(repeats):
    chosen = rng.choice(pool, size=train, replace=False)
    model = predictor.EnsemblePredictor(features.shape[1], _MEMBERS.value, ridge, repeat)
    for i in chosen:
      model.add(features[i], rewards[i])
    scores.append(correlation.rank_correlations(model.predict(features[test])[0],
                                                rewards[test]))
  return {name: round(float(np.mean([s[name] for s in scores])), 3)
          for name in ('spearman', 'kendall')}


def sweep(encodings: dict, rewards: np.ndarray) -> dict:
  return {name: {f'ridge={ridge}': {
      n: held_out_correlations(features, rewards, int(n), float(ridge), _REPEATS.value,
                               _HELD_OUT.value) for n in _TRAIN.value}
      for ridge in _RIDGES.value} for name, features in encodings.items()}


def nsc_blocks(count: int) -> list:
  """Distinct random blocks as random search draws them (type-first exploration)."""
  config = ml_collections.ConfigDict({'max_layers': 23, 'epsilon_schedule': ((1.0, 1),),
                                      'blocks_per_iteration': 1,
                                      'exploration': 'type_first', 'strategy': 'random'})
  strategy = strategies.make_strategy(config, seed=0)
  blocks = {}
  while len(blocks) < count:
    block = strategy.propose()
    blocks.setdefault(strategy.space.key(block), block)
  return list(blocks.values())


def main(argv):
  del argv
  results = {}
  for dataset in _DATASETS.value:
    table = tabular.load_table(_TABLE.value, 'ops', f'{dataset}_val12', f'{dataset}_test200')
    archs = [table.space.parse_key(k) for k in table.rewards]
    rewards = np.array(list(table.rewards.values()))
    results[f'nasbench201/{dataset}'] = sweep({
        'one_hot': np.stack([table.space.one_hot(a) for a in archs]),
        'one_hot+pairs (features)': np.stack([table.space.features(a) for a in archs]),
    }, rewards)
  space = search_space.NSCSpace()
  blocks = nsc_blocks(_HELD_OUT.value + 2 * max(int(n) for n in _TRAIN.value))
  features = np.stack([space.features(b) for b in blocks])
  ops = len(search_space.NSC_OPS)  # features: the counts, then the canonical form
  results['nsc/synthetic'] = sweep({
      'operation counts': features[:, :ops],
      'canonical ops + adjacency': features[:, ops:],
      'counts + canonical (features)': features,
  }, np.array([surrogate.synthetic_accuracy(b) for b in blocks]))
  print(json.dumps(results))


if __name__ == '__main__':
  app.run(main)
