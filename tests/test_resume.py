"""Resume: a search killed at any moment continues to the same end, losing nothing."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from blockqnn_jax import checkpoint
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax import strategies as strategies_lib
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.analysis import surrogate
from tests.interrupt import Crash
from tests.searches import CountingEvaluator
from tests.searches import assert_same_outcome
from tests.searches import crash_then_resume
from tests.searches import outcome
from tests.searches import resume_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('crash_at', [1, 4, 7, 13, 20])  # first call, mid-iteration, ...
def test_resume_after_a_crash_ends_like_an_uninterrupted_run(tmp_path, uninterrupted_search,
                                                             crash_at):
  expected, expected_calls = uninterrupted_search
  calls = crash_then_resume(resume_config(), tmp_path, crash_at)
  assert_same_outcome(outcome(tmp_path), expected)
  # Nothing finished was trained again: only the evaluation that crashed is repeated.
  assert calls == expected_calls


def test_sigkill_while_a_checkpoint_is_written_loses_nothing(tmp_path, uninterrupted_search):
  expected, expected_calls = uninterrupted_search
  command = [sys.executable, os.path.join(ROOT, 'tests', 'driver.py'), str(tmp_path),
             'local', '0']
  env = {**os.environ, 'PYTHONPATH': ROOT}
  killed = subprocess.run([*command, '1', '3'], env=env, capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr
  torn = list((tmp_path / 'checkpoints').glob('3.orbax-checkpoint-tmp*'))
  assert torn and (torn[0] / 'arrays' / 'manifest.ocdbt').exists()  # died mid-checkpoint
  before = results.read_results(str(tmp_path))
  assert len(before) == 3 * 6  # the iteration the checkpoint was to cover, all logged
  rerun = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
  assert_same_outcome(outcome(tmp_path), expected)
  assert results.read_results(str(tmp_path))[:len(before)] == before
  assert not list((tmp_path / 'checkpoints').glob('*tmp*'))  # the torn one cleaned up
  # No finished child was trained again.
  trained_before = sum(not r['cached'] for r in before)
  assert trained_before + int(rerun.stdout.split('evaluations: ')[1]) == expected_calls


def test_a_torn_last_line_is_cut_off_and_only_its_child_re_evaluated(tmp_path,
                                                                      uninterrupted_search):
  expected, expected_calls = uninterrupted_search
  crashing = CountingEvaluator(crash_at=9)
  with pytest.raises(Crash):
    search.run_search(resume_config(), str(tmp_path), crashing)
  log = tmp_path / 'results.jsonl'
  *complete, last = log.read_bytes().splitlines(keepends=True)
  torn = json.loads(last)
  assert not torn['cached'] and torn['iteration'] == 1  # a trained child, not checkpointed
  log.write_bytes(b''.join(complete) + last[:len(last) // 2])  # the kill cut its write short
  resumed = CountingEvaluator()
  search.run_search(resume_config(), str(tmp_path), resumed)
  finished = crashing.keys[:-1]  # the last call crashed: it finished nothing
  assert [key for key in resumed.keys if key in finished] == [torn['hash']]
  assert len(finished) - 1 + resumed.calls == expected_calls
  assert_same_outcome(outcome(tmp_path), expected)


def trained_agent_state():
  config = resume_config()
  agent = strategies_lib.make_strategy(config.search, config.seed)
  for _ in range(3):
    block = agent.propose()
    agent.feedback(block, surrogate.synthetic_accuracy(block))
  return agent.state_dict()


def test_a_checkpoint_restores_every_array_as_saved_empty_ones_included(tmp_path):
  config = resume_config()
  fresh = strategies_lib.make_strategy(config.search, config.seed).state_dict()
  assert any(v.size == 0 for v in fresh.values() if isinstance(v, np.ndarray))
  for name, state in (('fresh', fresh), ('trained', trained_agent_state())):
    checkpointer = checkpoint.SearchCheckpointer(str(tmp_path / name))
    checkpointer.save(1, state, {'lines': 0})
    restored, _ = checkpointer.restore()
    assert restored.keys() == state.keys()
    for key, value in state.items():
      if isinstance(value, np.ndarray):
        assert restored[key].shape == value.shape and restored[key].dtype == value.dtype
        np.testing.assert_array_equal(restored[key], value)
      else:
        assert restored[key] == value, key


def test_a_saved_array_of_another_shape_is_an_error_naming_it(tmp_path):
  """A Q-table stored with fewer values than its saved shape: never restored as zeros."""
  state = trained_agent_state()
  checkpointer = checkpoint.SearchCheckpointer(str(tmp_path))
  checkpointer.save(1, state, {'lines': 0})
  arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
  meta = {'agent': {k: v for k, v in state.items() if k not in arrays},
          'search': {'lines': 0}, 'shapes': {k: list(v.shape) for k, v in arrays.items()}}
  arrays['q_values'] = arrays['q_values'][:-1]
  checkpointer.manager.save(2, args=ocp.args.Composite(
      arrays=ocp.args.StandardSave(arrays), meta=ocp.args.JsonSave(meta)))
  with pytest.raises(ValueError, match=r"array 'q_values' has shape \(\d+,\) but was saved"):
    checkpointer.restore()


def test_a_finished_search_resumes_to_nothing_to_do(tmp_path):
  search.run_search(resume_config(), str(tmp_path), CountingEvaluator())
  again = CountingEvaluator()
  summary = search.run_search(resume_config(), str(tmp_path), again)
  assert again.calls == 0 and summary['blocks_sampled'] == 36


def test_a_workdir_of_another_config_is_refused_unless_allowed(tmp_path):
  search.run_search(resume_config(), str(tmp_path), CountingEvaluator())
  elsewhere = resume_config()  # another machine: other cores, the same search
  elsewhere.transfer.workers, elsewhere.ray.max_in_flight = 7, 3
  assert search.run_search(elsewhere, str(tmp_path), CountingEvaluator())[
      'blocks_sampled'] == 36
  changed = resume_config()
  changed.search.max_layers = 7
  with pytest.raises(workdir_lib.ConfigMismatchError, match='search.max_layers: 5 -> 7'):
    search.run_search(changed, str(tmp_path), CountingEvaluator())
  with pytest.raises(ValueError, match=r'searched nsc\(max_layers=5\), not nsc\(max_layers=7\)'):
    search.run_search(changed, str(tmp_path), CountingEvaluator(), allow_config_change=True)
  # Neither refused start touched the workdir: the search's own config still resumes it.
  assert search.run_search(resume_config(), str(tmp_path), CountingEvaluator())[
      'blocks_sampled'] == 36
  changed = resume_config()
  changed.search.epsilon_schedule = ((1.0, 2), (0.5, 2), (0.1, 3))  # one more iteration
  summary = search.run_search(changed, str(tmp_path), CountingEvaluator(),
                              allow_config_change=True)
  assert summary['blocks_sampled'] == 42


def test_sigkill_at_any_moment_then_rerun_finishes_the_same(tmp_path, uninterrupted_search):
  workdir = tmp_path / 'work'
  command = [sys.executable, os.path.join(ROOT, 'tests', 'driver.py'), str(workdir)]
  env = {**os.environ, 'PYTHONPATH': ROOT}
  for lines_before_kill in (3, 14, 25):
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None:
      log = workdir / 'results.jsonl'
      if log.exists() and log.read_text().count('\n') >= lines_before_kill:
        break
      time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
  subprocess.run(command, env=env, check=True, capture_output=True)
  assert_same_outcome(outcome(workdir), uninterrupted_search[0])
