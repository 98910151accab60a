"""Executors: the same search whatever runs at once; failures that stay right with sharing."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import types

import numpy as np
import pytest

from blockqnn_jax import checkpoint
from blockqnn_jax import child
from blockqnn_jax import executors
from blockqnn_jax import main
from blockqnn_jax import nsc
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax import strategies
from blockqnn_jax.analysis import surrogate
from tests import searches
from tests.interrupt import Crash
from tests.searches import CountingEvaluator

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
  """A dead worker's result (transient) is logged, and the architecture is evaluated
  again when it is sampled again."""
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


def test_sigterm_stops_the_search_and_its_training_child_within_a_second(tmp_path):
  """Within a second whatever the search's poll of its stop request (0.5 s) is set to:
  the signal comes just as the search starts waiting for its first result, so a poll
  much longer than a second fails this. The child in training is told at once."""
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
  assert time.perf_counter() - sent[0] < 1.0


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


def numbered_actors():
  """A fake ``new_actor`` for ``_ActorPool`` and the list of the actors it made."""
  made = []

  def new_actor():
    made.append(f'actor {len(made)}')
    return made[-1]

  return new_actor, made


def test_a_replaced_actor_never_comes_back_into_the_pool():
  """An actor with three calls in flight dies: one call fails (the actor is replaced),
  one had finished before (its success comes back late), the third fails too."""
  new_actor, made = numbered_actors()
  pool = executors._ActorPool(new_actor, size=1, calls_per_actor=3)
  pool.started('actor 0')
  dead = [pool.acquire() for _ in range(3)][0]
  assert pool.replace(dead, room=1) == 'actor 1'
  pool.release(dead)
  assert pool.replace(dead, room=1) is None
  assert pool.actors == ['actor 1'] and made == ['actor 0', 'actor 1']
  assert pool.acquire() is None  # not started yet
  pool.started('actor 1')
  assert [pool.acquire() for _ in range(4)] == ['actor 1'] * 3 + [None]


def test_an_actor_takes_work_only_once_started():
  new_actor, _ = numbered_actors()
  pool = executors._ActorPool(new_actor, size=3, calls_per_actor=1)
  assert pool.acquire() is None
  pool.started('actor 2')
  assert [pool.acquire(), pool.acquire()] == ['actor 2', None]
  assert pool.actors == ['actor 2', 'actor 0', 'actor 1']


def node(cpus, gpus=0, alive=True):
  return {'Alive': alive, 'Resources': {'CPU': float(cpus), 'GPU': float(gpus)}}


@pytest.mark.parametrize('nodes, cpus_per_trial, gpus_per_trial, actors', [
    ([node(2, 2)], 1.0, 0, 2),         # one per CPU
    ([node(2, 2)], 0.5, 0, 4),         # one per cpus_per_trial
    ([node(2, 2)], 0.25, 1, 2),        # one per GPU
    ([node(2, 2)], 0.25, 1 / 3, 6),    # three share each GPU
    ([node(2, 2)], 0.5, 0.25, 4),      # the CPUs place fewer than the GPUs would
    ([node(8, 2)], 1.0, 0.4, 4),       # 2.5 shares of 0.4 in a GPU: 2 fit in each
    ([node(3), node(3)], 2.0, 0, 2),   # one per node: 2 of the 6 CPUs are split
    ([node(16, 3)], 1.0, 2, 1),        # whole GPUs, one node
    ([node(8, 1), node(8, 1)], 1.0, 0.4, 4),
    ([node(8, 2), node(8, 2, alive=False)], 1.0, 0.5, 4),  # dead nodes place nothing
])
def test_actor_count_places_actors_node_by_node_and_gpu_by_gpu(
    nodes, cpus_per_trial, gpus_per_trial, actors):
  assert executors.actor_count(nodes, cpus_per_trial, gpus_per_trial, 0) == actors


def test_a_cluster_that_places_no_actor_is_refused_in_one_line():
  with pytest.raises(ValueError, match=r'^no node of the Ray cluster .* can place one '
                     r'actor of 4 CPU and 0 GPU: lower config.ray.cpus_per_trial'):
    executors.actor_count([node(3), node(3)], 4, 0, 0)


def test_a_dead_nodes_actors_are_replaced_only_where_there_is_room():
  """Two 3-CPU nodes, an actor of 2 CPUs on each; one node dies: the survivor has no
  room for its actor's replacement, which would never start."""
  nodes = [node(3), node(3)]
  new_actor, made = numbered_actors()
  pool = executors._ActorPool(new_actor, executors.actor_count(nodes, 2, 0, 0), 1)
  nodes[1]['Alive'] = False
  assert pool.replace('actor 1', room=executors.placeable_actors(nodes, 2, 0)) is None
  assert pool.actors == ['actor 0'] and made == ['actor 0', 'actor 1']


