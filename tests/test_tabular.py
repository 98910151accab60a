"""Tabular benchmarks: the table loader, the budget driver and the strategy comparison."""

import contextlib
import csv
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from blockqnn_jax import strategies
from blockqnn_jax.analysis import strategy_comparison
from blockqnn_jax.analysis import tabular
from configs import default

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NASBENCH201 = os.path.join(ROOT, '..', 'shared', 'data', 'nasbench201', 'nasbench201.csv')


def write_table(path, rows, columns=('ops', 'val', 'test')):
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(columns)
    writer.writerows(rows)
  return str(path)


def landscape_rows():
  """All 4^3 keys; the score grows with the number of 3s, the report is 100 - score."""
  rows = []
  for choices in itertools.product(range(4), repeat=3):
    score = 10 + 25 * choices.count(3) + choices[0]  # percent
    rows.append([''.join(map(str, choices)), score, 100 - score])
  return rows


def full_rows(sizes, reward=lambda choices: 1 + sum(choices)):
  """A row for every key of ``sizes``; the report is 10 x the reward."""
  return [[''.join(map(str, c)), reward(c), 10 * reward(c)]
          for c in itertools.product(*(range(n) for n in sizes))]


def test_keys_are_strings_and_sizes_are_inferred(tmp_path):
  path = write_table(tmp_path / 't.csv', full_rows((2, 3, 2), lambda c: 50 + c[1] + c[2] / 2))
  table = tabular.load_table(path, 'ops', 'val', 'test')
  assert table.space.sizes == (2, 3, 2)  # one more than each position's largest digit
  assert len(table.rewards) == 12
  assert table.rewards['000'] == 0.5 and table.rewards['021'] == 0.525  # percent -> fraction
  assert table.reports['000'] == 500 and table.reports['021'] == 525
  assert table.reward((0, 0, 0)) == 0.5 and table.report((1, 2, 1)) == 525
  assert table.best_report == 525
  assert tabular.load_table(path, 'ops', 'val', 'test', sizes=[2, 3, 2]).space.sizes == (
      2, 3, 2)


def test_fractions_stay_fractions(tmp_path):
  path = write_table(tmp_path / 't.csv', [['0', 0.5, 1], ['1', 0.25, 2]])
  assert tabular.load_table(path, 'ops', 'val', 'test').rewards == {'0': 0.5, '1': 0.25}


FULL = [['00', 1, 2], ['01', 1, 2], ['10', 1, 2], ['11', 1, 2]]


