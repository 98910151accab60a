"""NAS-Bench-201 cells: FLOPs and density worked out by hand, the redefined reward, and
``python -m experiments.nasbench201_correlation`` end to end on a small table written here
(and on the real table where ../shared/data/nasbench201 holds it)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from blockqnn_jax.analysis import correlation
from blockqnn_jax.analysis import nasbench201
from blockqnn_jax.analysis import tabular

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REAL_TABLE = os.path.join(ROOT, '..', 'shared', 'data', 'nasbench201', 'nasbench201.csv')
DATASETS = ('cifar10', 'cifar100', 'imagenet16_120')

# By hand, multiply-accumulates (k * k * C_in * C_out per output pixel) on CIFAR-10:
STEM = 32 * 32 * 9 * 3 * 16
REDUCTION_1 = 16 * 16 * (9 * 16 * 32 + 9 * 32 * 32 + 16 * 32)  # to 32 channels, 16x16
REDUCTION_2 = 8 * 8 * (9 * 32 * 64 + 9 * 64 * 64 + 32 * 64)    # to 64 channels, 8x8
CLASSIFIER = 64 * 10 + 10
CONV3_EDGE = 5 * (32 * 32 * 9 * 16 * 16 + 16 * 16 * 9 * 32 * 32 + 8 * 8 * 9 * 64 * 64)


def test_flops_of_cells_worked_by_hand():
  empty = STEM + REDUCTION_1 + REDUCTION_2 + CLASSIFIER
  assert empty == 7_783_050  # NAS-Bench-201 reports 7.78305 MFLOPs
  assert nasbench201.cell_flops('000000') == empty
  # skip, avg_pool and none count nothing, as in NAS-Bench-201's own count.
  assert nasbench201.cell_flops('111111') == nasbench201.cell_flops('444444') == empty
  # One 3x3 conv edge: the same cost, 2,359,296, in every stage, times 15 cells.
  assert CONV3_EDGE == 15 * 2_359_296
  assert nasbench201.cell_flops('000300') == empty + CONV3_EDGE
  assert nasbench201.cell_flops('300000') == empty + CONV3_EDGE  # any edge, even dead
  assert nasbench201.cell_flops('020000') == empty + CONV3_EDGE / 9  # 1x1: 9x fewer taps
  assert nasbench201.cell_flops('333333') == empty + 6 * CONV3_EDGE == 220_119_690


def test_flops_on_other_data_sets_worked_by_hand():
  assert nasbench201.cell_flops('000000', num_classes=100) == 7_783_050 + 90 * 64 + 90
  # ImageNet16-120: 16x16 maps, so everything but the classifier costs a quarter.
  quarter = (STEM + REDUCTION_1 + REDUCTION_2) // 4
  assert nasbench201.cell_flops('000000', 120, 16) == quarter + 64 * 120 + 120 == 1_953_400
  with pytest.raises(ValueError, match='image_size must be a multiple of 4'):
    nasbench201.cell_flops('000000', image_size=30)


@pytest.mark.parametrize('ops, density', [
    ('333333', 6 / 4), ('102030', 3 / 4), ('000300', 1 / 4),
    ('000000', 1 / 4),  # no edge counts as one, so log(density) stays finite
])
def test_density_is_edges_without_none_over_4_nodes(ops, density):
  assert nasbench201.cell_density(ops) == density


@pytest.mark.parametrize('bad', ['00000', '0000005', 333333, '00a000', '0000000'])
def test_a_malformed_cell_is_a_clear_error(bad):
  with pytest.raises(ValueError, match='a NAS-Bench-201 cell is 6 digits 0-4'):
    nasbench201.cell_flops(bad)


def test_work_counts_the_cells_own_flops_in_3x3_conv_edges():
  assert nasbench201.cell_work('000000') == 0
  assert nasbench201.cell_work('444000') == 0
  assert nasbench201.cell_work('333000') == pytest.approx(3)
  assert nasbench201.cell_work('222300') == pytest.approx(1 + 3 / 9)


def test_redefined_reward_worked_by_hand():
  ops = ['000300', '333333', '222300', '000000']
  accuracy = [0.9, 0.5, 0.7, 0.1]
  np.testing.assert_allclose(nasbench201.redefined_reward(accuracy, ops, 0.1, 0.2), [
      0.9 - 0.1 * math.log(2) + 0.2 * math.log(4),    # work 1, density 1/4
      0.5 - 0.1 * math.log(7) - 0.2 * math.log(1.5),  # work 6, density 6/4
      0.7 - 0.1 * math.log(1 + 4 / 3),                # work 1 + 3/9, density 1
      0.1 + 0.2 * math.log(4),                        # work 0, no edge: density 1/4
  ])
  np.testing.assert_allclose(nasbench201.redefined_reward([0.7], ['222300'], -0.3, 5.0),
                             [0.7 + 0.3 * math.log(7 / 3)])
  with pytest.raises(ValueError, match=r'accuracies of shape \(2,\) for 1 cells'):
    nasbench201.redefined_reward([0.1, 0.2], ['000000'], 0.0, 0.0)


def write_synthetic_table(path, planted=(-0.1, 0.05)) -> list[str]:
  """40 cells, '000000' first. cifar10's test200 rises with val12 (accuracy alone ranks
  perfectly); cifar100's is the reward at ``planted`` (that pair ranks perfectly)."""
  rng = np.random.default_rng(0)
  cells = ['000000'] + [''.join(c) for c in itertools.product('01234', repeat=6)][1::391]
  columns = {}
  for ds in DATASETS:
    columns[f'{ds}_val12'] = rng.uniform(10, 90, len(cells))
    columns[f'{ds}_test200'] = rng.uniform(10, 90, len(cells))
  columns['cifar10_test200'] = 0.5 * columns['cifar10_val12'] + 40
  columns['cifar100_test200'] = 100 * nasbench201.redefined_reward(
      columns['cifar100_val12'] / 100, cells, *planted)
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(['index', 'ops', *columns])
    for i, ops in enumerate(cells):
      writer.writerow([i, ops, *(f'{values[i]:.4f}' for values in columns.values())])
  return cells


