"""Executors: the same search whatever runs at once; failures that stay right with sharing."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from blockqnn_jax import checkpoint
from blockqnn_jax import child
from blockqnn_jax import executors
from blockqnn_jax import nsc
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax.analysis import surrogate
from tests import searches
from tests.interrupt import Crash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])  # one conv: quick to train


@pytest.fixture(scope='module')
def serial(tmp_path_factory):
  return searches.jittery_search(tmp_path_factory.mktemp('serial'), 1, 0)


@pytest.mark.parametrize('children_per_device, compile_ahead', [(1, 2), (3, 0), (3, 2)])
def test_the_search_does_not_depend_on_how_many_children_run_at_once(
    tmp_path, serial, children_per_device, compile_ahead):
  outcome = searches.jittery_search(tmp_path, children_per_device, compile_ahead)
  searches.assert_same_outcome(outcome, serial, same_log_order=False)
  # ... though they did finish in another order than the serial run's.
  assert [r['hash'] for r in outcome[0]] != [r['hash'] for r in serial[0]]


def test_a_resumed_concurrent_search_ends_like_a_serial_one(tmp_path, serial, monkeypatch):
  original = checkpoint.SearchCheckpointer.save

  def crash_on_third_save(self, step, *args):
    if step == 3:
      raise Crash()
    original(self, step, *args)

  monkeypatch.setattr(checkpoint.SearchCheckpointer, 'save', crash_on_third_save)
  with pytest.raises(Crash):
    searches.jittery_search(tmp_path, 3, 1)
  monkeypatch.setattr(checkpoint.SearchCheckpointer, 'save', original)
  searches.assert_same_outcome(searches.jittery_search(tmp_path, 3, 1), serial,
                               same_log_order=False)


class SharingEvaluator:
  """Runs out of memory whenever it trains beside another child; a block with more than
  `too_big` layers runs out of memory even alone."""

  def __init__(self, too_big=99):
    self.lock, self.active, self.runs, self.too_big = threading.Lock(), 0, [], too_big

  def prepare(self, block):
    return block

  def run(self, block, should_stop):
    with self.lock:
      self.active += 1
      crowded = self.active > 1
      self.runs.append((block.canonical_hash(), crowded))
    time.sleep(0.02)
    with self.lock:
      self.active -= 1
    if crowded or len(block) > self.too_big:
      return {'accuracy': 0.0, 'status': 'failed',
              'reason': 'out of memory: RESOURCE_EXHAUSTED'}
    return {'accuracy': surrogate.synthetic_accuracy(block)}


def sharing_config(children_per_device):
  config = searches.resume_config()
  config.children_per_device = children_per_device
  return config


def test_a_child_out_of_memory_beside_others_is_retried_alone(tmp_path):
  evaluator = SharingEvaluator()
  search.run_search(sharing_config(3), str(tmp_path), evaluator)
  records = results.read_results(str(tmp_path))
  assert all(r['status'] == 'ok' for r in records), [r for r in records if r['status'] != 'ok']
  crowded = [key for key, was_crowded in evaluator.runs if was_crowded]
  assert crowded  # children did share, and ran out of memory
  for key in crowded:  # each was then run once more, alone
    assert (key, False) in evaluator.runs


def test_out_of_memory_alone_is_the_architectures_verdict(tmp_path):
  evaluator = SharingEvaluator(too_big=2)
  search.run_search(sharing_config(1), str(tmp_path), evaluator)
  records = results.read_results(str(tmp_path))
  big = [r for r in records if len(nsc.Block.from_codes(r['codes'])) > 2]
  assert big and all(r['status'] == 'failed' and not r.get('transient') for r in big)
  # Cached like any verdict: each architecture ran once.
  keys = [key for key, _ in evaluator.runs]
  assert len(keys) == len(set(keys))


def test_a_transient_failure_is_not_cached(tmp_path):
  """A dead worker's result (transient) is logged and fed, but the architecture is
  evaluated again when it is sampled again."""
  config = searches.resume_config()
  config.search.max_layers = 1  # few architectures: each is sampled many times
  calls = []

  def flaky(block):
    calls.append(block.canonical_hash())
    if calls.count(block.canonical_hash()) == 1:
      return {'accuracy': 0.0, 'status': 'failed', 'reason': 'worker died', 'transient': True}
    return 0.5

  search.run_search(config, str(tmp_path), flaky)
  records = results.read_results(str(tmp_path))
  transient = {r['hash'] for r in records if r.get('transient')}
  samples = [r['hash'] for r in records]
  assert transient and any(samples.count(key) > 1 for key in transient)
  for key in transient:
    assert calls.count(key) == min(2, samples.count(key))
  _, search_state = checkpoint.SearchCheckpointer(str(tmp_path)).restore()
  for key in transient:
    if samples.count(key) > 1:
      assert search_state['cache'][key]['status'] == 'ok'
    else:
      assert key not in search_state['cache']


class Stoppable:
  """Trains until asked to stop."""

  def __init__(self):
    self.started, self.stopped = threading.Event(), threading.Event()

  def prepare(self, block):
    return block

  def run(self, block, should_stop):
    self.started.set()
    while not should_stop():
      time.sleep(0.01)
    self.stopped.set()
    return 0.0


def test_closing_the_local_executor_stops_a_training_child():
  evaluator = Stoppable()
  executor = executors.LocalExecutor(evaluator, children_per_device=1, compile_ahead=1)
  executor.submit('a', CONV)
  assert evaluator.started.wait(10)
  assert executor.next_result(timeout=0.05) is None
  executor.close()
  assert evaluator.stopped.wait(10)


def test_sigterm_stops_the_search_and_its_training_child_within_a_poll(tmp_path):
  """Within the search's poll of its stop request (0.5 s), plus a margin for a loaded
  machine; the child in training is told at once."""
  evaluator = Stoppable()
  sent = []

  def sigterm_once_training():
    evaluator.started.wait(30)
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=sigterm_once_training, daemon=True).start()
  with pytest.raises(search.SearchStopped):
    search.run_search(searches.resume_config(), str(tmp_path), evaluator)
  assert evaluator.stopped.wait(0.25)
  assert time.perf_counter() - sent[0] < search._POLL_SECONDS + 0.25


class TrainingWatch:
  """An Evaluator that notes when its child starts training (asks ``should_stop``)."""

  def __init__(self, evaluator):
    self.evaluator, self.training = evaluator, threading.Event()

  def prepare(self, block):
    return self.evaluator.prepare(block)

  def run(self, prepared, should_stop):
    def watched():
      self.training.set()
      return should_stop()
    return self.evaluator.run(prepared, watched)


def test_a_real_child_in_training_is_abandoned_at_its_next_step():
  config = searches.tiny_child_config()
  config.early_stop.epochs = 10_000  # minutes of training, unless abandoned
  watch = TrainingWatch(child.ChildEvaluator(config))
  executor = executors.LocalExecutor(watch, children_per_device=1, compile_ahead=0)
  executor.submit('conv', CONV)
  assert watch.training.wait(300)
  time.sleep(0.2)
  closed = time.perf_counter()
  executor.close()
  _, result = executor.next_result(timeout=10)
  assert time.perf_counter() - closed < 0.5
  assert result['status'] == 'failed' and result['reason'] == 'cancelled: the search stopped'


COMPILE_IN_A_FRESH_PROCESS = """
import json, sys
import jax
from blockqnn_jax import child
from blockqnn_jax import nsc
from tests import searches
hits = []
jax.monitoring.register_event_listener(
    lambda event, **kwargs: hits.append(event == '/jax/compilation_cache/cache_hits'))
