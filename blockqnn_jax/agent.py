"""Search strategies behind one propose/feedback interface: Q-learning, random search and
regularized evolution, on any search space (``search_space``).

``propose()`` samples an architecture; ``feedback(arch, reward)`` may come later and in
any order (many are evaluated at once); ``end_iteration()`` replays memory and advances
the epsilon schedule. The whole state round-trips exactly through
``state_dict``/``load_state_dict``. ``drive`` runs a strategy against a scoring function
as the search loop does, without logs or checkpoints (benchmarks, tables, tests).

Exploration (``config.search.exploration``) is ``'type_first'`` by default: a group of
actions (an NSC layer *type*) uniformly first, then an action of it uniformly, so the NSC
terminal has odds 1/7 per step and random blocks are about 7 layers deep. ``'uniform'``
draws uniformly over all legal actions. (A sequence space has one action per group, so
both are uniform there.) Greedy ties (an unvisited state, all Q = q_init) are broken by
the same draw among the tied actions.

Reward shaping: every step before the last gets r_t = R / T, where MetaQNN gave 0. The
last step gets the full reward R (``terminal_reward='full'``, MetaQNN's terminal update)
or R / T like the others (``'shaped'``); with ``'shaped'`` and gamma = 1 continuing always
adds a positive reward that terminating forgoes, so the greedy NSC policy almost never
ends a block before the depth limit.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Callable

import numpy as np

from blockqnn_jax import search_space

STRATEGIES = ('qlearning', 'random', 'evolution')
EXPLORATIONS = ('type_first', 'uniform')
TERMINAL_REWARDS = ('full', 'shaped')
UPDATE_ORDERS = ('reverse', 'forward')


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

  def _memory_arrays(self, prefix: str, archs: list, rewards: list) -> dict:
    """Architectures and rewards as flat integer arrays (a checkpoint holds arrays)."""
    encoded = [self.space.encode(a) for a in archs]
    return {
        f'{prefix}_lengths': np.array([len(e) for e in encoded], dtype=np.int64),
        f'{prefix}_codes': np.array([v for e in encoded for v in e], dtype=np.int64),
        f'{prefix}_rewards': np.array(rewards, dtype=np.float64),
    }

  def _memory_from_arrays(self, prefix: str, state: dict) -> list[tuple]:
    ends = np.cumsum(state[f'{prefix}_lengths'])
    codes = np.asarray(state[f'{prefix}_codes']).tolist()
    return [(self.space.decode(codes[end - n:end]), float(r))
            for n, end, r in zip(state[f'{prefix}_lengths'], ends,
                                 state[f'{prefix}_rewards'])]


class RandomSearch(Strategy):
  """The baseline: every decision explored (epsilon = 1), nothing learned."""

  name = 'random'

  @property
  def epsilon(self) -> float:
    return 1.0


class QLearningAgent(Strategy):
  """Tabular Q-learning over the space's states (MetaQNN/BlockQNN), with reward shaping
  and experience replay.

  Two learning rates (hysteretic Q-learning, Matignon et al. IROS 2007): a fast one where
  the target is above Q(s,a), a slow one where it is below. One alpha for both (MetaQNN's
  0.01) averages every architecture through a state into its value, so the state aliasing
  of a layer-by-layer space (many blocks share a state) drags a good action down with
  the bad blocks that share it; a slow decrease keeps each action near the best
  continuation seen, while still letting repeated disappointments lower it.
  """

  name = 'qlearning'

  def __init__(self, search_config, seed: int, space=None):
    super().__init__(search_config, seed, space)
    self.learning_rate = float(search_config.learning_rate)
    self.learning_rate_decrease = float(search_config.learning_rate_decrease)
    self.discount = float(search_config.discount)
    self.q_init = float(search_config.q_init)
    self.replay_samples = int(search_config.replay_samples)
    self.terminal_reward = search_config.terminal_reward
    if self.terminal_reward not in TERMINAL_REWARDS:
      raise ValueError(f'config.search.terminal_reward={self.terminal_reward!r} is unknown, '
                       f'allowed {TERMINAL_REWARDS}')
    self.update_order = search_config.update_order
    if self.update_order not in UPDATE_ORDERS:
      raise ValueError(f'config.search.update_order={self.update_order!r} is unknown, '
                       f'allowed {UPDATE_ORDERS}')
    self.q: dict = {}
    self.memory: list[tuple] = []  # the replay memory: (architecture, reward)
    self._paths: dict = {}  # derived from the architectures alone: not saved

  def feedback(self, arch, reward: float) -> None:
    """Learns from one evaluated architecture and keeps it for replay."""
    self.memory.append((arch, float(reward)))
    self._learn(arch, float(reward))

  def end_iteration(self) -> None:
    """Replays memory and advances the schedule by one iteration."""
    self._replay()
    super().end_iteration()

  def _q_values(self, state) -> np.ndarray:
    values = self.q.get(state)
    if values is None:
      values = self.q[state] = np.full(len(self.space.actions(state)), self.q_init)
    return values

  def _greedy(self, state, actions: search_space.ActionSet) -> int:
    values = self.q.get(state)
    if values is None:
      return self._explore(actions)
    return self._explore(actions, np.flatnonzero(values == values.max()))

  def _learn(self, arch, reward: float) -> None:
    """Q(s,a) <- Q(s,a) + alpha (r_t + gamma max_a' Q(s',a') - Q(s,a)), last step first
    (``update_order='reverse'``) or first step first; alpha is ``learning_rate`` where the
    target is above Q(s,a) and ``learning_rate_decrease`` where it is below."""
    path = self._path(arch)
    last = len(path) - 1
    shaped = reward / len(path)
    for t in (range(last, -1, -1) if self.update_order == 'reverse' else range(last + 1)):
      state, i = path[t]
      if t == last:
        target = reward if self.terminal_reward == 'full' else shaped
      else:
        next_values = self.q.get(path[t + 1][0])
        future = self.q_init if next_values is None else next_values.max()
        target = shaped + self.discount * future
      values = self._q_values(state)
      error = target - values[i]
      values[i] += (self.learning_rate if error >= 0 else self.learning_rate_decrease) * error

  def _path(self, arch) -> list[tuple]:
    """The (state, action position) pairs that sample ``arch`` (cached: replay revisits)."""
    path = self._paths.get(arch)
    if path is None:
      path = self._paths[arch] = [(state, self.space.actions(state).position[action])
                                  for state, action in self.space.trajectory(arch)]
    return path

  def _replay(self) -> None:
    if not self.memory or self.replay_samples <= 0:
      return
    for i in self.rng.integers(len(self.memory), size=self.replay_samples):
      self._learn(*self.memory[i])

  def state_dict(self) -> dict:
    state = super().state_dict()
    state.update(self._memory_arrays('memory', [a for a, _ in self.memory],
                                     [r for _, r in self.memory]))
    states = list(self.q)
    width = self.space.state_width
    state['q_states'] = np.array([self.space.encode_state(s) for s in states],
                                 dtype=np.int64).reshape(-1, width)
    state['q_values'] = (
        np.concatenate([self.q[s] for s in states]) if states else np.zeros(0))
    return state

  def load_state_dict(self, state: dict) -> None:
    super().load_state_dict(state)
    self.memory = self._memory_from_arrays('memory', state)
    self.q = {}
    offset = 0
    for code in np.asarray(state['q_states']).tolist():
      key = self.space.decode_state(code)
      size = len(self.space.actions(key))
      self.q[key] = np.array(state['q_values'][offset:offset + size], dtype=np.float64)
      offset += size


class RegularizedEvolution(Strategy):
  """Regularized (aging) evolution, Real et al. (AAAI 2019).

  The first ``population_size`` proposals are random (as random search draws them); after
  that each proposal is a mutant of a tournament's winner: ``tournament_size`` members
  drawn uniformly (with replacement, as the reference implementations do), the one with
  the highest reward mutated (``space.mutate``). Every evaluated architecture joins the
  population and the oldest member dies, so the population is the last
  ``population_size`` evaluated. Proposals within one iteration see the population as it
  was when they were made; the epsilon schedule only sets the number of iterations.
  """

  name = 'evolution'

  def __init__(self, search_config, seed: int, space=None):
    super().__init__(search_config, seed, space)
    self.population_size = int(search_config.population_size)
    self.tournament_size = int(search_config.tournament_size)
    if not 1 <= self.tournament_size <= self.population_size:
      raise ValueError(
          f'config.search.tournament_size={self.tournament_size} must be in '
          f'1..population_size ({self.population_size})')
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


def make_strategy(search_config, seed: int, space=None) -> Strategy:
  """The strategy named by ``config.search.strategy``, on ``space`` (default: NSC blocks
  up to ``config.search.max_layers`` deep)."""
  strategies = {cls.name: cls for cls in (QLearningAgent, RandomSearch,
                                          RegularizedEvolution)}
  if search_config.strategy not in strategies:
    raise ValueError(
        f'config.search.strategy={search_config.strategy!r} is unknown, allowed {STRATEGIES}')
  return strategies[search_config.strategy](search_config, seed, space)


@dataclasses.dataclass(frozen=True)
class Sample:
  """One proposal that was fed back: its key, the iteration and the epsilon it was sampled
  with, its reward, and whether it was scored for it (``fresh``) or served from the cache."""

  arch: Any
  key: str
  iteration: int
  epsilon: float
  reward: float
  fresh: bool


def drive(strategy: Strategy, score: Callable[[Any], float], *, iterations: int | None = None,
          budget: int | None = None, max_proposals: int | None = None) -> list[Sample]:
  """Runs ``strategy`` against ``score`` as ``search.run_search`` does, without logs or
  checkpoints; returns every proposal fed back, in sample order.

  Each iteration proposes its ``blocks_per_iteration`` architectures before any is fed
  back, scores each distinct one (by ``space.key``) once, feeds every proposal its reward
  in sample order (a repeat is served from the cache and fed again, free) and ends the
  iteration. By default it runs to the end of the schedule. With ``iterations`` it runs
  that many; with ``budget`` until that many distinct architectures are scored, ending
  the iteration at the first one beyond (it and the rest of the iteration are neither
  scored nor fed); either way past the end of the schedule at its last epsilon. No
  iteration starts after ``max_proposals`` proposals (default 50 per unit of budget), so a
  strategy that only repeats itself still ends.
  """
  if max_proposals is None and budget is not None:
    max_proposals = 50 * budget
  scores: dict[str, float] = {}
  samples: list[Sample] = []  # every proposal but those after the budget's last
  done = 0

  def more() -> bool:
    if budget is not None and len(scores) >= budget:
      return False
    if max_proposals is not None and len(samples) >= max_proposals:
      return False
    if iterations is not None:
      return done < iterations
    return budget is not None or not strategy.finished

  while more():
    iteration, epsilon = strategy.iteration, strategy.epsilon
    for arch in [strategy.propose() for _ in range(strategy.blocks_per_iteration)]:
      key = strategy.space.key(arch)
      fresh = key not in scores
      if fresh:
        if budget is not None and len(scores) == budget:
          break
        scores[key] = float(score(arch))
      strategy.feedback(arch, scores[key])
      samples.append(Sample(arch, key, iteration, epsilon, scores[key], fresh))
    strategy.end_iteration()
    done += 1
  return samples


# The Q-learning of MetaQNN and BlockQNN as published: the schedule reported for the paper
# (95 of 178 iterations random), MetaQNN's alpha (one for both directions), q_init and
# replay of 100 trajectories, every update last step first. The ``paper_agent`` variant of
# configs/cifar10.py and configs/cifar100.py and the benchmark's 'qlearning_paper' use it.
PAPER_QLEARNING = {
    'epsilon_schedule': ((1.0, 95), (0.9, 7), (0.8, 7), (0.7, 7), (0.6, 10),
                         (0.5, 10), (0.4, 10), (0.3, 10), (0.2, 10), (0.1, 12)),
    'learning_rate': 0.01,
    'learning_rate_decrease': 0.01,
    'q_init': 0.5,
    'replay_samples': 100,
    'update_order': 'reverse',
    'terminal_reward': 'full',
    'discount': 1.0,
}
