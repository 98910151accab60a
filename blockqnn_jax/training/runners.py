"""Feeding a ``Trainer``'s steps: from a dataset held on the devices, or from a streamed
input pipeline. Both give ``fit`` the same interface: ``steps_per_epoch``,
``start_epoch``, ``step`` and ``evaluate``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blockqnn_jax import data as data_lib
from blockqnn_jax.training import steps as steps_lib

# The seed drives two random streams that must differ: the network's initial weights,
# from nnx.Rngs(seed), whose n-th draw is fold_in(key(seed), n) (one draw per parameter
# initialised), and the data's shuffle and augmentation, from fold_in(key(seed),
# DATA_STREAM): a draw no network's initialisation reaches.
DATA_STREAM = 0x64617461  # 'data' in ASCII, about 1.7e9

# How an epoch's steps are run: 'host', a Python loop dispatching one jitted step per
# batch; 'device', one jitted lax.scan over the whole epoch (no host work between steps).
EPOCH_LOOPS = ('host', 'device')


def epoch_key(seed: int, epoch: int) -> jax.Array:
  """The key of an epoch's shuffle and augmentation (each step folds its index into it):
  from the data's stream of ``seed``, never one the network was initialised with."""
  return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), DATA_STREAM), epoch)


@functools.lru_cache(maxsize=None)
def _epoch_order(num_examples: int, steps: int, batch_size: int, mesh: jax.sharding.Mesh):
  """The jitted epoch permutation for a dataset size and batch: compiled once per process,
  not once per child."""

  def order(rng):
    permutation = jax.random.permutation(rng, num_examples)[:steps * batch_size]
    return permutation.reshape(steps, batch_size)

  return jax.jit(order, out_shardings=NamedSharding(mesh, P(None, 'data')))


class InMemoryRunner:
  """Trains from a dataset on the devices (``data.DeviceData``, CIFAR-sized data): each
  jitted step gathers its batch there, augments it and updates, so a step costs no
  host-to-device copy and no Python work beyond its dispatch.

  ``epoch_loop`` (``EPOCH_LOOPS``): 'host' dispatches one jitted step per batch, since
  XLA:CPU runs convolutions inside a loop far slower; 'device' runs the epoch as one
  ``lax.scan`` and spares the host a dispatch per step, where that matters (a GPU).
  """

  def __init__(self, trainer: steps_lib.Trainer, data: data_lib.DeviceData, batch_size: int,
               epoch_loop: str = 'host'):
    if epoch_loop not in EPOCH_LOOPS:
      raise ValueError(f'epoch_loop={epoch_loop!r} is unknown, allowed {EPOCH_LOOPS}')
    self.trainer, self.data, self.batch_size, self.epoch_loop = (
        trainer, data, batch_size, epoch_loop)
    self.steps_per_epoch = len(data.train_labels) // batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f'batch_size={batch_size} is larger than the '
                       f'{len(data.train_labels)} training examples')
    self._step = jax.jit(self._gathered_step, donate_argnums=0)
    self._epoch = jax.jit(self._scanned_epoch, donate_argnums=0)
    self._accuracy = jax.jit(self._scanned_accuracy)
    self.order = None

  def _gathered_step(self, state, data: data_lib.DeviceData, order, step, rng):
    """Batch ``step`` of ``order``, gathered on the devices, through the trainer's step."""
    sharding = self.trainer.batch_sharding
    indices = order[step]
    images = jax.lax.with_sharding_constraint(data.train_images[indices], sharding)
    labels = jax.lax.with_sharding_constraint(data.train_labels[indices], sharding)
    return self.trainer.update(state, images, labels, jax.random.fold_in(rng, step),
                               data.mean, data.std)

  def _scanned_epoch(self, state, data: data_lib.DeviceData, order, rng):
    def one_step(state, step):
      return self._gathered_step(state, data, order, step, rng)
    return jax.lax.scan(one_step, state, jnp.arange(self.steps_per_epoch))

  def _scanned_accuracy(self, state, data: data_lib.DeviceData):
    images = data.eval_images.reshape(-1, self.batch_size, *data.image_shape)
    labels = data.eval_labels.reshape(-1, self.batch_size)
    mask = data.eval_mask.reshape(-1, self.batch_size)

    def body(correct, batch):
      batch = [jax.lax.with_sharding_constraint(x, self.trainer.batch_sharding)
               for x in batch]
      return correct + self.trainer.hits(state, *batch, data.mean, data.std)[0], None

    correct, _ = jax.lax.scan(body, jnp.zeros((), jnp.int32), (images, labels, mask))
    return correct / mask.sum()

  def compile(self, rng, compiler_options: dict | None = None) -> None:
    """Compiles the step (or the epoch) and the evaluation ahead of time
    (``compiler_options``: XLA options for both, e.g. ``compilation.FAST_COMPILE``)."""
    state, order = self.trainer.state, self.epoch_order(rng)
    if self.epoch_loop == 'device':
      self._epoch = self._epoch.lower(state, self.data, order, rng).compile(compiler_options)
    else:
      self._step = self._step.lower(state, self.data, order, 0, rng).compile(compiler_options)
    self._accuracy = self._accuracy.lower(state, self.data).compile(compiler_options)

  def epoch_order(self, rng) -> jax.Array:
    """The epoch's batches: a permutation of the training set, one row per step."""
    return _epoch_order(len(self.data.train_labels), self.steps_per_epoch, self.batch_size,
                        self.trainer.mesh)(rng)

  def start_epoch(self, epoch: int, rng, start_step: int) -> None:
    del epoch, start_step  # the order derives from rng; steps index into it
    self.order = self.epoch_order(rng)

  def step(self, step: int, rng) -> jax.Array:
    """Trains on batch ``step`` of the epoch; returns its loss (without waiting for it)."""
    self.trainer.state, loss = self._step(self.trainer.state, self.data, self.order, step,
                                          rng)
    return loss

  def train_epoch(self, rng, should_stop=lambda: False) -> np.ndarray | None:
    """One pass over the training set; returns the loss of every step (None if
    ``should_stop()`` became true on the way)."""
    if self.epoch_loop == 'device':
      if should_stop():
        return None
      self.trainer.state, losses = self._epoch(self.trainer.state, self.data,
                                               self.epoch_order(rng), rng)
      return np.asarray(losses)
    self.order = self.epoch_order(rng)
    losses = []
    for step in range(self.steps_per_epoch):
      if should_stop():
        return None
      losses.append(self.step(step, rng))
    return np.array([np.asarray(loss) for loss in losses])

  def accuracy(self) -> float:
    """Top-1 accuracy on the data's evaluation split."""
    return float(self._accuracy(self.trainer.state, self.data))

  def evaluate(self) -> dict:
    return {f'{self.data.eval_split}_accuracy': self.accuracy()}


