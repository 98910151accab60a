"""TensorBoard event files for a search (tensorboardX: no TensorFlow needed).

Tags: ``block/*`` per evaluated block (step = its index in results.jsonl): accuracy,
reward and each reward term, and in a predictor-guided search the reward predicted for it
and the spread (one chart of predicted against actual reward under Custom Scalars);
``iteration/*`` per iteration: epsilon, mean and best reward of the iteration, best reward
so far, and the predictor's Spearman rank correlation on the iteration's children,
predicted before it saw them; ``best_block`` as a picture and its codes as text; the
config as text. Each trained child is a session of TensorBoard's HParams plugin, the
run ``children/INDEX`` (its index in results.jsonl): hyperparameters its codes, hash,
depth and the count of each layer type; metrics ``child/accuracy``, ``child/reward``,
``child/flops``, ``child/params`` and ``child/seconds``, so that its table and
parallel-coordinates views sort and filter the children.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from scipy import stats
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from blockqnn_jax import draw
from blockqnn_jax import nsc
from blockqnn_jax import workdir as workdir_lib

BLOCK_TAGS = ('accuracy', 'reward', 'flops_term', 'density_term', 'predicted_reward',
              'predicted_spread')
CHILDREN_DIR = 'children'
# The metrics of a child's session: its record's field (seconds: see child_metrics).
CHILD_METRICS = ('accuracy', 'reward', 'flops', 'params', 'seconds')
# The phases of a child's wall time in its record (child.ChildEvaluator).
_SECONDS_KEYS = ('prepare_seconds', 'train_seconds', 'eval_seconds')


def event_writer(logdir: str) -> SummaryWriter:
  """A tensorboardX writer on a new event file in ``logdir``, its name ending in the time
  in nanoseconds: a directory's files sort in the order they were written (TensorBoard
  reads them in name order), and a writer opened in the same second as another never
  truncates that one's file (tensorboardX names files by the second)."""
  return SummaryWriter(logdir, filename_suffix=f'.{time.time_ns()}')


def write_scalars(logdir: str, scalars: dict, step: int) -> None:
  """Writes ``scalars`` (tag -> value) at ``step`` into an event file of their own,
  closed before returning, so a process killed right after keeps them: tensorboardX
  writes events from a queue in a background thread, and its ``flush()`` does not wait
  for the queue; ``close()`` does."""
  writer = event_writer(logdir)
  for tag, value in scalars.items():
    writer.add_scalar(tag, value, step)
  writer.close()


class SearchSummaries:
  """Writes the search's TensorBoard events into ``workdir``; an iteration's are in the
  file once ``iteration`` returns."""

  def __init__(self, workdir: str, config):
    self.workdir = workdir
    self.writer = event_writer(workdir)
    self.writer.add_text('config', json.dumps(
        workdir_lib.flatten(json.loads(config.to_json())), indent=1))
    self.experiment_written = False

  def block(self, record: dict) -> None:
    for tag in (t for t in BLOCK_TAGS if t in record):  # NSC blocks have all four
      self.writer.add_scalar(f'block/{tag}', record[tag], record['index'])
    if not record['cached']:
      self.child_session(record)

  def child_session(self, record: dict) -> None:
    """The child as an HParams session; the experiment (which columns the HParams views
    show) is written once, at the top run, from the first child."""
    child_hparams = child_hyperparameters(record['codes'], record['hash'])
    metrics = {f'child/{name}': value for name, value in child_metrics(record).items()}
    experiment, session_start, session_end = hparams(
        child_hparams, {f'child/{name}': 0.0 for name in CHILD_METRICS})
    if not self.experiment_written:
      self.writer.file_writer.add_summary(experiment)
      self.experiment_written = True
    run = os.path.join(self.workdir, CHILDREN_DIR, f'{record["index"]:06d}')
    with SummaryWriter(run) as session:
      session.file_writer.add_summary(session_start)
      for tag, value in metrics.items():
        session.add_scalar(tag, value, record['index'])
      session.file_writer.add_summary(session_end)

  def iteration(self, iteration: int, epsilon: float, rewards: list[float],
                best_so_far: float) -> None:
    self.writer.add_scalar('iteration/epsilon', epsilon, iteration)
    self.writer.add_scalar('iteration/mean_reward', float(np.mean(rewards)), iteration)
    self.writer.add_scalar('iteration/best_reward', max(rewards), iteration)
    self.writer.add_scalar('iteration/best_so_far', best_so_far, iteration)
    # close() waits for tensorboardX's queue (flush() does not); the next go to a new file.
    self.writer.close()
    self.writer = event_writer(self.workdir)

  def predictor_layout(self) -> None:
    """The Custom Scalars chart of each block's predicted against its actual reward."""
    self.writer.add_custom_scalars({'predictor': {
        'predicted against actual reward': ['Multiline',
                                            ['block/reward', 'block/predicted_reward']]}})

  def predictor_iteration(self, iteration: int, predicted: list[float],
                          actual: list[float]) -> None:
    """The Spearman correlation of an iteration's predicted and actual rewards, where it
    is defined (two children or more, neither side constant)."""
    if len(predicted) > 1 and len(set(predicted)) > 1 and len(set(actual)) > 1:
      spearman = stats.spearmanr(predicted, actual).statistic
      self.writer.add_scalar('iteration/predictor_spearman', float(spearman), iteration)

  def best_block(self, block: nsc.Block, record: dict) -> None:
    image = np.asarray(draw.to_image(block))
    self.writer.add_image('best_block', image, record['index'], dataformats='HWC')
    self.writer.add_text('best_block/codes', json.dumps(record['codes']), record['index'])

  def close(self) -> None:
    self.writer.close()


def child_hyperparameters(codes, key: str) -> dict:
  """Codes (JSON) and hash; for an NSC block also its depth (layers before the terminal)
  and how many layers of each type it has."""
  values = {'codes': json.dumps(codes), 'hash': key}
  if codes and isinstance(codes[0], (list, tuple)):  # an NSC block, not a sequence
    types = [layer.type for layer in nsc.Block.from_codes(codes).layers]
    values['depth'] = len(types)
    for code, name in nsc.TYPE_NAMES.items():
      if code != nsc.TERMINAL:
        values[name] = types.count(code)
  return values


def child_metrics(record: dict) -> dict:
  """A child's CHILD_METRICS that its record holds; seconds is its wall time from block to
  validation accuracy (build and compile, training, evaluation)."""
  metrics = {name: record[name] for name in CHILD_METRICS if name in record}
  if any(key in record for key in _SECONDS_KEYS):
    metrics['seconds'] = sum(record.get(key, 0.0) for key in _SECONDS_KEYS)
  return metrics

