"""Search spaces: the sequence space, NSC mutation, and every strategy on both spaces."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from blockqnn_jax import nsc
from blockqnn_jax import search
from blockqnn_jax import search_space
from blockqnn_jax import strategies
from configs import default
from tests import searches
from tests.interrupt import Crash
from tests import hypothesis_blocks

NB201 = search_space.SequenceSpace([5] * 6)


def search_config(strategy='qlearning', **overrides):
  config = default.get_config().search
  config.strategy = strategy
  config.epsilon_schedule = ((1.0, 3), (0.5, 2), (0.1, 2))
  config.blocks_per_iteration = 4
  config.update(overrides)
  return config


def test_sequence_space_walks_position_by_position():
  space = search_space.SequenceSpace([3, 2, 4])
  state, taken = space.start, []
  for choice in (2, 0, 3):
    assert list(space.actions(state).actions) == list(range(space.sizes[len(taken)]))
    taken.append(choice)
    state = space.step(state, choice)
    if len(taken) < 3:
      assert state == (len(taken), choice)  # the position and the previous choice
  assert state is None
  arch = space.build(taken)
  assert arch == (2, 0, 3)
  assert space.trajectory(arch) == [((0, -1), 2), ((1, 2), 0), ((2, 0), 3)]
  assert space.key(arch) == '203'


def test_sequence_keys_keep_leading_zeros_and_reject_outsiders():
  assert NB201.key((0, 0, 0, 0, 0, 0)) == '000000'
  assert NB201.parse_key('000000') == (0,) * 6
  assert NB201.from_codes(NB201.to_codes((3, 3, 4, 1, 3, 1))) == (3, 3, 4, 1, 3, 1)
  for bad in ('00000', '0000005', '00000a', '1234567'):
    with pytest.raises(ValueError, match=f"key '{bad}' is not in sequence"):
      NB201.parse_key(bad)
  wide = search_space.SequenceSpace([12, 3])
  assert wide.key((11, 2)) == '11,2'
  assert wide.parse_key('11,2') == (11, 2)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=6, max_size=6), st.integers(0, 2**31))
def test_sequence_mutation_changes_exactly_one_choice(choices, seed):
  rng = np.random.default_rng(seed)
  parent = tuple(choices)
  for _ in range(20):
    child = NB201.mutate(parent, rng)
    changed = [i for i in range(6) if child[i] != parent[i]]
    assert len(changed) == 1 and 0 <= child[changed[0]] < 5


def test_sequence_mutation_reaches_every_neighbour():
  rng = np.random.default_rng(0)
  parent = (0, 1, 2, 3, 4, 0)
  seen = {NB201.mutate(parent, rng) for _ in range(2000)}
  assert len(seen) == 6 * 4  # every position, every other option


@settings(max_examples=60, deadline=None)
@given(hypothesis_blocks.blocks(max_layers=8), st.integers(0, 2**31))
def test_nsc_mutants_are_valid_and_change_one_layer(block, seed):
  space = search_space.NSCSpace(8)
  rng = np.random.default_rng(seed)
  for _ in range(10):
    child = space.mutate(block, rng)
    again = nsc.Block.from_codes(json.loads(json.dumps(child.to_codes())), 8)
    assert again == child
    assert child.canonical_hash() != block.canonical_hash()
    assert len(child) == len(block)
    changed = [i for i in range(len(block)) if child.layers[i] != block.layers[i]]
    assert len(changed) == 1


def test_nsc_mutation_changes_type_kernel_and_predecessor():
  space = search_space.NSCSpace(5)
  block = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 7, 0, 0, 0]])
  rng = np.random.default_rng(1)
  kinds = set()
  for _ in range(300):
    child = space.mutate(block, rng)
    (old, new), = [(a, b) for a, b in zip(block.layers, child.layers) if a != b]
    if new.type != old.type:
      kinds.add('type')
    elif new.kernel != old.kernel:
      kinds.add('kernel')
    else:
      assert new.preds != old.preds
      kinds.add('pred')
  assert kinds == {'type', 'kernel', 'pred'}


def test_sequence_neighbours_are_every_one_choice_change():
  parent = (0, 1, 2, 3, 4, 0)
  neighbours = NB201.neighbours(parent)
  rng = np.random.default_rng(0)
  assert len(neighbours) == 6 * 4
  assert set(neighbours) == {NB201.mutate(parent, rng) for _ in range(2000)}


@settings(max_examples=40, deadline=None)
@given(hypothesis_blocks.blocks(max_layers=6), st.integers(0, 2**31))
def test_nsc_neighbours_are_the_mutants_one_per_key(block, seed):
  space = search_space.NSCSpace(6)
  neighbours = space.neighbours(block)
  keys = [space.key(n) for n in neighbours]
  assert len(set(keys)) == len(keys) and space.key(block) not in keys
  for child in neighbours:
    assert len([i for i in range(len(block)) if child.layers[i] != block.layers[i]]) == 1
  rng = np.random.default_rng(seed)
  assert {space.key(space.mutate(block, rng)) for _ in range(30)} <= set(keys)


def test_nsc_neighbours_of_one_conv():
  block = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])
  # conv 1x1 and 5x5; max and avg pool 1x1 and 3x3; identity; add(x, x); concat(x, x).
  assert sorted(tuple(n.layers[0]) for n in search_space.NSCSpace(5).neighbours(block)) == [
      (1, 1, 1, 0, 0), (1, 1, 5, 0, 0), (1, 2, 1, 0, 0), (1, 2, 3, 0, 0), (1, 3, 1, 0, 0),
      (1, 3, 3, 0, 0), (1, 4, 0, 0, 0), (1, 5, 0, 0, 0), (1, 6, 0, 0, 0)]


def count_threes(arch) -> float:
  return 0.1 + 0.8 * arch.count(3) / len(arch)


def test_qlearning_state_on_a_sequence_is_position_and_previous_choice():
  strategy = strategies.make_strategy(
      search_config(learning_rate=1.0, discount=1.0, replay_samples=0), 0, NB201)
  strategy.feedback((3, 3, 4, 1, 3, 1), 0.9)
  assert set(strategy.q) == {(0, -1), (1, 3), (2, 3), (3, 4), (4, 1), (5, 3)}
  # alpha = 1: the last step holds the full reward, the first R/T + max of the next.
  assert strategy.q[(5, 3)][1] == pytest.approx(0.9)
  assert strategy.q[(4, 1)][3] == pytest.approx(0.15 + 0.9)
  assert strategy.q[(0, -1)][3] == pytest.approx(5 * 0.15 + 0.9)


@pytest.mark.parametrize('name', strategies.STRATEGIES)
def test_every_strategy_round_trips_on_a_sequence_space(name, tmp_path):
  config = search_config(name, population_size=5, tournament_size=2)
  uninterrupted = strategies.make_strategy(config, 4, NB201)
  strategies.drive(uninterrupted, count_threes, iterations=4)
  state = uninterrupted.state_dict()
  arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  np.savez(tmp_path / 'arrays.npz', **arrays)
  (tmp_path / 'meta.json').write_text(
      json.dumps({k: v for k, v in state.items() if k not in arrays}))
  restored = strategies.make_strategy(config, 999, NB201)
  loaded = dict(np.load(tmp_path / 'arrays.npz'))
  loaded.update(json.loads((tmp_path / 'meta.json').read_text()))
  restored.load_state_dict(loaded)
  assert (strategies.drive(restored, count_threes, iterations=6) ==
          strategies.drive(uninterrupted, count_threes, iterations=6))


def test_a_state_of_another_space_is_refused():
  state = strategies.make_strategy(search_config(), 0, NB201).state_dict()
  other = strategies.make_strategy(search_config(), 0, search_space.SequenceSpace([5] * 5))
  with pytest.raises(ValueError, match=r'searched sequence\(sizes=\[5, 5, 5, 5, 5, 5\]\)'):
    other.load_state_dict(state)


def test_run_search_on_a_sequence_space_logs_and_resumes(tmp_path):
  config = default.get_config()
  config.search.epsilon_schedule = ((1.0, 2), (0.1, 2))
  config.search.blocks_per_iteration = 5
  evaluated = []

  def evaluate(arch):
    evaluated.append(arch)
    return count_threes(arch)

  summary = search.run_search(config, str(tmp_path), evaluate, space=NB201)
  records = [json.loads(l) for l in (tmp_path / 'results.jsonl').read_text().splitlines()]
  assert len(records) == 20 == summary['blocks_sampled']
  for record in records:
    arch = tuple(record['codes'])
    assert record['hash'] == NB201.key(arch)
    assert record['reward'] == record['accuracy'] == pytest.approx(count_threes(arch))
  assert len(evaluated) == len({r['hash'] for r in records}) == summary['blocks_evaluated']
  assert summary['best_reward'] == max(r['reward'] for r in records)
  # A finished search resumed evaluates nothing more.
  again = search.run_search(config, str(tmp_path), evaluate, space=NB201)
  assert again['blocks_sampled'] == 20 and len(evaluated) == summary['blocks_evaluated']


def test_a_sequence_space_search_killed_mid_run_resumes_to_the_same_end(tmp_path):
  """The Q-table's states hold a negative choice (the start, (0, -1)): the checkpoint must
  bring them back as saved for the resumed search to end as an uninterrupted one."""
  config = default.get_config()
  config.search.epsilon_schedule = ((1.0, 2), (0.3, 3))
  config.search.blocks_per_iteration = 5
  search.run_search(config, str(tmp_path / 'whole'), count_threes, space=NB201)
  calls = []

  def crash_at_the_14th_call(arch):
    calls.append(arch)
    if len(calls) == 14:
      raise Crash()
    return count_threes(arch)

  with pytest.raises(Crash):
    search.run_search(config, str(tmp_path / 'split'), crash_at_the_14th_call, space=NB201)
  search.run_search(config, str(tmp_path / 'split'), count_threes, space=NB201)
  searches.assert_same_outcome(searches.outcome(tmp_path / 'split'),
                               searches.outcome(tmp_path / 'whole'))


def test_run_search_on_another_space_needs_an_evaluate_fn(tmp_path):
  with pytest.raises(ValueError, match='needs an evaluate_fn'):
    search.run_search(default.get_config(), str(tmp_path), space=NB201)
