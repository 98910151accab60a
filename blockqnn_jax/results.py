"""``results.jsonl``, the durable record of a search: one JSON object per sampled block.

Every result is appended and fsynced before the agent learns from it, so the log is what a
resumed search trusts. A torn last line (a write that was killed) is cut off on reading;
a line damaged anywhere else stops the run with one line that says how to recover.
"""

from __future__ import annotations

import json
import math
import os

from absl import logging


RESULTS_FILE = 'results.jsonl'


class DamagedLogError(ValueError):
  """A line of results.jsonl, not the last, is not a JSON record."""

  def __init__(self, path: str, line: int, advice: str = ''):
    self.path, self.line = path, line
    super().__init__(f'{path} line {line} is damaged (not a JSON record)' +
                     (f': {advice}' if advice else ''))


def normalize_result(codes, result) -> dict:
  """An evaluate_fn's float or dict, checked: at least a finite accuracy in [0, 1]."""
  if not isinstance(result, dict):
    result = {'accuracy': result}
  if 'accuracy' not in result:
    raise ValueError(f'evaluate_fn returned {result!r} for {codes}: no "accuracy"')
  result = dict(result)
  result.setdefault('status', 'ok')
  if result['status'] != 'ok':
    result['accuracy'] = 0.0  # a failed child gets the lowest accuracy, hence lowest reward
  accuracy = result['accuracy']
  if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not (
      math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
    raise ValueError(
        f'evaluate_fn returned accuracy {accuracy!r} for {codes}: '
        'expected a float in [0, 1]')
  result['accuracy'] = float(accuracy)
  return result


class ResultsLog:
  """``results.jsonl`` opened for appending; each record is on disk when append returns."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, RESULTS_FILE)
    self._file = open(self.path, 'a')

  def append(self, record: dict) -> None:
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()


def read_results(workdir: str, *, read_only: bool = False) -> list[dict]:
  """All complete records of ``results.jsonl``; a torn last line (a killed write) is cut off,
  from the file too unless ``read_only`` (a reader beside a running search, whose last line
  may be a write in progress).

  Raises DamagedLogError for a damaged line before the last.
  """
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')
  records, good_bytes = [], 0
  for number, line in enumerate(lines[:-1]):
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise ValueError(record)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      if number < len(lines) - 2:
        raise DamagedLogError(path, number + 1) from None
      break
    records.append(record)
    good_bytes += len(line) + 1
  if not read_only and good_bytes != os.path.getsize(path):
    logging.warning('%s: cutting off a torn last line (a write that was killed)', path)
    with open(path, 'r+b') as f:
      f.truncate(good_bytes)
  return records
