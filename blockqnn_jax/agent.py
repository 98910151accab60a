"""Search strategies behind one propose/feedback interface: Q-learning and random search.

``propose()`` samples a block with the current epsilon; ``feedback(block, reward)`` may come
later and in any order (many blocks are evaluated at once); ``end_iteration()`` replays
memory and advances the epsilon schedule. The whole state (Q-values, replay memory,
schedule position, RNG) round-trips exactly through ``state_dict``/``load_state_dict``.

Exploration (``config.search.exploration``) is ``'type_first'`` by default: a layer *type*
uniformly first, then a layer of that type uniformly, so the terminal has odds 1/7 per step
and random blocks are about 7 layers deep. ``'uniform'`` draws uniformly over all legal
actions, the usual reading of epsilon-greedy: the terminal is one of up to 737 actions (at
depth 23), so random blocks are about 20 layers deep. Greedy ties (e.g. an unvisited
state, all Q = q_init) are broken by the same draw among the tied actions.

Reward shaping: every step before the last gets r_t = R / T, where MetaQNN gave 0. The
last step (the terminal action) gets the full reward R, as in MetaQNN, by default
(``config.search.terminal_reward = 'full'``). With ``'shaped'`` it gets R / T like the
others; then, with gamma = 1, continuing always adds a positive reward that terminating
forgoes, so the greedy policy almost never ends a block before the depth limit (on the
synthetic landscape its late blocks beat random search by 0.03 instead of 0.35).
"""

from __future__ import annotations

import numpy as np

from blockqnn_jax import nsc
from blockqnn_jax import search_space

STRATEGIES = ('qlearning', 'random')
EXPLORATIONS = ('type_first', 'uniform')
TERMINAL_REWARDS = ('full', 'shaped')


class Strategy:
  """Schedule, RNG and sampling shared by every strategy."""

  name = ''

  def __init__(self, search_config, seed: int):
    self.max_layers = int(search_config.max_layers)
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

  def propose(self) -> nsc.Block:
    """Samples one block, layer by layer, epsilon-greedily."""
    epsilon = self.epsilon
    state, layers = search_space.START, []
    while True:
      actions = search_space.actions_at(state.index + 1, self.max_layers)
      if self.rng.random() < epsilon:  # always, for random search (epsilon 1)
        choice = self._explore(actions)
      else:
        choice = self._greedy(state, actions)  # pylint: disable=no-member  (Q-learning)
      action = actions.actions[choice]
      if action.type == nsc.TERMINAL:
        return nsc.Block(tuple(layers))
      layers.append(action)
      state = action

  def _explore(self, actions: search_space.ActionSet,
               candidates: np.ndarray | None = None) -> int:
    """One of the candidates (all actions by default): uniformly (``'uniform'``), or a
    uniform type among the candidates' types, then a uniform candidate of that type."""
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

  def feedback(self, block: nsc.Block, reward: float) -> None:
    """Learns from one evaluated block (nothing, for random search)."""
    del block, reward

  def end_iteration(self) -> None:
    """Advances the schedule by one iteration."""
    self.iteration += 1

  def state_dict(self) -> dict:
    """Everything needed to continue exactly: NumPy arrays plus JSON-able metadata."""
    return {
        'strategy': self.name,
        'max_layers': self.max_layers,
        'iteration': self.iteration,
        'rng': self.rng.bit_generator.state,
    }

  def load_state_dict(self, state: dict) -> None:
    if state['strategy'] != self.name:
      raise ValueError(f'saved strategy {state["strategy"]!r} does not match {self.name!r}')
    if state['max_layers'] != self.max_layers:
      raise ValueError(f'the saved agent searched max_layers={state["max_layers"]}, not '
                       f'{self.max_layers}: its Q-table does not fit another action space')
    self.iteration = int(state['iteration'])
    self.rng.bit_generator.state = state['rng']


class RandomSearch(Strategy):
  """The baseline: every layer explored (epsilon = 1), nothing learned."""

  name = 'random'

  @property
  def epsilon(self) -> float:
    return 1.0


