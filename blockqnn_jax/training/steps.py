"""The train state and the pure, jitted train and evaluation steps of a network.

The state is a plain pytree (parameters, BatchNorm statistics, optimizer state, step),
replicated over a 1-D device mesh ('data'); batches are sharded along it and XLA inserts
the gradient all-reduce, so BatchNorm statistics and gradients are those of the global
batch, whatever the number of devices.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blockqnn_jax import data as data_lib

DTYPES = ('float32', 'bfloat16')


def compute_dtype(config):
  if config.dtype not in DTYPES:
    raise ValueError(f'config.dtype={config.dtype!r} is unknown, allowed {DTYPES}')
  return jnp.dtype(config.dtype)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Mean cross-entropy against the labels, or against one-hot labels smoothed by
  ``label_smoothing`` (each wrong class gets label_smoothing / classes)."""
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets).mean()


class Trainer:
  """A network's train state (``state``) and its pure steps, ``update`` and ``hits``, with
  their jitted forms ``train_step`` and ``eval_step``.

  ``augment(rng, images)`` runs inside the train step (crop and flip, by default);
  ``label_smoothing`` is the final recipes' (the search's children train without it).
  """

  def __init__(self, model: nnx.Module, tx: optax.GradientTransformation,
               mesh: jax.sharding.Mesh, dtype, augment: Callable = data_lib.augment,
               label_smoothing: float = 0.0):
    model.train()
    self.train_graph, params, batch_stats = nnx.split(model, nnx.Param, ...)
    model.eval()
    self.eval_graph = nnx.graphdef(model)
    self.state = jax.device_put(
        {'step': jnp.zeros((), jnp.int32), 'params': params, 'batch_stats': batch_stats,
         'opt_state': tx.init(params)},
        NamedSharding(mesh, P()))
    self.tx, self.mesh, self.dtype, self.augment = tx, mesh, dtype, augment
    self.label_smoothing = label_smoothing
    self.batch_sharding = NamedSharding(mesh, P('data'))
    self.train_step = jax.jit(self.update, donate_argnums=0)
    self.eval_step = jax.jit(self.hits)

  def update(self, state, images, labels, rng, mean, std):
    """Augment a batch of uint8 images, forward, backward, optimizer step; returns the new
    state and the batch's loss."""
    images = data_lib.normalize(self.augment(rng, images), mean, std, self.dtype)

    def loss_fn(params, batch_stats):
      model = nnx.merge(self.train_graph, params, batch_stats, copy=True)
      loss = cross_entropy(model(images), labels, self.label_smoothing)
      return loss, nnx.state(model, nnx.BatchStat)

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], state['batch_stats'])
    updates, opt_state = self.tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    return {'step': state['step'] + 1, 'params': params, 'batch_stats': batch_stats,
            'opt_state': opt_state}, loss

  def hits(self, state, images, labels, mask, mean, std):
    """Top-1 and top-5 correct predictions among the masked images of a batch."""
    model = nnx.merge(self.eval_graph, state['params'], state['batch_stats'])
    logits = model(data_lib.normalize(images, mean, std, self.dtype))
    top5 = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
    top1 = (top5[:, 0] == labels) & mask
    in_top5 = jnp.any(top5 == labels[:, None], axis=-1) & mask
    return top1.sum(), in_top5.sum()
