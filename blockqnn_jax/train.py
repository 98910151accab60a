"""Early-stop training of a child network, data-parallel over every local device.

The hot path is one pure jitted step that gathers its batch from the training set already
on the devices, augments it there and updates the parameters: no host-to-device copy and
no Python work per step beyond the dispatch. The batch
axis is sharded over a 1-D device mesh ('data'); parameters are replicated and XLA inserts
the gradient all-reduce, so BatchNorm statistics and gradients are those of the global
batch, whatever the number of devices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
import traceback
from typing import Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import flax
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blockqnn_jax import compilation
from blockqnn_jax import data as data_lib
from blockqnn_jax import models
from blockqnn_jax import nsc
from blockqnn_jax import reward as reward_lib

DTYPES = ('float32', 'bfloat16')
# How an epoch's steps are run: 'host', a Python loop dispatching one jitted step per
# batch; 'device', one jitted lax.scan over the whole epoch (no host work between steps).
EPOCH_LOOPS = ('host', 'device')
# XLA options that halve a small child's compile time on the CPU and make its steps some
# three times slower (config.fast_compile): worth it where children train for seconds.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def compute_dtype(config):
  if config.dtype not in DTYPES:
    raise ValueError(f'config.dtype={config.dtype!r} is unknown, allowed {DTYPES}')
  return jnp.dtype(config.dtype)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  return jax.sharding.Mesh(np.array(devices or jax.devices()), ('data',))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> None:
  if batch_size <= 0 or batch_size % mesh.size:
    raise ValueError(f'config.batch_size={batch_size} must be a positive multiple of the '
                     f'{mesh.size} devices it is split over')


@functools.lru_cache(maxsize=None)
def _epoch_order(num_examples: int, steps: int, batch_size: int, mesh: jax.sharding.Mesh):
  """The jitted epoch permutation for a dataset size and batch: compiled once per process,
  not once per child."""

  def order(rng):
    permutation = jax.random.permutation(rng, num_examples)[:steps * batch_size]
    return permutation.reshape(steps, batch_size)

  return jax.jit(order, out_shardings=NamedSharding(mesh, P(None, 'data')))


@flax.struct.dataclass
class DeviceData:
  """The training and validation sets, on the devices once per process.

  A pytree, passed to the jitted functions as an argument: closed over, the arrays would
  be baked into every child's executable as constants.
  """

  train_images: jax.Array
  train_labels: jax.Array
  eval_images: jax.Array   # validation (search) or test (final training) images, padded
  eval_labels: jax.Array   # to whole batches; `eval_mask` marks the real ones
  eval_mask: jax.Array
  mean: jax.Array
  std: jax.Array
  num_classes: int = flax.struct.field(pytree_node=False)
  image_shape: tuple = flax.struct.field(pytree_node=False)


_device_data_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _device_data(dataset_config: '_DatasetConfig', batch_size: int, mesh: jax.sharding.Mesh,
                 eval_split: str) -> DeviceData:
  dataset = data_lib.load_dataset(dataset_config)
  mean, std = data_lib.normalization(dataset)
  replicated = NamedSharding(mesh, P())
  eval_images = getattr(dataset, f'{eval_split}_images')
  eval_labels = getattr(dataset, f'{eval_split}_labels')
  pad = -len(eval_labels) % batch_size
  mask = np.concatenate([np.ones(len(eval_labels), bool), np.zeros(pad, bool)])
  put = lambda x: jax.device_put(x, replicated)
  return DeviceData(
      train_images=put(dataset.train_images),
      train_labels=put(dataset.train_labels),
      eval_images=put(np.pad(eval_images, [(0, pad)] + [(0, 0)] * 3)),
      eval_labels=put(np.pad(eval_labels, (0, pad))),
      eval_mask=put(mask),
      mean=put(mean), std=put(std),
      num_classes=dataset.num_classes,
      image_shape=dataset.image_shape)


@dataclasses.dataclass(frozen=True)
class _DatasetConfig:
  """The dataset fields of a config, hashable so the device copy can be memoized."""
  dataset: str
  data_dir: str
  validation_examples: int
  max_train_examples: int


def device_data(config, mesh: jax.sharding.Mesh, *, batch_size: int | None = None,
                final: bool = False) -> DeviceData:
  """The dataset `config` names, loaded and placed on `mesh` once per process.

  For the search, training images less the validation split, evaluated on validation;
  for final training (``final=True``) every training image, evaluated on the test split.
  """
  dataset_config = _DatasetConfig(
      config.dataset, config.data_dir, 0 if final else config.validation_examples,
      config.max_train_examples)
  with _device_data_lock:  # children prepared in parallel threads load it once
    return _device_data(dataset_config, batch_size or config.batch_size, mesh,
                        'test' if final else 'validation')


def preprocess(images, mean, std, dtype):
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean cross-entropy against the labels, or against one-hot labels smoothed by
  ``label_smoothing`` (each wrong class gets label_smoothing / classes)."""
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


