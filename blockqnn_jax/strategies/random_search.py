"""Random search: the baseline every strategy is measured against."""

from blockqnn_jax.strategies import base


class RandomSearch(base.Strategy):
  """The baseline: every decision explored (epsilon = 1), nothing learned."""

  name = 'random'

  @property
  def epsilon(self) -> float:
    return 1.0
