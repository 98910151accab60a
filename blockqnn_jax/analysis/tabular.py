"""Tabular NAS benchmarks: every architecture of a space scored once, read from a CSV.

One row per architecture; a key column of digits, one per decision (NAS-Bench-201's
``ops``: ``334131``), read as text so that ``000000`` keeps its zeros. The reward column is
the only thing a search sees; the report column holds the number reported for the
architecture a search picks (e.g. the 12-epoch validation accuracy and the 200-epoch test
accuracy). Rewards in percent (any above 1) are divided by 100, so that a search's reward
is a fraction as a trained child's accuracy is; reports are kept as they are.

``search_table`` drives a strategy over a table (``strategies.drive``) with a budget of
distinct architectures: cached repeats are free, as they are in ``run_search``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
from typing import Sequence

import numpy as np

from blockqnn_jax import search_space
from blockqnn_jax import strategies


class TableError(ValueError):
  """A table that cannot be read as asked; the message says what is wrong and where."""


@dataclasses.dataclass
class Table:
  """A tabular benchmark: rewards and reports by key, over a sequence space."""

  path: str
  space: search_space.SequenceSpace
  rewards: dict[str, float]
  reports: dict[str, float]

  def reward(self, arch) -> float:
    return self.rewards[self._key(arch)]

  def report(self, arch) -> float:
    return self.reports[self._key(arch)]

  def _key(self, arch) -> str:
    key = self.space.key(arch)
    if key not in self.rewards:
      raise TableError(f'architecture {key!r} is not a row of {self.path}')
    return key

  @property
  def best_report(self) -> float:
    """The highest report of the table: the optimum a search could find."""
    return max(self.reports.values())


def read_rows(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """The CSV's header and its rows, each with its line number. Blank lines are no rows (as
  for ``csv.DictReader``: an editor's trailing newline is harmless); a row whose values do
  not match the header one for one is a ``TableError`` naming its line, as is text that is
  not UTF-8."""
  with open(path, newline='', encoding='utf-8-sig') as f:
    reader = csv.reader(f)
    try:
      header = next(reader, None)
      if header is None:
        raise TableError(f'{path} is empty: no header')
      rows = []
      for row in reader:
        if not row:
          continue
        if len(row) != len(header):
          raise TableError(f'{path} line {reader.line_num}: {len(row)} values for the '
                           f'{len(header)} columns of the header')
        rows.append((reader.line_num, row))
    except UnicodeDecodeError as error:
      raise TableError(f'{path} is not UTF-8 text: {error}') from None
  return header, rows


def load_table(path: str, key_column: str, reward_column: str, report_column: str,
               sizes: Sequence[int] | None = None) -> Table:
  """Reads the table; ``sizes`` (choices per position) is inferred from the keys if None.

  The table must hold a row for every key of its sizes: a search proposes any of them, so
  a table with holes is refused here (with the count missing and one of them) rather than
  stopping a run when a hole is proposed."""
  header, rows = read_rows(path)
  for flag, column in (('key', key_column), ('reward', reward_column),
                       ('report', report_column)):
    if column not in header:
      raise TableError(f'{path} has no {flag} column {column!r}; its columns: '
                       f'{", ".join(header)}')
  if not rows:
    raise TableError(f'{path} has no rows')
  key_at, reward_at, report_at = (header.index(c) for c in (key_column, reward_column,
                                                            report_column))
  first = rows[0][1][key_at]
  rewards, reports = {}, {}
  for line, row in rows:
    key = row[key_at]
    # ASCII only: str.isdigit() also takes '²' and '٣', which no generated key holds.
    if not (key.isascii() and key.isdigit()) or len(key) != len(first):
      raise TableError(f'{path} line {line}: key {key!r} is not {len(first)} digits 0-9 '
                       f'(one per decision, as the first row {first!r})')
    if key in rewards:
      raise TableError(f'{path} line {line}: key {key!r} appears twice')
    rewards[key] = _number(path, line, reward_column, row[reward_at])
    reports[key] = _number(path, line, report_column, row[report_at])
  inferred = [max(int(key[i]) for key in rewards) + 1 for i in range(len(first))]
  if sizes is None:
    sizes = inferred
  elif len(sizes) != len(first) or any(not n <= s <= 10 for s, n in zip(sizes, inferred)):
    raise TableError(f'sizes {list(sizes)} do not fit the keys of {path}: they need '
                     f'{len(first)} positions with at least {inferred} choices (at most '
                     '10: one digit each)')
  _check_complete(path, rewards, sizes)
  if max(abs(v) for v in rewards.values()) > 1:
    rewards = {k: v / 100 for k, v in rewards.items()}
  return Table(path, search_space.SequenceSpace(sizes), rewards, reports)


def _check_complete(path: str, rewards: dict[str, float], sizes: Sequence[int]) -> None:
  """Every key of ``sizes`` has a row (the keys are known to lie in ``sizes``)."""
  missing = math.prod(sizes) - len(rewards)
  if missing:
    keys = (''.join(map(str, c)) for c in itertools.product(*(range(s) for s in sizes)))
    example = next(key for key in keys if key not in rewards)
    raise TableError(f'{path} has {len(rewards)} of the {math.prod(sizes)} keys of sizes '
                     f'{list(sizes)}: {missing} missing, e.g. {example!r} (a search may '
                     'propose any key)')


def _number(path: str, line: int, column: str, text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    value = float('nan')
  if not np.isfinite(value):
    raise TableError(f'{path} line {line}: column {column!r} holds {text!r}, not a number')
  return value


def scale_schedule(schedule: Sequence[tuple[float, int]], blocks: int,
                   blocks_per_iteration: int) -> tuple[tuple[float, int], ...]:
  """The schedule with as many iterations as ``blocks`` need, in its own proportions
  (largest remainders; an epsilon left with no iteration is dropped)."""
  iterations = max(1, -(-blocks // blocks_per_iteration))
  counts = np.array([n for _, n in schedule], dtype=np.float64)
  shares = counts / counts.sum() * iterations
  scaled = np.floor(shares).astype(int)
  for i in np.argsort(-(shares - scaled), kind='stable')[:iterations - scaled.sum()]:
    scaled[i] += 1
  return tuple((float(eps), int(n)) for (eps, _), n in zip(schedule, scaled) if n)


def search_table(strategy, table: Table, budget: int,
                 max_proposals: int | None = None) -> list[str]:
  """Runs ``strategy`` (on ``table.space``) until ``budget`` distinct architectures are
  evaluated; returns their keys in evaluation order. Past the end of its schedule a
  strategy continues at its last epsilon; no iteration starts after ``max_proposals``
  proposals (default 50 per unit of budget), even short of the budget (``strategies.drive``).
  As in ``run_search``, an iteration's architectures are all proposed before any reward is
  fed back: with ``blocks_per_iteration`` 1 (the benchmark's default) each is fed before
  the next is proposed."""
  samples = strategies.drive(strategy, table.reward, budget=budget, max_proposals=max_proposals)
  return [sample.key for sample in samples if sample.fresh]


def best_so_far(table: Table, keys: Sequence[str], budget: int) -> np.ndarray:
  """The report of the highest-reward architecture among the first n evaluated, for n =
  1..budget (a run that ended short of the budget keeps its last value)."""
  reports = np.empty(budget)
  best_reward, best_report = -np.inf, np.nan
  for n in range(budget):
    if n < len(keys):
      reward = table.rewards[keys[n]]
      if reward > best_reward:
        best_reward, best_report = reward, table.reports[keys[n]]
    reports[n] = best_report
  return reports
