"""TensorBoard event files for a search (tensorboardX: no TensorFlow needed).

Tags: ``block/*`` per evaluated block (step = its index in results.jsonl): accuracy,
reward and each reward term; ``iteration/*`` per iteration: epsilon, mean and best reward
of the iteration, best reward so far; ``best_block`` as a picture and its codes as text;
the config as hyperparameters.
"""

from __future__ import annotations

import json
import time

import numpy as np
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from blockqnn_jax import draw
from blockqnn_jax import nsc
from blockqnn_jax import workdir as workdir_lib

BLOCK_TAGS = ('accuracy', 'reward', 'flops_term', 'density_term')


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
    flat = workdir_lib.flatten(json.loads(config.to_json()))
    for summary in hparams(flat, {'iteration/best_so_far': 0.0}):
      self.writer.file_writer.add_summary(summary)

  def block(self, record: dict) -> None:
    for tag in (t for t in BLOCK_TAGS if t in record):  # NSC blocks have all four
      self.writer.add_scalar(f'block/{tag}', record[tag], record['index'])

  def iteration(self, iteration: int, epsilon: float, rewards: list[float],
                best_so_far: float) -> None:
    self.writer.add_scalar('iteration/epsilon', epsilon, iteration)
    self.writer.add_scalar('iteration/mean_reward', float(np.mean(rewards)), iteration)
    self.writer.add_scalar('iteration/best_reward', max(rewards), iteration)
    self.writer.add_scalar('iteration/best_so_far', best_so_far, iteration)
    # close() waits for tensorboardX's queue (flush() does not); the next go to a new file.
    self.writer.close()
    self.writer = event_writer(self.workdir)

  def best_block(self, block: nsc.Block, record: dict) -> None:
    image = np.asarray(draw.to_image(block))
    self.writer.add_image('best_block', image, record['index'], dataformats='HWC')
    self.writer.add_text('best_block/codes', json.dumps(record['codes']), record['index'])

  def close(self) -> None:
    self.writer.close()

