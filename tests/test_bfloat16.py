"""bfloat16 compute (config.dtype='bfloat16'): the reference blocks train, and the
numerically sensitive parts (BatchNorm, the head and the logits) stay in float32."""

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from blockqnn_jax import data as data_lib
from blockqnn_jax import models
from blockqnn_jax.analysis import reference_blocks
from blockqnn_jax.training import steps

REFERENCE = reference_blocks.load()
NUM_CLASSES = 10


def _model_config(filters=8, repeats=1):
  return ml_collections.ConfigDict({'template': 'cifar', 'filters': filters,
                                    'repeats': repeats})


def _learnable_images(n, size, seed=0):
  """uint8 images of noise around a colour that depends on the label (as 'synthetic')."""
  rng = np.random.default_rng(seed)
  colours = rng.integers(0, 128, (NUM_CLASSES, 3))
  labels = rng.integers(0, NUM_CLASSES, n).astype(np.int32)
  images = rng.integers(0, 128, (n, size, size, 3)) + colours[labels][:, None, None, :]
  return images.astype(np.uint8), labels


def test_batchnorm_is_float32_under_bfloat16():
  """Evaluation mode normalizes with the float32 running mean, not one rounded to bfloat16.

  A channel whose running mean is 200.4 and variance 1: in bfloat16 the mean rounds to 200
  (the bfloat16 step at 200 is 1), which shifted every output by 0.4 standard deviations.
  """
  cell = models.ConvCell(1, 1, 1, activate=False, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
  cell.conv.kernel[...] = jnp.ones_like(cell.conv.kernel[...])  # identity 1x1 conv
  cell.norm.mean[...] = jnp.full((1,), 200.4, jnp.float32)
  cell.norm.var[...] = jnp.ones((1,), jnp.float32)
  cell.eval()
  x = jnp.array([197., 199., 200., 201., 203.], jnp.bfloat16).reshape(1, 5, 1, 1)
  # Only the convolution computes in bfloat16: the normalisation's arithmetic (x - mean,
  # the scaling, the shift) is float32, so the statistics are not promoted to bfloat16.
  arithmetic = {eqn.primitive.name: {v.aval.dtype for v in (*eqn.invars, *eqn.outvars)}
                for eqn in _equations(jax.make_jaxpr(cell)(x).jaxpr)
                if eqn.primitive.name in ('sub', 'mul', 'add', 'rsqrt')}
  assert 'sub' in arithmetic and all(
      dtypes == {jnp.dtype(jnp.float32)} for dtypes in arithmetic.values()), arithmetic
  y = cell(x)
  assert y.dtype == jnp.bfloat16  # the compute dtype flows on
  expected = (np.array([197., 199., 200., 201., 203.]) - 200.4) / np.sqrt(1 + 1e-5)
  np.testing.assert_allclose(np.asarray(y, np.float32).ravel(), expected, rtol=2 ** -8)

  # Training mode: batch statistics of a large-mean, small-spread channel are exact.
  cell.train()
  values = 256 + 2 * (np.arange(64) % 4)  # bfloat16 steps by 2 at 256: exact
  y = np.asarray(cell(jnp.asarray(values, jnp.bfloat16).reshape(1, 8, 8, 1)), np.float32)
  y = y.ravel()
  expected = (values - values.mean()) / np.sqrt(values.var() + 1e-5)
  np.testing.assert_allclose(y, expected, rtol=2 ** -8, atol=1e-6)
  # ... and the running statistics move to 0.9 * old + 0.1 * batch in float32: mean
  # 0.9 * 200.4 + 0.1 * 259 = 206.26 (bfloat16, whose step at 206 is 1, would keep 206),
  # variance 0.9 * 1 + 0.1 * 5 = 1.4.
  for variable, value in ((cell.norm.mean, 206.26), (cell.norm.var, 1.4)):
    assert variable[...].dtype == jnp.float32
    np.testing.assert_allclose(variable[...], [value], rtol=1e-6)


def test_logits_and_head_gradient_are_float32():
  """Under bfloat16 compute the logits and the head's gradients are float32-accurate."""
  model = models.build_network(REFERENCE['small'], _model_config(4),
                               num_classes=NUM_CLASSES, in_channels=3, dtype=jnp.bfloat16)
  model.train()
  graph, params, rest = nnx.split(model, nnx.Param, ...)
  images, labels = _learnable_images(16, 8)
  x = jnp.asarray(images, jnp.bfloat16) / 128 - 1

  def loss(params):
    logits = nnx.merge(graph, params, rest, copy=True)(x)
    return steps.cross_entropy(logits, labels), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert logits.dtype == jnp.float32
  # d(mean cross-entropy)/d(bias) = mean over the batch of softmax - one-hot, exactly.
  logits = np.asarray(logits, np.float64)
  softmax = np.exp(logits - logits.max(-1, keepdims=True))
  softmax /= softmax.sum(-1, keepdims=True)
  expected = (softmax - np.eye(NUM_CLASSES)[labels]).mean(0)
  np.testing.assert_allclose(np.asarray(grads['head']['bias'][...]), expected,
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize('name', ['small', 'medium', 'deep'])
def test_reference_block_trains_in_bfloat16(name):
  """The search network of each reference block, in bfloat16: finite, falling loss.

  The real train step (``Trainer.update``: bfloat16 inputs, forward, backward, Adam) with
  8 filters, N = 1, 16x16 images (the template's three stages: 16, 8, 4 pixels), Adam at
  1e-2 (the recipe's 1e-3 only learns more slowly) for 30 steps over 4 fixed batches of 32
  easy images, without augmentation so that the losses are deterministic. A NaN anywhere
  fails the finiteness check; a step that does not learn (a learning rate of 0, say)
  keeps the mean loss where it started and fails the fall. The deep block, the slowest
  learner, falls by 0.76 here (0.42-0.86 over model seeds 0-3).
  """
  batch, num_steps, size = 32, 30, 16
  model = models.build_network(REFERENCE[name], _model_config(),
                               num_classes=NUM_CLASSES, in_channels=3, dtype=jnp.bfloat16)
  trainer = steps.Trainer(model, optax.adam(1e-2), data_lib.make_mesh(), jnp.bfloat16,
                          augment=lambda rng, images: images)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(trainer.state['params']))
  images, labels = _learnable_images(4 * batch, size)
  mean = images.reshape(-1, 3).mean(0).astype(np.float32)
  std = images.reshape(-1, 3).std(0).astype(np.float32)
  update = jax.jit(trainer.update)

  # The step really computes in bfloat16: its convolutions take bfloat16 operands.
  rng = jax.random.key(0)
  jaxpr = jax.make_jaxpr(trainer.update)(trainer.state, images[:batch], labels[:batch], rng,
                                         mean, std)
  conv_dtypes = {v.aval.dtype for eqn in _equations(jaxpr.jaxpr)
                 if eqn.primitive.name == 'conv_general_dilated' for v in eqn.invars}
  assert conv_dtypes == {jnp.dtype(jnp.bfloat16)}

  state, losses = trainer.state, []
  for step in range(num_steps):
    start = step % 4 * batch
    state, loss = update(state, images[start:start + batch], labels[start:start + batch],
                         jax.random.fold_in(rng, step), mean, std)
    losses.append(float(loss))
  losses = np.array(losses)
  assert np.all(np.isfinite(losses)), losses
  assert losses[-8:].mean() < losses[:4].mean() - 0.3, losses

  # The evaluation-mode network (running statistics) gives finite logits too.
  logits = nnx.merge(trainer.eval_graph, state['params'], state['batch_stats'])(
      data_lib.normalize(images[:batch], mean, std, jnp.bfloat16))
  assert logits.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(logits)))


def _equations(jaxpr):
  """Every equation of a jaxpr, those of its sub-jaxprs (pjit, custom_vjp...) included."""
  for eqn in jaxpr.eqns:
    yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _equations(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _equations(sub)