def run_experiment(*args) -> tuple[str, subprocess.CompletedProcess]:
  completed = subprocess.run(
      [sys.executable, '-m', 'experiments.nasbench201_correlation', *args], cwd=ROOT,
      capture_output=True, text=True, timeout=120, check=False)
  assert completed.returncode == 0, completed.stderr[-3000:]
  return completed.stdout.strip().splitlines()[-1], completed


def test_the_experiment_end_to_end_on_a_synthetic_table(tmp_path):
  table, written = tmp_path / 'table.csv', tmp_path / 'with_reward.csv'
  cells = write_synthetic_table(table)
  line, _ = run_experiment(f'--table={table}', f'--workdir={tmp_path / "out"}',
                           '--mus=-0.1,0,0.1', '--rhos=-0.05,0,0.05',
                           f'--write_table={written}')
  summary = json.loads(line)
  assert summary['cells'] == len(cells)
  assert (summary['mus'], summary['rhos']) == ([-0.1, 0.0, 0.1], [-0.05, 0.0, 0.05])
  assert set(summary['datasets']) == set(DATASETS)
  for result in summary['datasets'].values():
    assert set(result) == {'accuracy', 'best', 'default', 'transfer'}
    assert set(result['best']) == {'mu', 'rho', 'spearman', 'kendall'}
  cifar10, cifar100 = summary['datasets']['cifar10'], summary['datasets']['cifar100']
  assert cifar10['accuracy'] == {'spearman': pytest.approx(1.0), 'kendall': pytest.approx(1.0)}
  assert (cifar10['best']['mu'], cifar10['best']['rho']) == (0.0, 0.0)
  assert cifar100['accuracy']['spearman'] < 0.99
  assert cifar100['best'] == {'mu': -0.1, 'rho': 0.05, 'spearman': pytest.approx(1.0),
                              'kendall': pytest.approx(1.0)}
  saved = json.loads((tmp_path / 'out' / 'nasbench201_correlation.json').read_text())
  assert np.array(saved['datasets']['cifar100']['grid']['spearman']).shape == (3, 3)
  assert (tmp_path / 'out' / 'nasbench201_correlation.png').stat().st_size > 0
  # The written table: every row as it was, ops zero-padded, plus the reward at
  # cifar10's best (0, 0): val12 itself.
  assert summary['written_table']['mu'] == summary['written_table']['rho'] == 0.0
  with open(written, newline='') as f:
    rows = list(csv.DictReader(f))
  assert [r['ops'] for r in rows] == cells and rows[0]['ops'] == '000000'
  for ds in DATASETS:
    assert [float(r[f'{ds}_redefined12']) for r in rows] == pytest.approx(
        [float(r[f'{ds}_val12']) for r in rows], abs=1e-4)


