"""mode='train': a found block trained in full, checkpointed, resumed, loaded, used."""

import json
import math
import os
import re
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from tensorboard.backend.event_processing import event_accumulator

from blockqnn_jax import check_config
from blockqnn_jax import data
from blockqnn_jax import train_final
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.training import inference
from blockqnn_jax.training import loop
from blockqnn_jax.training import runners
from configs import cifar10
from configs import quickstart
from tests.common import SMALL
from tests.common import workdir_files
from tests.interrupt import Crash
from tests.interrupt import interrupt_then_resume
from tests.interrupt import mid_epoch_interrupt_then_resume
from tests.interrupt import started_epochs

# SMALL with a concat in place of its add.
OTHER = '[[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 6, 0, 1, 2], [4, 7, 0, 0, 0]]'


def digits_train_config():
  config = quickstart.get_config()
  config.mode = 'train'
  config.block = SMALL
  config.train.update(filters=8, repeats=1, epochs=3, batch_size=64, lr_steps=(2,),
                      cutout=4)
  return config


def final_params(workdir):
  model, _ = inference.load_model(str(workdir))
  return jax.tree.leaves(jax.tree.map(np.asarray, model))


def recount_accuracy(workdir, images, labels) -> float:
  """The trained network's accuracy, counted here: batches of 1,000 through a jitted
  forward pass (``predict`` on all 10,000 CIFAR-10 test images at once is slow)."""
  model, summary = inference.load_model(str(workdir))
  graph, state = nnx.split(model)
  mean, std = np.float32(summary['mean']), np.float32(summary['std'])

  @jax.jit
  def predict(state, batch):
    logits = nnx.merge(graph, state)(data.normalize(batch, mean, std, jnp.float32))
    return jnp.argmax(logits, -1)

  predictions = np.concatenate([np.asarray(predict(state, images[i:i + 1000]))
                                for i in range(0, len(images), 1000)])
  return float(np.mean(predictions == labels))


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
  """The digits run from start to end: (summary, workdir)."""
  workdir = tmp_path_factory.mktemp('whole')
  return train_final.train_and_evaluate(digits_train_config(), str(workdir)), workdir


def test_an_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch,
                                                          uninterrupted):
  whole, whole_dir = uninterrupted
  resumed, saves = interrupt_then_resume(train_final.train_and_evaluate,
                                         digits_train_config(), tmp_path, monkeypatch)
  assert saves == [whole['history'][0]['epoch'] * 23]  # 1,500 digits / 64
  assert resumed['test_accuracy'] == whole['test_accuracy'] > 0.3
  for a, b in zip(final_params(tmp_path), final_params(whole_dir)):
    np.testing.assert_array_equal(a, b)


def test_a_run_killed_mid_epoch_resumes_there_to_the_same_parameters(tmp_path, monkeypatch,
                                                                     uninterrupted):
  whole, whole_dir = uninterrupted
  run = mid_epoch_interrupt_then_resume(
      train_final.train_and_evaluate, digits_train_config(), tmp_path, monkeypatch,
      runners.InMemoryRunner, crash_after=23 + 9)
  steps_per_epoch = run['steps_per_epoch']
  assert steps_per_epoch == 23
  # It died right after a checkpoint taken inside the second epoch ...
  crashed = run['saved'][-1]
  epoch, step = divmod(crashed, steps_per_epoch)
  assert epoch == 1 and 0 < step < steps_per_epoch, run['saved']
  # ... and the rerun went on from that step: every remaining step once, none again.
  assert run['starts'] == [(1, step), (2, 0)]
  assert run['steps'] == list(range(crashed, 3 * steps_per_epoch))
  resumed = run['summary']
  assert resumed['test_accuracy'] == whole['test_accuracy']
  assert resumed['history'] == whole['history']
  for a, b in zip(final_params(tmp_path), final_params(whole_dir)):
    np.testing.assert_array_equal(a, b)


def test_the_trained_model_loads_and_predicts(tmp_path):
  config = digits_train_config()
  config.train.epochs = 2
  summary = train_final.train_and_evaluate(config, str(tmp_path))
  dataset = data.load_dataset(config)
  predictions = inference.predict(str(tmp_path), dataset.test_images)
  accuracy = float(np.mean(predictions == dataset.test_labels))
  assert accuracy == pytest.approx(summary['test_accuracy'], abs=1e-6)
  assert (tmp_path / 'final.json').exists()
  assert [h['epoch'] for h in json.loads((tmp_path / 'final.json').read_text())['history']
          ] == [1, 2]