def early_stop_optimizer(early_stop_config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Adam at 1e-3, multiplied by 0.2 every 5 epochs: the early-stop recipe reported for
  the paper (unconfirmed; configs/default.py)."""
  schedule = optax.exponential_decay(
      early_stop_config.learning_rate,
      transition_steps=early_stop_config.lr_decay_epochs * steps_per_epoch,
      decay_rate=early_stop_config.lr_decay, staircase=True)
  return optax.adam(schedule, b1=0.9, b2=0.999)


class Trainer:
  """A child's compiled train-step and evaluation functions, and its state."""

  def __init__(self, model: nnx.Module, tx: optax.GradientTransformation,
               data: DeviceData | None, mesh: jax.sharding.Mesh, batch_size: int, dtype,
               augment: Callable = data_lib.augment, label_smoothing: float = 0.0,
               epoch_loop: str = 'host'):
    """``data`` is the in-memory dataset; None for a streamed one, which feeds batches to
    ``update`` and ``hits`` itself. ``label_smoothing`` is the final recipes'; the
    search's children train without it. ``epoch_loop`` (``EPOCH_LOOPS``) is how
    ``train_epoch`` runs the steps."""
    if epoch_loop not in EPOCH_LOOPS:
      raise ValueError(f'epoch_loop={epoch_loop!r} is unknown, allowed {EPOCH_LOOPS}')
    model.train()
    self.train_graph, params, batch_stats = nnx.split(model, nnx.Param, ...)
    model.eval()
    self.eval_graph = nnx.graphdef(model)
    replicated = NamedSharding(mesh, P())
    self.state = jax.device_put(
        {'params': params, 'batch_stats': batch_stats, 'opt_state': tx.init(params)},
        replicated)
    self.tx, self.data, self.mesh, self.dtype, self.augment = tx, data, mesh, dtype, augment
    self.batch_size, self.label_smoothing = batch_size, label_smoothing
    self.epoch_loop = epoch_loop
    self.batch_sharding = NamedSharding(mesh, P('data'))
    if data is None:
      return
    self.steps_per_epoch = len(data.train_labels) // batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f'batch_size={batch_size} is larger than the '
                       f'{len(data.train_labels)} training examples')
    self._step = jax.jit(self._train_step, donate_argnums=0)
    self._epoch = jax.jit(self._train_epoch, donate_argnums=0)
    self._evaluate = jax.jit(self._accuracy)

  def _train_step(self, state, data: DeviceData, order, step, rng):
    """One update: gather the step's batch on the devices, augment, forward, backward, Adam.

    By default (``epoch_loop='host'``) a Python loop runs this jitted step, rather than a
    ``lax.scan`` over the epoch: the dispatch costs microseconds next to a step, and
    XLA:CPU runs convolutions inside a while loop some 30 times slower.
    """
    indices = order[step]
    images = jax.lax.with_sharding_constraint(data.train_images[indices], self.batch_sharding)
    labels = jax.lax.with_sharding_constraint(data.train_labels[indices], self.batch_sharding)
    return self.update(state, images, labels, jax.random.fold_in(rng, step), data.mean,
                       data.std)

  def _train_epoch(self, state, data: DeviceData, order, rng):
    """Every step of an epoch in one call (``epoch_loop='device'``); returns the state
    and every step's loss. It spares the host a dispatch per step, where that matters (a
    GPU); XLA:CPU runs convolutions in a loop slowly, so the CPU keeps 'host'."""
    def one_step(state, step):
      return self._train_step(state, data, order, step, rng)
    return jax.lax.scan(one_step, state, jnp.arange(self.steps_per_epoch))

  def update(self, state, images, labels, rng, mean, std):
    """Augment a batch of uint8 images, forward, backward, optimizer step (pure)."""
    images = preprocess(self.augment(rng, images), mean, std, self.dtype)

    def loss_fn(params, batch_stats):
      model = nnx.merge(self.train_graph, params, batch_stats, copy=True)
      loss = cross_entropy(model(images), labels, self.label_smoothing)
      return loss, nnx.state(model, nnx.BatchStat)

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], state['batch_stats'])
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    return {'params': params, 'batch_stats': batch_stats, 'opt_state': opt_state}, loss

  def _accuracy(self, state, data: DeviceData):
    images = data.eval_images.reshape(-1, self.batch_size, *data.image_shape)
    labels = data.eval_labels.reshape(-1, self.batch_size)
    mask = data.eval_mask.reshape(-1, self.batch_size)

    def body(correct, batch):
      batch = [jax.lax.with_sharding_constraint(x, self.batch_sharding) for x in batch]
      return correct + self.hits(state, *batch, data.mean, data.std)[0], None

    correct, _ = jax.lax.scan(body, jnp.zeros((), jnp.int32), (images, labels, mask))
    return correct / mask.sum()

  def hits(self, state, images, labels, mask, mean, std):
    """Top-1 and top-5 correct predictions among the masked images of a batch."""
    model = nnx.merge(self.eval_graph, state['params'], state['batch_stats'])
    logits = model(preprocess(images, mean, std, self.dtype))
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    top1 = (top5[:, 0] == labels) & mask
    in_top5 = jnp.any(top5 == labels[:, None], axis=-1) & mask
    return top1.sum(), in_top5.sum()

  def compile(self, rng, compiler_options: dict | None = None) -> None:
    """Compiles the step and the evaluation ahead of time (``compiler_options``: XLA
    options for both, e.g. FAST_COMPILE)."""
    order = self.epoch_order(rng)
    if self.epoch_loop == 'device':
      self._epoch = self._epoch.lower(self.state, self.data, order, rng).compile(
          compiler_options)
    else:
      self._step = self._step.lower(self.state, self.data, order, 0, rng).compile(
          compiler_options)
    self._evaluate = self._evaluate.lower(self.state, self.data).compile(compiler_options)

  def epoch_order(self, rng) -> jax.Array:
    """The epoch's batches: a permutation of the training set, one row per step."""
    return _epoch_order(len(self.data.train_labels), self.steps_per_epoch, self.batch_size,
                        self.mesh)(rng)

  def step(self, order: jax.Array, step: int, rng) -> jax.Array:
    """Trains on batch ``step`` of ``order``; returns its loss (without waiting for it)."""
    self.state, loss = self._step(self.state, self.data, order, step, rng)
    return loss

  def train_epoch(self, rng, should_stop=lambda: False) -> np.ndarray | None:
    """One pass over the training set; returns the loss of every step (None if
    ``should_stop()`` became true on the way)."""
    order = self.epoch_order(rng)
    if self.epoch_loop == 'device':
      if should_stop():
        return None
      self.state, losses = self._epoch(self.state, self.data, order, rng)
      return np.asarray(losses)
    losses = []
    for step in range(self.steps_per_epoch):
      if should_stop():
        return None
      losses.append(self.step(order, step, rng))
    return np.array([np.asarray(loss) for loss in losses])

  def accuracy(self) -> float:
    return float(self._evaluate(self.state, self.data))


