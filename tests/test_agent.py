"""The search strategies: legal sampling, reproducibility, exact state round trip; and
``strategies.drive``, the loop that runs one against a score."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from blockqnn_jax import nsc
from blockqnn_jax import search_space
from blockqnn_jax import strategies
from blockqnn_jax.analysis import surrogate
from configs import default
from tests import hypothesis_blocks


def search_config(strategy='qlearning', max_layers=23, **overrides):
  config = default.get_config().search
  config.strategy = strategy
  config.max_layers = max_layers
  config.epsilon_schedule = ((1.0, 3), (0.5, 2), (0.1, 2))
  config.blocks_per_iteration = 8
  config.update(overrides)
  return config


def proposed(strategy, iterations=None):
  """The blocks a strategy proposes on the surrogate landscape (to the end of its schedule,
  or for ``iterations``)."""
  return [s.arch for s in strategies.drive(strategy, surrogate.synthetic_accuracy,
                                           iterations=iterations)]


def test_action_sets_follow_the_nsc_table():
  first = search_space.actions_at(1, 23)
  assert {a.type for a in first.actions} == {1, 2, 3, 4, 5, 6}  # no terminal before a layer
  assert len(first) == 3 + 2 + 2 + 1 + 1 + 1
  last = search_space.actions_at(24, 23)
  assert [tuple(a) for a in last.actions] == [(24, 7, 0, 0, 0)]  # forced terminal
  deep = search_space.actions_at(23, 23)
  assert len(deep) == 8 * 23 + 23 * 24 + 1
  for action in deep.actions:
    if action.type != nsc.TERMINAL:
      nsc.Block.from_codes([[i, 4, 0, i - 1, 0] for i in range(1, 23)]
                           + [list(action), [24, 7, 0, 0, 0]])


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(strategies.STRATEGIES), st.integers(1, 23), st.integers(0, 2**31))
def test_sampled_blocks_are_valid_and_round_trip(name, max_layers, seed):
  strategy = strategies.make_strategy(search_config(name, max_layers), seed)
  for block in proposed(strategy, iterations=2):
    codes = block.to_codes()
    again = nsc.Block.from_codes(json.loads(json.dumps(codes)), max_layers)
    assert again == block and again.canonical_hash() == block.canonical_hash()
    assert len(block) <= max_layers


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_sampled_blocks_keep_their_hash_under_renumbering(data):
  strategy = strategies.make_strategy(search_config(), data.draw(st.integers(0, 2**31)))
  block = strategy.propose()
  renumbered = data.draw(hypothesis_blocks.renumberings(block))
  assert renumbered.canonical_hash() == block.canonical_hash()


def test_same_seed_same_rewards_same_blocks():
  a = proposed(strategies.make_strategy(search_config(), 7))
  b = proposed(strategies.make_strategy(search_config(), 7))
  c = proposed(strategies.make_strategy(search_config(), 8))
  assert a == b
  assert a != c


def test_epsilon_follows_the_schedule():
  strategy = strategies.make_strategy(search_config(), 0)
  seen = []
  while not strategy.finished:
    seen.append(strategy.epsilon)
    strategy.end_iteration()
  assert seen == [1.0] * 3 + [0.5] * 2 + [0.1] * 2
  assert strategies.make_strategy(search_config('random'), 0).epsilon == 1.0


def test_default_schedule_is_178_iterations_of_64_blocks():
  strategy = strategies.make_strategy(default.get_config().search, 0)
  assert strategy.num_iterations == 178
  assert strategy.num_iterations * strategy.blocks_per_iteration == 11392


@pytest.mark.parametrize('terminal_reward, last_target', [('full', 0.8), ('shaped', 0.4)])
def test_q_update_is_reverse_with_shaped_reward(terminal_reward, last_target):
  config = search_config(learning_rate=0.5, learning_rate_decrease=0.5, q_init=0.5,
                         discount=1.0, replay_samples=0, terminal_reward=terminal_reward)
  strategy = strategies.make_strategy(config, 0)
  block = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])
  strategy.feedback(block, 0.8)
  conv, terminal = nsc.Layer(1, 1, 3, 0, 0), nsc.Layer(2, 7, 0, 0, 0)
  q_conv = strategy.q[conv][search_space.actions_at(2, 23).position[terminal]]
  q_start = strategy.q[search_space.START][search_space.actions_at(1, 23).position[conv]]
  # Last step first: Q(conv, end) moves halfway to its target; then the start state, whose
  # target is R/T plus max Q(conv, .), sees the updated value.
  assert q_conv == pytest.approx(0.5 * 0.5 + 0.5 * last_target)
  assert q_start == pytest.approx(0.5 * 0.5 + 0.5 * (0.4 + max(q_conv, 0.5)))


@pytest.mark.parametrize('update_order, first_target', [
    # Last step first: the first step's target is R/T + gamma * max Q(next state), which
    # the last step has just set to R: 0.4 + 0.8 * 0.8.
    ('reverse', 1.04),
    # First step first: the next state is unvisited, so its max is q_init: 0.4 + 0.8 * 0.2.
    ('forward', 0.56)])
def test_q_update_discounts_the_next_states_value(update_order, first_target):
  config = search_config(learning_rate=1.0, learning_rate_decrease=1.0, q_init=0.2,
                         discount=0.8, replay_samples=0, terminal_reward='full',
                         update_order=update_order)
  strategy = strategies.make_strategy(config, 0, search_space.SequenceSpace([2, 2]))
  strategy.feedback((1, 0), 0.8)
  assert strategy.q[(0, -1)][1] == pytest.approx(first_target)
  assert strategy.q[(1, 1)][0] == pytest.approx(0.8)


def test_end_iteration_replays_the_memory():
  # One remembered one-step architecture: each replay moves Q halfway to the reward again,
  # so after the feedback and 4 replays Q = R - R * 0.5 ** 5.
  config = search_config(learning_rate=0.5, learning_rate_decrease=0.5, q_init=0.0,
                         replay_samples=4)
  strategy = strategies.make_strategy(config, 0, search_space.SequenceSpace([3]))
  strategy.feedback((2,), 0.8)
  assert strategy.q[(0, -1)][2] == pytest.approx(0.4)
  strategy.end_iteration()
  assert strategy.q[(0, -1)][2] == pytest.approx(0.8 - 0.8 * 0.5 ** 5)


def test_values_rise_at_one_rate_and_fall_at_another():
  config = search_config(learning_rate=0.5, learning_rate_decrease=0.1, q_init=0.5,
                         replay_samples=0)
  strategy = strategies.make_strategy(config, 0)
  block = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])
  conv, terminal = nsc.Layer(1, 1, 3, 0, 0), nsc.Layer(2, 7, 0, 0, 0)
  position = search_space.actions_at(2, 23).position[terminal]
  strategy.feedback(block, 0.9)  # above: halfway up
  assert strategy.q[conv][position] == pytest.approx(0.7)
  strategy.feedback(block, 0.2)  # below: a tenth of the way down
  assert strategy.q[conv][position] == pytest.approx(0.7 + 0.1 * (0.2 - 0.7))


def test_feedback_may_arrive_in_any_order_before_the_next_proposal():
  # Learning rate 1 and no replay: Q(last layer, terminal) becomes the reward of the last
  # block fed back that ends in that layer, so each reward must reach its own block.
  strategy = strategies.make_strategy(
      search_config(learning_rate=1.0, learning_rate_decrease=1.0, replay_samples=0,
                    terminal_reward='full'), 3)
  batch = [strategy.propose() for _ in range(6)]
  arrivals = [(block, 0.1 + 0.1 * i) for i, block in enumerate(batch)][::-1]
  expected = {}
  for block, reward in arrivals:
    strategy.feedback(block, reward)
    last_state, terminal = search_space.trajectory(block)[-1]
    expected[last_state, terminal] = reward
  strategy.end_iteration()
  assert strategy.memory == arrivals
  for (state, terminal), reward in expected.items():
    position = search_space.actions_at(terminal.index, 23).position[terminal]
    assert strategy.q[state][position] == pytest.approx(reward)


@pytest.mark.parametrize('name', strategies.STRATEGIES)
def test_state_round_trip_gives_the_same_future(name, tmp_path):
  config = search_config(name)
  uninterrupted = strategies.make_strategy(config, 11)
  proposed(uninterrupted, iterations=4)
  state = uninterrupted.state_dict()
  # Through disk: arrays in an npz, the rest as JSON.
  arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  np.savez(tmp_path / 'arrays.npz', **arrays)
  (tmp_path / 'meta.json').write_text(
      json.dumps({k: v for k, v in state.items() if k not in arrays}))
  restored = strategies.make_strategy(config, 999)
  loaded = dict(np.load(tmp_path / 'arrays.npz'))
  loaded.update(json.loads((tmp_path / 'meta.json').read_text()))
  restored.load_state_dict(loaded)
  assert proposed(restored) == proposed(uninterrupted)
  if name == 'qlearning':
    assert restored.q.keys() == uninterrupted.q.keys()
    for key, values in uninterrupted.q.items():
      np.testing.assert_array_equal(restored.q[key], values)


class Recording(strategies.RandomSearch):
  """Random search that notes each proposal and each feedback, in the order they come."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.events = []

  def propose(self):
    arch = super().propose()
    self.events.append(('propose', arch, None))
    return arch

  def feedback(self, arch, reward):
    self.events.append(('feedback', arch, reward))

  @property
  def proposals(self):
    return [arch for event, arch, _ in self.events if event == 'propose']

  @property
  def fed(self):
    return [(arch, reward) for event, arch, reward in self.events if event == 'feedback']


