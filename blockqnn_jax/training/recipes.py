"""The training recipes: optimizers, learning-rate schedules, augmentation, and the
network and trainer a recipe trains.

The search's children train with the early-stop recipe (``config.early_stop``: Adam).
``mode=train`` trains with ``config.train`` (SGD with momentum, weight decay, step or
cosine schedule, crop + flip + cutout) and ``mode=transfer_imagenet`` with
``config.transfer``, which adds a warm-up, Nesterov momentum, label smoothing and no decay
of BatchNorm parameters and biases.
"""

from __future__ import annotations

import jax
import optax

from blockqnn_jax import data as data_lib
from blockqnn_jax import models
from blockqnn_jax.training import steps as steps_lib

SCHEDULES = ('steps', 'cosine')


def early_stop_optimizer(early_stop_config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam at 1e-3, multiplied by 0.2 every 5 epochs: the early-stop recipe reported for
  the paper (unconfirmed; configs/default.py)."""
  schedule = optax.exponential_decay(
      early_stop_config.learning_rate,
      transition_steps=early_stop_config.lr_decay_epochs * steps_per_epoch,
      decay_rate=early_stop_config.lr_decay, staircase=True)
  return optax.adam(schedule, b1=0.9, b2=0.999)


def peak_learning_rate(recipe) -> float:
  """The rate the schedule starts from (after any warm-up). The CIFAR recipe gives it as
  reported (``learning_rate``); the ImageNet recipe scales ``learning_rate_per_256`` with
  the batch (Goyal et al. 2017's linear scaling rule)."""
  if 'learning_rate_per_256' in recipe:
    return recipe.learning_rate_per_256 * recipe.batch_size / 256
  return recipe.learning_rate


def learning_rate_schedule(recipe, steps_per_epoch: int,
                           epoch_totals: tuple[int, ...] | None = None) -> optax.Schedule:
  """A recipe's learning rate per step: a linear warm-up from 0 over ``warmup_epochs``,
  then steps at ``lr_steps`` (epochs counted from the start) or a cosine to 0 at the end.

  ``epoch_totals``: the epochs the run was started with, then its total after each
  extension (``recipe.epochs`` alone by default). Steps at fixed epochs need nothing more:
  an extended run follows the longer recipe. A cosine ends at 0 after the epochs it was
  planned over, so each extension is a warm restart (SGDR, Loshchilov & Hutter 2017): a
  new cosine from the peak rate to 0 over the epochs added, without a warm-up.
  """
  peak = peak_learning_rate(recipe)
  warmup_steps = recipe.warmup_epochs * steps_per_epoch
  totals = tuple(epoch_totals or (recipe.epochs,))
  if recipe.schedule == 'cosine':
    starts = (recipe.warmup_epochs, *totals[:-1])
    decays = [optax.cosine_decay_schedule(peak, (end - start) * steps_per_epoch)
              for start, end in zip(starts, totals)]
  else:
    starts = (recipe.warmup_epochs,)
    decays = [optax.piecewise_constant_schedule(
        peak, {epoch * steps_per_epoch - warmup_steps: recipe.lr_step_factor
               for epoch in recipe.lr_steps})]
  boundaries = [start * steps_per_epoch for start in starts[1:]]
  if warmup_steps:
    decays, boundaries = ([optax.linear_schedule(0.0, peak, warmup_steps), *decays],
                          [warmup_steps, *boundaries])
  return optax.join_schedules(decays, boundaries) if boundaries else decays[0]


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


def augmenter(recipe, crop_and_flip: bool = True):
  """The train step's augmentation: crop + flip (unless an input pipeline did them on the
  host), then cutout when ``recipe.cutout`` is set."""
  crop = data_lib.augment if crop_and_flip else (lambda rng, images: images)
  if not recipe.cutout:
    return crop
  def augment(rng, images):
    crop_rng, cutout_rng = jax.random.split(rng)
    return data_lib.cutout(cutout_rng, crop(crop_rng, images), recipe.cutout)
  return augment


def final_model_config(config, recipe):
  """``config.model`` with the width and depth of ``recipe`` (config.train or
  config.transfer)."""
  model_config = config.model.copy_and_resolve_references()
  model_config.filters = recipe.filters
  model_config.repeats = recipe.repeats
  return model_config


def build_trainer(config, recipe, block, model_config, mesh, *, num_classes: int,
                  channels: int, steps_per_epoch: int, crop_and_flip: bool = True,
                  epoch_totals: tuple[int, ...] | None = None):
  """The network around ``block`` and its trainer with ``recipe`` (config.train or
  config.transfer) and the schedule of ``epoch_totals`` (``learning_rate_schedule``);
  returns (model, trainer, learning-rate schedule)."""
  dtype = steps_lib.compute_dtype(config)
  model = models.build_network(block, model_config, num_classes=num_classes,
                               in_channels=channels, dtype=dtype, seed=config.seed)
  schedule = learning_rate_schedule(recipe, steps_per_epoch, epoch_totals)
  trainer = steps_lib.Trainer(model, sgd_optimizer(recipe, schedule), mesh, dtype,
                              augment=augmenter(recipe, crop_and_flip),
                              label_smoothing=recipe.label_smoothing)
  return model, trainer, schedule
