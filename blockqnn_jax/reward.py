"""The paper's redefined reward: accuracy minus FLOPs and density terms.

``reward = accuracy - mu * log(1 + FLOPs / unit) - rho * log(density)``

The FLOPs unit is one 3x3 convolution cell at the block's own width, both counted on a
32x32 input (CIFAR's first stage), so the term reads "how many 3x3 convs of work" and is
the same whatever dataset is searched. ``log(1 + x)`` rather than ``log(x)`` keeps the
term finite for blocks with no arithmetic (identity, 1x1 pooling). Density is edges/nodes
of the block DAG (``nsc.Block.density``). mu and rho are ``config.reward.flops_weight`` and
``config.reward.density_weight``.
"""

import math

from blockqnn_jax import nsc

REFERENCE_SIZE = 32


def reward_terms(block: nsc.Block, accuracy: float, reward_config, filters: int) -> dict:
  """The reward and each of its terms, for the results log."""
  size = REFERENCE_SIZE
  unit = 2 * nsc.window_taps(size, 3) ** 2 * filters * filters  # one 3x3 conv cell
  flops_ratio = block.flops(size, size, filters) / unit
  density = block.density()
  flops_term = reward_config.flops_weight * math.log1p(flops_ratio)
  density_term = reward_config.density_weight * math.log(density)
  return {
      'reward': accuracy - flops_term - density_term,
      'flops_term': flops_term,
      'density_term': density_term,
      'flops_ratio': flops_ratio,
      'density': density,
  }
