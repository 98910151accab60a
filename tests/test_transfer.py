"""mode='transfer_imagenet': the ImageNet template on streamed TFDS data."""

import os
import pathlib

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from blockqnn_jax import check_config
from blockqnn_jax import train
from blockqnn_jax import train_final
from blockqnn_jax import transfer
from configs import cifar10
from tests.interrupt import interrupt_then_resume

SMALL = '[[1, 1, 3, 0, 0], [2, 1, 3, 1, 0], [3, 5, 0, 1, 2], [4, 7, 0, 0, 0]]'
CIFAR_DIR = pathlib.Path(
    os.environ.get('TFDS_DATA_DIR') or
    pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'tfds')


def transfer_config(dataset='imagenet2012'):
  config = cifar10.get_config('smoke')
  config.mode = 'transfer_imagenet'
  config.dataset = dataset
  config.block = SMALL
  config.transfer.image_size = 32
  config.transfer.max_eval_examples = 64
  config.max_train_examples = 128
  config.train.update(batch_size=32, epochs=2, lr_steps=(1,))
  return config


def test_imagenet_mock_data_end_to_end_and_resume(tmp_path, monkeypatch):
  with tfds.testing.mock_data(num_examples=160):
    config = transfer_config()
    check_config.check_config(config)
    whole = transfer.transfer_and_evaluate(config, str(tmp_path / 'whole'))
    parts, _ = interrupt_then_resume(transfer.transfer_and_evaluate, config,
                                     tmp_path / 'parts', monkeypatch)
  assert whole['num_classes'] == 1000 and whole['image_shape'] == [32, 32, 3]
  assert 0 <= whole['top1_accuracy'] <= whole['top5_accuracy'] <= 1
  assert parts['top5_accuracy'] == whole['top5_accuracy']
  model_whole, _ = train_final.load_model(str(tmp_path / 'whole'))
  model_parts, _ = train_final.load_model(str(tmp_path / 'parts'))
  for a, b in zip(jax.tree.leaves(model_whole), jax.tree.leaves(model_parts)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(not (CIFAR_DIR / 'cifar10' / '3.0.2').exists(),
                    reason=f'CIFAR-10 is not prepared at {CIFAR_DIR} (see ../shared/data)')
def test_a_prepared_dataset_given_by_its_directory(tmp_path):
  config = transfer_config(str(CIFAR_DIR / 'cifar10' / '3.0.2'))
  check_config.check_config(config)
  summary = transfer.transfer_and_evaluate(config, str(tmp_path))
  assert summary['num_classes'] == 10 and len(summary['history']) == 2
  assert 'top5_accuracy' in summary['history'][-1]


def test_pipeline_resizes_batches_and_masks_the_last_batch():
  source = [{'image': np.full((h, w, 3), i, np.uint8), 'label': i}
            for i, (h, w) in enumerate([(40, 20), (20, 40), (16, 16), (33, 47), (8, 9)])]

  pipeline = transfer.StreamingPipeline(source, 4, 16, train.make_mesh(),
                                        shuffle=False)
  batches = list(pipeline.epoch())
  assert pipeline.steps_per_epoch == len(batches) == 2
  images, labels, mask = (np.asarray(x) for x in batches[1])
  assert images.shape == (4, 16, 16, 3)
  assert labels[0] == 4 and mask.tolist() == [True, False, False, False]
  assert (np.asarray(batches[0][0])[3] == 3).all()


def test_a_dataset_that_is_not_there_fails_at_start_up(tmp_path):
  config = transfer_config()
  config.data_dir = str(tmp_path)
  with pytest.raises(check_config.ConfigError, match="config.dataset='imagenet2012'"):
    check_config.check_config(config)
