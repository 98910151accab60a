"""Every child a search trained: ``blockqnn report [--top=N] [--csv=PATH] WORKDIR``.

Prints the best children as a table (rank, reward, accuracy, FLOPs, parameters, codes),
writes all of them as a CSV and draws ``WORKDIR/pareto.png``: validation accuracy against
FLOPs, the Pareto front (no other child both as accurate and cheaper) marked. It only
reads ``results.jsonl`` and never takes the workdir's lock, so it reports a finished, a
running or an interrupted search alike; the last line of a running search, still being
written, is left out. Also ``python -m blockqnn_jax.report``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys

from matplotlib import ticker
from matplotlib.figure import Figure

from blockqnn_jax import results

PARETO_FILE = 'pareto.png'
CSV_FILE = 'children.csv'
CSV_COLUMNS = ('rank', 'reward', 'accuracy', 'flops', 'params', 'iteration', 'index',
               'status', 'hash', 'codes')


def children(workdir: str) -> list[dict]:
  """Each architecture the search trained, once, best reward first.

  Cached repeats and children that did not run (``transient``: their worker died on every
  retry) are left out; an architecture trained again (its first run did not happen, or
  the config changed on a resume) counts with its latest result.
  """
  latest = {}
  for record in results.read_results(workdir, read_only=True):
    if not record['cached'] and not record.get('transient'):
      latest[record['hash']] = record
  return sorted(latest.values(), key=lambda record: record['reward'], reverse=True)


def pareto_front(rows: list[dict]) -> list[dict]:
  """The children with FLOPs that no other child beats on both accuracy and FLOPs,
  cheapest first."""
  front = []
  for row in sorted((r for r in rows if 'flops' in r),
                    key=lambda r: (r['flops'], -r['accuracy'])):
    if not front or row['accuracy'] > front[-1]['accuracy']:
      front.append(row)
  return front


def table(rows: list[dict], top: int) -> str:
  """The first ``top`` rows as an aligned text table."""
  header = ('rank', 'reward', 'accuracy', 'FLOPs', 'params', 'codes')
  lines = [header] + [
      (str(rank), f'{row["reward"]:.4f}', f'{row["accuracy"]:.4f}',
       _count(row.get('flops')), _count(row.get('params')), json.dumps(row['codes']))
      for rank, row in enumerate(rows[:top], 1)]
  widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
  return '\n'.join('  '.join(cell.rjust(width) for cell, width in zip(line, widths)) +
                   '  ' + line[-1] for line in lines)


def _count(value) -> str:
  if value is None:
    return '-'
  for size, unit in ((1e9, 'G'), (1e6, 'M'), (1e3, 'k')):
    if value >= size:
      return f'{value / size:.2f}{unit}'
  return str(value)


def write_csv(rows: list[dict], path: str) -> None:
  """All rows, best reward first; codes as JSON; a field a row lacks is left empty."""
  with open(path, 'w', newline='') as f:
    writer = csv.writer(f)
    writer.writerow(CSV_COLUMNS)
    for rank, row in enumerate(rows, 1):
      values = {**row, 'rank': rank, 'codes': json.dumps(row['codes'])}
      writer.writerow([values.get(column, '') for column in CSV_COLUMNS])


def plot_pareto(rows: list[dict], path: str) -> None:
  """Accuracy against FLOPs (log scale), every child a dot, the front a line."""
  with_flops = [row for row in rows if 'flops' in row]
  front = pareto_front(rows)
  figure = Figure(figsize=(6, 4.5), layout='constrained')
  axes = figure.add_subplot()
  axes.scatter([r['flops'] for r in with_flops], [r['accuracy'] for r in with_flops],
               s=12, color='0.6', label=f'children ({len(with_flops)})')
  axes.plot([r['flops'] for r in front], [r['accuracy'] for r in front], 'o-',
            drawstyle='steps-post',
            color='tab:red', markersize=5, label=f'Pareto front ({len(front)})')
  axes.set_xscale('log')
  axes.xaxis.set_minor_formatter(ticker.NullFormatter())  # labels on the decades alone
  axes.set_xlabel('FLOPs of the network')
  axes.set_ylabel('validation accuracy')
  axes.legend(loc='best')
  figure.savefig(path, dpi=120)


def report(workdir: str, top: int, csv_path: str) -> str:
  """Writes the CSV and the picture; returns the text to print."""
  rows = children(workdir)
  if not rows:
    return f'no trained child in {os.path.join(workdir, results.RESULTS_FILE)} yet'
  write_csv(rows, csv_path)
  lines = [table(rows, top), '', f'{len(rows)} children: all in {csv_path}']
  if any('flops' in row for row in rows):
    plot_pareto(rows, os.path.join(workdir, PARETO_FILE))
    lines.append(f'accuracy against FLOPs: {os.path.join(workdir, PARETO_FILE)}')
  else:
    lines.append(f'no FLOPs in the log (children not trained by blockqnn_jax): no '
                 f'{PARETO_FILE}')
  return '\n'.join(lines)


def run(argv: list[str]) -> None:
  """The command line, ``argv`` without the program's name."""
  parser = argparse.ArgumentParser(
      prog='blockqnn report', description='Every child a search trained: the best as a '
      'table, all as a CSV, accuracy against FLOPs as WORKDIR/pareto.png.')
  parser.add_argument('workdir', help="a search's workdir (finished, running or stopped)")
  parser.add_argument('--top', type=int, default=10, help='children in the table (10)')
  parser.add_argument('--csv', default='', help=f'the CSV to write (WORKDIR/{CSV_FILE})')
  args = parser.parse_args(argv)
  if args.top < 1:
    parser.error(f'--top={args.top}: an integer >= 1')
  if not os.path.isfile(os.path.join(args.workdir, results.RESULTS_FILE)):
    sys.exit(f'error: {args.workdir}: no {results.RESULTS_FILE}, not a search workdir')
  try:
    text = report(args.workdir, args.top, args.csv or os.path.join(args.workdir, CSV_FILE))
  except (results.DamagedLogError, OSError) as error:  # OSError: a CSV path not writable
    sys.exit(f'error: {error}')
  print(text)


if __name__ == '__main__':
  run(sys.argv[1:])
