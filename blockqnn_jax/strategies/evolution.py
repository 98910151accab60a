"""Regularized (aging) evolution, Real et al. (AAAI 2019)."""

from __future__ import annotations

import collections

from blockqnn_jax.strategies import base


class RegularizedEvolution(base.Strategy):
  """Regularized (aging) evolution, Real et al. (AAAI 2019).

  The first ``population_size`` proposals are random (as random search draws them); after
  that each proposal is a mutant of a tournament's winner: ``tournament_size`` members
  drawn uniformly (with replacement, as the reference implementations do), the one with
  the highest reward mutated (``space.mutate``). Every evaluated architecture joins the
  population and the oldest member dies, so the population is the last
  ``population_size`` evaluated. Proposals within one iteration see the population as it
  was when they were made; the epsilon schedule only sets the number of iterations.

  ``population_size`` and ``tournament_size`` are for one child at a time. An iteration
  of ``blocks_per_iteration`` children is fed back before the next is proposed, so a
  population smaller than an iteration would keep only that iteration's last children in
  sample order, whatever their rewards, and never pick a parent among the others. So the
  population holds at least one iteration (``max(population_size,
  blocks_per_iteration)``), and the tournament grows with the square root of the
  population's growth (3 of 10 becomes 8 of 64 at 64 children an iteration). Measured on
  NAS-Bench-201 (docs/reproducing.md), at 64 children an iteration and 500 evaluations:
  10 and 3 lost 0.1-0.3 points to one child at a time; 64 and 3 lost up to 0.2; any
  tournament of 4 to 10 of 64 tied or beat one at a time; 19 of 64 (the tournament's
  share kept) too, but so greedily that 16 of 17 proposals repeated an evaluated cell.
  """

  name = 'evolution'

  def __init__(self, search_config, seed: int, space=None):
    super().__init__(search_config, seed, space)
    population_size = int(search_config.population_size)
    tournament_size = int(search_config.tournament_size)
    if not 1 <= tournament_size <= population_size:
      raise ValueError(
          f'config.search.tournament_size={tournament_size} must be in '
          f'1..population_size ({population_size})')
    self.population_size = max(population_size, self.blocks_per_iteration)
    self.tournament_size = round(tournament_size * (self.population_size / population_size) ** 0.5)
    self.proposed = 0
    self.population: collections.deque = collections.deque()  # oldest first

  @property
  def epsilon(self) -> float:
    """1 while the initial population is drawn at random, 0 once it evolves."""
    return 1.0 if self.proposed < self.population_size else 0.0

  def propose(self):
    initial = self.proposed < self.population_size or not self.population
    self.proposed += 1
    if initial:
      return self._sample(1.0)
    draws = self.rng.integers(len(self.population), size=self.tournament_size)
    parent = max((self.population[i] for i in draws), key=lambda member: member[1])
    return self.space.mutate(parent[0], self.rng)

  def feedback(self, arch, reward: float) -> None:
    """The newest member joins; past ``population_size`` the oldest dies (aging)."""
    self.population.append((arch, float(reward)))
    while len(self.population) > self.population_size:
      self.population.popleft()

  def state_dict(self) -> dict:
    state = super().state_dict()
    state['proposed'] = self.proposed
    state.update(self._memory_arrays('population', [a for a, _ in self.population],
                                     [r for _, r in self.population]))
    return state

  def load_state_dict(self, state: dict) -> None:
    super().load_state_dict(state)
    self.proposed = int(state['proposed'])
    self.population = collections.deque(self._memory_from_arrays('population', state))
