"""The Ray executor on a local two-CPU cluster: completes, retries dead workers, resumes."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from blockqnn_jax import executors
from blockqnn_jax import nsc
from blockqnn_jax import search
from blockqnn_jax.analysis import surrogate
from configs import default
from configs import quickstart
from tests import searches

ray = pytest.importorskip('ray', reason='Ray is optional: pip install -r requirements-ray.txt')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module', autouse=True)
def cluster():
  # Two GPUs only in name (a custom resource count): actors on them run on the CPU.
  ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, log_to_driver=False,
           runtime_env={'env_vars': {'PYTHONPATH': ROOT}})
  yield
  ray.shutdown()


def ray_config(executor='ray'):
  config = default.get_config()
  config.seed = 5
  config.executor = executor
  config.ray.max_in_flight = 2
  config.ray.max_retries = 2
  config.ray.gpus_per_trial = 0
  config.search.epsilon_schedule = ((1.0, 2), (0.1, 1))
  config.search.blocks_per_iteration = 4
  config.search.max_layers = 4
  return config


def records_of(workdir):
  return [json.loads(l) for l in (workdir / 'results.jsonl').read_text().splitlines()]


class Evaluator:
  """The surrogate; with a `marks` directory, it notes every call there, and it kills its
  own worker process the first `deaths` times it sees a block."""

  def __init__(self, marks=None, deaths=0):
    self.marks, self.deaths = marks, deaths

  def __call__(self, block):
    if self.marks:
      key = block.canonical_hash()
      with open(os.path.join(self.marks, f'{key}.calls'), 'a') as f:
        f.write('x')
      with open(os.path.join(self.marks, f'{key}.calls')) as f:
        calls = len(f.read())
      if calls <= self.deaths:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)
    return {'accuracy': surrogate.synthetic_accuracy(block), 'train_seconds': 0.05}


def test_ray_search_completes_like_a_local_one(tmp_path):
  local = search.run_search(ray_config('local'), str(tmp_path / 'local'), Evaluator())
  remote = search.run_search(ray_config(), str(tmp_path / 'ray'), Evaluator())
  assert remote['blocks_sampled'] == local['blocks_sampled'] == 12
  for record in records_of(tmp_path / 'ray'):  # each result came back to its own block
    block = nsc.Block.from_codes(record['codes'])
    assert record['hash'] == block.canonical_hash()
    assert record['status'] == 'ok'
    assert record['accuracy'] == surrogate.synthetic_accuracy(block)
  assert remote['best_reward'] is not None


def test_a_killed_worker_is_retried_and_the_search_completes(tmp_path):
  marks = tmp_path / 'marks'
  marks.mkdir()
  search.run_search(ray_config(), str(tmp_path / 'work'), Evaluator(str(marks), deaths=1))
  records = records_of(tmp_path / 'work')
  assert len(records) == 12 and all(r['status'] == 'ok' for r in records)
  evaluated = [r['hash'] for r in records if not r['cached']]
  assert all(len((marks / f'{key}.calls').read_text()) == 2 for key in evaluated)


def test_a_child_whose_worker_always_dies_is_recorded_failed(tmp_path):
  """... as a transient failure; with every child of the iteration so, the search stops
  before its strategy learns from them."""
  config = ray_config()
  config.ray.max_retries = 1
  config.search.epsilon_schedule = ((1.0, 1),)
  config.search.blocks_per_iteration = 2
  marks = tmp_path / 'marks'
  marks.mkdir()
  with pytest.raises(search.AllChildrenFailedError, match='worker died 2 times'):
    search.run_search(config, str(tmp_path / 'work'), Evaluator(str(marks), deaths=99))
  records = records_of(tmp_path / 'work')
  assert records and all(r['status'] == 'failed' and 'worker died 2 times' in r['reason']
                         and r['transient'] for r in records)


class DriverCrash(Exception):
  pass


def test_a_resumed_ray_search_loses_nothing(tmp_path, monkeypatch):
  marks = tmp_path / 'marks'
  marks.mkdir()
  workdir = tmp_path / 'work'
  original = search._SearchRun.consume
  consumed = []

  def crash_after_six(self, block, record):
    original(self, block, record)
    consumed.append(record)
    if len(consumed) == 6:
      raise DriverCrash()

  monkeypatch.setattr(search._SearchRun, 'consume', crash_after_six)
  with pytest.raises(DriverCrash):
    search.run_search(ray_config(), str(workdir), Evaluator(str(marks)))
  before = records_of(workdir)
  monkeypatch.setattr(search._SearchRun, 'consume', original)
  search.run_search(ray_config(), str(workdir), Evaluator(str(marks)))
  after = records_of(workdir)
  assert after[:len(before)] == before and len(after) == 12
  finished = {r['hash'] for r in before if not r['cached']}
  assert all(len((marks / f'{key}.calls').read_text()) == 1 for key in finished)


def fail_deep_blocks(block):
  if len(block) > 2:
    raise ValueError(f'refusing a {len(block)}-layer block')
  return surrogate.synthetic_accuracy(block)


@pytest.mark.parametrize('executor', ['local', 'ray'])
def test_an_exception_raised_by_evaluate_fn_ends_the_search_on_either_executor(
    tmp_path, executor):
  """It is raised as it is, and nothing is logged for its child."""
  with pytest.raises(ValueError, match=r'^refusing a \d-layer block$'):
    search.run_search(ray_config(executor), str(tmp_path), fail_deep_blocks)
  assert all(len(r['codes']) - 1 <= 2 for r in records_of(tmp_path))


def test_a_ray_search_ends_like_a_serial_local_one(tmp_path):
  serial = searches.jittery_search(tmp_path / 'serial', 1, 0)
  distributed = searches.jittery_search(tmp_path / 'ray', 1, 1, executor='ray',
                                        max_in_flight=2)
  searches.assert_same_outcome(distributed, serial, same_log_order=False)


def test_a_guided_ray_search_proposes_and_predicts_like_a_serial_local_one(tmp_path):
  serial = searches.jittery_search(tmp_path / 'serial', 1, 0, predictor=True)
  distributed = searches.jittery_search(tmp_path / 'ray', 1, 1, executor='ray',
                                        max_in_flight=2, predictor=True)
  searches.assert_same_outcome(distributed, serial, same_log_order=False)
  assert sum('predicted_reward' in r for r in distributed[0]) == 30  # guided from block 7


@pytest.mark.parametrize('children_per_device, gpus_per_trial, fraction', [
    (2, -1, '0.450'), (1, 0.25, '0.225'), (1, -1, None)])
def test_an_actor_on_a_share_of_a_gpu_preallocates_only_its_share(
    children_per_device, gpus_per_trial, fraction):
  config = ray_config()
  config.ray.max_in_flight = 1
  config.ray.gpus_per_trial = gpus_per_trial
  config.children_per_device = children_per_device
  executor = executors.RayExecutor(config, surrogate.synthetic_accuracy, compile_ahead=0)
  try:
    actor = executor.actors[0]
    assert ray.get(actor.environment.remote('XLA_PYTHON_CLIENT_MEM_FRACTION')) == fraction
  finally:
    executor.close()


def test_max_in_flight_beyond_the_cluster_still_finishes(tmp_path):
  """Six actors asked of two CPUs: the four that could not be placed would hold their
  children forever."""
  config = ray_config()
  config.ray.max_in_flight = 6
  config.search.epsilon_schedule = ((1.0, 1),)
  run_briefly(config, tmp_path, Evaluator())
  assert len(records_of(tmp_path)) == 4


def run_briefly(config, workdir, evaluate_fn, seconds=180):
  """run_search in a thread; fails the test if it has not ended within ``seconds``: a
  stall never ends, while a search of a few children on a 2-core machine loaded by other
  work took over 30 s."""
  run = threading.Thread(target=search.run_search, daemon=True,
                         args=(config, str(workdir), evaluate_fn))
  run.start()
  run.join(timeout=seconds)
  assert not run.is_alive(), 'the search stalled'


def test_fractional_gpus_place_only_the_actors_that_fit_one_gpu(tmp_path):
  """Shares of 0.4 GPU: 2 fit in each of the 2 GPUs, not 2 / 0.4 = 5 (the fifth would
  never start, and the search wait for its children forever)."""
  config = ray_config()
  config.ray.max_in_flight = 0
  config.ray.cpus_per_trial = 0.25
  config.ray.gpus_per_trial = 0.4
  config.search.epsilon_schedule = ((1.0, 1),)
  config.search.blocks_per_iteration = 8
  config.search.max_layers = quickstart.get_config().search.max_layers
  run_briefly(config, tmp_path, surrogate.synthetic_accuracy)
  assert len(records_of(tmp_path)) == 8


@ray.remote(num_cpus=1)
class Squatter:
  """Holds a CPU of the cluster, as another job would."""

  def ready(self):
    return True


def test_an_actor_the_cluster_cannot_place_is_given_no_work(tmp_path, monkeypatch):
  """The cluster counts two 1-CPU actors, but another job holds a CPU: one actor never
  starts; the search runs on the other, and says that actors are missing."""
  squatter = Squatter.remote()
  warnings = []
  monkeypatch.setattr(executors, 'ACTOR_START_SECONDS', 1)
  monkeypatch.setattr(executors.logging, 'warning',
                      lambda message, *args: warnings.append(message % args))
  try:
    ray.get(squatter.ready.remote(), timeout=60)
    config = ray_config()
    config.ray.max_in_flight = 0
    config.search.epsilon_schedule = ((1.0, 1),)
    run_briefly(config, tmp_path, Evaluator())
  finally:
    ray.kill(squatter)
  assert len(records_of(tmp_path)) == 4
  assert any(' Ray actors of 1.0 CPU / 0.0 GPU have not started after 1 s' in w
             for w in warnings), warnings


def test_every_actor_started_is_placed():
  """Two children per GPU would be four actors, but two CPUs place only two."""
  config = ray_config()
  config.ray.max_in_flight = 0
  config.ray.gpus_per_trial = -1
  config.children_per_device = 2
  executor = executors.RayExecutor(config, surrogate.synthetic_accuracy, compile_ahead=0)
  try:
    calls = [actor.environment.remote('PATH') for actor in executor.actors]
    ready, pending = ray.wait(calls, num_returns=len(calls), timeout=20)
    assert len(ready) == len(executor.actors) == 2, f'{len(pending)} actors never placed'
  finally:
    executor.close()


def test_a_lost_cluster_ends_the_search_with_one_line(tmp_path):
  """The driver's own local cluster loses its raylet, as in a node crash."""
  psutil = pytest.importorskip('psutil')
  raylets_of = lambda: {p.pid for p in psutil.process_iter(['name'])
                        if p.info['name'] == 'raylet'}
  others = raylets_of()  # this module's own cluster
  workdir = tmp_path / 'work'
  driver = subprocess.Popen([sys.executable, os.path.join(ROOT, 'tests', 'driver.py'),
                             str(workdir), 'ray', '1', '0.5'],
                            env={**os.environ, 'PYTHONPATH': ROOT},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 120
  log = workdir / 'results.jsonl'
  while not (log.exists() and log.read_text()) and time.time() < deadline:
    time.sleep(0.1)
  raylets = [psutil.Process(pid) for pid in raylets_of() - others]
  assert raylets, 'the driver started no raylet'
  for raylet in raylets:  # the node and its workers die at once
    for process in [*raylet.children(recursive=True), raylet]:
      process.kill()
  killed = time.time()
  _, stderr = driver.communicate(timeout=180)
  assert time.time() - killed < 120
  assert driver.returncode == 1
  assert stderr.strip().splitlines()[-1] == (
      'error: the Ray cluster is gone (no node is alive); restart it and rerun the same '
      'command to resume')
