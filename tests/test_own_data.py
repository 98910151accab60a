"""A user's own data (blockqnn_jax/own_data.py): an image folder, a .npz and a prepared TFDS
directory, read by the search, mode=train and mode=transfer_imagenet; every bad input is
one line at start-up."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from blockqnn_jax import check_config
from blockqnn_jax import data
from blockqnn_jax import images
from blockqnn_jax import own_data
from blockqnn_jax import prepare_dataset
from blockqnn_jax import search
from blockqnn_jax import streaming_input
from blockqnn_jax import train_final
from blockqnn_jax import transfer
from configs import default
from tests.common import ROOT
from tests.common import SMALL

CLASSES = ('cat', 'dog', 'fox')  # sorted: labels 0, 1, 2
COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))


def coloured(label: int, height: int, width: int, seed: int) -> np.ndarray:
  """A noisy image of its class's colour: learnable, and each one different."""
  noise = np.random.default_rng(seed).integers(-30, 30, (height, width, 3))
  return np.clip(np.array(COLOURS[label]) + noise, 0, 255).astype(np.uint8)


def save(path, pixels: np.ndarray, format_name: str) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, format_name)


def write_folder(root, splits={'train': 4, 'test': 2}, size=(16, 20)):
  """``splits[name]`` images per class under root/name/CLASS/, in mixed extensions and
  cases, with a stray non-image file."""
  extensions = (('JPEG', 'JPEG'), ('jpg', 'JPEG'), ('PNG', 'PNG'), ('png', 'PNG'))
  for s, (split, count) in enumerate(splits.items()):
    for label, name in enumerate(CLASSES):
      for i in range(count):
        extension, format_name = extensions[i % len(extensions)]
        save(root / split / name / f'{i}.{extension}',
             coloured(label, *size, seed=100 * s + 10 * label + i), format_name)
  (root / 'train' / CLASSES[0] / 'notes.txt').write_text('not an image, not read')
  return root


def write_npz(path, *, train=12, test=6, size=(14, 14), **replace):
  y_train, y_test = np.arange(train) % 3, np.arange(test) % 3
  arrays = {'x_train': np.stack([coloured(y, *size, seed=i) for i, y in enumerate(y_train)]),
            'y_train': y_train[:, None].astype(np.uint8),  # Keras's CIFAR: N x 1
            'x_test': np.stack([coloured(y, *size, seed=99 + i) for i, y in enumerate(y_test)]),
            'y_test': y_test.astype(np.int64)}
  arrays.update(replace)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return path


@pytest.fixture(scope='module')
def formats(tmp_path_factory):
  """The same tiny dataset in each format: 3 classes, 12 training and 6 test images of
  8 x 8 pixels (as read), so that the runs of each mode compile the same programs (once,
  into the persistent compilation cache)."""
  root = tmp_path_factory.mktemp('datasets')
  folder = write_folder(root / 'folder')
  square = write_folder(root / 'square', size=(8, 8))
  tfds_dir = prepare_dataset.write_tfds(str(square), str(root / 'tfds'))
  return {'folder': folder, 'npz': write_npz(root / 'arrays.npz'), 'tfds': tfds_dir}


FORMATS = ('folder', 'npz', 'tfds')


def tiny_config(dataset, mode='search'):
  config = default.get_config()
  config.mode, config.dataset = mode, str(dataset)
  config.image_size = 8
  config.validation_examples = 3
  config.batch_size = 4
  config.fast_compile = True
  config.early_stop.epochs = 1
  config.model.update(filters=4, repeats=1)
  config.search.update(max_layers=3, blocks_per_iteration=1, epsilon_schedule=((1.0, 1),))
  if mode != 'search':
    config.block = SMALL
  config.train.update(filters=4, repeats=1, epochs=1, batch_size=4)
  config.transfer.update(filters=4, repeats=1, epochs=1, warmup_epochs=0, batch_size=4,
                         image_size=8, workers=0)
  return config


