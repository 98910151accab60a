"""One writer per workdir, a clean stop on SIGTERM, and a damaged log named plainly.

These run real driver processes, as a user or a cluster scheduler would.
"""

import json
import os
import signal
import subprocess
import sys
import time
import types

import pytest

from blockqnn_jax import main
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax import workdir as workdir_lib
from tests import common
from tests import searches
from tests.interrupt import Crash

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'PYTHONPATH': ROOT}

def start_driver(workdir, executor='local', seconds=0.05):
  """tests/driver.py: tests/searches.py's search, ``seconds`` per child."""
  return subprocess.Popen(
      [sys.executable, os.path.join(ROOT, 'tests', 'driver.py'), str(workdir), executor,
       str(seconds)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(process, workdir, lines, timeout=120):
  log = workdir / 'results.jsonl'
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, process.communicate()
    if log.exists() and log.read_text().count('\n') >= lines:
      return
    time.sleep(0.02)
  raise TimeoutError(f'{log} did not reach {lines} lines')


def test_a_second_driver_on_a_busy_workdir_exits_with_one_line(tmp_path):
  workdir = tmp_path / 'work'
  first = start_driver(workdir, seconds=0.5)
  try:
    wait_for_lines(first, workdir, 1)
    second = subprocess.run(
        [sys.executable, '-m', 'blockqnn_jax.main', '--config=configs/quickstart.py',
         f'--workdir={workdir}'], cwd=ROOT, env=ENV, capture_output=True, text=True,
        timeout=300)
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 1
  assert second.stderr.strip().splitlines() == [
      f'error: {workdir} is in use by pid {first.pid} on {os.uname().nodename}: wait for it '
      'to finish or stop it (a rerun resumes), or give another --workdir']
  lines = (workdir / 'results.jsonl').read_text().splitlines()
  assert len({json.loads(line)['index'] for line in lines}) == len(lines)


# Long final trainings, so that the first is still running when the second starts.
FINAL_TRAININGS = {
    'train': ['--config=configs/quickstart.py', '--config.mode=train',
              '--config.block=[[1, 2, 3, 0, 0], [2, 7, 0, 0, 0]]', '--config.train.filters=8',
              '--config.train.repeats=1', '--config.train.batch_size=64',
              '--config.train.epochs=1000'],
    'transfer_imagenet': ['--config=configs/cifar10.py:smoke',
                          '--config.mode=transfer_imagenet',
                          f'--config.dataset={common.CIFAR10_DIR}',
                          '--config.block=[[1, 2, 3, 0, 0], [2, 7, 0, 0, 0]]',
                          '--config.transfer.image_size=32', '--config.transfer.workers=0',
                          '--config.transfer.batch_size=32', '--config.transfer.epochs=1000'],
}


def wait_for_lock(process, workdir, log, timeout=120):
  """Waits until ``process`` holds ``workdir``'s lock (the lock file names its pid)."""
  lock = workdir / workdir_lib.LOCK_FILE
  deadline = time.time() + timeout
  while time.time() < deadline:
    assert process.poll() is None, log.read_text()
    if lock.exists() and f'pid {process.pid} ' in lock.read_text():
      return
    time.sleep(0.05)
  raise TimeoutError(f'{process.pid} did not take {lock}')


@pytest.mark.parametrize('mode', FINAL_TRAININGS)
def test_a_second_final_training_on_a_busy_workdir_exits_with_one_line(tmp_path, mode,
                                                                       request):
  if mode == 'transfer_imagenet':
    request.getfixturevalue('cifar10_dir')  # skips where CIFAR-10 is not prepared
  workdir = tmp_path / 'work'
  command = [sys.executable, '-m', 'blockqnn_jax.main', *FINAL_TRAININGS[mode],
             f'--workdir={workdir}']
  log = tmp_path / 'first.log'
  with open(log, 'w') as output:
    first = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=output,
                             stderr=subprocess.STDOUT)
  try:
    wait_for_lock(first, workdir, log)
    second = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                            timeout=120)
  finally:
    first.kill()
    first.wait()
  assert second.returncode == 1
  assert 'Traceback' not in second.stderr  # before it, TFDS may log where it reads
  assert second.stderr.strip().splitlines()[-1] == (
      f'error: {workdir} is in use by pid {first.pid} on {os.uname().nodename}: wait for it '
      'to finish or stop it (a rerun resumes), or give another --workdir')


