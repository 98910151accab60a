"""mode='transfer_imagenet': the ImageNet template on streamed TFDS data."""

import io
import re
import shutil
import types

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from blockqnn_jax import check_config
from blockqnn_jax import data as data_lib
from blockqnn_jax import images
from blockqnn_jax import streaming_input
from blockqnn_jax import transfer
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.training import inference
from blockqnn_jax.training import recipes
from blockqnn_jax.training import runners
from configs import cifar10
from tests.common import SMALL
from tests.common import workdir_files
from tests.interrupt import interrupt_then_resume
from tests.interrupt import mid_epoch_interrupt_then_resume
from tests.interrupt import started_epochs

MAX_POOL = '[[1, 2, 3, 0, 0], [2, 7, 0, 0, 0]]'
AVERAGE_POOL = '[[1, 3, 3, 0, 0], [2, 7, 0, 0, 0]]'  # the same parameters as MAX_POOL


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
  model, _ = inference.load_model(str(workdir))
  return [np.asarray(x) for x in jax.tree.leaves(model)]


def test_imagenet_mock_data_end_to_end_and_resume(tmp_path, monkeypatch):
  started_at = []  # the position each run's training iterator started from
  iterator = streaming_input.TrainInput.iterator

  def watched_iterator(self, position=0):
    started_at.append(position)
    return iterator(self, position)

  monkeypatch.setattr(streaming_input.TrainInput, 'iterator', watched_iterator)
  with tfds.testing.mock_data(num_examples=160):
    config = transfer_config()
    check_config.check_config(config)
    whole = transfer.transfer_and_evaluate(config, str(tmp_path / 'whole'))
    parts, saves = interrupt_then_resume(transfer.transfer_and_evaluate, config,
                                         tmp_path / 'parts', monkeypatch)
    mid = mid_epoch_interrupt_then_resume(
        transfer.transfer_and_evaluate, config, tmp_path / 'mid', monkeypatch,
        runners.StreamingRunner, crash_after=4 + 2)
  assert whole['num_classes'] == 1000 and whole['image_shape'] == [32, 32, 3]
  # config.transfer's recipe, not config.train's: epoch 1 is the warm-up, 4 steps from 0
  # to 0.1 * 32 / 256, and the recipe is recorded.
  assert whole['history'][0]['learning_rate'] == pytest.approx(0.1 * 32 / 256 * 3 / 4)
  assert whole['recipe']['label_smoothing'] == 0.1 and whole['recipe']['batch_size'] == 32
  assert [h['epoch'] for h in whole['history']] == [1, 2]
  assert saves == [4]  # 128 images / 32 per batch
  assert parts['top1_accuracy'] == whole['top1_accuracy']
  assert parts['top5_accuracy'] == whole['top5_accuracy']
  # Killed after the checkpoint at step 2 of epoch 2; the rerun reads on from batch 2:
  # the input iterator starts where the checkpoint says (whole, parts twice, mid twice).
  assert mid['steps_per_epoch'] == 4 and mid['saved'][-1] == 6
  assert mid['starts'] == [(1, 2)] and mid['steps'] == [6, 7]
  assert started_at == [0, 0, 4, 0, 6]
  assert mid['summary']['top5_accuracy'] == whole['top5_accuracy']
  assert mid['summary']['top1_accuracy'] == whole['top1_accuracy']
  for other in ('parts', 'mid'):
    for a, b in zip(final_params(tmp_path / 'whole'), final_params(tmp_path / other)):
      np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def one_epoch(tmp_path_factory):
  """A small transfer of MAX_POOL, one epoch on mock ImageNet: (config, summary, workdir)."""
  workdir = tmp_path_factory.mktemp('one_epoch')
  config = transfer_config()
  config.block = MAX_POOL
  config.transfer.update(filters=8, repeats=1, epochs=1, warmup_epochs=0, workers=1)
  with tfds.testing.mock_data(num_examples=160):
    return config, transfer.transfer_and_evaluate(config, str(workdir)), workdir