def test_the_written_table_holds_the_reward_in_percent_at_the_given_weights(tmp_path):
  table, written = tmp_path / 'table.csv', tmp_path / 'with_reward.csv'
  cells = write_synthetic_table(table)
  run_experiment(f'--table={table}', f'--workdir={tmp_path}', '--mus=0', '--rhos=0',
                 f'--write_table={written}', '--mu=0.1', '--rho=-0.05',
                 '--datasets=cifar100')
  loaded = nasbench201.read_table(str(written))
  np.testing.assert_allclose(loaded['cifar100_redefined12'], 100 * nasbench201.redefined_reward(
      loaded['cifar100_val12'] / 100, cells, 0.1, -0.05), atol=1e-4)
  assert 'cifar10_redefined12' not in loaded


def test_the_table_keeps_ops_as_strings_and_names_a_missing_column(tmp_path):
  path = tmp_path / 'table.csv'
  write_synthetic_table(path)
  table = nasbench201.read_table(str(path))
  assert table['ops'][0] == '000000' and table['cifar10_val12'].dtype == np.float64
  with pytest.raises(ValueError, match=r"no column 'cifar10_val200'; its columns: index, ops"):
    nasbench201.column(table, 'cifar10_val200')
  path.write_text('index,ops\n0,0\n')  # ops parsed to a number and written back
  with pytest.raises(ValueError, match="6 digits 0-4 .* got '0'"):
    nasbench201.read_table(str(path))


def test_blank_lines_are_no_rows(tmp_path):
  path = tmp_path / 'table.csv'
  cells = write_synthetic_table(path)
  path.write_text(path.read_text().replace('\n', '\n\n', 1) + '\n\n')
  assert list(nasbench201.read_table(str(path))['ops']) == cells


def short(row):
  del row[-1]


def not_a_number(row):
  row[2] = 'abc'


def not_a_cell(row):
  row[1] = '000007'


@pytest.mark.parametrize('line, edit, message', [
    (4, short, 'line 4: 7 values for the 8 columns of the header'),
    (5, not_a_number, "line 5: column 'cifar10_val12' holds 'abc', not a number"),
    (6, not_a_cell, "line 6: a NAS-Bench-201 cell is 6 digits 0-4 .* got '000007'"),
])
def test_a_bad_row_is_one_line_naming_it(tmp_path, line, edit, message):
  path = tmp_path / 'table.csv'
  write_synthetic_table(path)
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  edit(rows[line - 1])
  with open(path, 'w', newline='') as f:
    csv.writer(f).writerows(rows)
  with pytest.raises(tabular.TableError, match=message) as error:
    nasbench201.read_table(str(path))
  assert '\n' not in str(error.value)


def test_the_written_table_is_whole_or_absent(tmp_path, monkeypatch):
  """A write that stops part way (here an error after 10 rows, as a kill would) leaves the
  previous table as it was: never a truncated last number read as another reward."""
  table, written = tmp_path / 'table.csv', tmp_path / 'with_reward.csv'
  write_synthetic_table(table)
  nasbench201.add_reward_columns(str(table), str(written), ['cifar10'], 0.0, 0.0)
  before = written.read_text()

  csv_writer = csv.writer

  def stopping_writer(f, **kwargs):
    writer, rows = csv_writer(f, **kwargs), itertools.count()

    class Stopping:
      def writerow(self, row):
        if next(rows) == 10:
          raise KeyboardInterrupt
        writer.writerow(row)
    return Stopping()

  monkeypatch.setattr(nasbench201.csv, 'writer', stopping_writer)
  with pytest.raises(KeyboardInterrupt):
    nasbench201.add_reward_columns(str(table), str(written), ['cifar10'], 0.5, 0.5)
  assert written.read_text() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['table.csv', 'with_reward.csv']


def test_on_the_real_table():
  if not os.path.exists(REAL_TABLE):
    pytest.skip(f'NAS-Bench-201 table not prepared at {os.path.normpath(REAL_TABLE)}')
  table = nasbench201.read_table(REAL_TABLE)
  assert len(set(table['ops'])) == len(table['ops']) == 15_625
  flops = [nasbench201.cell_flops(o) for o in table['ops']]
  assert (min(flops), max(flops)) == (7_783_050, 220_119_690)  # NAS-Bench-201's range
  # docs/reproducing.md: Spearman of cifar10_val12 with cifar10_test200, about 0.77.
  assert correlation.spearman(table['cifar10_val12'], table['cifar10_test200']) == (
      pytest.approx(0.77, abs=0.01))
