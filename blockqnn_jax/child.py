"""The search's child evaluation: a block's network, trained briefly with the early-stop
recipe and scored on the validation split.

``ChildEvaluator.prepare`` builds and compiles a child (in a background thread, off the
critical path); ``run`` trains and scores it. Neither raises for a bad child: a loss that
becomes NaN/inf, running out of memory, or any other error gives ``status='failed'`` with
the reason and accuracy 0 (the lowest reward), so the search goes on. The reward is the
search's to compute, from the accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import traceback

from absl import logging
import jax
import numpy as np

from blockqnn_jax import compilation
from blockqnn_jax import data as data_lib
from blockqnn_jax import models
from blockqnn_jax import nsc
from blockqnn_jax.training import recipes
from blockqnn_jax.training import runners
from blockqnn_jax.training import steps


@dataclasses.dataclass
class PreparedChild:
  """A compiled child ready to train (``runner`` is None if preparing it failed)."""
  block: nsc.Block
  result: dict
  runner: runners.InMemoryRunner | None = None


class ChildEvaluator:
  """Prepares and runs children for a search (``executors.Evaluator``).

  ``compile_seconds`` is every second the child spent tracing, lowering and compiling
  (counted from JAX's compile events, in both phases); ``prepare_seconds`` the wall time
  from the block to a compiled child.
  """

  def __init__(self, config, mesh: jax.sharding.Mesh | None = None):
    self.config, self.mesh = config, mesh

  def prepare(self, block: nsc.Block) -> PreparedChild:
    config = self.config
    child = PreparedChild(block, result={
        'status': 'ok', 'accuracy': 0.0, 'compile_seconds': 0.0, 'prepare_seconds': 0.0,
        'train_seconds': 0.0, 'eval_seconds': 0.0, 'epochs': 0})
    start = time.perf_counter()
    with compilation.measure() as compile_seconds, _failures_reported(child):
      compilation.use_persistent_cache(config.compilation_cache_dir)
      mesh = self.mesh or data_lib.make_mesh()
      data_lib.check_batch_size(config.batch_size, mesh)
      data = data_lib.device_data(config, mesh)
      dtype = steps.compute_dtype(config)
      model = models.build_network(block, config.model, num_classes=data.num_classes,
                                   in_channels=data.image_shape[-1], dtype=dtype,
                                   seed=config.seed)
      child.result['flops'] = models.network_flops(
          block, config.model, image_shape=data.image_shape, num_classes=data.num_classes)
      child.result['params'] = models.count_params(model)
      steps_per_epoch = len(data.train_labels) // config.batch_size
      trainer = steps.Trainer(
          model, recipes.early_stop_optimizer(config.early_stop, steps_per_epoch), mesh, dtype)
      child.runner = runners.InMemoryRunner(trainer, data, config.batch_size,
                                            epoch_loop=config.epoch_loop)
      child.runner.compile(runners.epoch_key(config.seed, 0),
                           compilation.FAST_COMPILE if config.fast_compile else None)
    child.result['prepare_seconds'] = time.perf_counter() - start
    child.result['compile_seconds'] = compile_seconds()
    return child

  def run(self, child: PreparedChild, should_stop=lambda: False) -> dict:
    with compilation.measure() as compile_seconds, _failures_reported(child):
      if child.runner is not None:
        _train_and_score(child.runner, self.config.early_stop, self.config.seed,
                         child.result, should_stop)
    child.runner = None  # frees the device memory of a child that is done
    child.result['compile_seconds'] += compile_seconds()
    return child.result

  def evaluate(self, block: nsc.Block) -> dict:
    return self.run(self.prepare(block))


def evaluate_block(block: nsc.Block, config, mesh: jax.sharding.Mesh | None = None) -> dict:
  """Trains ``block``'s search network briefly and scores it on the validation split (both
  phases of ``ChildEvaluator`` in a row). Never raises for a bad child."""
  return ChildEvaluator(config, mesh).evaluate(block)


@contextlib.contextmanager
def _failures_reported(child: PreparedChild):
  """Turns any exception into ``status='failed'`` with the reason: a child never stops a
  search."""
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except
    message = str(error).strip().splitlines()[0] if str(error).strip() else ''
    kind = 'out of memory' if 'RESOURCE_EXHAUSTED' in str(error) else type(error).__name__
    child.result.update(status='failed', accuracy=0.0, reason=f'{kind}: {message}'[:500])
    child.runner = None
    logging.warning('child %s failed: %s\n%s', child.block.to_codes(),
                    child.result['reason'], traceback.format_exc())


def _train_and_score(runner: runners.InMemoryRunner, early_stop, seed: int, result: dict,
                     should_stop) -> None:
  """The early-stop recipe; fills ``result`` in place so a failure keeps what was
  measured."""
  best, since_best, accuracy = -1.0, 0, None
  start = time.perf_counter()
  for epoch in range(early_stop.epochs):
    losses = runner.train_epoch(runners.epoch_key(seed, epoch), should_stop)
    if losses is None:
      result.update(status='failed', accuracy=0.0, reason='cancelled: the search stopped')
      return
    result['epochs'] = epoch + 1
    result['train_seconds'] = time.perf_counter() - start
    result['loss'] = float(losses[-1])
    if not np.all(np.isfinite(losses)):
      result.update(status='failed', accuracy=0.0,
                    reason=f'loss became {losses[~np.isfinite(losses)][0]} in epoch {epoch + 1}')
      break
    if early_stop.patience > 0:
      accuracy = runner.accuracy()  # of the epoch just trained: it steers the training
      best, since_best = (accuracy, 0) if accuracy > best else (best, since_best + 1)
      if since_best >= early_stop.patience:
        break
  images = result['epochs'] * runner.steps_per_epoch * runner.batch_size
  result['images_per_second'] = images / max(result['train_seconds'], 1e-9)
  if result['status'] == 'ok' and accuracy is None:  # not measured by patience already
    start = time.perf_counter()
    accuracy = runner.accuracy()
    result['eval_seconds'] = time.perf_counter() - start
  if result['status'] == 'ok':
    result['accuracy'] = accuracy