class FakeRay:
  """Just enough of Ray for a RayExecutor: a cluster of a CPU-only head and a worker node
  with the one GPU, whose actors start at once and die with their node."""

  def __init__(self):
    self.exceptions = pytest.importorskip('ray.exceptions')
    self.worker_alive = True
    self.refs = []  # (actor, what it returns)

  def nodes(self):
    return [{'Alive': True, 'Resources': {'CPU': 2.0}},
            {'Alive': self.worker_alive, 'Resources': {'CPU': 2.0, 'GPU': 1.0}}]

  def is_initialized(self):
    return True

  def cluster_resources(self):
    return {'CPU': 4.0, 'GPU': 1.0}

  def remote(self, _):
    fake = self

    class Method:
      def __init__(self, returns):
        self.returns = returns

      def remote(self, *args):
        fake.refs.append((self.actor, self.returns(*args)))
        return len(fake.refs) - 1

    class Actor:
      def __init__(self):
        self.__ray_ready__, self.evaluate = Method(lambda: True), Method(lambda block: 0.5)
        self.__ray_ready__.actor = self.evaluate.actor = self

    class ActorClass:
      def options(self, **_):
        return self

      def remote(self, *_):
        return Actor()

    return ActorClass()

  def wait(self, refs, num_returns, timeout):
    return refs[:num_returns], refs[num_returns:]

  def get(self, ref):
    if not self.worker_alive:
      raise self.exceptions.RayActorError()
    return self.refs[ref][1]

  def kill(self, actor):
    pass


def test_a_ray_search_without_an_actor_left_ends_in_one_line(monkeypatch):
  """The node with the GPU dies, and the head left alive places no actor of a whole GPU:
  its actor is not replaced and, once Ray has had time to report the node dead, the
  search ends with one line instead of waiting for an actor forever."""
  fake = FakeRay()
  monkeypatch.setitem(sys.modules, 'ray', fake)
  config = searches.resume_config()
  config.ray.gpus_per_trial = 1.0
  executor = executors.RayExecutor(config, surrogate.synthetic_accuracy, compile_ahead=0)
  assert len(executor.actors) == 1
  assert executor.next_result(timeout=0) is None  # the actor starts
  executor.submit('a', CONV)
  fake.worker_alive = False
  assert executor.next_result(timeout=0) is None  # ... and dies; Ray may still be late
  assert executor.actors == []
  monkeypatch.setattr(executors, 'NO_ACTOR_SECONDS', 0)
  time.sleep(0.01)
  with pytest.raises(executors.ClusterLostError) as lost:
    executor.next_result(timeout=0)
  assert str(lost.value).startswith(
      'no Ray actor of 1.0 CPU / 1.0 GPU is left and the cluster places no new one (the '
      'last died: RayActorError: ')
  assert '\n' not in str(lost.value)


def test_a_ray_share_no_node_places_exits_with_one_line(tmp_path, monkeypatch):
  """cpus_per_trial=3 where each node has 2 CPUs: the command line exits with the line
  naming it, no traceback."""
  monkeypatch.setitem(sys.modules, 'ray', FakeRay())
  config = searches.tiny_search_config()
  config.executor, config.ray.cpus_per_trial = 'ray', 3.0
  for name, value in (('_CONFIG', config), ('_WORKDIR', str(tmp_path / 'work')),
                      ('_ALLOW_CONFIG_CHANGE', False)):
    monkeypatch.setattr(main, name, types.SimpleNamespace(value=value))
  with pytest.raises(SystemExit) as exited:
    main.main(['blockqnn'])
  assert str(exited.value) == (
      "error: no node of the Ray cluster ([{'CPU': 2.0}, {'CPU': 2.0, 'GPU': 1.0}]) can "
      'place one actor of 3.0 CPU and 1.0 GPU: lower config.ray.cpus_per_trial or '
      'gpus_per_trial')


