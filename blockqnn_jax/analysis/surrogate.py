"""A synthetic accuracy landscape with a known best region, for tests and benchmarks.

Driving ``run_search`` with it exercises the whole search without training a network.
The best region is blocks made only of 3x3 convolutions (0.9); a block with none gets 0.4,
about what a poor block reaches after a short CIFAR-10 training. (A landscape far below
``q_init = 0.5`` would make every visited action look worse than an unvisited one.)
"""

from blockqnn_jax import nsc
from blockqnn_jax import reward
from blockqnn_jax import strategies


def synthetic_accuracy(block: nsc.Block) -> float:
  conv3 = sum(1 for l in block.layers if l.type == nsc.CONV and l.kernel == 3)
  return 0.4 + 0.5 * conv3 / len(block)


def search_samples(config, seed: int) -> list[strategies.Sample]:
  """Every block of a search on this landscape, as ``run_search`` drives the agent
  (``strategies.drive``: repeats served from the cache are ``fresh=False``), without logs
  or checkpoints (thousands of blocks/second)."""

  def score(block: nsc.Block) -> float:
    return reward.reward_terms(block, synthetic_accuracy(block), config.reward,
                               config.model.filters)['reward']

  return strategies.drive(strategies.make_strategy(config.search, seed), score)
