"""The training steps and a search child: data parallelism, real learning, failures, the
real search."""

import json
import os
import pwd
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from tensorboard.backend.event_processing import event_accumulator

from blockqnn_jax import child
from blockqnn_jax import compilation
from blockqnn_jax import data as data_lib
from blockqnn_jax import models
from blockqnn_jax import search
from blockqnn_jax import train_final
from blockqnn_jax.training import runners
from blockqnn_jax.training import steps
from configs import default
from configs import quickstart
from tests.common import ROOT
from tests.common import SMALL


def digits_config(**overrides):
  """The quickstart's children: they train in seconds on scikit-learn's bundled digits."""
  config = quickstart.get_config()
  config.update(overrides)
  return config


def sgd_step(mesh, config, block):
  """One SGD step (lr 1) of ``block``'s network, the trainer's own compiled step on the
  epoch's first batch over `mesh`: returns the loss, the gradients, the batch order and
  the per-device FLOPs."""
  data = data_lib.device_data(config, mesh)
  model = models.build_network(block, config.model, num_classes=data.num_classes,
                               in_channels=1)
  trainer = steps.Trainer(model, optax.sgd(1.0), mesh, np.float32)
  runner = runners.InMemoryRunner(trainer, data, config.batch_size)
  rng = jax.random.key(0)
  order = runner.epoch_order(rng)
  compiled = runner._step.lower(trainer.state, data, order, 0, rng).compile()
  cost = compiled.cost_analysis()
  flops = (cost[0] if isinstance(cost, (list, tuple)) else cost)['flops']
  before = jax.tree.map(np.asarray, trainer.state['params'])
  state, loss = compiled(trainer.state, data, order, 0, rng)
  grads = jax.tree.map(lambda b, a: b - np.asarray(a), before, state['params'])
  return float(loss), grads, order, flops