def test_the_lock_does_not_survive_sigkill(tmp_path):
  workdir = tmp_path / 'work'
  process = start_driver(workdir, seconds=0.5)
  wait_for_lines(process, workdir, 1)
  with pytest.raises(workdir_lib.WorkdirBusyError, match=f'in use by pid {process.pid}'):
    with workdir_lib.locked(str(workdir)):
      pass
  process.send_signal(signal.SIGKILL)
  process.wait()
  with workdir_lib.locked(str(workdir)):  # no stale lock to clean up
    pass


@pytest.mark.parametrize('executor', ['local', 'ray'])
def test_sigterm_stops_cleanly_and_a_rerun_loses_nothing(tmp_path, executor,
                                                         uninterrupted_search):
  if executor == 'ray':
    pytest.importorskip('ray', reason='Ray is optional: pip install -r requirements-ray.txt')
  workdir = tmp_path / 'work'
  process = start_driver(workdir, executor, seconds=0.2)
  wait_for_lines(process, workdir, 8)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 143, stderr
  for crash_sign in ('Traceback', 'Fatal Python error', 'Aborted', 'core dumped'):
    assert crash_sign not in stderr, stderr
  logged = results.read_results(str(workdir))
  assert len(logged) >= 8
  rerun = start_driver(workdir, executor, seconds=0.0)
  _, stderr = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, stderr
  searches.assert_same_outcome(searches.outcome(workdir), uninterrupted_search[0],
                               same_log_order=executor == 'local')
  assert results.read_results(str(workdir))[:len(logged)] == logged  # nothing rewritten


def damage_line(path, number):
  lines = path.read_text().splitlines(keepends=True)
  lines[number - 1] = '{"codes": [[1, 1, 3, 0, 0]], "acc\n'
  path.write_text(''.join(lines))


def test_a_damaged_line_after_the_checkpoint_is_named_with_its_remedy(tmp_path):
  with pytest.raises(Crash):  # 6 per iteration: 2 checkpoints cover 12 lines
    search.run_search(searches.resume_config(), str(tmp_path),
                      searches.CountingEvaluator(crash_at=16))
  damage_line(tmp_path / 'results.jsonl', 14)
  with pytest.raises(results.DamagedLogError) as error:
    search.run_search(searches.resume_config(), str(tmp_path),
                      searches.CountingEvaluator())
  assert str(error.value) == (
      f'{tmp_path}/results.jsonl line 14 is damaged (not a JSON record): delete that line '
      'and every line after it, then rerun: those children are evaluated again')
  # The remedy works.
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(path.read_text().splitlines(keepends=True)[:13]))
  search.run_search(searches.resume_config(), str(tmp_path),
                    searches.CountingEvaluator())
  assert len(results.read_results(str(tmp_path))) == 36


def test_a_damaged_line_the_checkpoint_covers_asks_for_a_backup(tmp_path):
  search.run_search(searches.resume_config(), str(tmp_path),
                    searches.CountingEvaluator())
  damage_line(tmp_path / 'results.jsonl', 3)
  with pytest.raises(results.DamagedLogError, match=(
      r'results.jsonl line 3 is damaged \(not a JSON record\): restore it from a backup '
      r'\(the checkpoint covers the first 36 lines')):
    search.run_search(searches.resume_config(), str(tmp_path),
                      searches.CountingEvaluator())


def test_a_log_shorter_than_the_checkpoint_exits_with_one_line(tmp_path, monkeypatch):
  config = searches.digits_resume_config()
  search.run_search(config, str(tmp_path), searches.CountingEvaluator())
  path = tmp_path / 'results.jsonl'
  path.write_text(''.join(path.read_text().splitlines(keepends=True)[:10]))
  for name, value in (('_CONFIG', config), ('_WORKDIR', str(tmp_path)),
                      ('_ALLOW_CONFIG_CHANGE', False)):
    monkeypatch.setattr(main, name, types.SimpleNamespace(value=value))
  with pytest.raises(SystemExit) as exited:
    main.main(['blockqnn'])
  assert str(exited.value) == (
      f'error: {tmp_path}/results.jsonl has 10 records but the checkpoint covers 36: the '
      'log was truncated or replaced; restore it from a backup, or start a new --workdir')