class StreamingRunner:
  """Trains from a streamed input pipeline (``streaming_input``): batches arrive on the
  devices already cropped and flipped; evaluation reports top-1 and top-5 accuracy."""

  def __init__(self, trainer: steps_lib.Trainer, train_input, eval_input, mean, std):
    self.trainer, self.train_input, self.eval_input = trainer, train_input, eval_input
    self.channels = len(mean)
    self.mean, self.std = jax.device_put((mean, std), NamedSharding(trainer.mesh, P()))
    self.steps_per_epoch = train_input.steps_per_epoch
    self.batches = None  # the training iterator, started by the run's first epoch

  def start_epoch(self, epoch: int, rng, start_step: int) -> None:
    """The run's first epoch (fresh, or resumed mid-epoch from a checkpoint's step)
    starts the one iterator that then runs through every later epoch."""
    del rng
    if self.batches is None:
      self.batches = self.train_input.iterator(epoch * self.steps_per_epoch + start_step)

  def close(self) -> None:
    """Ends the training iterator's worker processes and frees their shared memory."""
    if self.batches is not None:
      self.batches.close()

  def step(self, step: int, rng) -> jax.Array:
    images, labels = next(self.batches)
    self.trainer.state, loss = self.trainer.train_step(
        self.trainer.state, images, labels, jax.random.fold_in(rng, step), self.mean,
        self.std)
    return loss

  def evaluate(self) -> dict:
    top1 = top5 = total = 0
    for images, labels, mask in self.eval_input.batches(self.channels):
      hits = self.trainer.eval_step(self.trainer.state, images, labels, mask, self.mean,
                                    self.std)
      top1, top5 = top1 + int(hits[0]), top5 + int(hits[1])
      total += int(mask.sum())
    return {'top1_accuracy': top1 / total, 'top5_accuracy': top5 / total}