@pytest.mark.parametrize('kind', FORMATS)
def test_each_format_is_searched_trained_and_transferred(formats, kind, tmp_path):
  config = tiny_config(formats[kind])
  check_config.check_config(config)
  search.run_search(config, str(tmp_path / 'search'))
  child = json.loads((tmp_path / 'search' / 'results.jsonl').read_text().splitlines()[0])
  assert child['status'] == 'ok', child
  config = tiny_config(formats[kind], 'train')
  check_config.check_config(config)
  trained = train_final.train_and_evaluate(config, str(tmp_path / 'train'))
  assert trained['num_classes'] == 3 and trained['image_shape'] == [8, 8, 3]
  config = tiny_config(formats[kind], 'transfer_imagenet')
  check_config.check_config(config)
  transferred = transfer.transfer_and_evaluate(config, str(tmp_path / 'transfer'))
  assert transferred['num_classes'] == 3 and transferred['image_shape'] == [8, 8, 3]


def test_a_folder_loads_every_image_extension_resized_with_test_held_out(formats):
  dataset = data.load_dataset(tiny_config(formats['folder']))
  assert dataset.image_shape == (8, 8, 3) and dataset.num_classes == 3
  assert len(dataset.train_labels) == 9 and len(dataset.validation_labels) == 3
  np.testing.assert_array_equal(np.bincount(dataset.test_labels), [2, 2, 2])  # test/
  # Every class's colour under its label (sorted class names): the mean pixel of class k
  # is brightest in channel k.
  for pixels, labels in ((dataset.train_images, dataset.train_labels),
                         (dataset.test_images, dataset.test_labels)):
    for label in range(3):
      assert pixels[labels == label].mean((0, 1, 2)).argmax() == label


def test_folder_images_keep_their_centre_square_and_are_rgb(tmp_path):
  """A wide image keeps its centre square (its white middle, not its black sides); a grey
  PNG becomes three equal channels."""
  wide = np.zeros((16, 48, 3), np.uint8)
  wide[:, 16:32] = 255
  save(tmp_path / 'train' / 'a' / 'wide.png', wide, 'PNG')
  save(tmp_path / 'train' / 'b' / 'grey.png', np.full((10, 10), 77, np.uint8), 'PNG')
  np.testing.assert_array_equal(own_data.resized_pixels(
      str(tmp_path / 'train' / 'a' / 'wide.png'), 8), np.full((8, 8, 3), 255))
  np.testing.assert_array_equal(own_data.resized_pixels(
      str(tmp_path / 'train' / 'b' / 'grey.png'), 4), np.full((4, 4, 3), 77))


def test_without_a_held_out_split_a_fixed_tenth_is_held_out(tmp_path):
  write_folder(tmp_path, splits={'train': 10})  # 30 images
  classes, paths, labels, test_paths, test_labels = own_data.folder_files(
      str(tmp_path), own_data.TEST_FOLDERS)
  assert classes == CLASSES and len(paths) == 27 and len(test_paths) == 3
  assert not set(paths) & set(test_paths)
  x_train, y_train, x_test, _, _ = own_data.npz_arrays(
      str(write_npz(tmp_path / 'a.npz', train=20, x_test=None, y_test=None)))
  assert len(x_train) == len(y_train) == 18 and len(x_test) == 2


def test_the_streaming_folder_evaluates_on_validation_before_test(tmp_path):
  write_folder(tmp_path, splits={'train': 2, 'validation': 3, 'test': 1})
  sources, num_classes = streaming_input.open_dataset(tiny_config(tmp_path))
  assert num_classes == 3 and len(sources['train']) == 6 and len(sources['eval']) == 9
  assert sorted(sources['eval'][i]['label'] for i in range(9)) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_a_npz_is_read_as_keras_writes_it(tmp_path):
  grey = np.arange(12 * 10 * 10).reshape(12, 10, 10).astype(np.uint8)  # N x H x W
  path = write_npz(tmp_path / 'grey.npz', x_train=grey, x_test=grey[:6])
  dataset = data.load_dataset(tiny_config(path))
  assert dataset.image_shape == (8, 8, 1) and dataset.num_classes == 3
  assert dataset.test_labels.tolist() == [0, 1, 2, 0, 1, 2]