def test_more_epochs_extend_a_transfer(tmp_path, one_epoch, monkeypatch):
  config, first, workdir = one_epoch
  started = started_epochs(monkeypatch, runners.StreamingRunner)
  shutil.copytree(workdir, tmp_path / 'work')
  longer = config.copy_and_resolve_references()
  longer.transfer.update(epochs=2, workers=0, checkpoint_every_seconds=60)
  longer.train.epochs = 7  # the other mode's recipe
  with tfds.testing.mock_data(num_examples=160):
    extended = transfer.transfer_and_evaluate(longer, str(tmp_path / 'work'))
  assert started == [1]  # the second epoch alone is trained
  assert extended['history'][:1] == first['history']
  assert [h['epoch'] for h in extended['history']] == [1, 2]
  # The added epoch's cosine restarts from the peak: it ends where the first epoch's did.
  assert extended['history'][1]['learning_rate'] == pytest.approx(
      first['history'][0]['learning_rate'], rel=1e-6)


@pytest.mark.parametrize('field, value, change', [
    ('block', AVERAGE_POOL, f'block: {MAX_POOL!r} -> {AVERAGE_POOL!r}'),
    ('dataset', 'imagenet_resized/32x32',
     "dataset: 'imagenet2012' -> 'imagenet_resized/32x32'"),
    ('transfer.learning_rate_per_256', 0.2, 'transfer.learning_rate_per_256: 0.1 -> 0.2'),
], ids=['block', 'dataset', 'learning_rate'])
def test_a_transfer_rerun_with_another_config_is_refused_and_changes_nothing(
    tmp_path, one_epoch, field, value, change):
  config, _, workdir = one_epoch
  shutil.copytree(workdir, tmp_path / 'work')
  before = workdir_files(tmp_path / 'work')
  changed = config.copy_and_resolve_references()
  # With more epochs too, which alone would extend the run.
  changed.update_from_flattened_dict({field: value, 'transfer.epochs': 2})
  with tfds.testing.mock_data(num_examples=160), pytest.raises(
      workdir_lib.ConfigMismatchError,
      match=re.escape(f'holds a mode=transfer_imagenet run made with another config '
                      f'({change}); use a new --workdir')):
    transfer.transfer_and_evaluate(changed, str(tmp_path / 'work'))
  assert workdir_files(tmp_path / 'work') == before


def test_top1_and_top5_count_the_right_images(small_block):
  """Labels chosen by the network's own ranking: known top-1 and top-5 accuracies, over
  two batches, the second padded (its padding must not count)."""
  mesh = data_lib.make_mesh()
  config = transfer_config()
  model_config = recipes.final_model_config(config, config.transfer)
  model_config.template = 'imagenet'
  model, trainer, _ = recipes.build_trainer(
      config, config.transfer, small_block, model_config, mesh, num_classes=10, channels=3,
      steps_per_epoch=1)
  images = np.random.default_rng(0).integers(0, 256, (50, 32, 32, 3), dtype=np.uint8)
  crops = np.stack([streaming_input.eval_example({'image': image, 'label': 0}, 32)['image']
                    for image in images])
  mean, std = np.full(3, 120.0, np.float32), np.full(3, 60.0, np.float32)
  logits = np.asarray(model(data_lib.normalize(jnp.asarray(crops), mean, std, jnp.float32)))
  ranking = np.argsort(-logits, axis=-1)
  ranks = np.resize([0, 2, 3, 7, 9], len(images))  # where each label sits in the ranking
  source = [{'image': image, 'label': int(ranking[i, rank])}
            for i, (image, rank) in enumerate(zip(images, ranks))]
  eval_input = streaming_input.EvalInput(source, batch_size=32, image_size=32, mesh=mesh,
                                        workers=0)
  no_training = types.SimpleNamespace(steps_per_epoch=0)
  runner = runners.StreamingRunner(trainer, no_training, eval_input, mean, std)
  assert runner.evaluate() == {'top1_accuracy': 10 / 50, 'top5_accuracy': 30 / 50}


def test_a_prepared_dataset_given_by_its_directory(tmp_path, cifar10_dir):
  config = transfer_config(str(cifar10_dir))
  check_config.check_config(config)
  summary = transfer.transfer_and_evaluate(config, str(tmp_path))
  assert summary['num_classes'] == 10 and len(summary['history']) == 2
  assert 'top5_accuracy' in summary['history'][-1]