@pytest.mark.parametrize('block, message', [
    ('', "config.block='' is not allowed: the block to train"),
    ('/no/such/file.json', 'no block file at /no/such/file.json'),
    ('[[1, 1, 4, 0, 0], [2, 7, 0, 0, 0]]', 'kernel 4 not allowed for conv'),
])
def test_a_bad_block_fails_at_start_up(block, message):
  config = digits_train_config()
  config.block = block
  with pytest.raises(check_config.ConfigError, match=message):
    check_config.check_config(config)


def test_train_mode_on_cifar10_resumes_to_the_same_parameters(tmp_path, monkeypatch,
                                                              cifar10_data_dir):
  config = cifar10.get_config('smoke')
  config.data_dir = str(cifar10_data_dir)
  config.mode = 'train'
  config.block = SMALL
  config.max_train_examples = 512
  config.train.eval_every_epochs = 2
  check_config.check_config(config)
  whole = train_final.train_and_evaluate(config, str(tmp_path / 'whole'))
  assert whole['epochs'] == 2
  test = data.load_dataset(config)
  assert len(test.test_labels) == 10_000
  assert whole['test_accuracy'] == pytest.approx(  # 1e-6: float32; a near tie may flip
      recount_accuracy(tmp_path / 'whole', test.test_images, test.test_labels), abs=2e-4)
  assert os.listdir(tmp_path / 'whole' / 'checkpoints')
  parts, _ = interrupt_then_resume(train_final.train_and_evaluate, config,
                                   tmp_path / 'parts', monkeypatch)
  assert parts['test_accuracy'] == whole['test_accuracy']
  for a, b in zip(final_params(tmp_path / 'parts'), final_params(tmp_path / 'whole')):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('field, value, change', [
    ('block', OTHER, f'block: {SMALL!r} -> {OTHER!r}'),
    ('dataset', 'synthetic', "dataset: 'digits' -> 'synthetic'"),
    ('train.learning_rate', 0.05, 'train.learning_rate: 0.1 -> 0.05'),
    ('train.epochs', 2, 'train.epochs: 3 -> 2'),
], ids=['block', 'dataset', 'learning_rate', 'fewer_epochs'])
def test_a_rerun_with_another_config_is_refused_and_changes_nothing(
    tmp_path, uninterrupted, field, value, change):
  workdir = tmp_path / 'work'
  shutil.copytree(uninterrupted[1], workdir)
  before = workdir_files(workdir)
  assert 'config.json' in before
  config = digits_train_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(workdir_lib.ConfigMismatchError) as error:
    train_final.train_and_evaluate(config, str(workdir))
  assert str(error.value) == (
      f'{workdir} holds a mode=train run made with another config ({change}); use a new '
      '--workdir, or --allow_config_change to continue it anyway')
  assert workdir_files(workdir) == before


def test_more_epochs_extend_the_run_and_the_flag_allows_another_config(
    tmp_path, uninterrupted, monkeypatch):
  whole, whole_dir = uninterrupted
  started = started_epochs(monkeypatch, runners.InMemoryRunner)
  workdir = tmp_path / 'work'
  shutil.copytree(whole_dir, workdir)
  # The same block from a file, with more epochs, another checkpoint interval and another
  # transfer recipe: the run goes on from its third epoch.
  block_file = tmp_path / 'best_block.json'
  block_file.write_text(json.dumps({'codes': json.loads(SMALL)}))
  longer = digits_train_config()
  longer.block = str(block_file)
  longer.train.update(epochs=4, checkpoint_every_seconds=60)
  longer.transfer.update(workers=7, epochs=5)
  extended = train_final.train_and_evaluate(longer, str(workdir))
  assert started == [3]  # the fourth epoch alone is trained
  assert extended['history'][:3] == whole['history']
  assert [h['epoch'] for h in extended['history']] == [1, 2, 3, 4]
  recorded = json.loads((workdir / 'config.json').read_text())
  assert recorded['train.epochs'] == 4 and recorded['block'] == SMALL
  # Another learning rate is refused, and continues (nothing left to train) with the flag.
  longer.train.learning_rate = 0.05
  with pytest.raises(workdir_lib.ConfigMismatchError,
                     match=re.escape('train.learning_rate: 0.1 -> 0.05')):
    train_final.train_and_evaluate(longer, str(workdir))
  assert train_final.train_and_evaluate(longer, str(workdir), allow_config_change=True)[
      'history'] == extended['history']
  assert json.loads((workdir / 'config.json').read_text())['train.learning_rate'] == 0.05
  # Another batch size moves every step's place in the run: refused even with the flag.
  longer.train.batch_size = 32
  with pytest.raises(workdir_lib.ConfigMismatchError, match='steps per epoch'):
    train_final.train_and_evaluate(longer, str(workdir), allow_config_change=True)


