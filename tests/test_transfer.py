"""mode='transfer_imagenet': the ImageNet template on streamed TFDS data."""

import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from blockqnn_jax import check_config
from blockqnn_jax import nsc
from blockqnn_jax import train
from blockqnn_jax import train_final
from blockqnn_jax import transfer
from configs import cifar10
from tests.interrupt import interrupt_then_resume
from tests.interrupt import mid_epoch_interrupt_then_resume

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
  config.transfer.update(batch_size=32, epochs=2, warmup_epochs=1)
  return config


def final_params(workdir):
  model, _ = train_final.load_model(str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(model)]


def test_imagenet_mock_data_end_to_end_and_resume(tmp_path, monkeypatch):
  pipeline_epochs = []
  epoch = transfer.StreamingPipeline.epoch

  def watched_epoch(self, *args, **kwargs):
    if self.shuffle:  # the training pipeline
      pipeline_epochs.append(args + tuple(kwargs.values()))
    return epoch(self, *args, **kwargs)

  with tfds.testing.mock_data(num_examples=160):
    config = transfer_config()
    check_config.check_config(config)
    whole = transfer.transfer_and_evaluate(config, str(tmp_path / 'whole'))
    parts, saves = interrupt_then_resume(transfer.transfer_and_evaluate, config,
                                         tmp_path / 'parts', monkeypatch)
    monkeypatch.setattr(transfer.StreamingPipeline, 'epoch', watched_epoch)
    mid = mid_epoch_interrupt_then_resume(
        transfer.transfer_and_evaluate, config, tmp_path / 'mid', monkeypatch,
        transfer.StreamingRunner, crash_after=4 + 2)
  assert whole['num_classes'] == 1000 and whole['image_shape'] == [32, 32, 3]
  # config.transfer's recipe, not config.train's: epoch 1 is the warm-up, 4 steps from 0
  # to 0.1 * 32 / 256, and the recipe is recorded.
  assert whole['history'][0]['learning_rate'] == pytest.approx(0.1 * 32 / 256 * 3 / 4)
  assert whole['recipe']['label_smoothing'] == 0.1 and whole['recipe']['batch_size'] == 32
  assert [h['epoch'] for h in whole['history']] == [1, 2]
  assert saves == [4]  # 128 images / 32 per batch
  assert parts['top1_accuracy'] == whole['top1_accuracy']
  assert parts['top5_accuracy'] == whole['top5_accuracy']
  # Killed after the checkpoint at step 2 of epoch 2; the rerun streams from batch 2 on.
  assert mid['steps_per_epoch'] == 4 and mid['saved'][-1] == 6
  assert mid['starts'] == [(1, 2)] and mid['steps'] == [6, 7]
  assert pipeline_epochs[-1] == (1, 2)
  assert mid['summary']['top5_accuracy'] == whole['top5_accuracy']
  assert mid['summary']['top1_accuracy'] == whole['top1_accuracy']
  for other in ('parts', 'mid'):
    for a, b in zip(final_params(tmp_path / 'whole'), final_params(tmp_path / other)):
      np.testing.assert_array_equal(a, b)


def test_top1_and_top5_count_the_right_images():
  """Labels chosen by the network's own ranking: known top-1 and top-5 accuracies, over
  two batches, the second padded (its padding must not count)."""
  mesh = train.make_mesh()
  config = transfer_config()
  model_config = train_final.final_model_config(config, config.transfer)
  model_config.template = 'imagenet'
  model, trainer, _ = train_final.build_trainer(
      config, config.transfer, nsc.Block.from_json(SMALL), model_config, mesh, None,
      num_classes=10, channels=3, steps_per_epoch=1)
  images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  mean, std = np.full(3, 120.0, np.float32), np.full(3, 60.0, np.float32)
  logits = np.asarray(model(train.preprocess(jnp.asarray(images), mean, std, jnp.float32)))
  ranking = np.argsort(-logits, axis=-1)
  ranks = np.resize([0, 2, 3, 7, 9], len(images))  # where each label sits in the ranking
  source = [{'image': image, 'label': int(ranking[i, rank])}
            for i, (image, rank) in enumerate(zip(images, ranks))]
  pipeline = transfer.StreamingPipeline(source, 32, 32, mesh, shuffle=False)
  runner = transfer.StreamingRunner(trainer, pipeline, pipeline, mean, std)
  assert runner.evaluate() == {'top1_accuracy': 10 / 50, 'top5_accuracy': 30 / 50}


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
