"""Start-up validation of a config: every mistake is caught before any work is done.

Each error is one line naming the field, the bad value and what is allowed. The library
guards its direct callers with the same allowed values (``steps.DTYPES``,
``runners.EPOCH_LOOPS``, ``data.check_batch_size``), but a run from a config meets them
here first.
"""

from __future__ import annotations

import numbers

import jax

from blockqnn_jax import data
from blockqnn_jax import distributed
from blockqnn_jax import executors
from blockqnn_jax import files
from blockqnn_jax import models
from blockqnn_jax import strategies
from blockqnn_jax.strategies import predictor_guided
from blockqnn_jax import workdir
from blockqnn_jax.training import recipes
from blockqnn_jax.training import runners
from blockqnn_jax.training import steps

MODES = ('search', 'train', 'transfer_imagenet')


class ConfigError(ValueError):
  """A config field with a value that is not allowed."""


def _fail(field: str, value, allowed: str):
  raise ConfigError(f'config.{field}={value!r} is not allowed: {allowed}')


def _check_int(config, field: str, minimum: int, maximum: int | None = None):
  value = _get(config, field)
  if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum
      or (maximum is not None and value > maximum)):
    _fail(field, value, f'an integer >= {minimum}' +
          (f' and <= {maximum}' if maximum is not None else ''))


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


def _check_bool(config, field: str):
  value = _get(config, field)
  if not isinstance(value, bool):
    _fail(field, value, 'True or False')


def _check_batch_split(config, field: str):
  """The batch is split over this process's devices (Ray workers check their own)."""
  devices = len(jax.devices())
  if _get(config, field) % devices:
    _fail(field, _get(config, field), f'a multiple of the {devices} devices it is split over')


def _check_final_training(config):
  if not config.block:
    _fail('block', config.block, 'the block to train: a best_block.json, a search workdir '
          'or inline codes')
  _check_recipe(config, workdir.FINAL_RECIPES[config.mode])


def _check_recipe(config, name: str):
  """The recipe block ``name`` (config.train or config.transfer)."""
  recipe = config[name]
  _check_int(config, f'{name}.filters', 1)
  _check_int(config, f'{name}.repeats', 1)
  _check_int(config, f'{name}.epochs', 1)
  _check_int(config, f'{name}.batch_size', 1)
  _check_batch_split(config, f'{name}.batch_size')
  for field in ('learning_rate', 'learning_rate_per_256'):  # config.train's, config.transfer's
    if field in recipe:
      _check_number(config, f'{name}.{field}', 0.0, 1e9)
  _check_int(config, f'{name}.warmup_epochs', 0)
  if recipe.warmup_epochs >= recipe.epochs:
    _fail(f'{name}.warmup_epochs', recipe.warmup_epochs,
          f'fewer than the {recipe.epochs} epochs of {name}.epochs')
  _check_number(config, f'{name}.momentum', 0.0, 1.0)
  _check_bool(config, f'{name}.nesterov')
  _check_number(config, f'{name}.weight_decay', 0.0, 1e9)
  _check_bool(config, f'{name}.decay_norm_and_bias')
  smoothing = recipe.label_smoothing
  if (isinstance(smoothing, bool) or not isinstance(smoothing, numbers.Real)
      or not 0 <= smoothing < 1):
    _fail(f'{name}.label_smoothing', smoothing, 'a number in [0, 1)')
  _check_choice(config, f'{name}.schedule', recipes.SCHEDULES)
  _check_number(config, f'{name}.lr_step_factor', 0.0, 1.0)
  for epoch in recipe.lr_steps:
    if (isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral)
        or epoch <= recipe.warmup_epochs):
      _fail(f'{name}.lr_steps', recipe.lr_steps,
            f'epochs after the warm-up (integers >= {recipe.warmup_epochs + 1})')
  _check_int(config, f'{name}.cutout', 0)
  _check_int(config, f'{name}.eval_every_epochs', 1)
  _check_number(config, f'{name}.checkpoint_every_seconds', 0.0, 1e12)