def test_a_dataset_that_is_not_there_fails_at_start_up(tmp_path):
  config = transfer_config()
  config.data_dir = str(tmp_path)
  with pytest.raises(check_config.ConfigError, match="config.dataset='imagenet2012'"):
    check_config.check_config(config)


def encoded(image: np.ndarray, format_name: str) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format_name, quality=95)
  return buffer.getvalue()


def smooth_image(height, width):
  """A gradient, so that decoding at a reduced scale changes it little."""
  y, x = np.mgrid[:height, :width]
  return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (height + width)],
                  -1).astype(np.uint8)


def test_jpeg_and_png_bytes_decode_and_crop():
  image = smooth_image(300, 400)
  png, jpeg = encoded(image, 'PNG'), encoded(image, 'JPEG')
  assert images.image_shape(png) == images.image_shape(jpeg) == (300, 400)
  np.testing.assert_array_equal(images.decode(png), image)
  assert np.abs(images.decode(jpeg).astype(int) - image).mean() < 2
  # A 32x32 crop of a 300x400 JPEG decodes at a reduced scale: about the same pixels.
  box = (100, 200, 150, 150)
  from_png = images.crop_resized(png, box, 32).astype(int)
  from_jpeg = images.crop_resized(jpeg, box, 32).astype(int)
  assert from_png.shape == from_jpeg.shape == (32, 32, 3)
  assert np.abs(from_png - from_jpeg).mean() < 3
  grey = encoded(image[..., 0], 'PNG')
  assert images.crop_resized(grey, box, 16).shape == (16, 16, 1)


@pytest.mark.parametrize('height, width', [(300, 400), (40, 500), (500, 40), (7, 9)])
def test_random_resized_crop_box_respects_its_bounds_and_seed(height, width):
  boxes = [streaming_input.random_resized_crop_box(height, width,
                                                  np.random.default_rng(seed))
           for seed in range(200)]
  assert boxes == [streaming_input.random_resized_crop_box(height, width,
                                                          np.random.default_rng(seed))
                   for seed in range(200)]
  assert len(set(boxes)) > 1
  for top, left, crop_height, crop_width in boxes:
    assert 0 <= top and top + crop_height <= height
    assert 0 <= left and left + crop_width <= width
    # Rounding to whole pixels moves the ratio and area a little on small images.
    slack = 1 / min(crop_height, crop_width)
    ratio = crop_width / crop_height
    assert 3 / 4 * (1 - slack) <= ratio <= 4 / 3 * (1 + slack) or (
        (crop_height, crop_width) in ((height, width), (height, round(height * 4 / 3)),
                                      (round(width * 4 / 3), width)))
    assert crop_height * crop_width >= 0.08 * height * width * (1 - slack) ** 2


