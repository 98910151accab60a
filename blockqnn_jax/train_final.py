"""Train a found block in full (``config.mode = 'train'``), resumable at any moment.

  python -m blockqnn_jax.main --config=configs/cifar10.py --config.mode=train \
      --config.block=SEARCH_WORKDIR --workdir=DIR

The block comes from ``config.block`` (a best_block.json, a search workdir or inline codes)
and is stacked into the template ``config.model.template`` with ``config.train.filters``
and ``config.train.repeats``. The recipe is ``config.train``: SGD with momentum, weight
decay, step or cosine learning-rate schedule, random crop + flip (+ cutout). The same
functions serve ``config.transfer``, the ImageNet recipe of ``transfer.py``, which adds a
warm-up, Nesterov momentum, label smoothing and no decay of BatchNorm parameters and
biases. Every training image is used; the test split is evaluated (never during the search,
only here).

The training state (parameters, batch statistics, optimizer state) is checkpointed with
Orbax after every epoch and every ``checkpoint_every_seconds`` (by process 0's clock), with
the position in the epoch; data order and augmentation derive from (seed, epoch, step), so
a resumed run ends with the same parameters as an uninterrupted one. ``DIR/config.json``
holds the config (the block as codes): a rerun with another block, dataset or recipe is
refused (``workdir.check_config``), one with more epochs extends the run. The final
parameters are the last checkpoint in ``DIR/checkpoints``; ``load_model(DIR)`` and
``predict(DIR, images)`` use them.
"""

from __future__ import annotations

import json
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
import optax
import orbax.checkpoint as ocp
from flax import nnx
from tensorboardX import SummaryWriter

from blockqnn_jax import data as data_lib
from blockqnn_jax import distributed
from blockqnn_jax import files
from blockqnn_jax import models
from blockqnn_jax import train
from blockqnn_jax import workdir as workdir_lib

SCHEDULES = ('steps', 'cosine')
FINAL_FILE = 'final.json'


def peak_learning_rate(recipe) -> float:
  """The rate the schedule starts from (after any warm-up). The CIFAR recipe gives it as
  reported (``learning_rate``); the ImageNet recipe scales ``learning_rate_per_256`` with
  the batch (Goyal et al. 2017's linear scaling rule)."""
  if 'learning_rate_per_256' in recipe:
    return recipe.learning_rate_per_256 * recipe.batch_size / 256
  return recipe.learning_rate


def learning_rate_schedule(recipe, steps_per_epoch: int) -> optax.Schedule:
  """A recipe's learning rate per step: a linear warm-up from 0 over ``warmup_epochs``,
  then steps at ``lr_steps`` (epochs counted from the start) or a cosine to 0 at the end."""
  peak = peak_learning_rate(recipe)
  warmup_steps = recipe.warmup_epochs * steps_per_epoch
  if recipe.schedule == 'cosine':
    decay = optax.cosine_decay_schedule(
        peak, (recipe.epochs - recipe.warmup_epochs) * steps_per_epoch)
  else:
    decay = optax.piecewise_constant_schedule(
        peak, {epoch * steps_per_epoch - warmup_steps: recipe.lr_step_factor
               for epoch in recipe.lr_steps})
  if not warmup_steps:
    return decay
  return optax.join_schedules(
      [optax.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])


def _parameter_name(path) -> str:
  """'kernel', 'bias', 'scale': the last dictionary key of an nnx parameter's path."""
  return [key.key for key in path if isinstance(key, jax.tree_util.DictKey)][-1]


