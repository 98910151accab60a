"""The final-training recipes: learning rate, weight-decay mask, Nesterov, label smoothing,
the CIFAR recipe unchanged, and their config checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from blockqnn_jax import check_config
from blockqnn_jax import data as data_lib
from blockqnn_jax import models
from blockqnn_jax import nsc
from blockqnn_jax.training import recipes
from blockqnn_jax.training import steps
from configs import cifar10
from configs import default
from tests import common
STEPS_PER_EPOCH = 10


def small_params():
  """The parameters of a small ImageNet-template network, every one set to 1 (so weight
  decay moves every parameter it applies to)."""
  model_config = default.get_config().model
  model_config.update(filters=4, repeats=1, template='imagenet')
  model = models.build_network(nsc.Block.from_json(common.SMALL), model_config, num_classes=3,
                               in_channels=3)
  return jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))


def updates_over_steps(tx, params, steps=3):
  """The updates of ``tx`` over a few steps of fixed random gradients."""
  leaves, tree = jax.tree.flatten(params)
  rng = np.random.default_rng(0)
  state, out = tx.init(params), []
  for _ in range(steps):
    grads = jax.tree.unflatten(tree, [jnp.asarray(rng.normal(size=x.shape), jnp.float32)
                                      for x in leaves])
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    out.append(jax.tree.leaves(updates))
  return out


def test_the_cifar_recipe_is_the_one_of_before():
  """mode=train's defaults: the old schedule and the old optimizer, bit for bit."""
  recipe = default.get_config().train
  steps = jnp.arange(recipe.epochs * STEPS_PER_EPOCH + 1)
  old_schedule = optax.piecewise_constant_schedule(
      0.1, {150 * STEPS_PER_EPOCH: 0.1, 225 * STEPS_PER_EPOCH: 0.1})
  schedule = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH)
  np.testing.assert_array_equal(schedule(steps), old_schedule(steps))
  old_tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(old_schedule, momentum=0.9))
  params = small_params()
  for new, old in zip(updates_over_steps(recipes.sgd_optimizer(recipe, schedule), params),
                      updates_over_steps(old_tx, params)):
    for a, b in zip(new, old):
      np.testing.assert_array_equal(a, b)
  recipe.schedule = 'cosine'
  np.testing.assert_array_equal(
      recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH)(steps),
      optax.cosine_decay_schedule(0.1, recipe.epochs * STEPS_PER_EPOCH)(steps))


@pytest.mark.parametrize('batch_size, peak', [(256, 0.1), (512, 0.2), (64, 0.025)])
def test_imagenet_warm_up_then_cosine_at_the_linearly_scaled_rate(batch_size, peak):
  recipe = default.get_config().transfer
  recipe.batch_size = batch_size
  schedule = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH)
  warmup, total = 5 * STEPS_PER_EPOCH, 90 * STEPS_PER_EPOCH
  assert float(schedule(0)) == 0.0
  assert float(schedule(warmup // 2)) == pytest.approx(peak / 2)
  assert float(schedule(warmup)) == pytest.approx(peak)
  assert float(schedule((warmup + total) // 2)) == pytest.approx(peak / 2)  # cosine's middle
  assert float(schedule(total)) == pytest.approx(0.0, abs=1e-9)


def test_imagenet_steps_schedule_steps_at_its_epochs_after_the_warm_up():
  recipe = default.get_config().transfer
  recipe.schedule = 'steps'
  schedule = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH)
  expected = {5 * STEPS_PER_EPOCH: 0.1, 30 * STEPS_PER_EPOCH - 1: 0.1,
              30 * STEPS_PER_EPOCH: 0.01, 60 * STEPS_PER_EPOCH: 0.001,
              80 * STEPS_PER_EPOCH: 0.0001}
  for step, rate in expected.items():
    assert float(schedule(step)) == pytest.approx(rate), step


def test_an_extended_cosine_is_the_planned_one_then_a_restart_over_the_added_epochs():
  """90 epochs extended to 100: the first 90 follow the 90-epoch recipe to its end (about
  0, not the 0.0027 of a cosine over 100), then a new cosine runs from the peak to 0 over
  the 10 added epochs; 1 -> 2 epochs restarts at the peak too, not at half of it."""
  recipe = default.get_config().transfer  # warm-up 5 epochs, cosine, peak 0.1
  first = jnp.arange(90 * STEPS_PER_EPOCH)
  planned = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH)
  recipe.epochs = 100
  extended = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH, (90, 100))
  np.testing.assert_array_equal(extended(first), planned(first))
  added = np.arange(10 * STEPS_PER_EPOCH + 1)
  np.testing.assert_allclose(extended(90 * STEPS_PER_EPOCH + added),
                             0.05 * (1 + np.cos(np.pi * added / added[-1])), atol=1e-7)
  recipe.update(epochs=2, warmup_epochs=0)
  twice = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH, (1, 2))
  np.testing.assert_allclose(twice(jnp.arange(2 * STEPS_PER_EPOCH)),
                             np.tile(0.05 * (1 + np.cos(np.pi * np.arange(10) / 10)), 2),
                             rtol=1e-6)


