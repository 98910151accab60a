"""Search spaces: what a strategy may build, decision by decision.

A strategy needs only a space's start state, the legal actions at a state (``actions``),
the state an action leads to or the end (``step``), the architecture a trajectory builds
and back (``build``/``trajectory``), a canonical key for the cache, a mutation (for
regularized evolution) and the neighbours one mutation away (for local search). Two spaces implement it:

- ``NSCSpace``: BlockQNN's blocks. The state is the code of the current layer (the start
  is the block input, ``START``); an action is the code of the next layer, or the
  terminal. The legal set depends only on the next layer's index, so it is built once per
  index and cached. Add and concat are offered once per unordered pair of operands
  (``pred1 <= pred2``): the other order is the same layer under the channel rules, so
  listing both would only double their odds. An operand may be used twice (``add(x, x)``),
  as the table allows.
- ``SequenceSpace``: a fixed number of categorical choices (NAS-Bench-201: 6 edges of 5
  operations). The state is the position and the previous choice, which is what
  BlockQNN's "current layer" is in this space.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence
import zlib

import numpy as np

from blockqnn_jax import nsc

START = nsc.Layer(0, 0, 0, 0, 0)
SEQUENCE_START = (0, -1)  # position 0, no previous choice


@functools.lru_cache(maxsize=1 << 16)
def _canonical_hash(block: nsc.Block) -> str:
  """The block's canonical hash, remembered: a search proposes the same blocks again and
  again once it exploits, and canonicalising costs more than sampling a block."""
  return block.canonical_hash()


@dataclasses.dataclass(frozen=True)
class ActionSet:
  """The legal actions at a state, grouped (by layer type) for type-first exploration."""

  actions: tuple
  position: dict
  types: np.ndarray        # types[i]: the group of actions[i]
  by_type: tuple[np.ndarray, ...]  # positions of each group present, in group order

  def __len__(self) -> int:
    return len(self.actions)


def _action_set(actions: Sequence, types: Sequence[int]) -> ActionSet:
  types = np.array(types, dtype=np.int64)
  by_type = tuple(np.flatnonzero(types == t) for t in np.unique(types))
  return ActionSet(tuple(actions), {a: i for i, a in enumerate(actions)}, types, by_type)


@functools.lru_cache(maxsize=1 << 16)
def _canonical(block: nsc.Block) -> nsc.Block:
  return block.canonical()


# The operations of a layer (type, kernel), numbered for the predictor's one-hot encoding.
NSC_OPS = {(t, k): i for i, (t, k) in enumerate(
    (t, k) for t in nsc.TYPE_NAMES if t != nsc.TERMINAL for k in nsc.KERNELS[t])}


# The NSC encodings the predictor may use (``NSCSpace(encoding=...)``). 'canonical' is the
# default, measured: on 224 trained digits blocks (experiments/predictor_study.py,
# docs/reproducing.md) its held-out Spearman after 25 / 150 training blocks was 0.53 / 0.77,
# the path encoding's 0.21 / 0.47.
NSC_ENCODINGS = ('canonical', 'paths')
PATH_BUCKETS = 512  # the path encoding's width: sequences hashed into this many slots
PATH_LENGTH = 4     # a path longer than this is known by its last PATH_LENGTH operations


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
  return _action_set(actions, [a.type for a in actions])


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


def _layer_changes(layer: nsc.Layer) -> list[nsc.Layer]:
  """Every layer one change from ``layer`` at its index: another type (each of its
  kernels; for add or concat each second operand, the first kept), another kernel, or
  another predecessor."""
  earlier = range(layer.index)
  changes = []
  for new_type in nsc.TYPE_NAMES:
    if new_type in (nsc.TERMINAL, layer.type):
      continue
    seconds = earlier if new_type in nsc.TWO_INPUT_TYPES else (0,)
    changes.extend(layer._replace(type=new_type, kernel=kernel, pred2=pred2)
                   for kernel in nsc.KERNELS[new_type] for pred2 in seconds)
  changes.extend(layer._replace(kernel=k) for k in nsc.KERNELS[layer.type] if k != layer.kernel)
  for field in ('pred1', 'pred2')[:len(layer.preds)]:
    changes.extend(layer._replace(**{field: p}) for p in earlier if p != getattr(layer, field))
  return changes


class NSCSpace:
  """BlockQNN's block space: NSC layers up to ``max_layers`` deep, then the terminal."""

  state_width = 5  # a state (a layer code) as integers

  def __init__(self, max_layers: int = nsc.MAX_LAYERS, encoding: str = 'canonical'):
    if encoding not in NSC_ENCODINGS:
      raise ValueError(f'NSC encoding {encoding!r} is unknown, allowed {NSC_ENCODINGS}')
    self.max_layers = int(max_layers)
    self.encoding = encoding
    self.start = START
    self.description = f'nsc(max_layers={self.max_layers})'

  def actions(self, state: nsc.Layer) -> ActionSet:
    return actions_at(state.index + 1, self.max_layers)

  def step(self, state: nsc.Layer, action: nsc.Layer) -> nsc.Layer | None:
    del state
    return None if action.type == nsc.TERMINAL else action

  def build(self, actions: Sequence[nsc.Layer]) -> nsc.Block:
    return nsc.Block(tuple(actions[:-1]))  # the last action is the terminal

  def trajectory(self, block: nsc.Block) -> list[tuple[nsc.Layer, nsc.Layer]]:
    return trajectory(block)

  def key(self, block: nsc.Block) -> str:
    return _canonical_hash(block)

  def to_codes(self, block: nsc.Block) -> list[list[int]]:
    return block.to_codes()

  def from_codes(self, codes) -> nsc.Block:
    return nsc.Block.from_codes(codes, self.max_layers)

  def encode(self, block: nsc.Block) -> list[int]:
    """The block as a flat list of integers (five per layer), for the checkpoint."""
    return [v for layer in block.layers for v in layer]

  def decode(self, values: Sequence[int]) -> nsc.Block:
    return nsc.Block(tuple(nsc.Layer(*values[i:i + 5]) for i in range(0, len(values), 5)))

  def encode_state(self, state: nsc.Layer) -> tuple[int, ...]:
    return tuple(state)

  def decode_state(self, values: Sequence[int]) -> nsc.Layer:
    return nsc.Layer(*values)

  def mutate(self, block: nsc.Block, rng: np.random.Generator) -> nsc.Block:
    """One layer's type, kernel or one predecessor changed; always a valid, different
    architecture where one exists (the depth stays; a one-layer block's only predecessor
    is the input, so it changes its type or kernel)."""
    for _ in range(100):
      position = int(rng.integers(len(block)))
      layer = block.layers[position]
      choices = ['type']
      if len(nsc.KERNELS[layer.type]) > 1:
        choices.append('kernel')
      if layer.index > 1:
        choices.append('pred')
      what = choices[rng.integers(len(choices))]
      if what == 'type':
        types = [t for t in nsc.TYPE_NAMES if t not in (nsc.TERMINAL, layer.type)]
        new_type = types[rng.integers(len(types))]
        kernels = nsc.KERNELS[new_type]
        pred2 = (int(rng.integers(layer.index)) if new_type in nsc.TWO_INPUT_TYPES
                 else 0)
        new = layer._replace(type=new_type, kernel=kernels[rng.integers(len(kernels))],
                             pred2=pred2)
      elif what == 'kernel':
        kernels = [k for k in nsc.KERNELS[layer.type] if k != layer.kernel]
        new = layer._replace(kernel=kernels[rng.integers(len(kernels))])
      else:
        field = 'pred1' if len(layer.preds) == 1 or rng.random() < 0.5 else 'pred2'
        others = [p for p in range(layer.index) if p != getattr(layer, field)]
        new = layer._replace(**{field: others[rng.integers(len(others))]})
      layers = block.layers[:position] + (new,) + block.layers[position + 1:]
      child = nsc.Block.from_codes(nsc.Block(layers).to_codes(), self.max_layers)
      if self.key(child) != self.key(block):
        return child
    raise RuntimeError(f'no mutation of {block.to_codes()} changed its architecture')

  def neighbours(self, block: nsc.Block) -> list[nsc.Block]:
    """Every block one layer change away, as ``mutate`` makes them (another type, with
    each kernel it has and, for add or concat, each second operand; another kernel;
    another predecessor), one per canonical key, never the block itself, in layer order.
    The depth stays, as in ``mutate``: adding a last layer would offer every legal layer
    at the next index (up to 840 at depth 23), so depth changes with a fresh start."""
    found = {self.key(block): None}
    for position, layer in enumerate(block.layers):
      for new in _layer_changes(layer):
        layers = block.layers[:position] + (new,) + block.layers[position + 1:]
        child = nsc.Block.from_codes(nsc.Block(layers).to_codes(), self.max_layers)
        found.setdefault(self.key(child), child)
    return list(found.values())[1:]

  @property
  def feature_size(self) -> int:
    return PATH_BUCKETS if self.encoding == 'paths' else self._canonical_size

  @property
  def _canonical_size(self) -> int:
    ops = len(NSC_OPS)
    return ops + ops * self.max_layers + self.max_layers * (self.max_layers + 1) // 2

  def features(self, block: nsc.Block) -> np.ndarray:
    """The predictor's encoding of ``block``: ``canonical_features`` or ``path_features``,
    as ``encoding`` says."""
    if self.encoding == 'paths':
      return self.path_features(block)
    return self.canonical_features(block)

  def path_features(self, block: nsc.Block) -> np.ndarray:
    """The path encoding (BANANAS, White et al., 2021): which sequences of operations
    (type and kernel) lead from the block input to its output, each sequence a 1 in
    the slot its CRC-32 picks among ``PATH_BUCKETS``. Paths are followed by dynamic
    programming over the layers, each known by its last ``PATH_LENGTH`` operations, so a
    deep block's exponentially many paths stay cheap. Paths do not depend on how the
    layers are numbered, so isomorphic blocks share this vector."""
    endings = [{()}]  # per node (the input first): the sequences of the paths into it
    for layer in block.layers:
      op = NSC_OPS[(layer.type, layer.kernel)]
      endings.append({(path + (op,))[-PATH_LENGTH:]
                       for pred in layer.preds for path in endings[pred]})
    x = np.zeros(PATH_BUCKETS)
    for index in block.output_layers:
      for path in endings[index]:
        x[zlib.crc32(bytes(path)) % PATH_BUCKETS] = 1.0
    return x

  def canonical_features(self, block: nsc.Block) -> np.ndarray:
    """The canonical encoding (``predictor``): how many layers of each operation (type
    and kernel) the block has; then its canonical form's layers, each its operation
    one-hot at its position; then the upper triangle of that form's adjacency matrix (an
    edge from node i, the input being 0, into layer j). Isomorphic blocks share the
    canonical form, so they share this vector. Measured against the counts alone and the
    canonical form alone by held-out rank correlation (experiments/predictor_encodings.py,
    docs/method.md)."""
    ops = len(NSC_OPS)
    x = np.zeros(self._canonical_size)
    edges = ops + ops * self.max_layers
    for layer in _canonical(block).layers:
      op = NSC_OPS[(layer.type, layer.kernel)]
      x[op] += 1.0
      x[ops + (layer.index - 1) * ops + op] = 1.0
      for p in layer.preds:
        x[edges + (layer.index - 1) * layer.index // 2 + p] = 1.0
    return x


class SequenceSpace:
  """A fixed-length sequence of categorical choices: ``sizes[i]`` options at position i.

  An architecture is a tuple of choices; its key is the choices as digits (``'334131'``)
  when every position has at most 10 options, else joined by commas.
  """

  state_width = 2  # (position, previous choice)

  def __init__(self, sizes: Sequence[int]):
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) < 1:
      raise ValueError(f'sequence sizes {list(sizes)}: need at least one position, each '
                       'with at least 1 choice')
    self.sizes = sizes
    self.start = SEQUENCE_START
    self.description = f'sequence(sizes={list(sizes)})'
    self._separator = '' if max(sizes) <= 10 else ','
    self._actions = [_action_set(range(n), range(n)) for n in sizes]
    self._mutable = [i for i, n in enumerate(sizes) if n > 1]  # positions mutate can change
    # The feature layout: one-hot blocks per position, then per pair of positions.
    self._offsets = np.concatenate([[0], np.cumsum(sizes)])
    self._pairs = np.array([(i, j) for i in range(len(sizes)) for j in range(i + 1, len(sizes))],
                           dtype=np.int64).reshape(-1, 2)
    self._pair_widths = np.array(sizes)[self._pairs[:, 1]]
    self._pair_offsets = self._offsets[-1] + np.concatenate(
        [[0], np.cumsum(np.array(sizes)[self._pairs[:, 0]] * self._pair_widths)])

  def actions(self, state: tuple[int, int]) -> ActionSet:
    return self._actions[state[0]]

  def step(self, state: tuple[int, int], action: int) -> tuple[int, int] | None:
    position = state[0] + 1
    return None if position == len(self.sizes) else (position, action)

  def build(self, actions: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(a) for a in actions)

  def trajectory(self, choices: tuple[int, ...]) -> list[tuple[tuple[int, int], int]]:
    states = [SEQUENCE_START] + [(i + 1, c) for i, c in enumerate(choices[:-1])]
    return list(zip(states, choices))

  def key(self, choices: tuple[int, ...]) -> str:
    return self._separator.join(map(str, choices))

  def parse_key(self, key: str) -> tuple[int, ...]:
    """The architecture of a key; a one-line error for a key outside the space."""
    parts = key.split(',') if self._separator else list(key)
    try:
      choices = tuple(int(p) for p in parts)
    except ValueError:
      choices = ()
    if len(choices) != len(self.sizes) or any(
        not 0 <= c < n for c, n in zip(choices, self.sizes)):
      raise ValueError(f'key {key!r} is not in {self.description}: expected '
                       f'{len(self.sizes)} choices, choice i in 0..sizes[i]-1')
    return choices

  def to_codes(self, choices: tuple[int, ...]) -> list[int]:
    return list(choices)

  def from_codes(self, codes) -> tuple[int, ...]:
    return self.parse_key(self._separator.join(str(c) for c in codes))

  def encode(self, choices: tuple[int, ...]) -> list[int]:
    return list(choices)

  def decode(self, values: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)

  def encode_state(self, state: tuple[int, int]) -> tuple[int, ...]:
    return tuple(state)

  def decode_state(self, values: Sequence[int]) -> tuple[int, int]:
    return (int(values[0]), int(values[1]))

  def mutate(self, choices: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
    """One position set to another of its options (Real et al.'s mutation; NAS-Bench-201's
    R_EA changes one edge's operation the same way)."""
    positions = self._mutable
    if not positions:
      raise RuntimeError(f'{self.description} has one architecture: nothing to mutate')
    i = positions[rng.integers(len(positions))]
    other = int(rng.integers(self.sizes[i] - 1))  # the other-th option skipping choices[i]
    other += other >= choices[i]
    return choices[:i] + (other,) + choices[i + 1:]

  @property
  def feature_size(self) -> int:
    return int(self._pair_offsets[-1])

  def one_hot(self, choices: tuple[int, ...]) -> np.ndarray:
    """Each position's choice one-hot, positions one after another."""
    x = np.zeros(int(self._offsets[-1]))
    x[self._offsets[:-1] + np.asarray(choices)] = 1.0
    return x

  def features(self, choices: tuple[int, ...]) -> np.ndarray:
    """The predictor's encoding (``predictor``): ``one_hot``, then each pair of positions'
    choices one-hot (the pair (i, j) as one of sizes[i] x sizes[j] options). Pairs let a
    linear model see interactions (an edge's operation matters given another's); on
    NAS-Bench-201 they raise the held-out rank correlation over ``one_hot`` alone
    (experiments/predictor_encodings.py)."""
    c = np.asarray(choices)
    x = np.zeros(self.feature_size)
    x[self._offsets[:-1] + c] = 1.0
    pair_choices = c[self._pairs[:, 0]] * self._pair_widths + c[self._pairs[:, 1]]
    x[self._pair_offsets[:-1] + pair_choices] = 1.0
    return x

  def neighbours(self, choices: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every architecture one position away (each other option there), position by
    position: the mutations ``mutate`` draws from."""
    return [choices[:i] + (c,) + choices[i + 1:]
            for i, n in enumerate(self.sizes) for c in range(n) if c != choices[i]]


Space = NSCSpace | SequenceSpace  # what run_search and the strategies accept
