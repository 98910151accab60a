"""Flax NNX networks built from an NSC block: the conv cell, the block, the templates.

Channel rules (defined once, in ``nsc.py``'s docstring and ``nsc.Block.widths``; this
module builds exactly what they say): the block input has the stage's F channels; a conv
cell (ReLU -> Conv -> BatchNorm) outputs F; pooling and identity keep their input width;
add zero-pads the narrower operand to the wider; concat joins widths, and one wider than
4F is brought back to F by a 1x1 conv cell; the block output, the concat of every layer
nothing consumes, is brought back to F by a 1x1 conv cell when it is not F wide.

A block is always built from its canonical form (``nsc.Block.canonical``), so isomorphic
blocks give the same network, operand order included.

Templates: a stem conv; ``stages`` stages of ``repeats`` stacked blocks; between stages, a
2x2 max pooling of stride 2, then a 1x1 conv cell that doubles the width (the next stage's
blocks need 2F-channel inputs); ReLU, global average pooling and a linear classifier.
CIFAR: stem of stride 1 and 3 stages (32 -> 16 -> 8 pixels). ImageNet: a stride-2 stem
and a 3x3 stride-2 max pooling, then 4 stages (224 -> 56 -> 28 -> 14 -> 7 pixels).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from blockqnn_jax import nsc

BN_MOMENTUM = 0.9


class ConvCell(nnx.Module):
  """Pre-activation convolution: ReLU -> Conv -> BatchNorm (no ReLU for the stem).

  The convolution computes in ``dtype``; the BatchNorm always in float32 (statistics,
  running averages, scale and shift), its output cast back to ``dtype``. In evaluation
  mode a bfloat16 BatchNorm would round the running mean and variance to 8 bits of
  mantissa before ``x - mean``, shifting every activation of a channel whose mean is large
  next to its spread by up to half a bfloat16 step of the mean.
  """

  def __init__(self, in_features: int, out_features: int, kernel: int, *, strides: int = 1,
               activate: bool = True, dtype=jnp.float32, rngs: nnx.Rngs):
    self.activate = activate
    self.conv = nnx.Conv(in_features, out_features, (kernel, kernel), strides=strides,
                         padding='SAME', use_bias=False, dtype=dtype, rngs=rngs)
    self.norm = nnx.BatchNorm(out_features, momentum=BN_MOMENTUM, dtype=jnp.float32,
                              rngs=rngs)

  def __call__(self, x):
    y = self.conv(nnx.relu(x) if self.activate else x)
    return self.norm(y).astype(y.dtype)


def _pad_channels(x, width: int):
  return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, width - x.shape[-1])])


class BlockModule(nnx.Module):
  """One copy of a block at a stage of ``filters`` channels."""

  def __init__(self, block: nsc.Block, filters: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
    self.block = block.canonical()
    widths, capped, output_projected = self.block.widths(filters)
    cells = {}
    for layer, cap in zip(self.block.layers, capped):
      if layer.type == nsc.CONV:
        cells[str(layer.index)] = ConvCell(
            widths[layer.pred1], filters, layer.kernel, dtype=dtype, rngs=rngs)
      elif cap:
        cells[str(layer.index)] = ConvCell(
            sum(widths[p] for p in layer.preds), filters, 1, dtype=dtype, rngs=rngs)
    self.cells = nnx.Dict(cells)
    output_width = sum(widths[i] for i in self.block.output_layers)
    self.output = (ConvCell(output_width, filters, 1, dtype=dtype, rngs=rngs)
                   if output_projected else None)

  def __call__(self, x):
    outputs = [x]
    for layer in self.block.layers:
      inputs = [outputs[p] for p in layer.preds]
      cell = self.cells.get(str(layer.index))
      window = (layer.kernel, layer.kernel)
      if layer.type == nsc.CONV:
        y = cell(inputs[0])
      elif layer.type == nsc.MAX_POOL:
        y = nnx.max_pool(inputs[0], window, padding='SAME')
      elif layer.type == nsc.AVG_POOL:
        y = nnx.avg_pool(inputs[0], window, padding='SAME', count_include_pad=False)
      elif layer.type == nsc.IDENTITY:
        y = inputs[0]
      elif layer.type == nsc.ADD:
        width = max(t.shape[-1] for t in inputs)
        y = _pad_channels(inputs[0], width) + _pad_channels(inputs[1], width)
      else:  # concat
        y = jnp.concatenate(inputs, axis=-1)
        if cell is not None:
          y = cell(y)
      outputs.append(y)
    y = jnp.concatenate([outputs[i] for i in self.block.output_layers], axis=-1)
    return self.output(y) if self.output is not None else y


@dataclasses.dataclass(frozen=True)
class Template:
  """The network around the blocks."""

  stages: int
  stem_strides: int
  stem_pool: bool


TEMPLATES = {
    'cifar': Template(stages=3, stem_strides=1, stem_pool=False),
    'imagenet': Template(stages=4, stem_strides=2, stem_pool=True),
}


class Network(nnx.Module):
  """Stem, stages of stacked blocks with downsampling between them, classifier."""

  def __init__(self, block: nsc.Block, template: Template, *, num_classes: int,
               in_channels: int, filters: int, repeats: int, dtype=jnp.float32,
               rngs: nnx.Rngs):
    self.template = template
    self.stem = ConvCell(in_channels, filters, 3, strides=template.stem_strides,
                         activate=False, dtype=dtype, rngs=rngs)
    transitions, stages = [], []
    for stage in range(template.stages):
      width = filters * 2 ** stage
      if stage:
        transitions.append(ConvCell(width // 2, width, 1, dtype=dtype, rngs=rngs))
      stages.append(nnx.List(
          [BlockModule(block, width, dtype=dtype, rngs=rngs) for _ in range(repeats)]))
    self.transitions = nnx.List(transitions)
    self.stages = nnx.List(stages)
    # Pooled features, logits and the loss in float32 whatever the compute dtype: a
    # bfloat16 head rounds the logits to 8 bits and sums its bias gradient over the
    # batch in bfloat16.
    self.head = nnx.Linear(width, num_classes, dtype=jnp.float32, rngs=rngs)

  def __call__(self, images):
    x = self.stem(images)
    if self.template.stem_pool:
      x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding='SAME')
    for stage, blocks in enumerate(self.stages):
      if stage:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2), padding='SAME')
        x = self.transitions[stage - 1](x)
      for block in blocks:
        x = block(x)
    x = jnp.mean(nnx.relu(x).astype(jnp.float32), axis=(1, 2))
    return self.head(x)


def build_network(block: nsc.Block, model_config, *, num_classes: int, in_channels: int,
                  dtype=jnp.float32, seed: int = 0) -> Network:
  """The network ``config.model`` describes, around ``block``."""
  return Network(block, TEMPLATES[model_config.template], num_classes=num_classes,
                 in_channels=in_channels, filters=model_config.filters,
                 repeats=model_config.repeats, dtype=dtype, rngs=nnx.Rngs(seed))


def count_params(model: nnx.Module) -> int:
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def network_flops(block: nsc.Block, model_config, *, image_shape, num_classes: int) -> int:
  """Forward FLOPs of one image through the whole network (multiply-add = 2).

  Counts convolutions, pooling, adds and the classifier, as ``nsc.Block.flops`` does;
  ReLU and BatchNorm are left out, so XLA's count of the same network is a few percent
  higher (checked in the tests).
  """
  template = TEMPLATES[model_config.template]
  filters, repeats = model_config.filters, model_config.repeats
  height, width, channels = image_shape
  stride = template.stem_strides
  total = 2 * channels * filters * nsc.window_taps(height, 3, stride) * nsc.window_taps(
      width, 3, stride)
  height, width = math.ceil(height / stride), math.ceil(width / stride)
  if template.stem_pool:
    total += filters * nsc.window_taps(height, 3, 2) * nsc.window_taps(width, 3, 2)
    height, width = math.ceil(height / 2), math.ceil(width / 2)
  for stage in range(template.stages):
    stage_filters = filters * 2 ** stage
    if stage:
      height, width = math.ceil(height / 2), math.ceil(width / 2)
      total += height * width * 4 * stage_filters // 2          # 2x2 max pooling
      total += 2 * height * width * stage_filters // 2 * stage_filters  # 1x1 transition
    total += repeats * block.flops(height, width, stage_filters)
  return total + 2 * stage_filters * num_classes
