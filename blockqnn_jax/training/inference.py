"""A trained network from a ``mode=train`` or ``mode=transfer_imagenet`` workdir:
``load_model`` and ``predict``."""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from blockqnn_jax import checkpoint
from blockqnn_jax import data as data_lib
from blockqnn_jax import files
from blockqnn_jax import models
from blockqnn_jax.training import loop
from blockqnn_jax.training import recipes
from blockqnn_jax.training import steps


def load_model(workdir: str) -> tuple[nnx.Module, dict]:
  """The trained network of the workdir, in inference mode, and its summary
  (``final.json``)."""
  with open(os.path.join(workdir, loop.FINAL_FILE)) as f:
    summary = json.load(f)
  block = files.load_block(json.dumps(summary['codes']))
  dtype = jnp.dtype(summary['dtype'])
  model = models.build_network(
      block, ml_collections.ConfigDict(summary['model']), num_classes=summary['num_classes'],
      in_channels=summary['image_shape'][-1], dtype=dtype)
  recipe = ml_collections.ConfigDict(summary['recipe'])
  tx = recipes.sgd_optimizer(recipe, recipes.learning_rate_schedule(recipe, 1))
  trainer = steps.Trainer(model, tx, data_lib.make_mesh(), dtype)  # the state's template
  checkpointer = checkpoint.TrainingCheckpointer(workdir)
  state = checkpointer.latest_state(trainer.state)
  checkpointer.close()
  model = nnx.merge(trainer.eval_graph, state['params'], state['batch_stats'])
  model.eval()
  return model, summary


def predict(workdir: str, images: np.ndarray) -> np.ndarray:
  """Class indices for uint8 images (N x H x W x C, the training size) with the trained
  network of the workdir."""
  model, summary = load_model(workdir)
  logits = model(data_lib.normalize(jnp.asarray(images), jnp.asarray(summary['mean']),
                                    jnp.asarray(summary['std']), jnp.float32))
  return np.asarray(jnp.argmax(logits, -1))