class DiesOnSome(CountingEvaluator):
  """The surrogate, except that the worker of every third architecture (by its hash) dies
  on every retry, a transient failure; raises Crash on call number `crash_at`."""

  def __call__(self, block):
    result = super().__call__(block)
    if int(block.canonical_hash()[:2], 16) % 3 == 0:
      return executors._failed('worker died 3 times: RayActorError', transient=True)
    return result


def spy_on_feedback(monkeypatch, config):
  """The (hash, reward) pairs the search's strategy is fed, in order."""
  fed = []
  strategy_class = type(strategies.make_strategy(config.search, config.seed))
  original = strategy_class.feedback

  def feedback(self, arch, reward):
    fed.append((arch.canonical_hash(), reward))
    original(self, arch, reward)

  monkeypatch.setattr(strategy_class, 'feedback', feedback)
  return fed


def test_a_child_that_did_not_run_is_logged_but_never_fed(tmp_path, monkeypatch):
  config = searches.resume_config()
  fed = spy_on_feedback(monkeypatch, config)
  search.run_search(config, str(tmp_path), DiesOnSome())
  records = results.read_results(str(tmp_path))
  ran = sorted((r['hash'], r['reward']) for r in records if not r.get('transient'))
  assert len(ran) < len(records)  # some did not run
  assert sorted(fed) == ran


def test_a_search_with_children_that_did_not_run_resumes_exactly(tmp_path):
  search.run_search(searches.resume_config(), str(tmp_path / 'whole'), DiesOnSome())
  with pytest.raises(Crash):  # in iteration 2, after transient failures in it
    search.run_search(searches.resume_config(), str(tmp_path / 'resumed'), DiesOnSome(11))
  search.run_search(searches.resume_config(), str(tmp_path / 'resumed'), DiesOnSome())
  searches.assert_same_outcome(searches.outcome(tmp_path / 'resumed'),
                               searches.outcome(tmp_path / 'whole'))


def failing_with(reason):
  return lambda block: {'accuracy': 0.0, 'status': 'failed', 'reason': reason}


def test_an_iteration_without_a_verdict_stops_the_search_in_one_line(tmp_path, monkeypatch):
  config = searches.resume_config()
  fed = spy_on_feedback(monkeypatch, config)
  with pytest.raises(search.AllChildrenFailedError) as stopped:
    search.run_search(config, str(tmp_path), failing_with('FileNotFoundError: no data'))
  first = results.read_results(str(tmp_path))[0]
  assert str(stopped.value) == (
      f'every child of iteration 0 failed, none for its architecture (the first, '
      f'{first["codes"]}: FileNotFoundError: no data); fix the cause, delete line 1 and '
      f'every line after it from {tmp_path}/results.jsonl (or use a new workdir), and rerun')
  assert not fed and checkpoint.SearchCheckpointer(str(tmp_path)).restore() is None
  # Fixed, the search stops the same way while the log keeps those failures ...
  fixed = CountingEvaluator()
  with pytest.raises(search.AllChildrenFailedError) as again:
    search.run_search(config, str(tmp_path), fixed)
  assert str(again.value) == str(stopped.value) and not fixed.calls
  # ... and runs once they are deleted, as the line says.
  (tmp_path / 'results.jsonl').write_text('')
  search.run_search(config, str(tmp_path), fixed)
  assert fixed.calls and len(fed) == 36


@pytest.mark.parametrize('reason', ['loss became nan in epoch 1',
                                    'out of memory: RESOURCE_EXHAUSTED'])
def test_children_that_ran_and_failed_are_fed_the_lowest_reward(tmp_path, monkeypatch,
                                                                reason):
  config = searches.resume_config()
  config.search.epsilon_schedule = ((1.0, 1),)
  fed = spy_on_feedback(monkeypatch, config)
  search.run_search(config, str(tmp_path), failing_with(reason))
  records = results.read_results(str(tmp_path))
  assert sorted(fed) == sorted((r['hash'], r['reward']) for r in records)
  assert len(fed) == 6 and all(r['accuracy'] == 0.0 for r in records)


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
  # A search whose children all fail so stops at once, with that reason.
  config.search.update(epsilon_schedule=((1.0, 1),), blocks_per_iteration=1)
  with pytest.raises(search.AllChildrenFailedError, match=reason):
    search.run_search(config, str(tmp_path), child.ChildEvaluator(config))
  [record] = results.read_results(str(tmp_path))
  assert record['status'] == 'failed' and np.isfinite(record['reward'])
