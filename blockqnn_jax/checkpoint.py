"""Orbax checkpoints under ``workdir/checkpoints``: the search's (agent and search state,
once per iteration) and a training run's (train state and its history).

Every checkpoint goes through one kind of manager (``make_manager``): synchronous, the
two latest kept. Orbax writes into a temporary directory and renames it when complete, so
a process killed mid-checkpoint leaves the previous checkpoint intact; the torn one is
cleaned up.

A search checkpoint holds the agent's NumPy arrays (Q-values, replay memory) as an Orbax
``StandardSave`` item and everything else (schedule position, RNG state, the evaluation
cache, the best block, how many lines of ``results.jsonl`` it covers) as a JSON item. A
training checkpoint holds the train state as a ``StandardSave`` item and the run's
history as a JSON item.
"""

from __future__ import annotations

import os

import jax
import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'
_NO_ARRAYS = 'no_arrays'


def make_manager(workdir: str) -> ocp.CheckpointManager:
  """The manager of ``workdir/checkpoints``."""
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
      options=ocp.CheckpointManagerOptions(
          max_to_keep=2, cleanup_tmp_directories=True,
          enable_async_checkpointing=False))


class TrainingCheckpointer:
  """Saves and restores a training run's ``(state, meta)``: the train state pytree and a
  JSON-able dict (the history) under ``workdir/checkpoints``, by step."""

  def __init__(self, workdir: str):
    self.manager = make_manager(workdir)

  def save(self, step: int, state, meta: dict) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def latest_meta(self) -> dict | None:
    """The latest checkpoint's meta item (no arrays read); None if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    return self.manager.restore(step, args=ocp.args.Composite(
        meta=ocp.args.JsonRestore()))['meta']

  def latest_state(self, template):
    """The latest checkpoint's train state, restored into ``template``'s shapes, dtypes
    and shardings (the caller has checked there is one, with ``latest_meta``)."""
    return self.state_at(self.manager.latest_step(), template)

  def steps(self) -> list[int]:
    """The steps of the checkpoints kept."""
    return list(self.manager.all_steps())

  def state_at(self, step: int, template):
    """The train state of the checkpoint at ``step`` (one of ``steps()``), restored into
    ``template``'s shapes, dtypes and shardings."""
    return self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct,
                                                    template))))['state']

  def close(self) -> None:
    self.manager.close()


class SearchCheckpointer:
  """Saves and restores ``(agent_state, search_state)`` under ``workdir/checkpoints``."""

  def __init__(self, workdir: str):
    self.manager = make_manager(workdir)

  def save(self, step: int, agent_state: dict, search_state: dict) -> None:
    arrays = {k: v for k, v in agent_state.items() if isinstance(v, np.ndarray)}
    meta = {'agent': {k: v for k, v in agent_state.items() if k not in arrays},
            'search': search_state,
            'shapes': {k: list(v.shape) for k, v in arrays.items()}}
    self.manager.save(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardSave(_non_empty(arrays)), meta=ocp.args.JsonSave(meta)))
    self.manager.wait_until_finished()

  def restore(self) -> tuple[dict, dict] | None:
    """The latest checkpoint as ``(agent_state, search_state)``, or None if there is none."""
    step = self.manager.latest_step()
    if step is None:
      return None
    restored = self.manager.restore(step, args=ocp.args.Composite(
        arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    meta = restored['meta']
    stored = {k: v for k, v in restored['arrays'].items() if k != _NO_ARRAYS}
    if stored.keys() != meta['shapes'].keys():
      raise ValueError(f'checkpoint step {step} holds arrays {sorted(stored)} but lists '
                       f'{sorted(meta["shapes"])}: it is damaged')
    arrays = {key: _as_saved(key, np.asarray(value), tuple(meta['shapes'][key]))
              for key, value in stored.items()}
    return {**meta['agent'], **arrays}, meta['search']

  def close(self) -> None:
    self.manager.close()


def _as_saved(key: str, value: np.ndarray, shape: tuple) -> np.ndarray:
  """The array as it was saved: a zero-size one from its one-element stand-in; any other
  shape than the one saved is a damaged checkpoint, never silently zeros."""
  if value.shape == shape:
    return value
  if value.shape == (1,) and not np.prod(shape):
    return np.zeros(shape, value.dtype)
  raise ValueError(f'checkpoint array {key!r} has shape {value.shape} but was saved as '
                   f'{shape}: the checkpoint is damaged')


def _non_empty(arrays: dict) -> dict:
  """Orbax stores neither zero-size arrays nor an empty item: a dummy element stands in
  for the first (the shape is in the JSON item), a dummy array for the second (random
  search has no arrays)."""
  stored = {k: v if v.size else np.zeros(1, v.dtype) for k, v in arrays.items()}
  return stored or {_NO_ARRAYS: np.zeros(1)}