class ChildEvaluator:
  """The search's evaluator: ``prepare`` builds and compiles a child (in a background
  thread, off the critical path), ``run`` trains it with the early-stop recipe and scores
  it on the validation split. Neither raises for a bad child: a loss that becomes NaN/inf,
  running out of memory, or any other error gives ``status='failed'`` with the reason and
  accuracy 0 (the lowest reward), so the search goes on.

  ``compile_seconds`` is every second the child spent tracing, lowering and compiling
  (counted from JAX's compile events, in both phases); ``prepare_seconds`` the wall time
  from the block to a compiled child.
  """

  def __init__(self, config, mesh: jax.sharding.Mesh | None = None):
    self.config, self.mesh = config, mesh

  def prepare(self, block: nsc.Block) -> 'PreparedChild':
    config = self.config
    child = PreparedChild(block, result={
        'status': 'ok', 'accuracy': 0.0, 'compile_seconds': 0.0, 'prepare_seconds': 0.0,
        'train_seconds': 0.0, 'eval_seconds': 0.0, 'epochs': 0})
    start = time.perf_counter()
    with compilation.measure() as compile_seconds, _failures_reported(child):
      compilation.use_persistent_cache(config.compilation_cache_dir)
      mesh = self.mesh or make_mesh()
      check_batch_size(config.batch_size, mesh)
      data = device_data(config, mesh)
      dtype = compute_dtype(config)
      model = models.build_network(block, config.model, num_classes=data.num_classes,
                                   in_channels=data.image_shape[-1], dtype=dtype,
                                   seed=config.seed)
      child.result['flops'] = models.network_flops(
          block, config.model, image_shape=data.image_shape, num_classes=data.num_classes)
      child.result['params'] = models.count_params(model)
      steps_per_epoch = len(data.train_labels) // config.batch_size
      child.trainer = Trainer(model, early_stop_optimizer(config.early_stop, steps_per_epoch),
                              data, mesh, config.batch_size, dtype,
                              epoch_loop=config.epoch_loop)
      child.trainer.compile(jax.random.key(config.seed),
                            FAST_COMPILE if config.fast_compile else None)
    child.result['prepare_seconds'] = time.perf_counter() - start
    child.result['compile_seconds'] = compile_seconds()
    return child

  def run(self, child: 'PreparedChild', should_stop=lambda: False) -> dict:
    with compilation.measure() as compile_seconds, _failures_reported(child):
      if child.trainer is not None:
        _train_and_score(child.trainer, self.config, child.result, should_stop)
    result = child.result
    child.trainer = None  # frees the device memory of a child that is done
    result['compile_seconds'] += compile_seconds()
    result.update(reward_lib.reward_terms(child.block, result['accuracy'], self.config.reward,
                                          self.config.model.filters))
    return result

  def evaluate(self, block: nsc.Block) -> dict:
    return self.run(self.prepare(block))