def test_one_and_four_devices_give_the_same_loss_and_gradients(small_block):
  assert jax.device_count() == 4, 'conftest.py asks XLA for four CPU devices'
  config = digits_config()
  loss1, grads1, order1, flops1 = sgd_step(data_lib.make_mesh(jax.devices()[:1]), config,
                                           small_block)
  loss4, grads4, order4, flops4 = sgd_step(data_lib.make_mesh(), config, small_block)
  np.testing.assert_array_equal(order1, order4)
  # The batch is split over the devices, not replicated on each: every step's indices are
  # sharded four ways, and each device computes a quarter of the step (forward and backward).
  assert order4.sharding.spec == P(None, 'data')
  assert {s.data.shape for s in order4.addressable_shards} == {
      (order4.shape[0], config.batch_size // 4)}
  assert flops1 / flops4 == pytest.approx(4, rel=0.1), (flops1, flops4)
  # ... and the gradient is still the global batch's.
  assert loss1 == pytest.approx(loss4, rel=1e-5)
  for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads4)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_the_device_side_epoch_loop_trains_as_the_host_loop_does(small_block):
  """epoch_loop='device' (one lax.scan per epoch) takes the same steps on the same batches
  with the same randomness as the host's loop: the same losses and parameters."""
  config = digits_config(max_train_examples=256, batch_size=64)
  mesh = data_lib.make_mesh()
  data = data_lib.device_data(config, mesh)
  trained = {}
  for loop in runners.EPOCH_LOOPS:
    model = models.build_network(small_block, config.model, num_classes=data.num_classes,
                                 in_channels=1, seed=0)
    trainer = steps.Trainer(model, optax.adam(1e-2), mesh, np.float32)
    runner = runners.InMemoryRunner(trainer, data, config.batch_size, epoch_loop=loop)
    runner.compile(jax.random.key(0))
    losses = [runner.train_epoch(jax.random.key(epoch)) for epoch in range(2)]
    trained[loop] = (np.concatenate(losses), jax.tree.map(np.asarray, trainer.state))
  (host_losses, host_state), (device_losses, device_state) = trained.values()
  assert host_losses.shape == (2 * 256 // 64,) and host_losses[-1] < host_losses[0]
  np.testing.assert_allclose(device_losses, host_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(host_state), jax.tree.leaves(device_state)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="epoch_loop='scan' is unknown"):
    runners.InMemoryRunner(trainer, data, 64, epoch_loop='scan')


def test_a_search_child_runs_the_epoch_loop_its_config_names(monkeypatch, small_block):
  epochs_on_device = []
  scanned_epoch = runners.InMemoryRunner._scanned_epoch

  def watched(self, *args):
    epochs_on_device.append(self.steps_per_epoch)  # traced once, when compiled
    return scanned_epoch(self, *args)

  monkeypatch.setattr(runners.InMemoryRunner, '_scanned_epoch', watched)
  config = digits_config(max_train_examples=256, batch_size=64, epoch_loop='device')
  assert child.evaluate_block(small_block, config)['status'] == 'ok'
  assert epochs_on_device == [4]
  assert child.evaluate_block(small_block, digits_config(max_train_examples=256,
                                                         batch_size=64))['status'] == 'ok'
  assert epochs_on_device == [4]  # the default, 'host', never builds the scan


def test_evaluate_block_reports_scores_costs_and_times(small_block):
  result = child.evaluate_block(small_block, digits_config())
  assert result['status'] == 'ok', result
  for key in ('accuracy', 'flops', 'params', 'train_seconds', 'compile_seconds'):
    assert key in result
  assert result['accuracy'] > 0.3  # ten digit classes: chance is 0.1
  assert result['epochs'] == 2
  assert 'reward' not in result  # the search computes it, once (test_search.py)


def test_validation_accuracy_divides_by_the_real_images_not_the_padded_batches(small_block):
  """300 validation digits in batches of 64: the last batch is 20 padding images. A head
  that always answers 3, and labels 3 on 250 of them, give exactly 250 / 300 (dividing by
  the 320 padded slots would give 0.78). The padding is labelled 3 too, so counting it
  as correct would give 0.90."""
  config = digits_config()
  mesh = data_lib.make_mesh()
  data = data_lib.device_data(config, mesh)
  assert len(data.eval_labels) == 320 and int(data.eval_mask.sum()) == 300
  model = models.build_network(small_block, config.model, num_classes=data.num_classes,
                               in_channels=1)
  model.head.kernel[...] = jnp.zeros_like(model.head.kernel[...])
  model.head.bias[...] = 10.0 * jax.nn.one_hot(3, data.num_classes)
  slot = np.arange(320)
  labels = np.where((slot < 250) | (slot >= 300), 3, 4).astype(np.int32)
  data = data.replace(eval_labels=jax.device_put(labels, data.eval_labels.sharding))
  trainer = steps.Trainer(model, optax.sgd(0.0), mesh, np.float32)
  runner = runners.InMemoryRunner(trainer, data, config.batch_size)
  assert runner.accuracy() == pytest.approx(250 / 300)
  assert runner.evaluate() == {'validation_accuracy': pytest.approx(250 / 300)}


def test_children_compile_into_the_test_sessions_cache_not_the_users(small_block):
  """conftest.py points HOME at a temporary directory: the default cache directory, in
  this process and in a subprocess, is not under the user's home."""
  user_home = pwd.getpwuid(os.getuid()).pw_dir
  assert child.evaluate_block(small_block, digits_config(max_train_examples=64))['status'] == 'ok'
  assert compilation._configured_dir and os.listdir(compilation._configured_dir)
  expand = f'import os; print(os.path.expanduser({digits_config().compilation_cache_dir!r}))'
  in_subprocess = subprocess.run([sys.executable, '-c', expand], capture_output=True,
                                 text=True, check=True).stdout.strip()
  for cache in (compilation._configured_dir, in_subprocess):
    assert cache.endswith('jax_cache') and not cache.startswith(user_home + os.sep), cache


def test_patience_stops_a_child_that_no_longer_improves(monkeypatch, small_block):
  # The validation accuracy after each epoch, scripted: the best so far is 0.6 (epoch 4);
  # epochs 5 and 6 do not beat it, though 6 beats 5, so patience 2 stops after epoch 6.
  script = [0.3, 0.5, 0.4, 0.6, 0.55, 0.58, 0.9, 0.9, 0.9]
  calls = []

  def scripted_accuracy(self):
    calls.append(script[len(calls)])
    return calls[-1]

  monkeypatch.setattr(runners.InMemoryRunner, 'accuracy', scripted_accuracy)
  config = digits_config(max_train_examples=256)
  config.early_stop.epochs = 9
  config.early_stop.patience = 2
  result = child.evaluate_block(small_block, config)
  assert result['status'] == 'ok', result
  assert result['epochs'] == 6
  assert result['accuracy'] == 0.58  # the last epoch's, measured once
  assert len(calls) == 6


def test_a_diverging_child_is_reported_failed_not_raised(small_block):
  config = digits_config()
  config.early_stop.learning_rate = 1e30
  result = child.evaluate_block(small_block, config)
  assert result['status'] == 'failed'
  assert 'loss became' in result['reason']
  assert result['accuracy'] == 0.0


def test_an_error_inside_a_child_is_reported_failed(monkeypatch, small_block):
  def broken(*args, **kwargs):
    raise RuntimeError('RESOURCE_EXHAUSTED: Out of memory while trying to allocate')

  monkeypatch.setattr(runners.InMemoryRunner, 'compile', broken)
  result = child.evaluate_block(small_block, digits_config())
  assert result['status'] == 'failed' and result['reason'].startswith('out of memory')


def test_run_search_trains_for_real_without_an_evaluate_fn(tmp_path):
  config = digits_config()
  config.early_stop.epochs = 1
  config.search.epsilon_schedule = ((1.0, 1),)
  config.search.blocks_per_iteration = 2
  config.search.max_layers = 2
  summary = search.run_search(config, str(tmp_path))
  records = [json.loads(l) for l in (tmp_path / 'results.jsonl').read_text().splitlines()]
  assert summary['blocks_sampled'] == len(records) == 2
  assert all(r['status'] == 'ok' and r['train_seconds'] > 0 for r in records)


def test_a_small_block_learns_cifar10(cifar10_data_dir, small_block):
  """Budget: 8 filters, N = 1, 4 epochs over 5,000 training images, 1,000 validation.

  On one CPU device this reached 0.416 (2 epochs: 0.313)."""
  config = default.get_config()
  config.data_dir = str(cifar10_data_dir)
  config.max_train_examples = 5000
  config.validation_examples = 1000
  config.batch_size = 128
  config.early_stop.epochs = 4
  config.model.filters = 8
  config.model.repeats = 1
  result = child.evaluate_block(small_block, config)
  assert result['status'] == 'ok', result
  assert result['accuracy'] > 0.3, result  # chance is 0.1


def test_no_epoch_shuffles_or_augments_with_a_key_the_network_was_initialised_with(
    monkeypatch, small_block, tmp_path):
  """The seed drives the network's initial weights (nnx.Rngs(seed)) and every epoch's
  shuffle and augmentation: in a search child and in a final training, no epoch key given
  to the runner is one of the keys the network's initialisation drew (epoch 0's key once
  was its first). The runner's steps are stood in for: the keys are the point, not the
  training."""
  initial, epochs = [], []
  draw = nnx.RngStream.__call__

  def key_bytes(key) -> bytes:
    return np.asarray(jax.random.key_data(key)).tobytes()

  def recorded_draw(self):
    key = draw(self)
    initial.append(key_bytes(key))
    return key

  def train_epoch(self, rng, should_stop):  # the child's epoch
    epochs.append(key_bytes(rng))
    return np.ones(self.steps_per_epoch)

  def start_epoch(self, epoch, rng, start_step):  # the final training's epoch
    epochs.append(key_bytes(rng))

  monkeypatch.setattr(nnx.RngStream, '__call__', recorded_draw)
  monkeypatch.setattr(runners.InMemoryRunner, 'compile', lambda self, *args: None)
  monkeypatch.setattr(runners.InMemoryRunner, 'train_epoch', train_epoch)
  monkeypatch.setattr(runners.InMemoryRunner, 'accuracy', lambda self: 0.5)
  monkeypatch.setattr(runners.InMemoryRunner, 'start_epoch', start_epoch)
  monkeypatch.setattr(runners.InMemoryRunner, 'step', lambda self, step, rng: jnp.ones(()))
  config = digits_config(max_train_examples=128, batch_size=64)
  assert child.evaluate_block(small_block, config)['status'] == 'ok'
  child_draws = len(initial)
  config.update(mode='train', block=SMALL)
  config.train.update(filters=8, repeats=1, epochs=2, batch_size=64)
  train_final.train_and_evaluate(config, str(tmp_path))
  assert 0 < child_draws < len(initial)  # each network drew its keys
  assert len(epochs) == 4  # two epochs each
  assert not set(initial) & set(epochs)


KILLED_AFTER_AN_ITERATION = """
import os, signal, sys
from blockqnn_jax import summaries
from configs import quickstart
events = summaries.SearchSummaries(sys.argv[1], quickstart.get_config())
for index in range(8):
  events.block({'index': index, 'accuracy': 0.5, 'reward': index / 8, 'cached': True})
events.iteration(1, 1.0, [index / 8 for index in range(8)], 7 / 8)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_an_iteration_s_events_survive_a_kill_right_after_it(tmp_path):
  """A search killed right after an iteration keeps that iteration's TensorBoard events
  (tensorboardX's flush() leaves what is still queued unwritten)."""
  killed = subprocess.run([sys.executable, '-c', KILLED_AFTER_AN_ITERATION, str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True)
  assert killed.returncode == -9, killed.stderr
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert [e.value for e in events.Scalars('block/reward')] == [i / 8 for i in range(8)]
  assert [(e.step, e.value) for e in events.Scalars('iteration/best_so_far')] == [(1, 7 / 8)]