def counting_score(calls):
  """A score that counts its calls per architecture: the sum of the choices."""
  def score(arch):
    calls[arch] = calls.get(arch, 0) + 1
    return sum(arch) / 10
  return score


def recording(sizes=(2, 2)):
  """A recording random search of 8 proposals per iteration over a small sequence space."""
  return Recording(search_config('random'), 0, search_space.SequenceSpace(list(sizes)))


def test_drive_scores_each_architecture_once_and_feeds_every_proposal_in_order():
  strategy, calls = recording(), {}
  samples = strategies.drive(strategy, counting_score(calls), iterations=2)
  assert len(samples) == len(strategy.proposals) == 16  # 4 architectures: many repeats
  assert set(calls.values()) == {1}
  assert [s.arch for s in samples] == strategy.proposals
  assert strategy.fed == [(a, sum(a) / 10) for a in strategy.proposals]
  firsts = [a for i, a in enumerate(strategy.proposals) if a not in strategy.proposals[:i]]
  assert [s.arch for s in samples if s.fresh] == firsts
  assert [s.key for s in samples] == ['%d%d' % a for a in strategy.proposals]


def test_drive_proposes_a_whole_iteration_before_feeding_it_back():
  strategy = recording()
  strategies.drive(strategy, counting_score({}), iterations=2)
  assert [event for event, _, _ in strategy.events] == (
      ['propose'] * 8 + ['feedback'] * 8) * 2