@dataclasses.dataclass
class PreparedChild:
  """A compiled child ready to train (``trainer`` is None if preparing it failed)."""
  block: nsc.Block
  result: dict
  trainer: Trainer | None = None


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
    child.trainer = None
    logging.warning('child %s failed: %s\n%s', child.block.to_codes(),
                    child.result['reason'], traceback.format_exc())


def evaluate_block(block: nsc.Block, config, mesh: jax.sharding.Mesh | None = None) -> dict:
  """Trains `block`'s search network briefly and scores it on the validation split (both
  phases of ``ChildEvaluator`` in a row). Never raises for a bad child."""
  return ChildEvaluator(config, mesh).evaluate(block)


def _train_and_score(trainer: Trainer, config, result: dict, should_stop) -> None:
  """The early-stop recipe; fills `result` in place so a failure keeps what was measured."""
  early_stop = config.early_stop
  rng = jax.random.key(config.seed)
  best, since_best, accuracy = -1.0, 0, None
  start = time.perf_counter()
  for epoch in range(early_stop.epochs):
    losses = trainer.train_epoch(jax.random.fold_in(rng, epoch), should_stop)
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
      accuracy = trainer.accuracy()  # of the epoch just trained: it steers the training
      best, since_best = (accuracy, 0) if accuracy > best else (best, since_best + 1)
      if since_best >= early_stop.patience:
        break
  images = result['epochs'] * trainer.steps_per_epoch * trainer.batch_size
  result['images_per_second'] = images / max(result['train_seconds'], 1e-9)
  if result['status'] == 'ok' and accuracy is None:  # not measured by patience already
    start = time.perf_counter()
    accuracy = trainer.accuracy()
    result['eval_seconds'] = time.perf_counter() - start
  if result['status'] == 'ok':
    result['accuracy'] = accuracy
