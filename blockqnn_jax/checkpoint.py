"""Orbax checkpoints of the search: the agent and the search state, once per iteration.

A checkpoint holds the agent's NumPy arrays (Q-values, replay memory) as an Orbax
``StandardSave`` item and everything else (schedule position, RNG state, the evaluation
cache, the best block, how many lines of ``results.jsonl`` it covers) as a JSON item.
Orbax writes into a temporary directory and renames it when complete, so a process killed
mid-checkpoint leaves the previous checkpoint intact; the torn one is cleaned up.
"""

from __future__ import annotations

import os

import numpy as np
import orbax.checkpoint as ocp

CHECKPOINT_DIR = 'checkpoints'
_NO_ARRAYS = 'no_arrays'


class SearchCheckpointer:
  """Saves and restores ``(agent_state, search_state)`` under ``workdir/checkpoints``."""

  def __init__(self, workdir: str, max_to_keep: int = 2):
    self.manager = ocp.CheckpointManager(
        os.path.join(os.path.abspath(workdir), CHECKPOINT_DIR),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, cleanup_tmp_directories=True,
            enable_async_checkpointing=False))

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
    arrays = {}
    for key, value in restored['arrays'].items():
      if key not in meta['shapes']:  # the stand-in for an agent without arrays
        continue
      value, shape = np.asarray(value), meta['shapes'][key]
      arrays[key] = value.reshape(shape) if value.size == np.prod(shape) else np.zeros(
          shape, value.dtype)
    return {**meta['agent'], **arrays}, meta['search']

  def close(self) -> None:
    self.manager.close()


def _non_empty(arrays: dict) -> dict:
  """Orbax stores neither zero-size arrays nor an empty item: a dummy element stands in
  for the first (the shape is in the JSON item), a dummy array for the second (random
  search has no arrays)."""
  stored = {k: v if v.size else np.zeros(1, v.dtype) for k, v in arrays.items()}
  return stored or {_NO_ARRAYS: np.zeros(1)}