def test_drive_stops_mid_iteration_at_its_budget():
  strategy, calls = recording(sizes=(5, 5, 5)), {}
  samples = strategies.drive(strategy, counting_score(calls), budget=5)
  # 125 architectures: eight draws hold a sixth distinct one, which ends the iteration
  # unscored and unfed, with the rest of it.
  assert len(calls) == 5 and sum(s.fresh for s in samples) == 5
  assert len(samples) < strategy.blocks_per_iteration == len(strategy.proposals)
  assert strategy.proposals[len(samples)] not in calls
  assert [a for a, _ in strategy.fed] == strategy.proposals[:len(samples)]
  assert strategy.iteration == 1


def test_drive_runs_its_iterations_past_the_schedule_at_the_last_epsilon():
  to_the_end = strategies.make_strategy(search_config(), 0)
  samples = strategies.drive(to_the_end, surrogate.synthetic_accuracy)
  assert to_the_end.iteration == to_the_end.num_iterations == 7
  assert [s.epsilon for s in samples[::8]] == [1.0] * 3 + [0.5] * 2 + [0.1] * 2
  assert [s.iteration for s in samples[::8]] == list(range(7))
  longer = strategies.make_strategy(search_config(), 0)
  samples = strategies.drive(longer, surrogate.synthetic_accuracy, iterations=9)
  assert longer.iteration == 9 and len(samples) == 9 * 8
  assert [s.epsilon for s in samples[-16::8]] == [0.1, 0.1]
  shorter = strategies.make_strategy(search_config(), 0)
  assert len(strategies.drive(shorter, surrogate.synthetic_accuracy, iterations=2)) == 16
  assert shorter.iteration == 2


