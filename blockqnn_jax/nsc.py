"""The Network Structure Code (NSC): a block as a validated, immutable DAG of layers.

A block is a list of layers ``[index, type, kernel, pred1, pred2]``; index 0 is the
block's input and a predecessor always has a lower index. The last layer is the
terminal ``[n, 7, 0, 0, 0]``. Unused fields are 0.

| type | name            | kernels  | pred1          | pred2          |
|------|-----------------|----------|----------------|----------------|
| 1    | convolution     | 1, 3, 5  | earlier index  | 0              |
| 2    | max pooling     | 1, 3     | earlier index  | 0              |
| 3    | average pooling | 1, 3     | earlier index  | 0              |
| 4    | identity        | 0        | earlier index  | 0              |
| 5    | elemental add   | 0        | earlier index  | earlier index  |
| 6    | concat          | 0        | earlier index  | earlier index  |
| 7    | terminal        | 0        | 0              | 0              |

Channel rules (the single place they are defined; ``models.py`` builds exactly this):

1. The block input (layer 0) has the stage's filter count F.
2. A convolution is a pre-activation cell, ReLU -> Conv(F, k x k) -> BatchNorm: F wide.
3. Pooling (stride 1, same padding) and identity keep their input's width.
4. Elemental add of widths a and b is max(a, b) wide: the narrower operand is zero-padded
   on the channel axis (parameter-free and symmetric, so operand order never matters).
5. Concat of widths a and b is a + b wide, its operands joined in canonical order (see
   ``Block.canonical``), so operand order never matters either. A concat wider than
   ``CONCAT_WIDTH_LIMIT * F`` is followed by a 1x1 convolution cell back to F: without
   that cap a chain of concats could grow the width exponentially with depth.
6. The block output is the concat of every layer no other layer consumes; if that is not
   F wide a 1x1 convolution cell brings it back to F.

Under rule 6 every layer reaches the output and every layer is reachable from the input,
so no layer is ever dead: two blocks are the same architecture exactly when their DAGs are
isomorphic, which ``Block.canonical_hash`` captures.

This module is pure Python + NumPy (no JAX) so the agent can run anywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import numbers
from typing import NamedTuple, Sequence

CONV, MAX_POOL, AVG_POOL, IDENTITY, ADD, CONCAT, TERMINAL = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES = {
    CONV: 'conv', MAX_POOL: 'max_pool', AVG_POOL: 'avg_pool', IDENTITY: 'identity',
    ADD: 'add', CONCAT: 'concat', TERMINAL: 'terminal',
}
KERNELS = {
    CONV: (1, 3, 5), MAX_POOL: (1, 3), AVG_POOL: (1, 3), IDENTITY: (0,),
    ADD: (0,), CONCAT: (0,), TERMINAL: (0,),
}
TWO_INPUT_TYPES = (ADD, CONCAT)
MAX_LAYERS = 23
CONCAT_WIDTH_LIMIT = 4


class InvalidBlockError(ValueError):
  """A list of codes that is not a valid NSC block; the message names layer and rule."""


class Layer(NamedTuple):
  index: int
  type: int
  kernel: int
  pred1: int
  pred2: int

  @property
  def preds(self) -> tuple[int, ...]:
    """The layers this one reads: two for add/concat, one otherwise."""
    if self.type in TWO_INPUT_TYPES:
      return (self.pred1, self.pred2)
    return (self.pred1,)

  @property
  def label(self) -> str:
    kernel = f' {self.kernel}x{self.kernel}' if self.type in (CONV, MAX_POOL, AVG_POOL) else ''
    return TYPE_NAMES[self.type] + kernel


def _as_int(value, where: str) -> int:
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise InvalidBlockError(f'{where}: {value!r} is not an integer')
  return int(value)


def _validate_layer(position: int, code, max_layers: int) -> Layer:
  where = f'layer {position + 1} {list(code) if isinstance(code, (list, tuple)) else code!r}'
  if not isinstance(code, (list, tuple)) or len(code) != 5:
    raise InvalidBlockError(f'{where}: a layer is 5 integers [index, type, kernel, pred1, pred2]')
  layer = Layer(*(_as_int(v, where) for v in code))
  if layer.index != position + 1:
    raise InvalidBlockError(
        f'{where}: index {layer.index} out of order, expected {position + 1} '
        '(layers are numbered 1, 2, ... in order; 0 is the block input)')
  if layer.type not in TYPE_NAMES:
    raise InvalidBlockError(f'{where}: unknown type {layer.type}, allowed 1..7 ({TYPE_NAMES})')
  name = TYPE_NAMES[layer.type]
  if layer.kernel not in KERNELS[layer.type]:
    raise InvalidBlockError(
        f'{where}: kernel {layer.kernel} not allowed for {name}, allowed {KERNELS[layer.type]}')
  if layer.type == TERMINAL:
    if layer.pred1 or layer.pred2:
      raise InvalidBlockError(f'{where}: the terminal layer has no predecessors (use 0, 0)')
    return layer
  if layer.index > max_layers:
    raise InvalidBlockError(
        f'{where}: over the depth limit, at most {max_layers} layers before the terminal')
  for field, pred in zip(('pred1', 'pred2'), layer.preds):
    if not 0 <= pred < layer.index:
      raise InvalidBlockError(
          f'{where}: {field}={pred} is not an earlier layer (allowed 0..{layer.index - 1})')
  if layer.type not in TWO_INPUT_TYPES and layer.pred2 != 0:
    raise InvalidBlockError(f'{where}: {name} takes one input, pred2 must be 0')
  return layer


@functools.lru_cache(maxsize=None)
def window_taps(size: int, kernel: int, stride: int = 1) -> int:
  """Input positions a k-wide 'same'-padded window covers, summed over the outputs of one
  row of ``size`` inputs: padding is not arithmetic, so border outputs count fewer taps."""
  outputs = -(-size // stride)
  pad = max((outputs - 1) * stride + kernel - size, 0) // 2
  return sum(min(o * stride - pad + kernel, size) - max(o * stride - pad, 0)
             for o in range(outputs))


def _digest(*parts) -> str:
  return hashlib.sha256(repr(parts).encode()).hexdigest()


_MAX_CANONICAL_ORDERS = 256  # orders compared at most, for blocks with many ties


@dataclasses.dataclass(frozen=True)
class Block:
  """A validated block: its layers (terminal excluded), numbered 1..n."""

  layers: tuple[Layer, ...]

  @classmethod
  def from_codes(cls, codes: Sequence[Sequence[int]], max_layers: int = MAX_LAYERS) -> 'Block':
    """Validates codes (terminal included) and returns the block."""
    if isinstance(codes, (str, bytes)) or not isinstance(codes, Sequence):
      raise InvalidBlockError(f'a block is a list of layers, got {type(codes).__name__}')
    if not codes:
      raise InvalidBlockError('a block needs at least one layer and the terminal, got []')
    layers = [_validate_layer(i, code, max_layers) for i, code in enumerate(codes)]
    for layer in layers[:-1]:
      if layer.type == TERMINAL:
        raise InvalidBlockError(
            f'layer {layer.index} {list(layer)}: terminal before the end of the block')
    if layers[-1].type != TERMINAL:
      last = layers[-1]
      raise InvalidBlockError(
          f'layer {last.index} {list(last)}: missing terminal, the block must end with '
          f'[{last.index + 1}, 7, 0, 0, 0]')
    if len(layers) == 1:
      raise InvalidBlockError('a block needs at least one layer before the terminal')
    return cls(tuple(layers[:-1]))

  @classmethod
  def from_json(cls, text: str, max_layers: int = MAX_LAYERS) -> 'Block':
    return cls.from_codes(json.loads(text), max_layers)

  def to_codes(self) -> list[list[int]]:
    """The codes, terminal included: the inverse of ``from_codes``."""
    return [list(layer) for layer in self.layers] + [[len(self.layers) + 1, TERMINAL, 0, 0, 0]]

  def to_json(self) -> str:
    return json.dumps(self.to_codes())

  def __len__(self) -> int:
    return len(self.layers)

  @functools.cached_property
  def consumers(self) -> tuple[tuple[int, ...], ...]:
    """consumers[i]: the layers reading layer i (0 = input), with multiplicity."""
    readers = [[] for _ in range(len(self.layers) + 1)]
    for layer in self.layers:
      for pred in layer.preds:
        readers[pred].append(layer.index)
    return tuple(tuple(r) for r in readers)

  @functools.cached_property
  def output_layers(self) -> tuple[int, ...]:
    """The layers nothing consumes: concatenated, they form the block output."""
    return tuple(l.index for l in self.layers if not self.consumers[l.index])

  def density(self) -> float:
    """Edges / nodes of the block DAG (input, layers and the output concat as nodes)."""
    edges = sum(len(l.preds) for l in self.layers) + len(self.output_layers)
    nodes = len(self.layers) + 2
    return edges / nodes

  def widths(self, filters: int) -> tuple[list[int], list[bool], bool]:
    """Applies the channel rules of the module docstring.

    Returns (width of layer 0..n, whether each concat is projected back to F, whether the
    output concat is projected back to F).
    """
    widths = [filters]
    projected = []
    for layer in self.layers:
      inputs = [widths[p] for p in layer.preds]
      cap = False
      if layer.type == CONV:
        width = filters
      elif layer.type == ADD:
        width = max(inputs)
      elif layer.type == CONCAT:
        width = sum(inputs)
        cap = width > CONCAT_WIDTH_LIMIT * filters
        width = filters if cap else width
      else:
        width = inputs[0]
      widths.append(width)
      projected.append(cap)
    output_width = sum(widths[i] for i in self.output_layers)
    return widths, projected, output_width != filters

  def flops(self, height: int, width: int, filters: int) -> int:
    """Forward FLOPs of one block on an HxW input of F channels, one image.

    A multiply-add counts 2 (XLA's convention); pooling counts one per window tap and an
    add one per output value; taps on the zero padding are not counted. ReLU, BatchNorm
    and copies are not counted.
    """
    widths, projected, output_projected = self.widths(filters)
    pixels = height * width
    total = 0
    for layer, cap in zip(self.layers, projected):
      inputs = [widths[p] for p in layer.preds]
      taps = window_taps(height, layer.kernel) * window_taps(width, layer.kernel)
      if layer.type == CONV:
        total += 2 * taps * inputs[0] * filters
      elif layer.type in (MAX_POOL, AVG_POOL):
        total += taps * inputs[0]
      elif layer.type == ADD:
        total += pixels * max(inputs)
      elif cap:
        total += 2 * pixels * sum(inputs) * filters
    if output_projected:
      total += 2 * pixels * sum(widths[i] for i in self.output_layers) * filters
    return total

  @functools.cached_property
  def _canonical_codes(self) -> tuple[tuple[int, ...], ...]:
    """Renumbers the DAG by an isomorphism-invariant labelling.

    Each node gets a label from its op, everything upstream and everything downstream,
    refined Weisfeiler-Lehman style; a topological order then always takes the ready node
    with the smallest label and inputs, and the smallest codes over the orders that
    remaining ties allow are the canonical ones. Operands of add and concat are sorted by
    their new index. Different codes always mean non-isomorphic DAGs, so the hash never
    merges different architectures.
    """
    n = len(self.layers)
    ops = [(0, 0)] + [(l.type, l.kernel) for l in self.layers]
    preds = [()] + [l.preds for l in self.layers]
    forward = [_digest(ops[0])]
    for v in range(1, n + 1):
      forward.append(_digest(ops[v], sorted(forward[p] for p in preds[v])))
    backward = [''] * (n + 1)
    for v in range(n, -1, -1):
      backward[v] = _digest(ops[v], sorted(backward[c] for c in self.consumers[v]))
    labels = [_digest(f, b) for f, b in zip(forward, backward)]
    for _ in range(3):
      labels = [
          _digest(labels[v], sorted(labels[p] for p in preds[v]),
                  sorted(labels[c] for c in self.consumers[v]))
          for v in range(n + 1)
      ]
    orders: list[tuple] = []
    self._topological_orders(labels, preds, {0: 0}, orders)
    return min(orders)

  def _topological_orders(self, labels, preds, new_index: dict, out: list) -> None:
    """Appends to ``out`` the codes of each canonical topological order from the partial
    numbering ``new_index``.

    The next node is the ready one with the smallest (label, new indices of its inputs).
    Ties left are followed one by one, except twins (the same inputs and consumers), which
    are interchangeable; past _MAX_CANONICAL_ORDERS orders the first is kept (an exotic
    symmetric block may then miss the cache, but never shares another's hash).
    """
    n = len(self.layers)
    if len(new_index) == n + 1:
      codes = []
      for v in sorted(range(1, n + 1), key=new_index.get):
        layer = self.layers[v - 1]
        mapped = sorted(new_index[p] for p in layer.preds)
        pred1, pred2 = (mapped + [0])[:2]
        codes.append((new_index[v], layer.type, layer.kernel, pred1, pred2))
      out.append(tuple(codes))
      return
    ready = [v for v in range(1, n + 1)
             if v not in new_index and all(p in new_index for p in preds[v])]
    key = lambda u: (labels[u], sorted(new_index[p] for p in preds[u]))
    best = min(key(u) for u in ready)
    tied, seen = [], set()
    for u in ready:
      twin = (tuple(sorted(preds[u])), tuple(sorted(self.consumers[u])))
      if key(u) == best and twin not in seen:
        seen.add(twin)
        tied.append(u)
    for u in tied:
      if out and len(out) >= _MAX_CANONICAL_ORDERS:
        return
      self._topological_orders(labels, preds, {**new_index, u: len(new_index)}, out)

  def canonical(self) -> 'Block':
    """The isomorphic block in canonical numbering (the one models are built from)."""
    return Block(tuple(Layer(*code) for code in self._canonical_codes))

  def canonical_hash(self) -> str:
    """Equal for isomorphic blocks, different for different architectures."""
    return _digest('nsc-v1', self._canonical_codes)[:24]
