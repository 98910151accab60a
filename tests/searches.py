"""The small search the resume, executor, workdir and Ray tests (and tests/driver.py) run,
the evaluators they run it with, and the check that two runs ended the same."""

import json
import time

import numpy as np

from blockqnn_jax import checkpoint
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax.analysis import surrogate
from configs import default
from configs import quickstart
from tests.interrupt import Crash


def resume_config():
  """Six iterations of six blocks of at most five layers: 36 children."""
  config = default.get_config()
  config.seed = 3
  config.search.epsilon_schedule = ((1.0, 2), (0.5, 2), (0.1, 2))
  config.search.blocks_per_iteration = 6
  config.search.max_layers = 5
  return config


def guided(config):
  """``config`` guided by the predictor from its second iteration of six blocks on, with
  few candidates per proposal (fast)."""
  config.search.predictor.enabled = True
  config.search.predictor.warmup = 6
  config.search.predictor.candidates = 10
  config.search.predictor.best_mutations = 20
  return config


def digits_resume_config():
  """resume_config on a dataset every machine has, for the CLI's start-up checks."""
  config = resume_config()
  config.dataset = 'digits'
  config.validation_examples = 300
  return config


def tiny_search_config():
  """Three iterations of four blocks of at most four layers, on the digits."""
  config = default.get_config()
  config.dataset = 'digits'
  config.validation_examples = 300
  config.search.epsilon_schedule = ((1.0, 2), (0.1, 1))
  config.search.blocks_per_iteration = 4
  config.search.max_layers = 4
  return config


def tiny_child_config(compilation_cache_dir=''):
  """The quickstart's child on a slice of the digits: seconds to compile, ms a step."""
  config = quickstart.get_config()
  config.compilation_cache_dir = compilation_cache_dir
  config.max_train_examples, config.validation_examples = 256, 64
  return config


class CountingEvaluator:
  """The surrogate, counting calls (``keys``: the blocks called with); raises Crash on call
  number `crash_at` (1-based)."""

  def __init__(self, crash_at=None):
    self.calls, self.crash_at, self.keys = 0, crash_at, []

  def __call__(self, block):
    self.calls += 1
    self.keys.append(block.canonical_hash())
    if self.calls == self.crash_at:
      raise Crash()
    return {'accuracy': surrogate.synthetic_accuracy(block), 'train_seconds': 0.0}


class JitteryEvaluator:
  """A deterministic two-phase evaluator whose phases take a pseudo-random time, so that
  children finish in an order unlike the one they were sampled in."""

  def prepare(self, block):
    time.sleep(self.delay(block, 'prepare'))
    return block

  def run(self, block, should_stop):
    del should_stop
    time.sleep(self.delay(block, 'run'))
    return {'accuracy': surrogate.synthetic_accuracy(block)}

  @staticmethod
  def delay(block, phase):
    return int(block.canonical_hash()[:4], 16) % 7 * 0.004 + (phase == 'run') * 0.002


def jittery_search(workdir, children_per_device, compile_ahead, executor='local',
                   max_in_flight=0, predictor=False):
  """resume_config's search (``guided`` with ``predictor``) with the JitteryEvaluator, run
  as given; returns its outcome."""
  config = guided(resume_config()) if predictor else resume_config()
  config.children_per_device = children_per_device
  config.compile_ahead = compile_ahead
  config.executor = executor
  config.ray.max_in_flight = max_in_flight
  config.ray.gpus_per_trial = 0
  search.run_search(config, str(workdir), JitteryEvaluator())
  return outcome(workdir)


def crash_then_resume(config, workdir, crash_at: int) -> int:
  """Runs the search until its ``crash_at``-th evaluation raises, then reruns it to the
  end; returns the evaluations that finished over both runs (the crashed one excluded)."""
  crashing = CountingEvaluator(crash_at)
  try:
    search.run_search(config, str(workdir), crashing)
  except Crash:
    pass
  else:
    raise AssertionError(f'the search ended before evaluation {crash_at}')
  resumed = CountingEvaluator()
  search.run_search(config, str(workdir), resumed)
  return crashing.calls - 1 + resumed.calls


def outcome(workdir):
  """What must not depend on interruptions: every record and the final agent state."""
  records = results.read_results(str(workdir))
  agent_state, search_state = checkpoint.SearchCheckpointer(str(workdir)).restore()
  return records, agent_state, search_state


def assert_same_outcome(a, b, *, same_log_order=True):
  """Equal records, agent state and search state; with ``same_log_order=False`` the log
  may hold the records in another order (children that finish in another order)."""
  records_a, agent_a, search_a = a
  records_b, agent_b, search_b = b
  if not same_log_order:
    records_a, records_b = without_log_order(records_a), without_log_order(records_b)
    search_a, search_b = without_log_order(search_a), without_log_order(search_b)
  assert records_a == records_b
  assert search_a == search_b
  assert agent_a.keys() == agent_b.keys()
  for key, value in agent_a.items():
    if isinstance(value, np.ndarray):
      np.testing.assert_array_equal(value, agent_b[key])
    else:
      assert value == agent_b[key], key


def without_log_order(value):
  """Records (or a search state) with their log positions dropped, sorted."""
  if isinstance(value, list):
    return sorted((without_log_order(record) for record in value), key=json.dumps)
  value = {k: v for k, v in value.items() if k != 'index'}
  if 'best' in value:
    value['best'] = without_log_order(value['best'])
  return value