def check_predictor(config) -> None:
  """config.search.predictor: known fields only, each in its range."""
  for field in config.search.predictor:
    if field not in predictor_guided.FIELDS:
      raise ConfigError(f'config.search.predictor.{field} is unknown: the fields are '
                        f'{predictor_guided.FIELDS}')
  _check_bool(config, 'search.predictor.enabled')
  if config.search.predictor.enabled and config.search.strategy not in predictor_guided.GUIDED:
    _fail('search.predictor.enabled', True, f'False with search.strategy='
          f'{config.search.strategy!r}: the predictor guides {predictor_guided.GUIDED}')
  _check_int(config, 'search.predictor.members', 1)
  _check_number(config, 'search.predictor.ridge', 1e-9, 1e9)
  _check_int(config, 'search.predictor.warmup', 2)
  _check_int(config, 'search.predictor.candidates', 1)
  _check_int(config, 'search.predictor.best_mutations', 0)
  for name in config.search.predictor.best_mutations_for:
    if name not in predictor_guided.DRAWN:
      _fail('search.predictor.best_mutations_for', name, f'names from {predictor_guided.DRAWN}')
  _check_choice(config, 'search.predictor.acquisition', predictor_guided.ACQUISITIONS)
  _check_number(config, 'search.predictor.kappa', 0.0, 1e9)
  _check_number(config, 'search.predictor.own_share', 0.0, 1.0)
  _check_int(config, 'search.predictor.random_first', 0)
  # Below 1: at 1 every reward would be raised to the best, leaving nothing to fit.
  _check_number(config, 'search.predictor.floor_quantile', 0.0, 0.99)


def check_distributed(config) -> None:
  """The multi-host fields, checked before ``distributed.initialize`` touches a device."""
  address = config.distributed.coordinator_address
  if not isinstance(address, str):
    _fail('distributed.coordinator_address', address, "'', 'auto' or host:port")
  _check_int(config, 'distributed.num_processes', 1)
  _check_int(config, 'distributed.process_id', 0)
  if config.distributed.process_id >= config.distributed.num_processes:
    _fail('distributed.process_id', config.distributed.process_id,
          f'less than distributed.num_processes={config.distributed.num_processes}')
  if not address and config.distributed.num_processes > 1:
    _fail('distributed.coordinator_address', address, "host:port of process 0 (or 'auto') "
          f'when distributed.num_processes={config.distributed.num_processes}')
  if address and config.mode != 'transfer_imagenet':
    _fail('distributed.coordinator_address', address, f"'' in mode={config.mode!r}: only "
          "transfer_imagenet runs over several hosts (a search spreads with executor='ray')")
  if address not in ('', distributed.AUTO) and (
      address.count(':') != 1 or not address.rpartition(':')[2].isdigit()):
    _fail('distributed.coordinator_address', address, "'', 'auto' or host:port")


def check_config(config) -> None:
  """Raises ConfigError for the first field that is not allowed."""
  check_distributed(config)
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
    _fail('dataset', config.dataset, "'cifar10', 'cifar100', a TFDS name, 'digits', "
          "'synthetic', or the path of an image folder, a .npz or a prepared TFDS directory")
  # At least 8, as transfer.image_size: the CIFAR template halves it twice (8 -> 2 pixels).
  _check_int(config, 'image_size', 8)
  _check_choice(config, 'search.strategy', strategies.STRATEGIES)
  _check_schedule(config.search.epsilon_schedule)
  _check_int(config, 'search.blocks_per_iteration', 1)
  _check_int(config, 'search.max_layers', 1)
  _check_number(config, 'search.learning_rate', 0.0, 1.0)
  _check_number(config, 'search.learning_rate_decrease', 0.0, 1.0)
  _check_number(config, 'search.discount', 0.0, 1.0)
  _check_number(config, 'search.q_init', -1e9, 1e9)
  _check_int(config, 'search.replay_samples', 0)
  _check_choice(config, 'search.terminal_reward', strategies.TERMINAL_REWARDS)
  _check_choice(config, 'search.exploration', strategies.EXPLORATIONS)
  _check_choice(config, 'search.update_order', strategies.UPDATE_ORDERS)
  _check_int(config, 'search.population_size', 1)
  _check_int(config, 'search.tournament_size', 1, config.search.population_size)
  check_predictor(config)
  _check_number(config, 'reward.flops_weight', -1e9, 1e9)  # the sign is a question (docs/method.md)
  _check_number(config, 'reward.density_weight', -1e9, 1e9)
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
  _check_choice(config, 'dtype', steps.DTYPES)
  _check_choice(config, 'epoch_loop', runners.EPOCH_LOOPS)
  if config.executor == 'local' and config.mode == 'search':
    _check_batch_split(config, 'batch_size')
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
      # Imported here: a search never needs the streaming pipeline's decoders (OpenCV,
      # simplejpeg) or Grain.
      from blockqnn_jax import streaming_input  # pylint: disable=g-import-not-at-top
      streaming_input.open_dataset(config)
    else:
      data.check_dataset(config)
  except (ImportError, ValueError) as error:
    raise ConfigError(f'config.dataset={config.dataset!r}: {error}') from None