def test_random_resized_crop_falls_back_to_the_centre():
  """No 8% crop of a 10 x 1000 image has a ratio within 3/4-4/3: the centre 10 x 13."""
  box = streaming_input.random_resized_crop_box(10, 1000, np.random.default_rng(0))
  assert box == (0, (1000 - 13) // 2, 10, 13)


def test_training_examples_are_crops_of_the_size_and_deterministic():
  record = {'image': encoded(smooth_image(300, 400), 'JPEG'), 'label': 3}
  first = streaming_input.train_example(record, np.random.default_rng(1), 64)
  again = streaming_input.train_example(record, np.random.default_rng(1), 64)
  other = streaming_input.train_example(record, np.random.default_rng(2), 64)
  assert first['image'].shape == (64, 64, 3) and first['label'] == 3
  np.testing.assert_array_equal(first['image'], again['image'])
  assert (first['image'] != other['image']).any()


def test_evaluation_crops_the_centre_and_pads_and_masks_the_last_batch():
  assert streaming_input.centre_crop_box(256, 320, 224) == (16, 48, 224, 224)
  source = [{'image': np.full((h, w, 3), i, np.uint8), 'label': i}
            for i, (h, w) in enumerate([(40, 20), (20, 40), (16, 16), (33, 47), (8, 9)])]
  eval_input = streaming_input.EvalInput(source, batch_size=4, image_size=16,
                                        mesh=data_lib.make_mesh(), workers=0)
  batches = list(eval_input.batches(channels=3))
  assert eval_input.steps == len(batches) == 2
  images, labels, mask = (np.asarray(x) for x in batches[1])
  assert images.shape == (4, 16, 16, 3)
  assert labels[0] == 4 and mask.tolist() == [True, False, False, False]
  assert (np.asarray(batches[0][0])[3] == 3).all() and (images[1:] == 0).all()


def test_each_process_feeds_its_own_part_of_every_global_batch(monkeypatch):
  """Two processes, global batch 4: process i reads the i-th half of each global batch,
  so the global batches are those of one process (the last one short)."""
  dataset = grain.MapDataset.source(list(range(11)))
  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  parts = []
  for index in (0, 1):
    monkeypatch.setattr(jax, 'process_index', lambda index=index: index)
    parts.append([batch.tolist() for batch in streaming_input.process_batches(dataset, 4)])
  assert parts[0] == [[0, 1], [4, 5], [8, 9]]
  assert parts[1] == [[2, 3], [6, 7], [10]]
  with pytest.raises(ValueError, match='batch size 5 must be a multiple of the 2 JAX'):
    streaming_input.process_batches(dataset, 5)


def test_worker_processes_give_the_batches_of_the_training_process():
  """Real Grain worker processes: the same batches, in order, as in-process decoding; and
  a run resumed at a position reads on exactly, whatever its number of workers."""
  rng = np.random.default_rng(0)
  source = [{'image': encoded(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), 'PNG'),
             'label': i} for i in range(24)]

  def batches(workers, position=0):
    train_input = streaming_input.TrainInput(
        source, batch_size=8, image_size=16, epochs=2, seed=5, mesh=data_lib.make_mesh(),
        workers=workers)
    assert train_input.steps_per_epoch == 3
    iterator = train_input.iterator(position)
    read = [[np.asarray(x) for x in batch] for batch in iterator]
    iterator.close()
    return read

  in_process = batches(0)
  assert len(in_process) == 6
  first_epoch = np.concatenate([labels for _, labels in in_process[:3]])
  second_epoch = np.concatenate([labels for _, labels in in_process[3:]])
  assert sorted(first_epoch) == sorted(second_epoch) == list(range(24))
  assert first_epoch.tolist() != second_epoch.tolist()  # reshuffled each epoch
  for expected, read in [(in_process, batches(2)), (in_process[4:], batches(0, 4)),
                         (in_process[4:], batches(1, 4))]:
    assert len(read) == len(expected)
    for (images, labels), (read_images, read_labels) in zip(expected, read):
      np.testing.assert_array_equal(read_images, images)
      np.testing.assert_array_equal(read_labels, labels)


def test_worker_processes_outside_an_absl_app_are_refused_at_construction(monkeypatch):
  """Grain's workers read absl flags: unparsed (a plain Python caller), workers > 0 is a
  clear error before any reading, and workers=0 still works."""
  unparsed = types.SimpleNamespace(FLAGS=types.SimpleNamespace(is_parsed=lambda: False))
  monkeypatch.setattr(streaming_input, 'flags', unparsed)
  source = [{'image': np.zeros((8, 8, 3), np.uint8), 'label': 0}] * 8
  mesh = data_lib.make_mesh()
  with pytest.raises(RuntimeError, match='workers=2 needs absl flags parsed'):
    streaming_input.TrainInput(source, batch_size=4, image_size=8, epochs=1, seed=0,
                               mesh=mesh, workers=2)
  with pytest.raises(RuntimeError, match='workers=1 needs absl flags parsed'):
    streaming_input.EvalInput(source, batch_size=4, image_size=8, mesh=mesh, workers=1)
  assert streaming_input.TrainInput(source, batch_size=4, image_size=8, epochs=1, seed=0,
                                    mesh=mesh, workers=0).steps_per_epoch == 2
