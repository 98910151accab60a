"""Legal actions: which layer may come next, exactly as the NSC table allows.

The agent's state is the code of the current layer (the start state is the block input,
``START``); an action is the code of the next layer, or the terminal. The legal set depends
only on the next layer's index, so it is built once per index and cached.

Add and concat are offered once per unordered pair of operands (``pred1 <= pred2``): the
other order is the same layer under the channel rules, so listing both would only double
their odds. An operand may be used twice (``add(x, x)``), as the table allows.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from blockqnn_jax import nsc

START = nsc.Layer(0, 0, 0, 0, 0)


@dataclasses.dataclass(frozen=True)
class ActionSet:
  """The legal next layers at one index, grouped by type for type-first exploration."""

  actions: tuple[nsc.Layer, ...]
  position: dict[nsc.Layer, int]
  types: np.ndarray        # types[i] = actions[i].type
  by_type: tuple[np.ndarray, ...]  # positions of each type present, in type order

  def __len__(self) -> int:
    return len(self.actions)


@functools.lru_cache(maxsize=None)
def actions_at(index: int, max_layers: int) -> ActionSet:
  """The layers that may take index ``index`` (1-based) in a block of at most ``max_layers``."""
  if not 1 <= index <= max_layers + 1:
    raise ValueError(f'layer index {index} outside 1..{max_layers + 1}')
  actions = []
  if index <= max_layers:
    earlier = range(index)
    for layer_type in (nsc.CONV, nsc.MAX_POOL, nsc.AVG_POOL, nsc.IDENTITY):
      for kernel in nsc.KERNELS[layer_type]:
        actions.extend(nsc.Layer(index, layer_type, kernel, p, 0) for p in earlier)
    for layer_type in nsc.TWO_INPUT_TYPES:
      actions.extend(
          nsc.Layer(index, layer_type, 0, p1, p2) for p2 in earlier for p1 in range(p2 + 1))
  if index > 1:  # a block has at least one layer before the terminal
    actions.append(nsc.Layer(index, nsc.TERMINAL, 0, 0, 0))
  types = np.array([a.type for a in actions])
  by_type = tuple(np.flatnonzero(types == t) for t in np.unique(types))
  return ActionSet(tuple(actions), {a: i for i, a in enumerate(actions)}, types, by_type)


def as_action(layer: nsc.Layer) -> nsc.Layer:
  """The action a layer corresponds to: two-input operands in ascending order."""
  if layer.type in nsc.TWO_INPUT_TYPES and layer.pred1 > layer.pred2:
    return layer._replace(pred1=layer.pred2, pred2=layer.pred1)
  return layer


def trajectory(block: nsc.Block) -> list[tuple[nsc.Layer, nsc.Layer]]:
  """The (state, action) pairs that sample ``block``, terminal action included."""
  actions = [as_action(l) for l in block.layers]
  actions.append(nsc.Layer(len(block) + 1, nsc.TERMINAL, 0, 0, 0))
  return list(zip([START] + actions[:-1], actions))
