"""Local search: neighbours of the climb's best first, a random restart at a local optimum,
no proposal twice, proposals ahead of feedback, exact resume."""

import json

import numpy as np

from blockqnn_jax import search_space
from blockqnn_jax import strategies
from configs import default

NB201 = search_space.SequenceSpace([5] * 6)


def local_search(space=NB201, seed=0, blocks_per_iteration=1):
  config = default.get_config().search
  config.strategy = 'local_search'
  config.blocks_per_iteration = blocks_per_iteration
  config.epsilon_schedule = ((1.0, 1000),)
  return strategies.make_strategy(config, seed, space)


def bumpy(arch) -> float:
  """A fixed random reward per architecture: many local optima."""
  return float(np.random.default_rng(int(''.join(map(str, arch)), 5)).random())


def test_each_proposal_is_a_neighbour_of_the_climbs_best_until_it_is_a_local_optimum():
  space = search_space.SequenceSpace([4] * 4)  # 256 architectures, 12 neighbours each
  strategy = local_search(space)
  best, evaluated, restarts = None, {}, 0
  for _ in range(200):
    arch = strategy.propose()
    assert arch not in evaluated
    if best is None or arch not in space.neighbours(best[0]):
      # A restart only where every neighbour of the climb's best is evaluated.
      assert best is None or all(n in evaluated for n in space.neighbours(best[0]))
      best, restarts = None, restarts + 1
    evaluated[arch] = bumpy(arch)
    strategy.feedback(arch, evaluated[arch])
    if best is None or evaluated[arch] > best[1]:
      best = (arch, evaluated[arch])
  assert restarts >= 5


def test_a_local_optimum_restarts_from_an_unevaluated_architecture():
  space = search_space.SequenceSpace([2, 2])  # each architecture has two neighbours
  strategy = local_search(space, seed=3)
  start = strategy.propose()
  strategy.feedback(start, 1.0)
  neighbours = [strategy.propose() for _ in range(2)]
  assert sorted(neighbours) == sorted(space.neighbours(start))
  for arch in neighbours:
    strategy.feedback(arch, 0.5)
  assert strategy.propose() == tuple(1 - c for c in start)  # the one left


def test_proposals_ahead_of_feedback_are_the_starts_neighbours_then_a_new_start():
  strategy = local_search(blocks_per_iteration=30)
  proposals = [strategy.propose() for _ in range(30)]
  assert len(set(proposals)) == 30
  assert sorted(proposals[1:25]) == sorted(NB201.neighbours(proposals[0]))
  assert proposals[25] not in NB201.neighbours(proposals[0])
  assert set(proposals[26:]) <= set(NB201.neighbours(proposals[25]))


def test_a_reward_fed_late_moves_the_climb_it_was_proposed_for():
  strategy = local_search(blocks_per_iteration=30)
  proposals = [strategy.propose() for _ in range(30)]
  better = proposals[5]  # a neighbour of the first start
  rewards = {better: 0.9, proposals[25]: 0.5}
  for arch in proposals:
    strategy.feedback(arch, rewards.get(arch, 0.1))
  assert [best for best, _ in strategy.climbs.values()] == [better, proposals[25]]
  follow = [strategy.propose() for _ in range(5)]
  assert set(follow) <= set(NB201.neighbours(better))


def through_disk(state: dict, tmp_path) -> dict:
  arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  np.savez(tmp_path / 'arrays.npz', **arrays)
  (tmp_path / 'meta.json').write_text(
      json.dumps({k: v for k, v in state.items() if k not in arrays}))
  loaded = dict(np.load(tmp_path / 'arrays.npz'))
  loaded.update(json.loads((tmp_path / 'meta.json').read_text()))
  return loaded


def test_resume_with_proposals_awaiting_feedback_is_exact(tmp_path):
  uninterrupted = local_search(blocks_per_iteration=8)
  strategies.drive(uninterrupted, bumpy, iterations=9)
  waiting = [uninterrupted.propose() for _ in range(8)]
  state = uninterrupted.state_dict()
  restored = local_search(seed=99, blocks_per_iteration=8)
  restored.load_state_dict(through_disk(state, tmp_path))
  saved_again = restored.state_dict()
  assert saved_again.keys() == state.keys()
  for key, value in state.items():
    np.testing.assert_array_equal(saved_again[key], value, err_msg=key)
  for strategy in (uninterrupted, restored):
    for arch in waiting:
      strategy.feedback(arch, bumpy(arch))
    strategy.end_iteration()
  assert (strategies.drive(restored, bumpy, iterations=6) ==
          strategies.drive(uninterrupted, bumpy, iterations=6))
