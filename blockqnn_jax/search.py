"""The search loop: the agent proposes blocks, they are evaluated, rewards feed back.

Each iteration samples ``blocks_per_iteration`` blocks with the iteration's epsilon, then
evaluates them. A block isomorphic to one already evaluated is not trained again: its
cached result is reused (and still fed to the agent). Every result is appended to
``workdir/results.jsonl`` and flushed to disk before the agent learns from it (the log is
the durable record); after every iteration the agent and search state are checkpointed
with Orbax into ``workdir/checkpoints``. ``workdir/best_block.{json,png,svg}`` always hold
the best block so far, and TensorBoard events the progress.

Iteration bookkeeping: iteration i samples all its blocks with epsilon_i before any of
them is evaluated; every record carries the iteration and epsilon it was sampled with.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from typing import Callable, Union

from absl import logging

from blockqnn_jax import agent as agent_lib
from blockqnn_jax import checkpoint as checkpoint_lib
from blockqnn_jax import draw
from blockqnn_jax import executors
from blockqnn_jax import nsc
from blockqnn_jax import reward as reward_lib
from blockqnn_jax import summaries

EvaluateFn = Callable[[nsc.Block], Union[float, dict]]
RESULTS_FILE = 'results.jsonl'
BEST_FILE = 'best_block.json'
CONFIG_FILE = 'config.json'


def normalize_result(block: nsc.Block, result) -> dict:
  """An evaluate_fn's float or dict, checked: at least a finite accuracy in [0, 1]."""
  if not isinstance(result, dict):
    result = {'accuracy': result}
  if 'accuracy' not in result:
    raise ValueError(f'evaluate_fn returned {result!r} for {block.to_codes()}: no "accuracy"')
  result = dict(result)
  result.setdefault('status', 'ok')
  if result['status'] != 'ok':
    result['accuracy'] = 0.0  # a failed child gets the lowest accuracy, hence lowest reward
  accuracy = result['accuracy']
  if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not (
      math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
    raise ValueError(
        f'evaluate_fn returned accuracy {accuracy!r} for {block.to_codes()}: '
        'expected a float in [0, 1]')
  result['accuracy'] = float(accuracy)
  return result


def write_json_atomic(path: str, obj) -> None:
  """Writes via a temporary file and rename, so a reader never sees half a file."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class ResultsLog:
  """``results.jsonl``: one JSON object per evaluated block, flushed as it arrives."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, RESULTS_FILE)
    self._file = open(self.path, 'a')

  def append(self, record: dict) -> None:
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()


def load_block(spec: str, max_layers: int = nsc.MAX_LAYERS) -> nsc.Block:
  """A block from a best_block.json path, a search workdir (its best block), or inline
  codes as JSON text."""
  text = spec.strip()
  if not text.startswith('['):
    path = os.path.join(spec, BEST_FILE) if os.path.isdir(spec) else spec
    if not os.path.exists(path):
      raise FileNotFoundError(f'no block file at {path} (give a best_block.json, a search '
                              'workdir or inline codes like [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])')
    with open(path) as f:
      text = f.read()
  try:
    codes = json.loads(text)
  except json.JSONDecodeError as error:
    raise nsc.InvalidBlockError(f'not JSON: {error}') from None
  if isinstance(codes, dict):
    codes = codes.get('codes')
  return nsc.Block.from_codes(codes, max_layers)


def default_evaluate_fn(config) -> EvaluateFn:
  """The real trainer: each block is built, trained briefly and scored on validation data."""
  return functools.partial(_train_and_evaluate, config=config)


def _train_and_evaluate(block: nsc.Block, config) -> dict:
  from blockqnn_jax import train  # pylint: disable=g-import-not-at-top  (JAX, in the worker)
  return train.evaluate_block(block, config)


class ConfigMismatchError(ValueError):
  """The workdir holds a search made with a different config."""


def read_results(workdir: str) -> list[dict]:
  """All complete records of ``results.jsonl``; a torn last line (a killed write) is cut off."""
  path = os.path.join(workdir, RESULTS_FILE)
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    lines = f.read().split(b'\n')
  records, good_bytes = [], 0
  for number, line in enumerate(lines[:-1]):
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError:
      if number < len(lines) - 2:
        raise ValueError(f'{path} line {number + 1} is not JSON: the log is corrupt') from None
      break
    good_bytes += len(line) + 1
  if good_bytes != os.path.getsize(path):
    logging.warning('%s: cutting off a torn last line (a write that was killed)', path)
    with open(path, 'r+b') as f:
      f.truncate(good_bytes)
  return records


def check_workdir_config(config, workdir: str, allow_config_change: bool) -> None:
  """Records the config in ``workdir/config.json``; refuses a workdir made by another one.

  Only ``executor`` (and the ``ray`` settings) may change between runs of one search.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  current = summaries.flatten(json.loads(config.to_json()))
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    changed = sorted(
        k for k in set(saved) | set(current)
        if saved.get(k) != current.get(k) and k != 'executor' and not k.startswith('ray.'))
    if changed and not allow_config_change:
      diff = ', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in changed)
      raise ConfigMismatchError(
          f'{workdir} holds a search made with another config ({diff}); use a new '
          '--workdir, or --allow_config_change to continue it anyway')
  write_json_atomic(path, current)


def run_search(config, workdir: str, evaluate_fn: EvaluateFn | None = None, *,
               allow_config_change: bool = False) -> dict:
  """Runs (or resumes) the whole epsilon schedule; returns the best block and counts.

  Resuming: the latest checkpoint restores the agent, the cache and the best block as they
  were after some iteration; the lines ``results.jsonl`` holds beyond that are the finished
  evaluations of the next iteration, reused (not trained again) as the agent proposes the
  same blocks again, so a deterministic search ends exactly as an uninterrupted one.
  """
  os.makedirs(workdir, exist_ok=True)
  check_workdir_config(config, workdir, allow_config_change)
  run = _SearchRun(config, workdir, evaluate_fn)
  try:
    run.loop()
  finally:
    run.close()
  return run.summary()


class _SearchRun:
  """The state of one search process: agent, cache, logs, checkpoints."""

  def __init__(self, config, workdir: str, evaluate_fn: EvaluateFn | None):
    self.config, self.workdir = config, workdir
    self.strategy = agent_lib.make_strategy(config.search, config.seed)
    self.checkpointer = checkpoint_lib.SearchCheckpointer(workdir)
    self.cache: dict[str, dict] = {}
    self.best = None
    lines = 0
    restored = self.checkpointer.restore()
    if restored:
      agent_state, search_state = restored
      self.strategy.load_state_dict(agent_state)
      self.cache, self.best, lines = (
          search_state['cache'], search_state['best'], search_state['lines'])
    records = read_results(workdir)
    if len(records) < lines:
      raise ValueError(f'{workdir}/{RESULTS_FILE} has {len(records)} records but the '
                       f'checkpoint covers {lines}: the log was truncated or replaced')
    self.pending: dict[str, list[dict]] = {}
    for record in records[lines:]:
      self.pending.setdefault(record['hash'], []).append(record)
    self.lines = len(records)
    self.total = self.strategy.num_iterations * self.strategy.blocks_per_iteration
    self.log = ResultsLog(workdir)
    self.tensorboard = summaries.SearchSummaries(workdir, config)
    self.executor = executors.make_executor(config, evaluate_fn or default_evaluate_fn(config))
    self.start, self.done_here = time.time(), 0
    if lines or records:
      logging.info('resuming %s at iteration %d: %d results logged, %d reused',
                   workdir, self.strategy.iteration, len(records), len(records) - lines)

  def loop(self) -> None:
    while not self.strategy.finished:
      self.iteration, self.epsilon = self.strategy.iteration, self.strategy.epsilon
      blocks = [self.strategy.propose() for _ in range(self.strategy.blocks_per_iteration)]
      self.rewards = []
      # Blocks cached before this iteration are logged first, in proposal order; then
      # the results of this iteration logged before a restart, in log order; then the
      # rest is evaluated. A resumed iteration thus feeds the agent in the same order.
      fresh = self.log_cached(blocks)
      fresh = self.replay_logged(fresh)
      self.evaluate(fresh)
      self.keep_unmatched_results()
      self.strategy.end_iteration()
      self.checkpointer.save(self.strategy.iteration, self.strategy.state_dict(),
                             {'cache': self.cache, 'best': self.best, 'lines': self.lines})
      self.tensorboard.iteration(self.iteration, self.epsilon, self.rewards,
                                 self.best['reward'])

  def log_cached(self, blocks: list[nsc.Block]) -> list[tuple[nsc.Block, str]]:
    """Logs the blocks whose result is cached; returns the others with their keys."""
    fresh = []
    for block in blocks:
      key = block.canonical_hash()
      if key not in self.cache:
        fresh.append((block, key))
      elif self.pending.get(key):
        self.consume(block, self.pending[key].pop(0))
      else:
        self.log_new(block, key, self.cache[key], cached=True)
    return fresh

  def replay_logged(self, fresh: list) -> list[tuple[nsc.Block, str]]:
    """Feeds results logged before a restart, in log order; returns the blocks left."""
    logged, left = [], []
    for block, key in fresh:
      if self.pending.get(key):
        logged.append((self.pending[key].pop(0), block))
      else:
        left.append((block, key))
    for record, block in sorted(logged, key=lambda pair: pair[0]['index']):
      self.consume(block, record)
    return left

  def evaluate(self, fresh: list) -> None:
    """Submits each new architecture once and logs results as they finish."""
    waiting: dict[str, list[nsc.Block]] = {}  # submitted key -> blocks that need it
    for block, key in fresh:
      if key in self.cache:  # evaluated before the restart, replayed just now
        self.log_new(block, key, self.cache[key], cached=True)
      elif key in waiting:
        waiting[key].append(block)
      else:
        waiting[key] = [block]
        self.executor.submit(key, block)
    while waiting:
      key, result = self.executor.next_result()
      first, *duplicates = waiting.pop(key)
      self.log_new(first, key, normalize_result(first, result), cached=False)
      for block in duplicates:
        self.log_new(block, key, self.cache[key], cached=True)

  def log_new(self, block: nsc.Block, key: str, result: dict, *, cached: bool) -> None:
    """Makes the record of a fresh or cached result, logs it durably, then learns from it."""
    terms = reward_lib.reward_terms(
        block, result['accuracy'], self.config.reward, self.config.model.filters)
    record = {**result, **terms, 'index': self.lines, 'iteration': self.iteration,
              'epsilon': self.epsilon, 'codes': block.to_codes(), 'hash': key,
              'cached': cached}
    self.log.append(record)
    self.lines += 1
    self.done_here += 1
    self.consume(block, record)

  def consume(self, block: nsc.Block, record: dict) -> None:
    """Feeds a logged record to the cache, the agent, TensorBoard and the best block."""
    if not record['cached']:
      self.cache[record['hash']] = {
          k: record[k] for k in record if k not in _PER_SAMPLE_KEYS}
    self.strategy.feedback(block, record['reward'])
    self.rewards.append(record['reward'])
    self.tensorboard.block(record)
    if self.best is None or record['reward'] > self.best['reward']:
      self.best = record
      self.write_best(block)
    self.report_progress(record)

  def keep_unmatched_results(self) -> None:
    """Logged results the agent did not propose again (the config changed): cache them."""
    for key, records in self.pending.items():
      for record in records:
        if not record['cached']:
          self.cache.setdefault(key, {k: record[k] for k in record
                                      if k not in _PER_SAMPLE_KEYS})
    self.pending = {}

  def write_best(self, block: nsc.Block) -> None:
    write_json_atomic(os.path.join(self.workdir, BEST_FILE), self.best)
    for suffix in ('png', 'svg'):
      path = os.path.join(self.workdir, f'best_block.{suffix}')
      draw.save(block, f'{path}.tmp.{suffix}')
      os.replace(f'{path}.tmp.{suffix}', path)
    self.tensorboard.best_block(block, self.best)

  def report_progress(self, record: dict) -> None:
    done = record['index'] + 1
    elapsed = time.time() - self.start
    eta = elapsed / self.done_here * (self.total - done) if self.done_here else float('nan')
    logging.info(
        '[%d/%d] iteration %d, epsilon %.2f: reward %.4f%s (best %.4f) | %s elapsed, ETA %s',
        done, self.total, record['iteration'] + 1, record['epsilon'], record['reward'],
        ' cached' if record['cached'] else '', self.best['reward'],
        _duration(elapsed), _duration(eta))

  def summary(self) -> dict:
    return {
        'best_codes': self.best['codes'] if self.best else None,
        'best_reward': self.best['reward'] if self.best else None,
        'best_accuracy': self.best['accuracy'] if self.best else None,
        'best': self.best,
        'blocks_sampled': self.lines,
        'blocks_evaluated': len(self.cache),
        'seconds': time.time() - self.start,
        'workdir': self.workdir,
    }

  def close(self) -> None:
    self.executor.close()
    self.log.close()
    self.tensorboard.close()
    self.checkpointer.close()


_PER_SAMPLE_KEYS = ('index', 'iteration', 'epsilon', 'codes', 'hash', 'cached', 'reward',
                    'flops_term', 'density_term', 'flops_ratio', 'density')


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'
