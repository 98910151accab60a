"""Search strategies behind one propose/feedback interface, on any search space
(``search_space``), and the registry that names them (``config.search.strategy``).

``base``: what every strategy shares (schedule, random generator, sampling, checkpoint
arrays). One module per strategy: ``qlearning`` (Q-learning, and the published agent's
``PAPER_QLEARNING``), ``random_search``, ``evolution``, ``local_search``. ``driver``:
``drive``, a strategy run against a score as the search loop runs it. A new strategy is a
module with a ``base.Strategy`` subclass and its entry in ``_REGISTRY``.
"""

from __future__ import annotations

from blockqnn_jax.strategies.base import EXPLORATIONS
from blockqnn_jax.strategies.base import Strategy
from blockqnn_jax.strategies.driver import Sample
from blockqnn_jax.strategies.driver import drive
from blockqnn_jax.strategies.evolution import RegularizedEvolution
from blockqnn_jax.strategies.local_search import LocalSearch
from blockqnn_jax.strategies import predictor_guided
from blockqnn_jax.strategies.predictor_guided import PredictorGuided
from blockqnn_jax.strategies.qlearning import PAPER_QLEARNING
from blockqnn_jax.strategies.qlearning import QLearningAgent
from blockqnn_jax.strategies.qlearning import TERMINAL_REWARDS
from blockqnn_jax.strategies.qlearning import UPDATE_ORDERS
from blockqnn_jax.strategies.random_search import RandomSearch

_REGISTRY = {cls.name: cls for cls in (QLearningAgent, RandomSearch, RegularizedEvolution,
                                       LocalSearch)}
STRATEGIES = tuple(_REGISTRY)


def make_strategy(search_config, seed: int, space=None) -> Strategy | PredictorGuided:
  """The strategy named by ``config.search.strategy``, on ``space`` (default: NSC blocks
  up to ``config.search.max_layers`` deep); guided by the predictor where
  ``config.search.predictor.enabled`` (``predictor_guided``)."""
  if search_config.strategy not in _REGISTRY:
    raise ValueError(
        f'config.search.strategy={search_config.strategy!r} is unknown, allowed {STRATEGIES}')
  strategy = _REGISTRY[search_config.strategy](search_config, seed, space)
  predictor_config = search_config.get('predictor')
  if predictor_config is not None and predictor_config.enabled:
    return predictor_guided.guide(strategy, predictor_config, seed)
  return strategy
