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
  (``final.json``): the weights of the checkpoint at the summary's step, the ones it
  scored. Where that checkpoint is gone (a rerun that extends the run saved two newer
  ones, then stopped before writing its own summary), refuses in one line."""
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
  try:
    state = checkpointer.state_at(_scored_step(workdir, summary, checkpointer.steps()),
                                  trainer.state)
  finally:
    checkpointer.close()
  model = nnx.merge(trainer.eval_graph, state['params'], state['batch_stats'])
  model.eval()
  return model, summary


def _scored_step(workdir: str, summary: dict, kept: list[int]) -> int:
  """The step of the weights ``final.json`` scored, if its checkpoint is still kept."""
  step = summary.get('step')
  if step is None:
    raise ValueError(f'{workdir}/{loop.FINAL_FILE} does not say which checkpoint it scored '
                     '(an earlier version wrote it): rerun the training command to rewrite it')
  if step not in kept:
    raise ValueError(
        f'{workdir}/{loop.FINAL_FILE} scored the weights of step {step}, but '
        f'{workdir}/checkpoints keeps steps {sorted(kept)} only: a rerun that extends the '
        'run stopped before the end; rerun it to the end to load its model')
  return step


def predict(workdir: str, images: np.ndarray) -> np.ndarray:
  """Class indices for uint8 images (N x H x W x C, the training size) with the trained
  network of the workdir."""
  model, summary = load_model(workdir)
  logits = model(data_lib.normalize(jnp.asarray(images), jnp.asarray(summary['mean']),
                                    jnp.asarray(summary['std']), jnp.float32))
  return np.asarray(jnp.argmax(logits, -1))
