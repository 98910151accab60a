"""mode='train': a found block trained in full, checkpointed, resumed, loaded, used."""

import json
import os
import pathlib

import jax
import numpy as np
import pytest

from blockqnn_jax import check_config
from blockqnn_jax import data
from blockqnn_jax import train_final
from configs import cifar10
from configs import quickstart
from tests.interrupt import interrupt_then_resume

SMALL = '[[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]]'
CIFAR_DIR = pathlib.Path(
    os.environ.get('TFDS_DATA_DIR') or
    pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'tfds')


def digits_train_config():
  config = quickstart.get_config()
  config.mode = 'train'
  config.block = SMALL
  config.train.update(filters=8, repeats=1, epochs=3, batch_size=64, lr_steps=(2,),
                      cutout=4)
  return config


def final_params(workdir):
  model, _ = train_final.load_model(str(workdir))
  return jax.tree.leaves(jax.tree.map(np.asarray, model))


def test_an_interrupted_run_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  config = digits_train_config()
  uninterrupted = train_final.train_and_evaluate(config, str(tmp_path / 'whole'))
  resumed, saves = interrupt_then_resume(train_final.train_and_evaluate, config,
                                         tmp_path / 'parts', monkeypatch)
  assert saves == [uninterrupted['history'][0]['epoch'] * 23]  # 1,500 digits / 64
  assert resumed['test_accuracy'] == uninterrupted['test_accuracy'] > 0.3
  for a, b in zip(final_params(tmp_path / 'parts'), final_params(tmp_path / 'whole')):
    np.testing.assert_array_equal(a, b)


def test_the_trained_model_loads_and_predicts(tmp_path):
  config = digits_train_config()
  config.train.epochs = 2
  summary = train_final.train_and_evaluate(config, str(tmp_path))
  dataset = data.load_dataset(config)
  predictions = train_final.predict(str(tmp_path), dataset.test_images)
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


@pytest.mark.skipif(not (CIFAR_DIR / 'cifar10').exists(),
                    reason=f'CIFAR-10 is not prepared at {CIFAR_DIR} (see ../shared/data)')
def test_train_mode_on_cifar10_resumes_to_the_same_parameters(tmp_path, monkeypatch):
  config = cifar10.get_config('smoke')
  config.data_dir = str(CIFAR_DIR)
  config.mode = 'train'
  config.block = SMALL
  config.max_train_examples = 512
  config.train.eval_every_epochs = 2
  check_config.check_config(config)
  whole = train_final.train_and_evaluate(config, str(tmp_path / 'whole'))
  assert whole['epochs'] == 2 and 0.0 <= whole['test_accuracy'] <= 1.0
  assert os.listdir(tmp_path / 'whole' / 'checkpoints')
  parts, _ = interrupt_then_resume(train_final.train_and_evaluate, config,
                                   tmp_path / 'parts', monkeypatch)
  assert parts['test_accuracy'] == whole['test_accuracy']
  for a, b in zip(final_params(tmp_path / 'parts'), final_params(tmp_path / 'whole')):
    np.testing.assert_array_equal(a, b)
