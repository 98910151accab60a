"""``fit``: the epoch loop of a final training, with its checkpoints and resume, and what
a finished run writes.

The train state is checkpointed after every epoch and every ``checkpoint_every_seconds``
(by process 0's clock), with the epoch's losses so far and the run's epoch totals (the
epochs it was started with, then each extension's: what its learning-rate schedule
follows); its step is the run's position. Data order and augmentation derive from (seed,
epoch, step) (``runners.epoch_key``), so a resumed run ends with the same parameters as an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np

from blockqnn_jax import checkpoint
from blockqnn_jax import distributed
from blockqnn_jax import files
from blockqnn_jax import models
from blockqnn_jax import summaries
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.training import runners

FINAL_FILE = 'final.json'


class CheckpointTimer:
  """Says when a mid-epoch checkpoint is due: ``interval`` seconds after the last one, by
  process 0's clock. Orbax's save is collective, so every process must save at the same
  step; process 0's decision is broadcast to all (a collective on several processes, none
  on one), since the processes' clocks disagree. The broadcast waits for the host, so it
  is asked only every ``check_every`` steps, not at every step."""

  def __init__(self, interval: float, check_every: int = 1):
    self.interval, self.check_every = interval, max(1, check_every)
    self.restart()

  def restart(self) -> None:
    self.last = time.monotonic()

  def due(self, step: int = 0) -> bool:
    if step % self.check_every:
      return False
    due_here = time.monotonic() - self.last > self.interval
    return bool(multihost_utils.broadcast_one_to_all(np.int32(due_here)))


def epoch_totals(workdir: str, recipe) -> tuple[int, ...]:
  """The epochs the run in ``workdir`` was started with, then its total after each
  extension, ending with ``recipe.epochs`` (just that for a new run): what
  ``recipes.learning_rate_schedule`` follows. From the latest checkpoint; totals not
  below ``recipe.epochs`` (fewer epochs, with --allow_config_change) are dropped. A
  checkpoint of a version that did not record them counts as started with
  ``recipe.epochs``."""
  checkpointer = checkpoint.TrainingCheckpointer(workdir)
  meta = checkpointer.latest_meta()
  checkpointer.close()
  saved = meta.get('epoch_totals', []) if meta else []
  return (*[total for total in saved if total < recipe.epochs], recipe.epochs)


def fit(runner, config, recipe, workdir: str, schedule,
        totals: tuple[int, ...]) -> list[dict]:
  """Trains ``runner.trainer`` for ``recipe.epochs`` with checkpoints and resume, with the
  learning-rate ``schedule`` of the run's epoch ``totals`` (``epoch_totals``, recorded in
  every checkpoint); returns the per-epoch history (loss, learning rate, evaluation
  metrics)."""
  trainer, steps_per_epoch = runner.trainer, runner.steps_per_epoch
  checkpointer = checkpoint.TrainingCheckpointer(workdir)
  meta = checkpointer.latest_meta()
  history, epoch_losses = [], []
  if meta is not None:
    _check_resumable(meta, steps_per_epoch, workdir)
    trainer.state = checkpointer.latest_state(trainer.state)
    history = meta['history']
    # The steps of this epoch before a mid-epoch save, so the epoch's mean loss is whole.
    epoch_losses = [np.float32(x) for x in meta['epoch_losses']]
  epoch, step = divmod(int(trainer.state['step']), steps_per_epoch)
  if meta is not None:
    logging.info('resuming from epoch %d, step %d', epoch + 1, step)

  def save(epoch, step, losses):
    checkpointer.save(epoch * steps_per_epoch + step, trainer.state,
                      {'history': history, 'epoch_losses': [float(x) for x in losses],
                       'steps_per_epoch': steps_per_epoch, 'epoch_totals': list(totals)})

  # Asked about 10 times an epoch: a save is due within a tenth of an epoch of its time.
  timer = CheckpointTimer(recipe.checkpoint_every_seconds, steps_per_epoch // 10)
  while epoch < recipe.epochs:
    epoch_rng = runners.epoch_key(config.seed, epoch)
    runner.start_epoch(epoch, epoch_rng, step)
    losses, epoch_losses = epoch_losses, []
    while step < steps_per_epoch:
      losses.append(runner.step(step, epoch_rng))
      step += 1
      if step < steps_per_epoch and timer.due(step):
        save(epoch, step, losses)
        timer.restart()
    entry = {'epoch': epoch + 1,
             'learning_rate': float(schedule((epoch + 1) * steps_per_epoch - 1))}
    if losses:
      entry['loss'] = float(jnp.mean(jnp.stack(losses)))
    if (epoch + 1) % recipe.eval_every_epochs == 0 or epoch + 1 == recipe.epochs:
      entry.update(runner.evaluate())
    history.append(entry)
    if distributed.is_main_process():  # process 0 alone: every process has the history
      summaries.write_scalars(workdir, {f'train/{key}': value for key, value in entry.items()
                                        if key != 'epoch'}, epoch + 1)
    logging.info('epoch %d/%d: %s', epoch + 1, recipe.epochs, entry)
    epoch, step = epoch + 1, 0
    save(epoch, step, [])
    timer.restart()
  checkpointer.close()
  return history


def _check_resumable(meta: dict, steps_per_epoch: int, workdir: str) -> None:
  """The train state's step is the run's position only at the epoch length it was saved
  with: a checkpoint of another length (a batch size or a training set changed with
  --allow_config_change), or of a version that did not record it, is refused."""
  saved = meta.get('steps_per_epoch')
  if saved is None:
    raise workdir_lib.ConfigMismatchError(
        f'{workdir}/checkpoints was written by an earlier version of blockqnn_jax that '
        'this one cannot resume: use a new --workdir')
  if saved != steps_per_epoch:
    raise workdir_lib.ConfigMismatchError(
        f'{workdir}/checkpoints has {saved} steps per epoch, this run {steps_per_epoch} '
        '(batch size or training examples changed): its position cannot carry over; use '
        'a new --workdir')


def write_summary(workdir: str, config, recipe, block, model, model_config, history, *,
                  step: int, num_classes: int, image_shape, mean, std) -> dict:
  """``final.json``: the scores, the history, the recipe trained with, and what
  ``inference.load_model`` needs: the train state's ``step``, whose checkpoint holds the
  weights scored."""
  summary = {
      'codes': block.to_codes(), **{k: v for k, v in history[-1].items() if 'accuracy' in k},
      'epochs': recipe.epochs, 'step': step, 'params': models.count_params(model),
      'flops': models.network_flops(block, model_config, image_shape=image_shape,
                                    num_classes=num_classes),
      'num_classes': num_classes, 'image_shape': list(image_shape),
      'mean': np.asarray(mean).tolist(), 'std': np.asarray(std).tolist(),
      'model': model_config.to_dict(), 'recipe': recipe.to_dict(),
      'dtype': config.dtype, 'history': history,
  }
  if distributed.is_main_process():
    files.write_json_atomic(os.path.join(workdir, FINAL_FILE), summary)
  return summary


def check_workdir(config, block, workdir: str, allow_config_change: bool):
  """Refuses a workdir made with another config (``workdir.check_unchanged``), with the
  block as its codes: a search workdir's best block may have changed since, and the same
  block may be given another way. Returns the config to record once the run starts."""
  os.makedirs(workdir, exist_ok=True)
  recorded = config.copy_and_resolve_references()
  recorded.block = json.dumps(block.to_codes())
  workdir_lib.check_unchanged(recorded, workdir, allow_config_change)
  return recorded