def test_drive_notes_the_epsilon_each_iteration_started_with():
  # As run_search logs it: evolution's epsilon falls to 0 within the second iteration of
  # 8, once its 12 random members are drawn, but that iteration's samples keep 1.
  evolution = strategies.make_strategy(search_config('evolution', population_size=12), 0)
  samples = strategies.drive(evolution, surrogate.synthetic_accuracy, iterations=3)
  assert [s.epsilon for s in samples] == [1.0] * 16 + [0.0] * 8


def test_drive_starts_no_iteration_past_its_proposals():
  samples = strategies.drive(recording(), counting_score({}), iterations=9, max_proposals=20)
  assert len(samples) == 24
  strategy, calls = recording(sizes=(2,)), {}
  samples = strategies.drive(strategy, counting_score(calls), budget=3, max_proposals=20)
  assert len(calls) == 2  # only two architectures exist: the budget is out of reach
  assert len(samples) == 24 and strategy.iteration == 3


def test_unknown_strategy_is_a_clear_error():
  with pytest.raises(ValueError, match="strategy='annealing' is unknown"):
    strategies.make_strategy(search_config('annealing'), 0)


def expected_depth(stop_odds) -> float:
  """Mean depth of a block whose draw at layer index i (2..) ends it with stop_odds(i);
  index max_layers + 1 always ends it. E[depth] = sum over d of P(depth >= d)."""
  mean, survive = 0.0, 1.0
  for depth in range(1, 24):  # depth >= 1 always; depth >= d+1 needs no stop at d+1
    mean += survive
    survive *= 1 - stop_odds(depth + 1)
  return mean


# Independently of search_space: at index i there are i earlier layers, so 8 i single-input
# layers (conv 1/3/5, max 1/3, avg 1/3, identity), i (i + 1) / 2 adds and as many concats,
# and the terminal: 1 of 8 i + i (i + 1) + 1 actions, or 1 of the 7 types.
UNIFORM_DEPTH = expected_depth(lambda i: 1 / (8 * i + i * (i + 1) + 1))
TYPE_FIRST_DEPTH = expected_depth(lambda i: 1 / 7)


@pytest.mark.parametrize('exploration, expected', [
    ('type_first', TYPE_FIRST_DEPTH), ('uniform', UNIFORM_DEPTH)])
@pytest.mark.parametrize('name, epsilon', [('random', 1.0), ('qlearning', 0.0)])
def test_exploration_modes_give_their_depth_distribution(exploration, expected, name, epsilon):
  # Random search explores every step; greedy Q-learning with nothing learned breaks the
  # all-q_init ties of unvisited states with the same draw.
  config = search_config(name, 23, exploration=exploration, epsilon_schedule=((epsilon, 1),))
  strategy = strategies.make_strategy(config, 5)
  depths = np.array([len(strategy.propose()) for _ in range(1500)])
  assert 6.7 < TYPE_FIRST_DEPTH < 6.9 and 19 < UNIFORM_DEPTH < 21
  assert abs(depths.mean() - expected) < 4 * depths.std() / np.sqrt(len(depths))


@pytest.mark.parametrize('exploration, conv_share', [('type_first', 1 / 6), ('uniform', 3 / 10)])
def test_greedy_ties_among_visited_actions_use_the_exploration_draw(exploration, conv_share):
  # The first layer has 10 actions: 3 convs, 2 max and 2 average poolings, identity, add
  # and concat (6 types). All tied at a visited state: a conv is 3/10 of a uniform draw
  # and 1/6 of a type-first one.
  config = search_config(exploration=exploration, epsilon_schedule=((0.0, 1),))
  strategy = strategies.make_strategy(config, 9)
  strategy.q[search_space.START] = np.full(10, 0.7)
  firsts = [strategy.propose().layers[0].type for _ in range(3000)]
  share = np.mean(np.array(firsts) == nsc.CONV)
  assert abs(share - conv_share) < 4 * np.sqrt(conv_share * (1 - conv_share) / len(firsts))