def test_a_tfds_directory_is_searched_as_its_name_would_be(formats):
  dataset = data.load_dataset(tiny_config(formats['tfds']))
  assert dataset.image_shape == (8, 8, 3) and dataset.num_classes == 3
  assert len(dataset.train_labels) == 9 and len(dataset.validation_labels) == 3
  np.testing.assert_array_equal(np.bincount(dataset.test_labels), [2, 2, 2])


def test_prepare_dataset_keeps_jpegs_and_makes_every_record_rgb(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  colour = coloured(0, 8, 8, seed=0)
  save(tmp_path / 'train' / 'a' / 'colour.jpg', colour, 'JPEG')
  save(tmp_path / 'train' / 'a' / 'grey.JPG', colour[..., 0], 'JPEG')
  save(tmp_path / 'train' / 'b' / 'grey.png', colour[..., 0], 'PNG')
  Image.new('CMYK', (8, 8), (0, 255, 0, 0)).save(tmp_path / 'train' / 'b' / 'cmyk.jpeg')
  save(tmp_path / 'test' / 'a' / 'colour.png', colour, 'PNG')
  save(tmp_path / 'test' / 'b' / 'grey.png', colour[..., 0], 'PNG')
  prepare_dataset.main(['prepare_dataset', str(tmp_path), str(tmp_path / 'out')])
  builder = tfds.builder_from_directory(str(tmp_path / 'out' / tmp_path.name / '1.0.0'))
  assert builder.info.features['image'].shape == (8, 8, 3)
  for split, count in (('train', 4), ('test', 2)):
    source = builder.as_data_source(split)
    assert len(source) == count
    assert all(source[i]['image'].shape == (8, 8, 3) for i in range(count))
  stored = builder.as_data_source('train', decoders={'image': tfds.decode.SkipDecoding()})
  assert (tmp_path / 'train' / 'a' / 'colour.jpg').read_bytes() in {
      bytes(stored[i]['image']) for i in range(4)}
  # The streaming pipeline's decoder too.
  assert all(images.decode(bytes(stored[i]['image'])).shape == (8, 8, 3) for i in range(4))
  with pytest.raises(SystemExit, match=f'error: {tmp_path / "out"}: holds no dataset'):
    prepare_dataset.main(['prepare_dataset', str(tmp_path / 'out'), str(tmp_path / 'x')])


# --- Bad input: one line at start-up ---------------------------------------------------


def test_image_size_is_checked_at_start_up(formats):
  config = tiny_config(formats['npz'])
  config.image_size = 4
  assert 'config.image_size=4 is not allowed: an integer >= 8' in one_line_error(config)


def one_line_error(config) -> str:
  with pytest.raises(check_config.ConfigError) as error:
    check_config.check_config(config)
  message = str(error.value)
  assert '\n' not in message
  return message


MODES = ('search', 'train', 'transfer_imagenet')


# A JPEG cut short after its header is found by decoding it: the in-memory modes decode
# every image at start-up, the streaming mode reads only headers there (docs/running.md).
@pytest.mark.parametrize('mode, content', [(mode, b'not an image') for mode in MODES] +
                         [('search', 'truncated'), ('train', 'truncated')])
def test_an_unreadable_image_is_named(tmp_path, mode, content):
  write_folder(tmp_path)
  broken = tmp_path / 'train' / 'dog' / 'broken.JPG'
  if content == 'truncated':
    buffer = io.BytesIO()
    Image.fromarray(coloured(1, 32, 32, seed=0)).save(buffer, 'JPEG')
    content = buffer.getvalue()[:len(buffer.getvalue()) // 2]
  broken.write_bytes(content)
  message = one_line_error(tiny_config(tmp_path, mode))
  assert f'{broken}: not a readable image' in message


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('split', ['train', 'test'])
def test_an_empty_class_folder_is_named(tmp_path, mode, split):
  write_folder(tmp_path)
  (tmp_path / split / 'dog' / 'readme.txt').write_text('no images')
  for image in (tmp_path / split / 'dog').glob('*.*[gG]'):
    image.unlink()
  assert f"{tmp_path / split / 'dog'}: an empty class folder" in one_line_error(
      tiny_config(tmp_path, mode))


def test_a_held_out_split_must_hold_classes_of_train(tmp_path):
  write_folder(tmp_path, splits={'train': 2})
  (tmp_path / 'val').mkdir()
  assert f"{tmp_path / 'val'}: no class folders" in one_line_error(tiny_config(tmp_path))
  save(tmp_path / 'test' / 'emu' / '0.png', coloured(0, 8, 8, seed=0), 'PNG')
  assert f"{tmp_path / 'test' / 'emu'}: a class that train/ does not have" in (
      one_line_error(tiny_config(tmp_path)))


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('arrays, message', [
    ({'y_train': np.zeros(11, np.int32)}, 'y_train has 11 labels for the 12 images of x_train'),
    ({'x_test': np.zeros((6, 15, 14, 3), np.uint8)},
     'x_test has images of shape (15, 14, 3), x_train of (14, 14, 3)'),
    ({'x_train': np.zeros((12, 14, 14, 2), np.uint8)}, 'x_train has shape (12, 14, 14, 2)'),
    ({'x_train': np.zeros((12, 14, 14, 3), np.float32)}, 'x_train has dtype float32'),
    ({'y_test': np.array([0, 1, 2, 3, 0, 1])}, 'y_test holds label 3, outside the 0-2'),
    ({'y_train': -np.ones(12, np.int32)}, 'y_train holds label -1'),
    ({'y_train': np.zeros(12, np.float32)},
     'y_train has shape (12,) and dtype float32; integer class labels'),
    ({'x_train': None}, 'no x_train array'),
    ({'y_test': None}, 'x_test and y_test come together'),
], ids=['labels', 'test_shape', 'channels', 'dtype', 'label_range', 'negative',
        'float_labels', 'no_x_train', 'alone'])
def test_a_bad_npz_array_is_named(tmp_path, mode, arrays, message):
  path = write_npz(tmp_path / 'bad.npz', **arrays)
  assert f'{path}: {message}' in one_line_error(tiny_config(path, mode))


@pytest.mark.parametrize('mode', MODES)
def test_a_path_that_is_not_there_or_holds_no_dataset(tmp_path, mode):
  missing = tmp_path / 'no_such_folder'
  assert (f"config.dataset='{missing}': {missing}: no such file or directory"
          in one_line_error(tiny_config(missing, mode)))
  assert f'{tmp_path}: holds no dataset' in one_line_error(tiny_config(tmp_path, mode))
  (tmp_path / 'arrays.npy').write_bytes(b'')
  assert f"{tmp_path / 'arrays.npy'}: a file that is not a .npz" in one_line_error(
      tiny_config(tmp_path / 'arrays.npy', mode))
  (tmp_path / 'tfds').mkdir()
  (tmp_path / 'tfds' / 'dataset_info.json').write_text('{not json')
  assert f"{tmp_path / 'tfds'}: not a readable TFDS directory" in one_line_error(
      tiny_config(tmp_path / 'tfds', mode))


def test_the_command_line_refuses_a_bad_image_before_writing(tmp_path):
  write_folder(tmp_path / 'data')
  broken = tmp_path / 'data' / 'train' / 'cat' / 'x.png'
  broken.write_bytes(b'\x89PNG but not really')
  result = subprocess.run(
      [sys.executable, '-m', 'blockqnn_jax.main', '--config=configs/quickstart.py',
       f'--workdir={tmp_path / "work"}', f'--config.dataset={tmp_path / "data"}'],
      cwd=ROOT, capture_output=True, text=True)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith(f"error: config.dataset='{tmp_path / 'data'}': {broken}: not a "
                         'readable image'), result.stderr
  assert not (tmp_path / 'work').exists()