class QLearningAgent(Strategy):
  """Tabular Q-learning over layer codes (MetaQNN/BlockQNN), with reward shaping and replay."""

  name = 'qlearning'

  def __init__(self, search_config, seed: int):
    super().__init__(search_config, seed)
    self.learning_rate = float(search_config.learning_rate)
    self.discount = float(search_config.discount)
    self.q_init = float(search_config.q_init)
    self.replay_samples = int(search_config.replay_samples)
    self.terminal_reward = search_config.terminal_reward
    if self.terminal_reward not in TERMINAL_REWARDS:
      raise ValueError(f'config.search.terminal_reward={self.terminal_reward!r} is unknown, '
                       f'allowed {TERMINAL_REWARDS}')
    self.q: dict[nsc.Layer, np.ndarray] = {}
    self.memory: list[tuple[nsc.Block, float]] = []  # the replay memory

  def feedback(self, block: nsc.Block, reward: float) -> None:
    """Learns from one evaluated block and keeps it for replay."""
    self.memory.append((block, float(reward)))
    self._learn(block, float(reward))

  def end_iteration(self) -> None:
    """Replays memory and advances the schedule by one iteration."""
    self._replay()
    super().end_iteration()

  def _q_values(self, state: nsc.Layer) -> np.ndarray:
    values = self.q.get(state)
    if values is None:
      size = len(search_space.actions_at(state.index + 1, self.max_layers))
      values = self.q[state] = np.full(size, self.q_init)
    return values

  def _greedy(self, state: nsc.Layer, actions: search_space.ActionSet) -> int:
    values = self.q.get(state)
    if values is None:
      return self._explore(actions)
    return self._explore(actions, np.flatnonzero(values == values.max()))

  def _learn(self, block: nsc.Block, reward: float) -> None:
    """Q(s,a) <- (1-alpha) Q(s,a) + alpha (r_t + gamma max_a' Q(s',a')), last step first."""
    steps = search_space.trajectory(block)
    shaped = reward / len(steps)
    for state, action in reversed(steps):
      if action.type == nsc.TERMINAL:
        target = reward if self.terminal_reward == 'full' else shaped
      else:
        next_values = self.q.get(action)
        future = self.q_init if next_values is None else next_values.max()
        target = shaped + self.discount * future
      values = self._q_values(state)
      i = search_space.actions_at(state.index + 1, self.max_layers).position[action]
      values[i] += self.learning_rate * (target - values[i])

  def _replay(self) -> None:
    if not self.memory or self.replay_samples <= 0:
      return
    for i in self.rng.integers(len(self.memory), size=self.replay_samples):
      self._learn(*self.memory[i])

  def state_dict(self) -> dict:
    state = super().state_dict()
    state['memory_lengths'] = np.array([len(b) for b, _ in self.memory], dtype=np.int64)
    codes = [list(l) for b, _ in self.memory for l in b.layers]
    state['memory_layers'] = np.array(codes, dtype=np.int64).reshape(-1, 5)
    state['memory_rewards'] = np.array([r for _, r in self.memory], dtype=np.float64)
    states = list(self.q)
    state['q_states'] = np.array([list(s) for s in states], dtype=np.int64).reshape(-1, 5)
    state['q_values'] = (
        np.concatenate([self.q[s] for s in states]) if states else np.zeros(0))
    return state

  def load_state_dict(self, state: dict) -> None:
    super().load_state_dict(state)
    ends = np.cumsum(state['memory_lengths'])
    layers = np.asarray(state['memory_layers']).tolist()
    self.memory = [
        (nsc.Block(tuple(nsc.Layer(*l) for l in layers[end - n:end])), float(r))
        for n, end, r in zip(state['memory_lengths'], ends, state['memory_rewards'])
    ]
    self.q = {}
    offset = 0
    for code in np.asarray(state['q_states']).tolist():
      layer = nsc.Layer(*code)
      size = len(search_space.actions_at(layer.index + 1, self.max_layers))
      self.q[layer] = np.array(state['q_values'][offset:offset + size], dtype=np.float64)
      offset += size


def make_strategy(search_config, seed: int) -> Strategy:
  """The strategy named by ``config.search.strategy``."""
  strategies = {cls.name: cls for cls in (QLearningAgent, RandomSearch)}
  if search_config.strategy not in strategies:
    raise ValueError(
        f'config.search.strategy={search_config.strategy!r} is unknown, allowed {STRATEGIES}')
  return strategies[search_config.strategy](search_config, seed)
