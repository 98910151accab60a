"""What every search strategy shares: the epsilon schedule, the random generator, sampling
an architecture decision by decision, and the checkpoint format of its state.

``propose()`` samples an architecture; ``feedback(arch, reward)`` may come later and in
any order (many are evaluated at once); ``end_iteration()`` advances the epsilon
schedule. The whole state round-trips exactly through ``state_dict``/``load_state_dict``.

Exploration (``config.search.exploration``) is ``'type_first'`` by default: a group of
actions (an NSC layer *type*) uniformly first, then an action of it uniformly, so the NSC
terminal has odds 1/7 per step and random blocks are about 7 layers deep. ``'uniform'``
draws uniformly over all legal actions. (A sequence space has one action per group, so
both are uniform there.) Greedy ties (an unvisited state, all Q = q_init) are broken by
the same draw among the tied actions.
"""

from __future__ import annotations

import numpy as np

from blockqnn_jax import search_space

EXPLORATIONS = ('type_first', 'uniform')


class Strategy:
  """Schedule, RNG and sampling shared by every strategy."""

  name = ''

  def __init__(self, search_config, seed: int, space=None):
    self.space = space or search_space.NSCSpace(search_config.max_layers)
    self.schedule = [(float(eps), int(n)) for eps, n in search_config.epsilon_schedule]
    self.blocks_per_iteration = int(search_config.blocks_per_iteration)
    self.exploration = search_config.exploration
    if self.exploration not in EXPLORATIONS:
      raise ValueError(f'config.search.exploration={self.exploration!r} is unknown, '
                       f'allowed {EXPLORATIONS}')
    self.iteration = 0
    self.rng = np.random.default_rng(seed)

  @property
  def num_iterations(self) -> int:
    return sum(n for _, n in self.schedule)

  @property
  def finished(self) -> bool:
    return self.iteration >= self.num_iterations

  @property
  def epsilon(self) -> float:
    """The schedule's epsilon at the current iteration (the last one once finished)."""
    remaining = self.iteration
    for eps, n in self.schedule:
      if remaining < n:
        return eps
      remaining -= n
    return self.schedule[-1][0]

  def propose(self):
    """Samples one architecture, decision by decision, epsilon-greedily."""
    return self._sample(self.epsilon)

  def _sample(self, epsilon: float):
    state, taken = self.space.start, []
    while state is not None:
      actions = self.space.actions(state)
      if epsilon >= 1.0 or self.rng.random() < epsilon:
        choice = self._explore(actions)
      else:
        choice = self._greedy(state, actions)
      action = actions.actions[choice]
      taken.append(action)
      state = self.space.step(state, action)
    return self.space.build(taken)

  def _greedy(self, state, actions: search_space.ActionSet) -> int:
    del state
    return self._explore(actions)

  def _explore(self, actions: search_space.ActionSet,
               candidates: np.ndarray | None = None) -> int:
    """One of the candidates (all actions by default): uniformly (``'uniform'``), or a
    uniform group among the candidates' groups, then a uniform candidate of that group."""
    if candidates is not None and len(candidates) == 1:
      return int(candidates[0])  # what either way draws: integers(1) takes no random bits
    if self.exploration == 'uniform':
      if candidates is None:
        return int(self.rng.integers(len(actions)))
      return int(candidates[self.rng.integers(len(candidates))])
    if candidates is None:
      groups = actions.by_type
    else:
      types = actions.types[candidates]
      groups = [candidates[types == t] for t in np.unique(types)]
    group = groups[self.rng.integers(len(groups))]
    return int(group[self.rng.integers(len(group))])

  def feedback(self, arch, reward: float) -> None:
    """Learns from one evaluated architecture (nothing, for random search)."""
    del arch, reward

  def end_iteration(self) -> None:
    """Advances the schedule by one iteration."""
    self.iteration += 1

  def state_dict(self) -> dict:
    """Everything needed to continue exactly: NumPy arrays plus JSON-able metadata."""
    return {
        'strategy': self.name,
        'space': self.space.description,
        'iteration': self.iteration,
        'rng': self.rng.bit_generator.state,
    }

  def load_state_dict(self, state: dict) -> None:
    if state['strategy'] != self.name:
      raise ValueError(f'saved strategy {state["strategy"]!r} does not match {self.name!r}')
    if state['space'] != self.space.description:
      raise ValueError(f'the saved agent searched {state["space"]}, not '
                       f'{self.space.description}: its state does not fit another space')
    self.iteration = int(state['iteration'])
    self.rng.bit_generator.state = state['rng']

  def _arch_arrays(self, prefix: str, archs: list) -> dict:
    """Architectures as flat integer arrays (a checkpoint holds arrays)."""
    encoded = [self.space.encode(a) for a in archs]
    return {
        f'{prefix}_lengths': np.array([len(e) for e in encoded], dtype=np.int64),
        f'{prefix}_codes': np.array([v for e in encoded for v in e], dtype=np.int64),
    }

  def _archs_from_arrays(self, prefix: str, state: dict) -> list:
    ends = np.cumsum(state[f'{prefix}_lengths'])
    codes = np.asarray(state[f'{prefix}_codes']).tolist()
    return [self.space.decode(codes[end - n:end])
            for n, end in zip(state[f'{prefix}_lengths'], ends)]

  def _memory_arrays(self, prefix: str, archs: list, rewards: list) -> dict:
    """Architectures and their rewards as arrays."""
    return {**self._arch_arrays(prefix, archs),
            f'{prefix}_rewards': np.array(rewards, dtype=np.float64)}

  def _memory_from_arrays(self, prefix: str, state: dict) -> list[tuple]:
    return [(arch, float(r)) for arch, r in zip(self._archs_from_arrays(prefix, state),
                                                state[f'{prefix}_rewards'])]
