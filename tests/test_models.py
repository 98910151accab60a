"""Networks built from NSC blocks: every sampled block runs; FLOPs agree with XLA."""

from flax import nnx
from hypothesis import given, settings
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockqnn_jax import models
from blockqnn_jax import nsc
from blockqnn_jax.analysis import reference_blocks
from configs import default
from tests import hypothesis_blocks

REFERENCE = reference_blocks.load()
CONCAT_CHAIN = [[1, 6, 0, 0, 0]] + [[i, 6, 0, i - 1, i - 2] for i in range(2, 24)] + [
    [24, 7, 0, 0, 0]]


def block_value_and_grads(block: nsc.Block, filters=4, size=8):
  """Sum of one block's output, its gradients, and the output, in training mode."""
  module = models.BlockModule(block, filters, rngs=nnx.Rngs(0))
  graph, params, rest = nnx.split(module, nnx.Param, ...)
  x = jax.random.normal(jax.random.key(1), (2, size, size, filters))

  def loss(params, x):
    y = nnx.merge(graph, params, rest, copy=True)(x)
    return jnp.sum(y ** 2), y

  (value, y), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
      params, x)
  return value, grads, y


def all_finite(tree) -> bool:
  return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


@settings(max_examples=30, deadline=None)
@given(hypothesis_blocks.blocks(max_layers=12))
def test_every_block_runs_forward_and_backward(block):
  value, grads, y = block_value_and_grads(block)
  assert y.shape == (2, 8, 8, 4)
  assert bool(jnp.isfinite(value)) and all_finite(grads)
  assert float(jnp.abs(grads[1]).sum()) > 0  # the input reaches the output


@pytest.mark.parametrize('codes', [
    REFERENCE['deep'].to_codes(),
    CONCAT_CHAIN,                                                  # widths capped
    [[1, 2, 3, 0, 0], [2, 3, 1, 0, 0], [3, 4, 0, 0, 0], [4, 7, 0, 0, 0]],  # three leaves
    [[1, 4, 0, 0, 0], [2, 7, 0, 0, 0]],                            # no arithmetic at all
    [[1, 6, 0, 0, 0], [2, 5, 0, 1, 0], [3, 7, 0, 0, 0]],           # add of 2F and F
])
def test_edge_blocks_run(codes):
  value, grads, y = block_value_and_grads(nsc.Block.from_codes(codes))
  assert y.shape == (2, 8, 8, 4)
  assert bool(jnp.isfinite(value)) and all_finite(grads)


def test_isomorphic_blocks_build_the_same_network():
  a = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 6, 0, 1, 2], [4, 7, 0, 0, 0]])
  b = nsc.Block.from_codes([[1, 2, 3, 0, 0], [2, 1, 3, 0, 0], [3, 6, 0, 2, 1], [4, 7, 0, 0, 0]])
  ya = block_value_and_grads(a)[2]
  yb = block_value_and_grads(b)[2]
  np.testing.assert_allclose(ya, yb, rtol=1e-6)


def model_config(template='cifar', filters=8, repeats=1):
  config = default.get_config().model
  config.update(template=template, filters=filters, repeats=repeats)
  return config


@pytest.mark.parametrize('template, shape', [('cifar', (32, 32, 3)), ('imagenet', (64, 64, 3))])
@pytest.mark.parametrize('name', sorted(REFERENCE))
def test_flops_match_xla_cost_analysis(name, template, shape):
  block = REFERENCE[name]
  config = model_config(template)
  network = models.build_network(block, config, num_classes=10, in_channels=shape[-1])
  network.eval()
  graph, state = nnx.split(network)
  forward = jax.jit(lambda state, x: nnx.merge(graph, state)(x))
  cost = forward.lower(state, jnp.zeros((1, *shape))).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  ours = models.network_flops(block, config, image_shape=shape, num_classes=10)
  # XLA also counts ReLU and BatchNorm, which we leave out: a few percent more.
  assert ours <= cost['flops'] <= 1.1 * ours


def test_param_count_of_a_one_conv_block():
  f = 8
  block = nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])
  network = models.build_network(block, model_config(filters=f), num_classes=10,
                                 in_channels=3)
  expected = 27 * f + 2 * f                                   # stem conv + BN
  for stage in range(3):
    w = f * 2 ** stage
    expected += 9 * w * w + 2 * w                             # the block's conv cell
    if stage:
      expected += (w // 2) * w + 2 * w                        # 1x1 transition cell
  expected += 4 * f * 10 + 10                                 # classifier
  assert models.count_params(network) == expected


@pytest.mark.parametrize('template, shape', [('cifar', (32, 32, 3)), ('imagenet', (64, 64, 3)),
                                             ('cifar', (8, 8, 1))])
def test_networks_classify(template, shape):
  block = REFERENCE['small']
  network = models.build_network(block, model_config(template), num_classes=7,
                                 in_channels=shape[-1])
  logits = network(jnp.ones((2, *shape)))
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
