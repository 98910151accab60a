"""The search loop: the agent proposes blocks, they are evaluated, rewards feed back.

Each iteration samples ``blocks_per_iteration`` blocks with the iteration's epsilon, then
evaluates them. A block isomorphic to one already evaluated is not trained again: its
cached result is reused (and still fed to the agent). Every result is appended to
``workdir/results.jsonl`` and flushed to disk as it finishes, before the agent learns from
it (the log is the durable record); after every iteration the agent and search state are
checkpointed with Orbax into ``workdir/checkpoints``. ``workdir/best_block.{json,png,svg}``
always hold the best block so far, and TensorBoard events the progress.

Iteration bookkeeping: iteration i samples all its blocks with epsilon_i before any of
them is evaluated; every record carries the iteration and epsilon it was sampled with.
Results are logged in the order they finish but fed to the agent in the order the blocks
were sampled, so the agent's state does not depend on how many children ran at once, or
where: serial, pipelined, several per device or on Ray, a deterministic evaluator gives
the same search.

Failures: a child that ran and failed (a non-finite loss, out of memory alone, an error
building or training it) is fed with accuracy 0, the lowest reward. A child that did not
run (its worker died on every retry: ``transient``) is logged but neither cached nor fed:
the strategy skips its place in sample order, the same way on a resume. Feeding waits for
an iteration's first verdict on an architecture (``executors.is_verdict``); an iteration
without one ends the search with ``AllChildrenFailedError``, before the strategy learns
anything from it. An exception raised by ``evaluate_fn`` ends the search as it is.

Predictor-guided (``config.search.predictor.enabled``): the strategy comes wrapped in
``strategies.PredictorGuided``. Each record holds the reward predicted for its block when
the iteration was proposed (``predicted_reward``, ``predicted_spread``), before any of the
iteration was fed back; the predictor learns each result as it is fed, while the other
children train, and its state is rebuilt from the checkpointed evaluations on resume.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from typing import Callable, Union

from absl import logging

from blockqnn_jax import checkpoint as checkpoint_lib
from blockqnn_jax import draw
from blockqnn_jax import executors
from blockqnn_jax import files
from blockqnn_jax import nsc
from blockqnn_jax import results as results_lib
from blockqnn_jax import reward as reward_lib
from blockqnn_jax import search_space
from blockqnn_jax import strategies as strategies_lib
from blockqnn_jax import summaries
from blockqnn_jax import workdir as workdir_lib

EvaluateFn = Union[Callable[[nsc.Block], Union[float, dict]], executors.Evaluator]
_POLL_SECONDS = 0.5  # how often a wait for results looks at the stop request


class SearchStopped(Exception):
  """SIGTERM asked the search to stop; everything finished is on disk, a rerun resumes."""


class TruncatedLogError(ValueError):
  """results.jsonl holds fewer records than the checkpoint covers."""


class AllChildrenFailedError(RuntimeError):
  """No child of an iteration gave a verdict on its architecture (a broken dataset, a
  worker that cannot run): the strategy would only learn from zeros."""


def run_search(config, workdir: str, evaluate_fn: EvaluateFn | None = None, *,
               space: search_space.Space | None = None,
               allow_config_change: bool = False) -> dict:
  """Runs (or resumes) the whole epsilon schedule; returns the best block and counts.

  ``space`` is what is searched: NSC blocks up to ``config.search.max_layers`` deep by
  default, or any ``search_space`` space (then ``evaluate_fn`` is required). On NSC blocks
  the reward is the paper's redefined reward of the accuracy (``reward.py``); on other
  spaces it is the accuracy itself (a tabular benchmark's score).
  ``evaluate_fn(arch)`` returns an accuracy or a dict with ``'accuracy'``; it may also
  be an ``executors.Evaluator`` (``prepare``/``run``, pipelined); None trains each child
  for real. Resuming: the latest checkpoint restores the agent, the cache and
  the best block as they were after some iteration; the lines ``results.jsonl`` holds
  beyond that are the finished evaluations of the next iteration, reused (not trained
  again) as the agent proposes the same blocks again, so a deterministic search ends
  exactly as an uninterrupted one. Raises WorkdirBusyError if another process holds
  ``workdir``, and SearchStopped after a SIGTERM (at the next safe point: nothing
  finished is lost, and a rerun resumes).
  """
  with workdir_lib.locked(workdir):
    workdir_lib.check_unchanged(config, workdir, allow_config_change)
    run = _SearchRun(config, workdir, evaluate_fn, space)
    workdir_lib.record_config(config, workdir)
    try:
      with _stop_request_on_sigterm() as stop_requested:
        run.loop(stop_requested)
    finally:
      run.close()
  return run.summary()


@contextlib.contextmanager
def _stop_request_on_sigterm():
  """An Event that SIGTERM sets (the signal a cluster scheduler sends before a kill).

  Installed after the executor started, since Ray installs a SIGTERM handler of its own.
  Only the main thread can take signals; elsewhere the Event is never set.
  """
  stop_requested = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield stop_requested
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.set())
  try:
    yield stop_requested
  finally:
    signal.signal(signal.SIGTERM, previous)


class _SearchRun:
  """The state of one search process: agent, cache, logs, checkpoints."""

  def __init__(self, config, workdir: str, evaluate_fn: EvaluateFn | None,
               space: search_space.Space | None):
    if space is not None and evaluate_fn is None:
      raise ValueError(f'run_search over {space.description} needs an evaluate_fn: only '
                       'NSC blocks are trained as children')
    self.space = space or search_space.NSCSpace(config.search.max_layers)
    self.config, self.workdir = config, workdir
    self.reward_terms = _reward_terms(self.space, config)
    self.strategy = strategies_lib.make_strategy(config.search, config.seed, self.space)
    self.guided = isinstance(self.strategy, strategies_lib.PredictorGuided)
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
    records = _read_log(workdir, lines)
    if len(records) < lines:
      raise TruncatedLogError(
          f'{workdir}/{results_lib.RESULTS_FILE} has {len(records)} records but the '
          f'checkpoint covers {lines}: the log was truncated or replaced; restore it from a '
          'backup, or start a new --workdir')
    self.pending: dict[str, list[dict]] = {}
    for record in records[lines:]:
      self.pending.setdefault(record['hash'], []).append(record)
    self.lines = len(records)
    self.total = self.strategy.num_iterations * self.strategy.blocks_per_iteration
    self.log = results_lib.ResultsLog(workdir)
    self.tensorboard = summaries.SearchSummaries(workdir, config)
    if self.guided:
      self.tensorboard.predictor_layout()
    self.executor = executors.make_executor(config, evaluate_fn)
    self.start, self.done_here = time.time(), 0
    if lines or records:
      logging.info('resuming %s at iteration %d: %d results logged, %d reused',
                   workdir, self.strategy.iteration, len(records), len(records) - lines)

  def loop(self, stop_requested: threading.Event) -> None:
    while not self.strategy.finished:
      if stop_requested.is_set():
        raise SearchStopped()
      self.iteration, self.epsilon = self.strategy.iteration, self.strategy.epsilon
      self.blocks = [self.strategy.propose()
                     for _ in range(self.strategy.blocks_per_iteration)]
      self.predictions = self.predict(self.blocks)
      self.records: list[dict | None] = [None] * len(self.blocks)
      self.fed, self.rewards, self.has_verdict = 0, [], False
      waiting = self.start_iteration()
      self.collect(waiting, stop_requested)
      self.stop_without_verdict()
      self.keep_unmatched_results()
      self.strategy.end_iteration()
      # The iteration's events are closed into their file before the checkpoint that
      # counts the iteration as done, so a kill between the two loses none of them.
      if self.guided:
        fresh = [r for r in self.records if 'predicted_reward' in r and not r['cached']
                 and not r.get('transient')]
        self.tensorboard.predictor_iteration(
            self.iteration, [r['predicted_reward'] for r in fresh],
            [r['reward'] for r in fresh])
      self.tensorboard.iteration(self.iteration, self.epsilon, self.rewards,
                                 self.best['reward'])
      self.checkpointer.save(self.strategy.iteration, self.strategy.state_dict(),
                             {'cache': self.cache, 'best': self.best, 'lines': self.lines})

  def predict(self, blocks: list) -> list[dict]:
    """Each block's predicted reward and spread, made once the iteration is proposed and
    before any of its blocks is fed back (so before the predictor saw them); empty where
    the search is unguided or the predictor cannot rank yet. The predictor itself learns
    in ``consume``, one Sherman-Morrison update per result, while other children train."""
    predicted = self.strategy.predict(blocks) if self.guided else None
    if predicted is None:
      return [{} for _ in blocks]
    return [{'predicted_reward': float(mean), 'predicted_spread': float(spread)}
            for mean, spread in zip(*predicted)]

  def start_iteration(self) -> dict[str, list[int]]:
    """Takes each block's result from the log of an interrupted run or from the cache, or
    submits it (each architecture once); returns submitted key -> positions needing it."""
    waiting: dict[str, list[int]] = {}
    for position, block in enumerate(self.blocks):
      key = self.space.key(block)
      if self.pending.get(key):  # logged before a restart
        record = self.pending[key].pop(0)
        self.remember(record)
        self.place(position, record)
      elif key in self.cache:
        self.log_new(position, key, self.cache[key], cached=True)
      elif key in waiting:
        waiting[key].append(position)
      else:
        waiting[key] = [position]
        self.executor.submit(key, block)
    self.feed_ready()
    return waiting

  def collect(self, waiting: dict[str, list[int]], stop_requested: threading.Event) -> None:
    """Logs results as they finish; feeds the agent in sample order as they allow."""
    while waiting:
      finished = self.executor.next_result(timeout=_POLL_SECONDS)
      if stop_requested.is_set():
        raise SearchStopped()
      if finished is None:
        continue
      key, result = finished
      first, *duplicates = waiting.pop(key)
      result = results_lib.normalize_result(
          self.space.to_codes(self.blocks[first]), result)
      if result.get('transient'):
        logging.warning('child %s did not run (%s): logged, not fed to the strategy',
                        self.space.to_codes(self.blocks[first]), result.get('reason'))
      self.log_new(first, key, result, cached=False)
      if duplicates and result.get('transient'):  # not a verdict: evaluate it again
        waiting[key] = duplicates
        self.executor.submit(key, self.blocks[duplicates[0]])
        duplicates = []
      for position in duplicates:
        self.log_new(position, key, result, cached=True)
      self.feed_ready()

  def log_new(self, position: int, key: str, result: dict, *, cached: bool) -> None:
    """Makes the record of a fresh or cached result and logs it durably."""
    block = self.blocks[position]
    terms = self.reward_terms(block, result['accuracy'])
    result = {k: v for k, v in result.items() if k not in _PER_SAMPLE_KEYS}
    record = {**result, **terms, **self.predictions[position], 'index': self.lines, 'iteration': self.iteration,
              'epsilon': self.epsilon, 'codes': self.space.to_codes(block), 'hash': key,
              'cached': cached}
    self.log.append(record)
    self.lines += 1
    self.done_here += 1
    self.remember(record)
    self.place(position, record)

  def place(self, position: int, record: dict) -> None:
    """Puts a logged record in its place in sample order, noting whether it is a verdict
    (``executors.is_verdict``)."""
    self.records[position] = record
    self.has_verdict = self.has_verdict or executors.is_verdict(record)

  def remember(self, record: dict) -> None:
    """Caches a fresh result as its architecture's verdict, unless it was transient (a
    worker that died, memory that ran out while sharing a device): that is re-evaluated."""
    if not record['cached'] and not record.get('transient'):
      self.cache[record['hash']] = {
          k: record[k] for k in record if k not in _PER_SAMPLE_KEYS}

  def feed_ready(self) -> None:
    """Feeds the agent every record whose predecessors in sample order it has had, once
    the iteration has a verdict; a child that did not run (transient) is passed over."""
    if not self.has_verdict:
      return
    while self.fed < len(self.records) and self.records[self.fed] is not None:
      record = self.records[self.fed]
      if not record.get('transient'):
        self.consume(self.blocks[self.fed], record)
      self.fed += 1

  def stop_without_verdict(self) -> None:
    """Raises AllChildrenFailedError, in one line, for an iteration without a verdict."""
    if self.has_verdict:
      return
    first = self.records[0]
    reason = (str(first.get('reason', '')).strip().splitlines() or ['no reason given'])[0]
    line = min(record['index'] for record in self.records) + 1
    raise AllChildrenFailedError(
        f'every child of iteration {self.iteration} failed, none for its architecture '
        f'(the first, {first["codes"]}: {reason}); fix the cause, delete line {line} and '
        f'every line after it from {self.log.path} (or use a new workdir), and rerun')

  def consume(self, block: nsc.Block, record: dict) -> None:
    """Feeds a logged record to the agent, TensorBoard and the best block."""
    self.strategy.feedback(block, record['reward'])
    self.rewards.append(record['reward'])
    self.tensorboard.block(record)
    if self.best is None or record['reward'] > self.best['reward']:
      self.best = record
      self.write_best(block)
    self.report_progress(record)

  def keep_unmatched_results(self) -> None:
    """Logged results the agent did not propose again (the config changed): cache them."""
    for records in self.pending.values():
      for record in records:
        if not record['cached'] and not record.get('transient'):
          self.cache.setdefault(record['hash'], {
              k: record[k] for k in record if k not in _PER_SAMPLE_KEYS})
    self.pending = {}

  def write_best(self, block) -> None:
    files.write_json_atomic(os.path.join(self.workdir, files.BEST_FILE), self.best)
    if not isinstance(block, nsc.Block):
      return  # only NSC blocks are drawn
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
        done, self.total, record['iteration'], record['epsilon'], record['reward'],
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
                    'flops_term', 'density_term', 'flops_ratio', 'density',
                    'predicted_reward', 'predicted_spread')


def _reward_terms(space: search_space.Space, config) -> Callable[..., dict]:
  """``(arch, accuracy) -> {'reward': ..., ...}``: the redefined reward and its terms on
  NSC blocks (``reward.py``), the accuracy itself on other spaces."""
  if isinstance(space, search_space.NSCSpace):
    return lambda block, accuracy: reward_lib.reward_terms(
        block, accuracy, config.reward, config.model.filters)
  return lambda arch, accuracy: {'reward': accuracy}


def _read_log(workdir: str, checkpointed_lines: int) -> list[dict]:
  """The results log, or one line on how to recover a damaged one."""
  try:
    return results_lib.read_results(workdir)
  except results_lib.DamagedLogError as error:
    if error.line > checkpointed_lines:
      advice = ('delete that line and every line after it, then rerun: those children '
                'are evaluated again')
    else:
      advice = (f'restore it from a backup (the checkpoint covers the first '
                f'{checkpointed_lines} lines, so none of them may go), or start a new '
                '--workdir')
    raise results_lib.DamagedLogError(error.path, error.line, advice) from None


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return '?'
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'
