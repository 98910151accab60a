"""Regularized evolution: random start, tournament selection, aging, exact resume."""

import numpy as np
import pytest

from blockqnn_jax import search
from blockqnn_jax import search_space
from blockqnn_jax import strategies
from blockqnn_jax.analysis import surrogate
from configs import default
from tests import searches

SPACE = search_space.SequenceSpace([5] * 6)


def evolution(population_size=10, tournament_size=3, seed=0, space=SPACE,
              blocks_per_iteration=1):
  config = default.get_config().search
  config.strategy = 'evolution'
  config.population_size = population_size
  config.tournament_size = tournament_size
  config.blocks_per_iteration = blocks_per_iteration
  config.epsilon_schedule = ((1.0, 1000),)
  return strategies.make_strategy(config, seed, space)


def differs_in_one(a, b) -> bool:
  return sum(x != y for x, y in zip(a, b)) == 1


def test_the_first_population_is_random_then_children_are_mutants():
  strategy = evolution(population_size=20)
  first = [strategy.propose() for _ in range(20)]
  assert strategy.epsilon == 0.0
  # Twenty uniform draws from 15,625 cells: distinct, and one-choice neighbours are rare.
  assert len(set(first)) == 20
  assert sum(differs_in_one(a, b) for a in first for b in first) < 10
  for arch in first:
    strategy.feedback(arch, 0.5)
  for _ in range(50):
    child = strategy.propose()
    assert any(differs_in_one(child, member) for member, _ in strategy.population)


def test_with_feedback_between_proposals_the_first_population_is_random_then_mutants():
  strategy = evolution(population_size=5)
  config = default.get_config().search
  config.strategy = 'random'
  random_search = strategies.make_strategy(config, 0, SPACE)  # the same seed's draws
  for _ in range(5):
    arch = strategy.propose()
    assert arch == random_search.propose()
    strategy.feedback(arch, 0.5)
  child = strategy.propose()
  assert child != random_search.propose()
  assert any(differs_in_one(child, member) for member, _ in strategy.population)


def test_a_population_smaller_than_an_iteration_holds_the_whole_iteration():
  # 10 and 3 for one child at a time become 64 and 8 (3 x sqrt(6.4)) at 64 children an
  # iteration: no child of an iteration dies before the next iteration's parents are picked.
  strategy = evolution(population_size=10, tournament_size=3, blocks_per_iteration=64)
  assert (strategy.population_size, strategy.tournament_size) == (64, 8)
  samples = strategies.drive(strategy, lambda arch: arch.count(3) / 6, iterations=1)
  assert list(strategy.population) == [(s.arch, s.reward) for s in samples]
  assert evolution(population_size=10, blocks_per_iteration=8).population_size == 10


def test_the_tournament_winner_is_the_parent():
  # A tournament as large as the population finds its best member more often than not
  # (draws are with replacement: it misses it with odds (1 - 1/5)^5 = 0.33).
  strategy = evolution(population_size=5, tournament_size=5)
  members = [(0, 0, 0, 0, 0, i) for i in range(5)]
  for arch in members:
    strategy.propose()
    strategy.feedback(arch, 0.1 if arch[-1] != 3 else 0.9)
  children = [strategy.propose() for _ in range(3000)]
  from_best = np.mean([differs_in_one(c, members[3]) and not any(
      differs_in_one(c, m) for m in members if m != members[3]) for c in children])
  # A child one step from the best and from no other member: the mutated position was not
  # the last one (5/6 of mutations), and the parent was the best.
  expected = (1 - (4 / 5) ** 5) * 5 / 6
  assert abs(from_best - expected) < 0.04


def test_a_tournament_of_one_picks_uniformly():
  strategy = evolution(population_size=4, tournament_size=1)
  members = [(i, i, i, i, i, i) for i in range(4)]
  for arch in members:
    strategy.propose()
    strategy.feedback(arch, 0.9 if arch[0] == 0 else 0.1)
  children = [strategy.propose() for _ in range(2000)]
  parents = [next(m for m in members if differs_in_one(c, m)) for c in children]
  shares = [parents.count(m) / len(parents) for m in members]
  assert max(abs(s - 0.25) for s in shares) < 0.04


def test_aging_kills_the_oldest_not_the_worst():
  strategy = evolution(population_size=3, tournament_size=1)
  archs = [(i, 0, 0, 0, 0, 0) for i in range(5)]
  for arch, reward in zip(archs, [0.9, 0.1, 0.2, 0.3, 0.4]):
    strategy.propose()
    strategy.feedback(arch, reward)
  # The best (0.9) was the oldest: it is gone.
  assert [a for a, _ in strategy.population] == archs[2:]


def test_invalid_tournament_is_refused():
  with pytest.raises(ValueError, match='tournament_size=4 must be in 1..population_size'):
    evolution(population_size=3, tournament_size=4)


def test_evolution_resumes_exactly_in_run_search(tmp_path):
  config = default.get_config()
  config.search.strategy = 'evolution'
  config.search.max_layers = 6
  config.search.population_size = 6
  config.search.epsilon_schedule = ((1.0, 6),)
  config.search.blocks_per_iteration = 4
  whole = search.run_search(config, str(tmp_path / 'whole'), surrogate.synthetic_accuracy)
  config.search.epsilon_schedule = ((1.0, 3),)
  search.run_search(config, str(tmp_path / 'split'), surrogate.synthetic_accuracy,
                    allow_config_change=True)
  config.search.epsilon_schedule = ((1.0, 6),)
  split = search.run_search(config, str(tmp_path / 'split'), surrogate.synthetic_accuracy,
                            allow_config_change=True)
  searches.assert_same_outcome(searches.outcome(tmp_path / 'split'),
                               searches.outcome(tmp_path / 'whole'))
  assert split['best_codes'] == whole['best_codes']
