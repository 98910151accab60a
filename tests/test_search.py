"""The search loop driven by a surrogate: logs, cache, best block, Q-learning vs random."""

import json
import logging
import pathlib
import re
import tempfile

from hypothesis import assume, given, settings
from hypothesis import strategies as st
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from blockqnn_jax import nsc
from blockqnn_jax import search
from blockqnn_jax import strategies as strategies_lib
from blockqnn_jax.analysis import surrogate
from configs import default
from tests import hypothesis_blocks

PAPER_SCHEDULE_QUARTER = (
    (1.0, 24), (0.9, 2), (0.8, 2), (0.7, 2), (0.6, 3),
    (0.5, 3), (0.4, 3), (0.3, 3), (0.2, 3), (0.1, 3))


def small_config(strategy='qlearning', seed=0):
  config = default.get_config()
  config.seed = seed
  config.search.strategy = strategy
  config.search.epsilon_schedule = ((1.0, 2), (0.5, 1), (0.1, 1))
  config.search.blocks_per_iteration = 8
  config.search.max_layers = 6
  return config


def read_results(workdir):
  return [json.loads(line) for line in (workdir / 'results.jsonl').read_text().splitlines()]


def test_search_writes_results_and_best_block(tmp_path):
  summary = search.run_search(small_config(), str(tmp_path), surrogate.synthetic_accuracy)
  records = read_results(tmp_path)
  assert len(records) == 4 * 8 == summary['blocks_sampled']
  for key in ('codes', 'hash', 'iteration', 'epsilon', 'accuracy', 'reward', 'flops_term',
              'density_term', 'cached', 'status'):
    assert key in records[0]
  assert [r['iteration'] for r in records] == [i for i in range(4) for _ in range(8)]
  assert [r['epsilon'] for r in records[::8]] == [1.0, 1.0, 0.5, 0.1]
  for r in records:
    block = nsc.Block.from_codes(r['codes'])
    assert r['hash'] == block.canonical_hash()
    assert r['reward'] == pytest.approx(r['accuracy'] - r['flops_term'] - r['density_term'])
  best = json.loads((tmp_path / 'best_block.json').read_text())
  assert best['reward'] == max(r['reward'] for r in records) == summary['best_reward']
  assert best['codes'] == summary['best_codes']
  assert summary['blocks_evaluated'] == len({r['hash'] for r in records})


def scripted_strategy(proposals):
  """make_strategy, but the strategy proposes ``proposals`` in turn."""
  make_strategy = strategies_lib.make_strategy

  def make(*args):
    strategy = make_strategy(*args)
    strategy.propose = iter(proposals).__next__
    return strategy

  return make


@settings(max_examples=10, deadline=None)
@given(st.data())
def test_isomorphic_blocks_are_not_evaluated_twice(data):
  """A block and its renumberings (other layer orders, add/concat operands swapped) are
  trained once, whatever order they come in."""
  block = data.draw(hypothesis_blocks.blocks(max_layers=5))
  proposals = [block, *(data.draw(hypothesis_blocks.renumberings(block)) for _ in range(5))]
  assume(len({str(b.to_codes()) for b in proposals}) > 1)  # real isomorphs
  config = small_config()
  config.search.epsilon_schedule = ((1.0, 1),)
  config.search.blocks_per_iteration = len(proposals)
  config.search.max_layers = 5
  calls = []

  def evaluate(arch):
    calls.append(arch.to_codes())
    return {'accuracy': 0.5, 'train_seconds': 1.0}

  with tempfile.TemporaryDirectory() as workdir, pytest.MonkeyPatch.context() as patch:
    patch.setattr(search.strategies_lib, 'make_strategy', scripted_strategy(proposals))
    summary = search.run_search(config, workdir, evaluate)
    records = read_results(pathlib.Path(workdir))
  assert calls == [block.to_codes()] and summary['blocks_evaluated'] == 1
  assert [r['codes'] for r in records] == [b.to_codes() for b in proposals]
  assert [r['cached'] for r in records] == [False] + [True] * (len(proposals) - 1)
  assert all(r['train_seconds'] == 1.0 for r in records)


def test_failed_children_get_zero_accuracy_and_the_search_goes_on(tmp_path):
  def evaluate(block):
    if len(block) % 2:
      return {'accuracy': float('nan'), 'status': 'failed', 'reason': 'loss became nan in epoch 1'}
    return 0.7

  search.run_search(small_config(), str(tmp_path), evaluate)
  records = read_results(tmp_path)
  failed = [r for r in records if r['status'] == 'failed']
  assert failed and all(r['accuracy'] == 0.0 and r['reason'] for r in failed)
  assert len(records) == 32


@pytest.mark.parametrize('bad', [1.5, -0.1, float('nan'), 'high', {'loss': 0.1}])
def test_bad_evaluate_results_are_clear_errors(tmp_path, bad):
  with pytest.raises(ValueError, match='evaluate_fn returned'):
    search.run_search(small_config(), str(tmp_path), lambda block: bad)


def search_samples(strategy_name: str, seed: int) -> list[strategies_lib.Sample]:
  config = default.get_config()
  config.search.strategy = strategy_name
  config.search.epsilon_schedule = PAPER_SCHEDULE_QUARTER
  return surrogate.search_samples(config, seed)


def test_qlearning_beats_random_search_on_a_known_landscape():
  """At a quarter of the paper's schedule (2,496 blocks), over three seeds."""
  margins = []
  for seed in range(3):
    late = [s.reward for s in search_samples('qlearning', seed) if s.epsilon <= 0.3]
    baseline = [s.reward for s in search_samples('random', seed)][-len(late):]
    margins.append(np.mean(late) - np.mean(baseline))
  assert min(margins) > 0.2, margins


def test_random_search_checkpoints_and_resumes(tmp_path):
  # Random search's agent state has no arrays, which Orbax alone would refuse to save.
  first = search.run_search(small_config('random'), str(tmp_path), surrogate.synthetic_accuracy)
  assert len(read_results(tmp_path)) == 4 * 8

  def must_not_train(block):
    raise AssertionError(f'{block} trained again after the search finished')

  again = search.run_search(small_config('random'), str(tmp_path), must_not_train)
  assert again['best_codes'] == first['best_codes'] and len(read_results(tmp_path)) == 32


def test_iterations_count_from_0_in_the_log_the_records_and_tensorboard(tmp_path, caplog):
  """The progress line names each block's iteration as its record (results.jsonl,
  best_block.json) and the TensorBoard steps do."""
  caplog.set_level(logging.INFO, logger='absl')
  search.run_search(small_config(), str(tmp_path), surrogate.synthetic_accuracy)
  records = read_results(tmp_path)
  logged = {}
  for message in caplog.messages:
    match = re.match(r'\[(\d+)/\d+\] iteration (\d+), epsilon', message)
    if match:
      logged[int(match[1]) - 1] = int(match[2])
  assert logged == {r['index']: r['iteration'] for r in records}
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert [e.step for e in events.Scalars('iteration/epsilon')] == sorted(
      {r['iteration'] for r in records}) == [0, 1, 2, 3]
