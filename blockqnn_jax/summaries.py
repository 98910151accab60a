"""TensorBoard event files for a search (tensorboardX: no TensorFlow needed).

Tags: ``block/*`` per evaluated block (step = its index in results.jsonl): accuracy,
reward and each reward term, and in a predictor-guided search the reward predicted for it
and the spread (one chart of predicted against actual reward under Custom Scalars);
``iteration/*`` per iteration: epsilon, mean and best reward of the iteration, best reward
so far, and the predictor's Spearman rank correlation on the iteration's children,
predicted before it saw them; ``best_block`` as a picture and its codes as text; the
config as hyperparameters.
"""

from __future__ import annotations

import json

import numpy as np
from scipy import stats
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from blockqnn_jax import draw
from blockqnn_jax import nsc
from blockqnn_jax import workdir as workdir_lib

BLOCK_TAGS = ('accuracy', 'reward', 'flops_term', 'density_term', 'predicted_reward',
              'predicted_spread')


class SearchSummaries:
  """Writes the search's TensorBoard events into ``workdir``."""

  def __init__(self, workdir: str, config):
    self.writer = SummaryWriter(workdir)
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
    self.writer.flush()

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
      self.writer.flush()

  def best_block(self, block: nsc.Block, record: dict) -> None:
    image = np.asarray(draw.to_image(block))
    self.writer.add_image('best_block', image, record['index'], dataformats='HWC')
    self.writer.add_text('best_block/codes', json.dumps(record['codes']), record['index'])

  def close(self) -> None:
    self.writer.close()