@pytest.mark.parametrize('rows, columns, sizes, message', [
    ([['00', 1, 2]], ('ops', 'val', 'tst'), None,
     "has no report column 'test'; its columns: ops, val, tst"),
    ([['00', 1, 2]], ('key', 'val', 'test'), None, "has no key column 'ops'"),
    ([['00', 1, 2], ['0a', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '0a' is not 2 digits 0-9"),
    ([['00', 1, 2], ['000', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '000' is not 2 digits"),
    # str.isdigit() takes both; int('²') fails, and '١١' would never match a generated key.
    ([['00', 1, 2], ['0²', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '0²' is not 2 digits 0-9"),
    (FULL[:3] + [['١١', 1, 2]], ('ops', 'val', 'test'), None,
     "line 5: key '١١' is not 2 digits 0-9"),
    ([['00', 1, 2], ['00', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '00' appears twice"),
    ([['00', 'n/a', 2]], ('ops', 'val', 'test'), None,
     "line 2: column 'val' holds 'n/a', not a number"),
    ([['00', 1, 2], ['01', 1]], ('ops', 'val', 'test'), None,
     'line 3: 2 values for the 3 columns of the header'),
    ([['00', 1, 2, 3]], ('ops', 'val', 'test'), None,
     'line 2: 4 values for the 3 columns of the header'),
    ([['00', 1, 2], ['13', 1, 2]], ('ops', 'val', 'test'), [2, 3],
     r'sizes \[2, 3\] do not fit'),
    (FULL, ('ops', 'val', 'test'), [2, 11], r'sizes \[2, 11\] do not fit .*at most 10'),
    (FULL[:2] + FULL[3:], ('ops', 'val', 'test'), None,
     r"has 3 of the 4 keys of sizes \[2, 2\]: 1 missing, e.g. '10'"),
    (FULL, ('ops', 'val', 'test'), [2, 3],
     r"has 4 of the 6 keys of sizes \[2, 3\]: 2 missing, e.g. '02'"),
    ([], ('ops', 'val', 'test'), None, 'has no rows'),
])
def test_table_errors_are_one_line(tmp_path, rows, columns, sizes, message):
  path = write_table(tmp_path / 't.csv', rows, columns)
  with pytest.raises(tabular.TableError, match=message) as error:
    tabular.load_table(path, 'ops', 'val', 'test', sizes)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize('data, message', [
    (b'', 'is empty: no header'),
    (b'ops,val,test\n00,1,2\n\n0a,1,2\n', "line 4: key '0a'"),  # blank lines counted
    (b'ops,val,test\n00,1,2\n01,\xff,2\n', 'is not UTF-8 text'),
])
def test_file_errors_are_one_line(tmp_path, data, message):
  (tmp_path / 't.csv').write_bytes(data)
  with pytest.raises(tabular.TableError, match=message) as error:
    tabular.load_table(str(tmp_path / 't.csv'), 'ops', 'val', 'test')
  assert '\n' not in str(error.value)


def test_blank_lines_crlf_and_a_byte_order_mark_are_read(tmp_path):
  (tmp_path / 't.csv').write_bytes(
      b'\xef\xbb\xbfops,val,test\r\n0,0.5,1\r\n\r\n1,0.25,2\r\n\r\n\r\n')
  table = tabular.load_table(str(tmp_path / 't.csv'), 'ops', 'val', 'test')
  assert table.rewards == {'0': 0.5, '1': 0.25} and table.reports == {'0': 1, '1': 2}


def test_an_unknown_key_is_a_clear_error(tmp_path):
  table = tabular.load_table(write_table(tmp_path / 't.csv', FULL), 'ops', 'val', 'test')
  with pytest.raises(tabular.TableError, match="architecture '02' is not a row of"):
    table.reward((0, 2))


def test_the_nasbench201_table_covers_its_space():
  if not os.path.exists(NASBENCH201):
    pytest.skip(f'NAS-Bench-201 table not prepared at {os.path.normpath(NASBENCH201)}')
  table = tabular.load_table(NASBENCH201, 'ops', 'cifar10_val12', 'cifar10_test200')
  assert table.space.sizes == (5,) * 6 and len(table.rewards) == 15_625


def test_schedule_scales_in_its_proportions():
  paper = strategies.PAPER_QLEARNING['epsilon_schedule']
  scaled = tabular.scale_schedule(paper, 100, 1)
  assert sum(n for _, n in scaled) == 100
  assert scaled[0] == (1.0, 53)  # 95 of 178
  assert [e for e, _ in scaled] == [e for e, _ in paper]
  assert tabular.scale_schedule(paper, 100, 8) == tabular.scale_schedule(paper, 13, 1)
  assert tabular.scale_schedule(((1.0, 1), (0.1, 99)), 10, 1) == ((0.1, 10),)  # 0.1 dropped


def search_config(strategy, **overrides):
  config = default.get_config().search
  config.strategy = strategy
  config.blocks_per_iteration = 1
  config.epsilon_schedule = ((1.0, 5), (0.1, 20))
  config.update(overrides)
  return config


@pytest.mark.parametrize('strategy', strategies.STRATEGIES)
def test_a_run_evaluates_its_budget_of_distinct_architectures(tmp_path, strategy):
  table = tabular.load_table(write_table(tmp_path / 't.csv', landscape_rows()),
                             'ops', 'val', 'test')
  searcher = strategies.make_strategy(search_config(strategy, population_size=5), 0, table.space)
  keys = tabular.search_table(searcher, table, 30)
  assert len(keys) == len(set(keys)) == 30


def test_a_strategy_that_only_repeats_itself_still_ends(tmp_path):
  table = tabular.load_table(write_table(tmp_path / 't.csv', landscape_rows()),
                             'ops', 'val', 'test')
  greedy = strategies.make_strategy(
      search_config('qlearning', epsilon_schedule=((0.0, 1),), q_init=0.0), 0, table.space)
  keys = tabular.search_table(greedy, table, 20, max_proposals=100)
  assert len(keys) == 1  # ties at first, then its one visited path: all above q_init
  assert greedy.iteration == 100


def test_best_so_far_reports_the_highest_reward_pick(tmp_path):
  table = tabular.load_table(write_table(tmp_path / 't.csv', landscape_rows()),
                             'ops', 'val', 'test')
  curve = tabular.best_so_far(table, ['000', '333', '300', '030'], 6)
  # 333 has the highest reward (score 88) and so the lowest report, 12.
  np.testing.assert_array_equal(curve, [90, 12, 12, 12, 12, 12])


def test_strategies_learn_on_a_table(tmp_path):
  table = tabular.load_table(write_table(tmp_path / 't.csv', landscape_rows()),
                             'ops', 'val', 'test')
  config = default.get_config().search
  config.blocks_per_iteration = 1
  config.population_size = 4
  curves = strategy_comparison.run_all(table, config, ['random', 'evolution', 'qlearning'],
                                       [16], runs=150, blocks_per_iteration=1, processes=1)
  summary = strategy_comparison.summarize(curves)
  assert {s: set(v) for s, v in summary.items()} == {s: {'16'} for s in curves}
  assert summary['random']['16']['runs'] == 150
  # The report is 100 - score: the better a strategy searches, the lower its report.
  assert summary['evolution']['16']['mean'] < summary['random']['16']['mean'] - 3
  assert summary['qlearning']['16']['mean'] < summary['random']['16']['mean'] - 3


def test_the_figure_draws_every_strategy_and_the_optimum(tmp_path):
  curves = {'random': {5: np.array([[1., 2, 2, 3, 3], [1, 1, 2, 2, 4]])},
            'evolution': {5: np.array([[2., 2, 3, 4, 4], [2, 3, 3, 3, 4]])}}
  figure = strategy_comparison.plot(curves, 5.0, str(tmp_path / 'f.png'), 'title')
  lines = figure.axes[0].get_lines()
  np.testing.assert_allclose(lines[0].get_ydata(), [1, 1.5, 2, 2.5, 3.5])
  np.testing.assert_allclose(lines[1].get_ydata(), [2, 2.5, 3, 3.5, 4])
  assert list(lines[2].get_ydata()) == [5.0, 5.0]  # the optimum
  assert [l.get_label() for l in lines] == ['random (2 runs)', 'evolution (2 runs)',
                                            'optimum']
  assert os.path.getsize(tmp_path / 'f.png') > 0


def run_experiment(args):
  return subprocess.run([sys.executable, '-m', 'experiments.benchmark_strategies', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_the_experiment_end_to_end(tmp_path):
  table = write_table(tmp_path / 't.csv', landscape_rows())
  result = run_experiment([f'--table={table}', '--reward_column=val', '--report_column=test',
                           '--budgets=5,20', '--runs=6', '--processes=2',
                           '--strategies=qlearning,qlearning_paper,random,evolution',
                           f'--workdir={tmp_path}/out'])
  assert result.returncode == 0, result.stderr
  output = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(output['results']) == {'qlearning', 'qlearning_paper', 'random', 'evolution'}
  for by_budget in output['results'].values():
    assert set(by_budget) == {'5', '20'}
    for result_at in by_budget.values():
      assert result_at['runs'] == 6 and 12 <= result_at['mean'] <= 90
  assert output['optimum'] == 90 and output['first_seed'] == 0
  # Run in worker processes, each run gives what it gives in this one: runs are seeded.
  table = tabular.load_table(table, 'ops', 'val', 'test')
  in_process = strategy_comparison.run_all(
      table, default.get_config().search, list(output['results']), [5, 20], runs=6,
      processes=1)
  assert output['results'] == strategy_comparison.summarize(in_process)
  # --first_seed: the runs with seeds 4 and 5 of those six.
  result = run_experiment([f'--table={tmp_path}/t.csv', '--reward_column=val',
                           '--report_column=test', '--budgets=5,20', '--runs=2',
                           '--first_seed=4', '--processes=2', '--strategies=qlearning,random',
                           f'--workdir={tmp_path}/later'])
  assert result.returncode == 0, result.stderr
  later = json.loads(result.stdout.strip().splitlines()[-1])
  assert later['first_seed'] == 4
  assert later['results'] == strategy_comparison.summarize(
      {s: {b: c[4:] for b, c in in_process[s].items()} for s in ('qlearning', 'random')})
  saved = json.loads((tmp_path / 'out' / 'benchmark_strategies.json').read_text())
  assert saved['results'] == output['results']
  assert len(saved['curves']['random']['20']) == 20
  assert (tmp_path / 'out' / 'benchmark_strategies.png').stat().st_size > 0


def test_the_experiment_refuses_a_missing_column_in_one_line(tmp_path):
  table = write_table(tmp_path / 't.csv', landscape_rows())
  result = run_experiment([f'--table={table}', '--reward_column=val12',
                           '--report_column=test', f'--workdir={tmp_path}/out'])
  assert result.returncode != 0
  assert "has no reward column 'val12'; its columns: ops, val, test" in result.stderr
  assert not (tmp_path / 'out').exists()


def pool_workers(parent: int) -> list[int]:
  """The process ids of ``parent``'s multiprocessing workers (their command line runs
  ``spawn_main``; the resource tracker's does not), from /proc."""
  workers = []
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/stat') as f:
        ppid = int(f.read().rsplit(')', 1)[1].split()[1])
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        command = f.read()
    except OSError:  # ended meanwhile
      continue
    if ppid == parent and b'spawn_main' in command:
      workers.append(int(pid))
  return workers


def start_long_experiment(tmp_path, env=None) -> tuple[subprocess.Popen, list[int]]:
  """The experiment in 2 worker processes, for seconds more than a test needs, and the
  workers' pids once they have started."""
  table = write_table(tmp_path / 't.csv', landscape_rows())
  run = subprocess.Popen(
      [sys.executable, '-m', 'experiments.benchmark_strategies', f'--table={table}',
       '--reward_column=val', '--report_column=test', '--budgets=20', '--runs=20000',
       '--strategies=random', '--processes=2', f'--workdir={tmp_path}/out'],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      start_new_session=True, env=env)
  started = time.monotonic()
  while len(workers := pool_workers(run.pid)) < 2:
    if run.poll() is not None or time.monotonic() - started > 60:
      if run.poll() is None:
        os.killpg(run.pid, signal.SIGKILL)
      pytest.fail(run.communicate()[1])
    time.sleep(0.05)
  return run, workers


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='finds the workers in /proc')
def test_a_killed_worker_ends_the_experiment_in_one_line(tmp_path):
  """multiprocessing.Pool.map waited forever for a killed worker's runs."""
  run, workers = start_long_experiment(tmp_path)
  try:
    os.kill(workers[0], signal.SIGKILL)
    _, stderr = run.communicate(timeout=20)
  finally:
    if run.poll() is None:
      os.killpg(run.pid, signal.SIGKILL)
      run.wait()
  assert run.returncode == 1 and 'Traceback' not in stderr, stderr
  assert stderr.splitlines()[-1] == (
      'benchmark_strategies: a worker process died (killed by a signal or out of memory) '
      'during the 20000 runs; none of their results is kept; nothing written to '
      f'{tmp_path}/out')
  assert not (tmp_path / 'out').exists()


def running(pid: int) -> bool:
  """Whether ``pid`` is a process that has not ended (a zombie has)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='finds the workers in /proc')
def test_sigterm_to_the_experiment_ends_its_workers_too(tmp_path):
  """Python's default SIGTERM ended the parent alone, and each worker ran on through its
  chunk of runs (minutes on NAS-Bench-201)."""
  run, workers = start_long_experiment(tmp_path)
  try:
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=20)  # not communicate(): workers left running would hold its pipes
    deadline = time.monotonic() + 10
    while any(map(running, workers)) and time.monotonic() < deadline:
      time.sleep(0.05)
    left = [pid for pid in workers if running(pid)]
  finally:
    with contextlib.suppress(ProcessLookupError):  # the parent and any worker left
      os.killpg(run.pid, signal.SIGKILL)
    _, stderr = run.communicate()
  assert not left, f'workers still running: {left}'
  assert run.returncode == 128 + signal.SIGTERM, stderr
  assert not (tmp_path / 'out').exists()


@pytest.mark.skipif(not os.path.isdir('/proc'), reason='reads the workers\' environment in /proc')
def test_each_worker_runs_one_blas_thread_unless_the_user_set_it(tmp_path):
  """One worker per core with BLAS's own threads on top doubled the wall time."""
  env = {name: value for name, value in os.environ.items()
         if name not in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS')}
  env['MKL_NUM_THREADS'] = '3'
  run, workers = start_long_experiment(tmp_path, env)
  try:
    with open(f'/proc/{workers[0]}/environ', 'rb') as f:
      environ = dict(entry.split(b'=', 1) for entry in f.read().split(b'\0') if b'=' in entry)
  finally:
    os.killpg(run.pid, signal.SIGKILL)
    run.communicate()
  assert environ[b'OPENBLAS_NUM_THREADS'] == b'1' and environ[b'OMP_NUM_THREADS'] == b'1'
  assert environ[b'MKL_NUM_THREADS'] == b'3'


def test_on_nasbench201_qlearning_beats_evolution_and_random_search():
  """The published protocol at 100 cells on CIFAR-10, 500 runs each (docs/reproducing.md)."""
  if not os.path.exists(NASBENCH201):
    pytest.skip(f'NAS-Bench-201 table not prepared at {os.path.normpath(NASBENCH201)}')
  table = tabular.load_table(NASBENCH201, 'ops', 'cifar10_val12', 'cifar10_test200')
  curves = strategy_comparison.run_all(table, default.get_config().search,
                                       ['qlearning', 'random', 'evolution'], [100], runs=500)
  means = {s: r['100']['mean'] for s, r in strategy_comparison.summarize(curves).items()}
  assert abs(means['random'] - 93.70) < 0.15  # NAS-Bench-201's published random search
  assert means['evolution'] >= 93.85
  assert means['qlearning'] >= means['evolution']
  assert means['qlearning'] >= means['random'] + 0.15