config = searches.tiny_child_config(sys.argv[1])
config.early_stop.epochs = 1
result = child.evaluate_block(nsc.Block.from_json(sys.argv[2]), config)
print(json.dumps({'status': result['status'], 'hits': sum(hits),
                  'compile_seconds': result['compile_seconds']}))
"""


def test_a_second_process_reads_the_child_back_from_the_compilation_cache(tmp_path):
  runs = []
  for _ in range(2):
    process = subprocess.run(
        [sys.executable, '-c', COMPILE_IN_A_FRESH_PROCESS, str(tmp_path / 'cache'),
         CONV.to_json()],
        env={**os.environ, 'PYTHONPATH': ROOT}, capture_output=True, text=True, check=True)
    runs.append(json.loads(process.stdout.splitlines()[-1]))
  cold, warm = runs
  assert cold['status'] == warm['status'] == 'ok'
  assert cold['hits'] == 0 and warm['hits'] > 0
  assert warm['compile_seconds'] < cold['compile_seconds'] / 2, runs


def test_a_replaced_actor_never_comes_back_into_the_pool():
  """An actor with three calls in flight dies: one call fails (the actor is replaced),
  one had finished before (its success comes back late), the third fails too."""
  started = []

  def new_actor():
    started.append(f'actor {len(started)}')
    return started[-1]

  pool = executors._ActorPool(new_actor, size=1, calls_per_actor=3)
  dead = [pool.acquire() for _ in range(3)][0]
  pool.replace(dead)
  pool.release(dead)
  pool.replace(dead)
  assert pool.actors == ['actor 1'] and started == ['actor 0', 'actor 1']
  assert [pool.acquire() for _ in range(4)] == ['actor 1'] * 3 + [None]


@pytest.mark.parametrize('field, value, reason', [
    ('batch_size', 6, 'ValueError: config.batch_size=6 must be a positive multiple of the 4'),
    ('dataset', 'no_such_dataset', 'Unknown dataset'),
])
def test_evaluate_block_never_raises(field, value, reason, tmp_path):
  config = searches.resume_config()
  config.dataset = 'digits'
  config.validation_examples = 300
  config.compilation_cache_dir = ''
  config[field] = value
  result = child.evaluate_block(CONV, config)
  assert result['status'] == 'failed' and result['accuracy'] == 0.0
  assert reason in result['reason'], result['reason']
  # The search scores the failed child like any other: a finite reward.
  config.search.update(epsilon_schedule=((1.0, 1),), blocks_per_iteration=1)
  search.run_search(config, str(tmp_path), child.ChildEvaluator(config))
  [record] = results.read_results(str(tmp_path))
  assert record['status'] == 'failed' and np.isfinite(record['reward'])
