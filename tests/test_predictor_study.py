"""The predictor study's analysis (experiments/predictor_study.py): each block once, and
held-out rank correlations that tell a learnable reward from a shuffled one."""

import zlib

import numpy as np
import pytest

from blockqnn_jax import search_space
from blockqnn_jax.analysis import predictor_study


def test_each_architecture_counts_once_by_its_own_evaluation():
  records = [
      {'hash': 'a', 'cached': False, 'reward': 0.1},
      {'hash': 'a', 'cached': True, 'reward': 0.1},
      {'hash': 'b', 'cached': False, 'reward': 0.0, 'transient': True},
      {'hash': 'b', 'cached': False, 'reward': 0.3},
      {'hash': 'a', 'cached': False, 'reward': 0.2},  # a repeat (the config changed)
      {'hash': 'c', 'cached': True, 'reward': 0.4},  # its own evaluation is not here
  ]
  assert predictor_study.distinct_results(records) == [records[0], records[3]]


def test_held_out_correlations_are_high_for_a_linear_reward_and_not_for_a_shuffled_one():
  rng = np.random.default_rng(0)
  features = rng.integers(0, 2, size=(120, 12)).astype(float)
  rewards = features @ rng.normal(size=12)
  kwargs = dict(sizes=[10, 60], held_out=40, repeats=4, members=5, ridge=0.1)
  learned = predictor_study.summarize(
      predictor_study.held_out_curves(features, rewards, **kwargs))
  shuffled = predictor_study.summarize(
      predictor_study.held_out_curves(features, rng.permutation(rewards), **kwargs))
  assert learned[60]['spearman']['mean'] > 0.95 and learned[60]['kendall']['mean'] > 0.85
  assert learned[10]['spearman']['mean'] < learned[60]['spearman']['mean']
  assert abs(shuffled[60]['spearman']['mean']) < 0.3


def test_sizes_beyond_the_blocks_are_refused_in_one_line():
  with pytest.raises(ValueError, match=r'training sizes \[100\] and 40 held out'):
    predictor_study.held_out_curves(np.zeros((120, 3)), np.zeros(120), [100], 40, 1, 5, 1.0)


def test_the_path_encoding_names_each_path_from_input_to_output_by_its_operations():
  space = search_space.NSCSpace(4, 'paths')
  # input -> conv 3 -> max pool 3, and input -> identity; add(pool, identity) is the output
  block = search_space.NSCSpace(4).from_codes(
      [[1, 1, 3, 0, 0], [2, 2, 3, 1, 0], [3, 4, 0, 0, 0], [4, 5, 0, 2, 3], [5, 7, 0, 0, 0]])
  ops = search_space.NSC_OPS
  paths = [(ops[(1, 3)], ops[(2, 3)], ops[(5, 0)]), (ops[(4, 0)], ops[(5, 0)])]
  expected = np.zeros(search_space.PATH_BUCKETS)
  for path in paths:
    expected[zlib.crc32(bytes(path)) % search_space.PATH_BUCKETS] = 1.0
  np.testing.assert_array_equal(space.features(block), expected)
  renumbered = search_space.NSCSpace(4).from_codes(
      [[1, 4, 0, 0, 0], [2, 1, 3, 0, 0], [3, 2, 3, 2, 0], [4, 5, 0, 1, 3], [5, 7, 0, 0, 0]])
  np.testing.assert_array_equal(space.features(renumbered), expected)