def test_an_extended_steps_schedule_is_the_longer_recipe():
  recipe = default.get_config().train  # x0.1 at epochs 150 and 225
  recipe.epochs = 100
  steps = jnp.arange(300 * STEPS_PER_EPOCH + 1)
  extended = recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH, (100, 200, 300))
  recipe.epochs = 300
  np.testing.assert_array_equal(extended(steps),
                                recipes.learning_rate_schedule(recipe, STEPS_PER_EPOCH)(steps))


def decayed(recipe) -> dict[str, bool]:
  """For each parameter ('stem/norm/scale', ...): whether one step of zero gradients at a
  learning rate of 1 moved it, i.e. whether weight decay applies to it."""
  params = small_params()
  tx = recipes.sgd_optimizer(recipe, optax.constant_schedule(1.0))
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  return {'/'.join(str(getattr(key, 'key', '')) for key in path).strip('/'): bool(
      jnp.any(update != 0)) for path, update in jax.tree_util.tree_leaves_with_path(updates)}


def test_imagenet_weight_decay_spares_batchnorm_and_biases():
  moved = decayed(default.get_config().transfer)
  kernels = {name for name in moved if name.endswith('kernel')}
  assert {'stem/conv/kernel', 'head/kernel'} <= kernels
  assert {'stem/norm/scale', 'stem/norm/bias', 'head/bias'} <= set(moved) - kernels
  assert {name for name, was_moved in moved.items() if was_moved} == kernels


def test_cifar_weight_decay_applies_to_every_parameter():
  assert all(decayed(default.get_config().train).values())


def test_imagenet_momentum_is_nesterov():
  recipe = default.get_config().transfer
  recipe.weight_decay = 0.0
  schedule = optax.constant_schedule(0.1)
  params = small_params()
  ours = updates_over_steps(recipes.sgd_optimizer(recipe, schedule), params)
  nesterov = updates_over_steps(optax.sgd(schedule, momentum=0.9, nesterov=True), params)
  plain = updates_over_steps(optax.sgd(schedule, momentum=0.9, nesterov=False), params)
  for a, b in zip(ours[-1], nesterov[-1]):
    np.testing.assert_allclose(a, b, rtol=1e-6)
  assert not np.allclose(ours[-1][0], plain[-1][0])


def test_label_smoothing_gives_the_hand_computed_loss():
  probabilities = np.array([0.6, 0.2, 0.1, 0.1])
  logits, labels = jnp.log(jnp.asarray([probabilities])), jnp.array([0])
  targets = np.full(4, 0.1 / 4) + np.array([0.9, 0, 0, 0])  # 0.925, 0.025, 0.025, 0.025
  assert float(steps.cross_entropy(logits, labels)) == pytest.approx(-math.log(0.6))
  assert float(steps.cross_entropy(logits, labels, 0.1)) == pytest.approx(
      -np.sum(targets * np.log(probabilities)), rel=1e-6)


@pytest.mark.parametrize('label_smoothing', [0.0, 0.1])
def test_the_train_step_minimises_the_smoothed_loss(label_smoothing, small_block):
  """The loss of ``Trainer.update`` is the cross-entropy with the trainer's smoothing."""
  config = default.get_config()
  config.model.update(filters=4, repeats=1)
  model = models.build_network(small_block, config.model, num_classes=10, in_channels=3)
  mesh = data_lib.make_mesh()
  trainer = steps.Trainer(model, optax.sgd(0.1), mesh, jnp.float32,
                          augment=lambda rng, images: images, label_smoothing=label_smoothing)
  images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
  labels = jnp.arange(8) % 10
  mean, std = jnp.full(3, 120.0), jnp.full(3, 60.0)
  state = trainer.state
  logits = nnx.merge(trainer.train_graph, state['params'], state['batch_stats'], copy=True)(
      data_lib.normalize(jnp.asarray(images), mean, std, jnp.float32))
  _, loss = trainer.update(state, jnp.asarray(images), labels, jax.random.key(0), mean, std)
  assert float(loss) == pytest.approx(
      float(steps.cross_entropy(logits, labels, label_smoothing)), rel=1e-5)
  assert float(steps.cross_entropy(logits, labels, 0.1)) != pytest.approx(
      float(steps.cross_entropy(logits, labels)), rel=1e-5)