def test_the_cli_names_a_damaged_line_in_one_line(tmp_path):
  search.run_search(searches.digits_resume_config(), str(tmp_path),
                    searches.CountingEvaluator())
  damage_line(tmp_path / 'results.jsonl', 3)
  # The same config as the search, so that the workdir's config check passes.
  config_file = tmp_path / 'resume_config.py'
  config_file.write_text('from tests import searches\n\n\ndef get_config():\n'
                         '  return searches.digits_resume_config()\n')
  run = subprocess.run([sys.executable, '-m', 'blockqnn_jax.main', f'--config={config_file}',
                        f'--workdir={tmp_path}'], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=300)
  assert run.returncode == 1
  assert len(run.stderr.strip().splitlines()) == 1, run.stderr
  assert run.stderr.startswith(f'error: {tmp_path}/results.jsonl line 3 is damaged')


def test_a_directory_that_holds_no_run_is_refused_before_anything_is_written(tmp_path):
  bench = tmp_path / 'bench'
  bench.mkdir()
  for name in ('a.json', 'b.json', 'c.png', 'd.csv'):
    (bench / name).write_text('{}')
  evaluator = searches.CountingEvaluator()
  with pytest.raises(workdir_lib.NotAWorkdirError) as error:
    search.run_search(searches.resume_config(), str(bench), evaluator)
  assert str(error.value) == (
      f'{bench} holds files (a.json, b.json, c.png, ...) but no run of blockqnn_jax (no '
      'config.json): give a new or empty directory as --workdir, or the workdir of a run '
      'to resume')
  assert sorted(os.listdir(bench)) == ['a.json', 'b.json', 'c.png', 'd.csv']
  assert evaluator.calls == 0
  a_file = tmp_path / 'a_file'
  a_file.write_text('')
  with pytest.raises(workdir_lib.NotAWorkdirError, match=f'^{a_file} is a file: '):
    search.run_search(searches.resume_config(), str(a_file), evaluator)
  # The command line says it in one line (a final training takes the same lock).
  run = subprocess.run(
      [sys.executable, '-m', 'blockqnn_jax.main', '--config=configs/quickstart.py',
       f'--workdir={bench}'], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert run.returncode == 1
  assert run.stderr.strip().splitlines() == [f'error: {error.value}']
  assert sorted(os.listdir(bench)) == ['a.json', 'b.json', 'c.png', 'd.csv']


def test_a_new_or_empty_directory_or_a_runs_workdir_is_taken(tmp_path):
  """What a run may write in: nothing there yet, or a run's own files, even those of a
  run killed before it recorded its config (the lock file comes first)."""
  empty = tmp_path / 'empty'
  empty.mkdir()
  started = tmp_path / 'started'
  started.mkdir()
  (started / workdir_lib.LOCK_FILE).write_text('')
  (started / 'results.jsonl').write_text('')
  recorded = tmp_path / 'recorded'
  recorded.mkdir()
  (recorded / workdir_lib.CONFIG_FILE).write_text('{}')
  (recorded / 'final.json').write_text('{}')
  for workdir in (tmp_path / 'new' / 'deeper', empty, started, recorded):
    with workdir_lib.locked(str(workdir)):
      pass


def test_where_the_data_is_read_and_how_the_work_is_spread_may_change_on_resume(tmp_path):
  """A search started with $TFDS_DATA_DIR resumes with the same directory given as
  --config.data_dir; what changes a result is still refused."""
  started = searches.digits_resume_config()
  workdir_lib.record_config(started, str(tmp_path))
  resumed = searches.digits_resume_config()
  resumed.update_from_flattened_dict({
      'data_dir': '/data/tfds', 'executor': 'ray', 'children_per_device': 2,
      'compile_ahead': 3, 'compilation_cache_dir': '', 'ray.max_in_flight': 5})
  workdir_lib.check_unchanged(resumed, str(tmp_path), allow_config_change=False)
  resumed.dataset = 'synthetic'
  with pytest.raises(workdir_lib.ConfigMismatchError, match=r"\(dataset: 'digits' -> "
                     r"'synthetic'\)"):
    workdir_lib.check_unchanged(resumed, str(tmp_path), allow_config_change=False)
