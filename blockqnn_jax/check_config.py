"""Start-up validation of a config: every mistake is caught before any work is done.

Each error is one line naming the field, the bad value and what is allowed.
"""

from __future__ import annotations

import numbers

import jax

from blockqnn_jax import agent
from blockqnn_jax import data
from blockqnn_jax import executors
from blockqnn_jax import files
from blockqnn_jax import imagenet_input
from blockqnn_jax import models
from blockqnn_jax import nsc
from blockqnn_jax import train
from blockqnn_jax import train_final

MODES = ('search', 'train', 'transfer_imagenet')


class ConfigError(ValueError):
  """A config field with a value that is not allowed."""


def _fail(field: str, value, allowed: str):
  raise ConfigError(f'config.{field}={value!r} is not allowed: {allowed}')


def _check_int(config, field: str, minimum: int):
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
    _fail(field, value, f'an integer >= {minimum}')


def _check_number(config, field: str, low: float, high: float):
  value = _get(config, field)
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
    _fail(field, value, f'a number in [{low}, {high}]')


def _check_choice(config, field: str, allowed):
  value = _get(config, field)
  if value not in allowed:
    _fail(field, value, f'one of {allowed}')


def _get(config, field: str):
  for part in field.split('.'):
    config = config[part]
  return config


def _check_schedule(schedule):
  field = 'search.epsilon_schedule'
  try:
    pairs = [(eps, n) for eps, n in schedule]
  except (TypeError, ValueError):
    _fail(field, schedule, 'a list of (epsilon, iterations) pairs')
  if not pairs:
    _fail(field, schedule, 'at least one (epsilon, iterations) pair')
  for eps, n in pairs:
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 <= eps <= 1:
      _fail(field, schedule, f'epsilon {eps!r} must be in [0, 1]')
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
      _fail(field, schedule, f'iterations {n!r} must be an integer >= 1')


def _check_ray(config):
  try:
    import ray  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ConfigError("config.executor='ray' needs Ray: pip install -r requirements-ray.txt"
                      ) from None
  _check_int(config, 'ray.max_in_flight', 0)
  _check_number(config, 'ray.gpus_per_trial', -1, 1e6)
  _check_number(config, 'ray.cpus_per_trial', 0, 1e6)
  _check_int(config, 'ray.max_retries', 0)


def _check_batch_split(config, field: str):
  """The batch is split over this process's devices (Ray workers check their own)."""
  devices = len(jax.devices())
  if _get(config, field) % devices:
    _fail(field, _get(config, field), f'a multiple of the {devices} devices it is split over')


def _check_final_training(config):
  if not config.block:
    _fail('block', config.block, 'the block to train: a best_block.json, a search workdir '
          'or inline codes')
  _check_int(config, 'train.filters', 1)
  _check_int(config, 'train.repeats', 1)
  _check_int(config, 'train.epochs', 1)
  _check_int(config, 'train.batch_size', 1)
  _check_number(config, 'train.learning_rate', 0.0, 1e9)
  _check_number(config, 'train.momentum', 0.0, 1.0)
  _check_number(config, 'train.weight_decay', 0.0, 1e9)
  _check_choice(config, 'train.schedule', train_final.SCHEDULES)
  _check_number(config, 'train.lr_step_factor', 0.0, 1.0)
  for epoch in config.train.lr_steps:
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or epoch < 1:
      _fail('train.lr_steps', config.train.lr_steps, 'epochs (integers >= 1)')
  _check_int(config, 'train.cutout', 0)
  _check_int(config, 'train.eval_every_epochs', 1)
  _check_number(config, 'train.checkpoint_every_seconds', 0.0, 1e12)


def check_config(config) -> None:
  """Raises ConfigError for the first field that is not allowed."""
  _check_choice(config, 'mode', MODES)
  _check_choice(config, 'executor', executors.EXECUTORS)
  if config.executor == 'ray':
    _check_ray(config)
  _check_int(config, 'seed', 0)
  _check_int(config, 'children_per_device', 1)
  _check_int(config, 'compile_ahead', 0)
  if not isinstance(config.compilation_cache_dir, str):
    _fail('compilation_cache_dir', config.compilation_cache_dir, "a directory, or '' (off)")
  if not isinstance(config.dataset, str) or not config.dataset:
    _fail('dataset', config.dataset, "'cifar10', 'cifar100', a TFDS name, 'digits' or "
          "'synthetic'")
  _check_choice(config, 'search.strategy', agent.STRATEGIES)
  _check_schedule(config.search.epsilon_schedule)
  _check_int(config, 'search.blocks_per_iteration', 1)
  _check_int(config, 'search.max_layers', 1)
  _check_number(config, 'search.learning_rate', 0.0, 1.0)
  _check_number(config, 'search.discount', 0.0, 1.0)
  _check_number(config, 'search.q_init', -1e9, 1e9)
  _check_int(config, 'search.replay_samples', 0)
  _check_choice(config, 'search.terminal_reward', agent.TERMINAL_REWARDS)
  _check_choice(config, 'search.exploration', agent.EXPLORATIONS)
  _check_number(config, 'reward.flops_weight', 0.0, 1e9)
  _check_number(config, 'reward.density_weight', 0.0, 1e9)
  _check_int(config, 'early_stop.epochs', 1)
  _check_number(config, 'early_stop.learning_rate', 0.0, 1e9)
  _check_number(config, 'early_stop.lr_decay', 0.0, 1.0)
  _check_int(config, 'early_stop.lr_decay_epochs', 1)
  _check_int(config, 'early_stop.patience', 0)
  _check_int(config, 'model.repeats', 1)
  _check_int(config, 'model.filters', 1)
  _check_choice(config, 'model.template', tuple(models.TEMPLATES))
  _check_int(config, 'batch_size', 1)
  _check_int(config, 'validation_examples', 1)
  _check_int(config, 'max_train_examples', 0)
  _check_choice(config, 'dtype', train.DTYPES)
  if config.executor == 'local' or config.mode != 'search':
    _check_batch_split(config, 'batch_size' if config.mode == 'search' else 'train.batch_size')
  if config.mode != 'search':
    _check_final_training(config)
  if config.block:
    try:
      files.load_block(config.block, config.search.max_layers)
    except (OSError, ValueError) as error:
      raise ConfigError(f'config.block={config.block!r}: {error}') from None
  try:
    if config.mode == 'transfer_imagenet':
      _check_int(config, 'transfer.image_size', 8)
      _check_int(config, 'transfer.workers', 0)
      imagenet_input.open_dataset(config)
    else:
      data.check_dataset(config)
  except (ImportError, ValueError) as error:
    raise ConfigError(f'config.dataset={config.dataset!r}: {error}') from None
