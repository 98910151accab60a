"""Tabular benchmarks: the table loader, the budget driver and the strategy comparison."""

import csv
import itertools
import json
import os
import subprocess
import sys

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


def test_keys_are_strings_and_sizes_are_inferred(tmp_path):
  path = write_table(tmp_path / 't.csv', [['000', 50, 60], ['120', 70.5, 80], ['031', 20, 30]])
  table = tabular.load_table(path, 'ops', 'val', 'test')
  assert table.space.sizes == (2, 4, 2)  # one more than each position's largest digit
  assert table.rewards == {'000': 0.5, '120': 0.705, '031': 0.2}  # percent -> fraction
  assert table.reports == {'000': 60, '120': 80, '031': 30}
  assert table.reward((0, 0, 0)) == 0.5 and table.report((1, 2, 0)) == 80
  assert table.best_report == 80
  assert tabular.load_table(path, 'ops', 'val', 'test', sizes=[5, 5, 5]).space.sizes == (5,) * 3


def test_fractions_stay_fractions(tmp_path):
  path = write_table(tmp_path / 't.csv', [['00', 0.5, 1], ['01', 0.25, 2]])
  assert tabular.load_table(path, 'ops', 'val', 'test').rewards == {'00': 0.5, '01': 0.25}


@pytest.mark.parametrize('rows, columns, sizes, message', [
    ([['00', 1, 2]], ('ops', 'val', 'tst'), None,
     "has no report column 'test'; its columns: ops, val, tst"),
    ([['00', 1, 2]], ('key', 'val', 'test'), None, "has no key column 'ops'"),
    ([['00', 1, 2], ['0a', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '0a' is not 2 digits"),
    ([['00', 1, 2], ['000', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '000' is not 2 digits"),
    ([['00', 1, 2], ['00', 1, 2]], ('ops', 'val', 'test'), None,
     "line 3: key '00' appears twice"),
    ([['00', 'n/a', 2]], ('ops', 'val', 'test'), None,
     "line 2: column 'val' holds 'n/a', not a number"),
    ([['00', 1, 2], ['13', 1, 2]], ('ops', 'val', 'test'), [2, 3],
     r'sizes \[2, 3\] do not fit'),
    ([], ('ops', 'val', 'test'), None, 'has no rows'),
])
def test_table_errors_are_one_line(tmp_path, rows, columns, sizes, message):
  path = write_table(tmp_path / 't.csv', rows, columns)
  with pytest.raises(tabular.TableError, match=message) as error:
    tabular.load_table(path, 'ops', 'val', 'test', sizes)
  assert '\n' not in str(error.value)


def test_an_unknown_key_is_a_clear_error(tmp_path):
  path = write_table(tmp_path / 't.csv', [['00', 1, 2], ['11', 1, 2]])
  table = tabular.load_table(path, 'ops', 'val', 'test')
  with pytest.raises(tabular.TableError, match="architecture '01' is not a row of"):
    table.reward((0, 1))


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
  assert output['optimum'] == 90
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