def kernel_mask(params):
  """True for the convolution and linear kernels, False for biases and BatchNorm scales:
  the parameters weight decay applies to when ``decay_norm_and_bias`` is off."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: _parameter_name(path) == 'kernel', params)


def sgd_optimizer(recipe, schedule: optax.Schedule) -> optax.GradientTransformation:
  """SGD with (Nesterov) momentum and weight decay, on every parameter or on the kernels
  only (``decay_norm_and_bias``)."""
  mask = None if recipe.decay_norm_and_bias else kernel_mask
  return optax.chain(
      optax.add_decayed_weights(recipe.weight_decay, mask=mask),
      optax.sgd(schedule, momentum=recipe.momentum, nesterov=recipe.nesterov))


def final_model_config(config, recipe):
  """``config.model`` with the width and depth of ``recipe`` (config.train or
  config.transfer)."""
  model_config = config.model.copy_and_resolve_references()
  model_config.filters = recipe.filters
  model_config.repeats = recipe.repeats
  return model_config


def augmenter(recipe, crop_and_flip: bool = True):
  """The trainer's on-device augmentation: crop + flip (unless an input pipeline did them
  on the host), then cutout when ``recipe.cutout`` is set."""
  crop = data_lib.augment if crop_and_flip else (lambda rng, images: images)
  if not recipe.cutout:
    return crop
  def augment(rng, images):
    crop_rng, cutout_rng = jax.random.split(rng)
    return data_lib.cutout(cutout_rng, crop(crop_rng, images), recipe.cutout)
  return augment


def _checkpoint_manager(workdir: str) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, cleanup_tmp_directories=True,
                                           enable_async_checkpointing=False))


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


class InMemoryRunner:
  """Feeds ``fit`` from a dataset held on the devices (CIFAR-sized data)."""

  def __init__(self, trainer: train.Trainer):
    self.trainer = trainer
    self.steps_per_epoch = trainer.steps_per_epoch

  def start_epoch(self, epoch: int, rng, start_step: int) -> None:
    del epoch, start_step  # the order derives from rng; steps index into it
    self.order = self.trainer.epoch_order(rng)

  def step(self, step: int, rng):
    return self.trainer.step(self.order, step, rng)

  def evaluate(self) -> dict:
    return {'test_accuracy': self.trainer.accuracy()}


def fit(runner, config, recipe, workdir: str, schedule) -> list[dict]:
  """Trains ``runner.trainer`` for ``recipe.epochs`` with checkpoints and resume;
  returns the per-epoch history (loss, learning rate, evaluation metrics)."""
  trainer, steps_per_epoch = runner.trainer, runner.steps_per_epoch
  manager = _checkpoint_manager(workdir)
  epoch, step, history, epoch_losses = 0, 0, [], []
  if manager.latest_step() is not None:
    restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                    trainer.state)),
        meta=ocp.args.JsonRestore()))
    trainer.state = restored['state']
    epoch, step, history = (restored['meta']['epoch'], restored['meta']['step'],
                            restored['meta']['history'])
    # The steps of this epoch before a mid-epoch save, so the epoch's mean loss is whole.
    epoch_losses = [np.float32(x) for x in restored['meta'].get('epoch_losses', [])]
    logging.info('resuming from epoch %d, step %d', epoch + 1, step)

  def save(epoch, step, losses):
    manager.save(epoch * steps_per_epoch + step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(trainer.state),
        meta=ocp.args.JsonSave({'epoch': epoch, 'step': step, 'history': history,
                                'epoch_losses': [float(x) for x in losses]})))
    manager.wait_until_finished()

  # Process 0 alone writes TensorBoard events (every process has the same history).
  writer = SummaryWriter(workdir) if distributed.is_main_process() else None
  rng = jax.random.key(config.seed)
  # Asked about 10 times an epoch: a save is due within a tenth of an epoch of its time.
  timer = CheckpointTimer(recipe.checkpoint_every_seconds, steps_per_epoch // 10)
  while epoch < recipe.epochs:
    epoch_rng = jax.random.fold_in(rng, epoch)
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
    if writer:
      for key, value in entry.items():
        if key != 'epoch':
          writer.add_scalar(f'train/{key}', value, epoch + 1)
      writer.flush()
    logging.info('epoch %d/%d: %s', epoch + 1, recipe.epochs, entry)
    epoch, step = epoch + 1, 0
    save(epoch, step, [])
    timer.restart()
  if writer:
    writer.close()
  manager.close()
  return history


def write_summary(workdir: str, config, recipe, block, model, model_config, history, *,
                  num_classes: int, image_shape, mean, std) -> dict:
  """``final.json``: the scores, the history, the recipe trained with, and what
  ``load_model`` needs."""
  summary = {
      'codes': block.to_codes(), **{k: v for k, v in history[-1].items() if 'accuracy' in k},
      'epochs': recipe.epochs, 'params': models.count_params(model),
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


def workdir_config(config, block):
  """The config a final training records in its workdir and checks a rerun against, with
  the block as its codes: a search workdir's best block may have changed since, and the
  same block may be given another way."""
  recorded = config.copy_and_resolve_references()
  recorded.block = json.dumps(block.to_codes())
  return recorded


def record_config(recorded, workdir: str) -> None:
  """Process 0 records the config (every process of a job shares the workdir)."""
  if distributed.is_main_process():
    workdir_lib.record_config(recorded, workdir)


def build_trainer(config, recipe, block, model_config, mesh, data, *, num_classes: int,
                  channels: int, steps_per_epoch: int, crop_and_flip: bool = True):
  """The network around ``block`` and its trainer with ``recipe`` (config.train or
  config.transfer) and ``augmenter(recipe, crop_and_flip)``; returns (model, trainer,
  learning-rate schedule)."""
  dtype = train.compute_dtype(config)
  model = models.build_network(block, model_config, num_classes=num_classes,
                               in_channels=channels, dtype=dtype, seed=config.seed)
  schedule = learning_rate_schedule(recipe, steps_per_epoch)
  tx = sgd_optimizer(recipe, schedule)
  trainer = train.Trainer(model, tx, data, mesh, recipe.batch_size, dtype,
                          augment=augmenter(recipe, crop_and_flip),
                          label_smoothing=recipe.label_smoothing)
  return model, trainer, schedule


def train_and_evaluate(config, workdir: str, *, allow_config_change: bool = False) -> dict:
  """Trains the block of ``config.block`` in full; returns the final scores. A workdir
  made with another config is refused (``workdir.check_config``) unless
  ``allow_config_change``."""
  os.makedirs(workdir, exist_ok=True)
  recipe = config.train
  block = files.load_block(config.block, config.search.max_layers)
  recorded = workdir_config(config, block)
  workdir_lib.check_config(recorded, workdir, allow_config_change)
  mesh = train.make_mesh()
  train.check_batch_size(recipe.batch_size, mesh)
  data = train.device_data(config, mesh, batch_size=recipe.batch_size, final=True)
  model_config = final_model_config(config, recipe)
  model, trainer, schedule = build_trainer(
      config, recipe, block, model_config, mesh, data,
      num_classes=data.num_classes, channels=data.image_shape[-1],
      steps_per_epoch=len(data.train_labels) // recipe.batch_size)
  record_config(recorded, workdir)
  history = fit(InMemoryRunner(trainer), config, recipe, workdir, schedule)
  return write_summary(workdir, config, recipe, block, model, model_config, history,
                       num_classes=data.num_classes, image_shape=data.image_shape,
                       mean=data.mean, std=data.std)


def load_model(workdir: str) -> tuple[nnx.Module, dict]:
  """The trained network of a ``mode=train`` or ``mode=transfer_imagenet`` workdir, in
  inference mode, and its summary."""
  with open(os.path.join(workdir, FINAL_FILE)) as f:
    summary = json.load(f)
  block = files.load_block(json.dumps(summary['codes']))
  model = models.build_network(
      block, ml_collections.ConfigDict(summary['model']), num_classes=summary['num_classes'],
      in_channels=summary['image_shape'][-1], dtype=jnp.dtype(summary['dtype']))
  model.train()  # the checkpoint holds the state as split in training mode
  graph, params, batch_stats = nnx.split(model, nnx.Param, ...)
  recipe = ml_collections.ConfigDict(summary['recipe'])
  tx = sgd_optimizer(recipe, learning_rate_schedule(recipe, 1))
  template = {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params)}
  manager = _checkpoint_manager(workdir)
  restored = manager.restore(manager.latest_step(), args=ocp.args.Composite(
      state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                  template))))
  manager.close()
  model = nnx.merge(graph, restored['state']['params'], restored['state']['batch_stats'])
  model.eval()
  return model, summary


def predict(workdir: str, images: np.ndarray) -> np.ndarray:
  """Class indices for uint8 images (N x H x W x C, the training size) with the trained
  network of a ``mode=train`` workdir."""
  model, summary = load_model(workdir)
  logits = model(train.preprocess(jnp.asarray(images), jnp.asarray(summary['mean']),
                                  jnp.asarray(summary['std']), jnp.float32))
  return np.asarray(jnp.argmax(logits, -1))