def kernels_only(params):
  """The weight-decay mask of 'no bias decay', written here: True on kernels only."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: [key.key for key in path if hasattr(key, 'key')][-1] == 'kernel',
      params)


def recipe_by_hand(recipe_name: str) -> tuple[list[float], optax.GradientTransformation]:
  """The learning rates of the first 7 steps (1 step per epoch) and the optimizer of
  ``default.get_config()``'s recipe, from its published numbers, not from training.recipes."""
  if recipe_name == 'transfer':  # 5 warm-up steps from 0 to 0.1, then a cosine over 85
    rates = [0.1 * step / 5 for step in range(5)] + [
        0.1 * (1 + math.cos(math.pi * step / 85)) / 2 for step in range(2)]
    decay = optax.add_decayed_weights(1e-4, mask=kernels_only)
    nesterov = True
  else:  # 0.1 until epoch 150, decay on every parameter, plain momentum
    rates, decay, nesterov = [0.1] * 7, optax.add_decayed_weights(5e-4), False
  schedule = lambda step: jnp.asarray(rates, jnp.float32)[step]
  return rates, optax.chain(decay, optax.sgd(schedule, momentum=0.9, nesterov=nesterov))


@pytest.mark.parametrize('recipe_name, smoothing', [('transfer', 0.1), ('train', 0.0)])
def test_the_recipe_blocks_reach_the_trainer(recipe_name, smoothing, small_block):
  """The trainer built with a recipe has that recipe's learning rates, weight-decay mask,
  momentum and label smoothing: another recipe's optimizer or schedule fails this."""
  config = default.get_config()
  recipe = config[recipe_name]
  recipe.update(filters=4, repeats=1)
  model_config = recipes.final_model_config(config, recipe)
  model_config.template = 'imagenet'  # so that small_params fits its masks
  _, trainer, schedule = recipes.build_trainer(
      config, recipe, small_block, model_config, data_lib.make_mesh(),
      num_classes=3, channels=3, steps_per_epoch=1)
  rates, expected_tx = recipe_by_hand(recipe_name)
  np.testing.assert_allclose([float(schedule(step)) for step in range(7)], rates, rtol=1e-6)
  params = small_params()
  for ours, expected in zip(updates_over_steps(trainer.tx, params, steps=7),
                            updates_over_steps(expected_tx, params, steps=7)):
    for a, b in zip(ours, expected):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
  assert trainer.label_smoothing == smoothing


@pytest.mark.parametrize('mode, field, value, message', [
    ('transfer_imagenet', 'transfer.schedule', 'linear',
     "config.transfer.schedule='linear' is not allowed: one of ('steps', 'cosine')"),
    ('transfer_imagenet', 'transfer.warmup_epochs', -1,
     'config.transfer.warmup_epochs=-1 is not allowed: an integer >= 0'),
    ('transfer_imagenet', 'transfer.warmup_epochs', 2,
     'config.transfer.warmup_epochs=2 is not allowed: fewer than the 2 epochs'),
    ('transfer_imagenet', 'transfer.label_smoothing', 1.0,
     'config.transfer.label_smoothing=1.0 is not allowed: a number in [0, 1)'),
    ('transfer_imagenet', 'transfer.label_smoothing', -0.1,
     'config.transfer.label_smoothing=-0.1 is not allowed: a number in [0, 1)'),
    ('transfer_imagenet', 'transfer.learning_rate_per_256', -0.1,
     'config.transfer.learning_rate_per_256=-0.1 is not allowed: a number in [0.0'),
    ('transfer_imagenet', 'transfer.batch_size', 6,
     'config.transfer.batch_size=6 is not allowed: a multiple of the 4 devices'),
    ('transfer_imagenet', 'transfer.nesterov', None,
     'config.transfer.nesterov=None is not allowed: True or False'),
    ('transfer_imagenet', 'transfer.decay_norm_and_bias', None,
     'config.transfer.decay_norm_and_bias=None is not allowed: True or False'),
    ('transfer_imagenet', 'transfer.lr_steps', (1, 2),
     'config.transfer.lr_steps=(1, 2) is not allowed: epochs after the warm-up (integers '
     '>= 2)'),
    ('train', 'train.label_smoothing', 1.5,
     'config.train.label_smoothing=1.5 is not allowed: a number in [0, 1)'),
    ('train', 'train.batch_size', 6,
     'config.train.batch_size=6 is not allowed: a multiple of the 4 devices'),
])
def test_a_recipe_mistake_is_one_clear_line(mode, field, value, message):
  config = cifar10.get_config('smoke')
  config.update(mode=mode, block=common.SMALL)
  config.update_from_flattened_dict({field: value})
  with pytest.raises(check_config.ConfigError) as error:
    check_config.check_config(config)
  assert message in str(error.value)
  assert '\n' not in str(error.value)