def test_a_checkpoint_is_due_when_process_0_says_so(monkeypatch):
  """Every process saves when process 0's clock says so, whatever its own clock says:
  Orbax's save is collective (the two-process run in test_multihost.py shows it)."""
  own_clock, process_0 = [], {'due': 1}

  def broadcast_one_to_all(value):
    own_clock.append(int(value))
    return np.int32(process_0['due'])

  monkeypatch.setattr(loop.multihost_utils, 'broadcast_one_to_all',
                      broadcast_one_to_all)
  not_yet, overdue = (loop.CheckpointTimer(interval) for interval in (3600, -1))
  assert not_yet.due() and own_clock == [0]
  process_0['due'] = 0
  assert not overdue.due() and own_clock == [0, 1]
  # Asked every 10 steps only: between them no broadcast, so no step waits for the host.
  process_0['due'] = 1
  every_10 = loop.CheckpointTimer(-1, check_every=10)
  assert [every_10.due(step) for step in range(1, 21)] == ([False] * 9 + [True]) * 2
  assert own_clock == [0, 1, 1, 1]


def test_an_extended_cosine_restarts_and_load_model_loads_the_weights_final_json_scored(
    tmp_path, monkeypatch):
  """2 cosine epochs extended to 4: the added epochs get a cosine of their own, from the
  peak. The extension killed after its first epoch's checkpoint: ``final.json`` still
  scores epoch 2, and ``load_model`` loads epoch 2's weights, not the newer ones; once
  epoch 2's checkpoint is gone (the next save removes it: two are kept), it refuses in one
  line. The rerun ends the extension on the same schedule. And TensorBoard's curves hold
  every epoch a checkpoint counts as done, read back from the files as it is saved: a
  process killed right after keeps them."""
  config = digits_train_config()
  config.train.update(schedule='cosine', epochs=2)
  save, logged = ocp.CheckpointManager.save, []

  def read_events_then_save(self, *args, **kwargs):
    events = event_accumulator.EventAccumulator(str(tmp_path))
    events.Reload()
    logged.append([(e.step, e.value) for e in events.Scalars('train/loss')]
                  if 'train/loss' in events.Tags()['scalars'] else [])
    return save(self, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', read_events_then_save)
  first = train_final.train_and_evaluate(config, str(tmp_path))
  losses = [(h['epoch'], pytest.approx(h['loss'])) for h in first['history']]
  assert logged == [losses[:1], losses]
  scored = final_params(tmp_path)
  config.train.epochs = 4

  def save_then_die(self, step, *args, **kwargs):
    save(self, step, *args, **kwargs)
    raise Crash()

  monkeypatch.setattr(ocp.CheckpointManager, 'save', save_then_die)
  with pytest.raises(Crash):
    train_final.train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['46', '69']  # 23 steps an epoch
  for a, b in zip(final_params(tmp_path), scored):
    np.testing.assert_array_equal(a, b)
  shutil.rmtree(tmp_path / 'checkpoints' / '46')
  with pytest.raises(ValueError) as error:
    inference.load_model(str(tmp_path))
  assert str(error.value) == (
      f'{tmp_path}/final.json scored the weights of step 46, but {tmp_path}/checkpoints '
      'keeps steps [69] only: a rerun that extends the run stopped before the end; rerun '
      'it to the end to load its model')
  extended = train_final.train_and_evaluate(config, str(tmp_path))
  assert extended['history'][:2] == first['history']
  cycle = [0.05 * (1 + math.cos(math.pi * step / 46)) for step in (22, 45)]  # epoch ends
  assert [h['learning_rate'] for h in extended['history']] == pytest.approx(cycle * 2,
                                                                           abs=1e-7)
  assert inference.load_model(str(tmp_path))[1]['step'] == 92
  unscored = json.loads((tmp_path / 'final.json').read_text())
  del unscored['step']  # as an earlier version wrote it
  (tmp_path / 'final.json').write_text(json.dumps(unscored))
  with pytest.raises(ValueError) as error:
    inference.load_model(str(tmp_path))
  assert str(error.value) == (
      f'{tmp_path}/final.json does not say which checkpoint it scored (an earlier version '
      'wrote it): rerun the training command to rewrite it')
