"""Tabular Q-learning over a space's states (MetaQNN/BlockQNN), and the published agent's
settings (``PAPER_QLEARNING``).

Reward shaping: every step before the last gets r_t = R / T, where MetaQNN gave 0. The
last step gets the full reward R (``terminal_reward='full'``, MetaQNN's terminal update)
or R / T like the others (``'shaped'``); with ``'shaped'`` and gamma = 1 continuing always
adds a positive reward that terminating forgoes, so the greedy NSC policy almost never
ends a block before the depth limit.
"""

from __future__ import annotations

import numpy as np

from blockqnn_jax import search_space
from blockqnn_jax.strategies import base

TERMINAL_REWARDS = ('full', 'shaped')
UPDATE_ORDERS = ('reverse', 'forward')


class QLearningAgent(base.Strategy):
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
