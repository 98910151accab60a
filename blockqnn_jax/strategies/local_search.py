"""Local search (White, Nolen, Savani: "Local search is state of the art for neural
architecture search benchmarks", 2020), on any space with ``neighbours``.

A climb starts from a random architecture (drawn as random search draws, never one
proposed before where another can be found in 100 draws). Each proposal is a random
neighbour, not proposed before, of the best architecture of the climb fed back so far
(its start until a reward arrives); a neighbour whose reward beats the climb's best
becomes the best, so the next proposals are its neighbours. When every neighbour of the
best has been proposed and fed back, the best is a local optimum and the climb is over:
the next proposal starts a new one.

Feedback may come later than proposals (``blocks_per_iteration`` > 1). Then a climb whose
neighbours are all proposed but not yet all fed back is not over: the next proposals
start a new climb meanwhile, and each reward goes to the climb it was proposed for, which
carries on from its new best once that best has neighbours left. Oldest climbs are served
first. One at a time (``blocks_per_iteration`` 1) there is one climb at a time.

Guided by the predictor (``predictor_guided``), a climb's next proposal may be not a random
neighbour but the one the predictor ranks highest (``rank``, set by the wrapper, which is
told how many of the best's neighbours are proposed already and so decides when to rank):
the climb finds an improving neighbour sooner. Starts stay random: on NAS-Bench-201,
starting from the best ranked of 50 random draws measured no better (docs/reproducing.md).
"""

from __future__ import annotations

import numpy as np

from blockqnn_jax.strategies import base

_START_DRAWS = 100  # random draws for an unproposed start before taking a proposed one


class LocalSearch(base.Strategy):
  """Climbs from random starts through unproposed neighbours of each climb's best; the
  epsilon schedule only sets the number of iterations."""

  name = 'local_search'

  def __init__(self, search_config, seed: int, space=None):
    super().__init__(search_config, seed, space)
    self.evaluated: list = []  # fed back, in feedback order
    self.pending: dict = {}  # key -> (architecture, climb id): proposed, not fed back
    self.climbs: dict = {}  # climb id -> [its best architecture, that best's reward]
    self.next_climb = 0
    self._proposed: set = set()  # keys of evaluated and pending: derived, not saved
    self._neighbours: dict = {}  # key -> neighbours' (key, architecture): derived, not saved
    # rank(unproposed neighbours of a climb's best, how many of its neighbours are proposed):
    # their scores, or None where it does not rank (then a random one); set by
    # predictor_guided, not saved.
    self.rank = None

  @property
  def epsilon(self) -> float:
    """0: nothing is drawn epsilon-greedily (a climb's start is a random draw)."""
    return 0.0

  def propose(self):
    for climb, (best, _) in self.climbs.items():
      neighbours = self._neighbours_of(best)
      fresh = [arch for key, arch in neighbours if key not in self._proposed]
      if fresh:
        scores = self.rank(fresh, len(neighbours) - len(fresh)) if self.rank else None
        if scores is None:
          return self._propose(fresh[self.rng.integers(len(fresh))], climb)
        return self._propose(fresh[int(np.argmax(scores))], climb)
    for _ in range(_START_DRAWS):
      start = self._sample(1.0)
      if self.space.key(start) not in self._proposed:
        break
    climb, self.next_climb = self.next_climb, self.next_climb + 1
    self.climbs[climb] = [start, -np.inf]
    return self._propose(start, climb)

  def _propose(self, arch, climb: int):
    key = self.space.key(arch)
    self.pending[key] = (arch, climb)
    self._proposed.add(key)
    return arch

  def _neighbours_of(self, arch) -> list[tuple]:
    key = self.space.key(arch)
    if key not in self._neighbours:
      self._neighbours[key] = [(self.space.key(n), n) for n in self.space.neighbours(arch)]
    return self._neighbours[key]

  def feedback(self, arch, reward: float) -> None:
    """The climb ``arch`` was proposed for moves to it if it beats that climb's best; a
    climb with nothing left to propose or wait for is over."""
    key = self.space.key(arch)
    if key in self.pending or key not in self._proposed:  # not a repeat from the cache
      self.evaluated.append(arch)
      self._proposed.add(key)
    _, climb = self.pending.pop(key, (arch, None))
    if climb in self.climbs and float(reward) > self.climbs[climb][1]:
      self._neighbours.pop(self.space.key(self.climbs[climb][0]), None)
      self.climbs[climb] = [arch, float(reward)]
    self._end_finished_climbs()

  def _end_finished_climbs(self) -> None:
    waiting = {climb for _, climb in self.pending.values()}
    for climb, (best, _) in list(self.climbs.items()):
      if climb not in waiting and all(
          key in self._proposed for key, _ in self._neighbours_of(best)):
        del self.climbs[climb]
        self._neighbours.pop(self.space.key(best), None)

  def state_dict(self) -> dict:
    state = super().state_dict()
    state['next_climb'] = self.next_climb
    state.update(self._arch_arrays('evaluated', self.evaluated))
    state.update(self._arch_arrays('pending', [a for a, _ in self.pending.values()]))
    state['pending_climbs'] = np.array([c for _, c in self.pending.values()], dtype=np.int64)
    state.update(self._memory_arrays('climbs', [b for b, _ in self.climbs.values()],
                                     [r for _, r in self.climbs.values()]))
    state['climb_ids'] = np.array(list(self.climbs), dtype=np.int64)
    return state

  def load_state_dict(self, state: dict) -> None:
    super().load_state_dict(state)
    self.next_climb = int(state['next_climb'])
    self.evaluated = self._archs_from_arrays('evaluated', state)
    pending = zip(self._archs_from_arrays('pending', state),
                  np.asarray(state['pending_climbs']).tolist())
    self.pending = {self.space.key(a): (a, c) for a, c in pending}
    self.climbs = {c: [b, r] for c, (b, r) in zip(
        np.asarray(state['climb_ids']).tolist(), self._memory_from_arrays('climbs', state))}
    self._proposed = {self.space.key(a) for a in self.evaluated} | set(self.pending)
    self._neighbours = {}
