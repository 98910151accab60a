"""Tests of dataset loading, the validation split and augmentation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from blockqnn_jax import data
from configs import default


def make_config(**overrides):
  config = default.get_config()
  config.update(overrides)
  return config


def test_digits_loads_without_download():
  dataset = data.load_dataset(make_config(dataset='digits', validation_examples=300))
  assert dataset.image_shape == (8, 8, 1)
  assert dataset.num_classes == 10
  assert dataset.train_images.dtype == np.uint8
  assert dataset.train_labels.dtype == np.int32
  assert dataset.train_images.max() == 255
  assert len(dataset.train_labels) == 1200
  assert len(dataset.validation_labels) == 300
  assert len(dataset.test_labels) == 297
  assert set(np.unique(dataset.train_labels)) == set(range(10))


def test_validation_is_carved_from_train_and_fixed():
  whole = data.load_dataset(make_config(dataset='digits', validation_examples=0))
  split = data.load_dataset(make_config(dataset='digits', validation_examples=300, seed=7))
  flat = lambda images: {image.tobytes() for image in images}
  assert flat(split.validation_images) | flat(split.train_images) == flat(whole.train_images)
  assert not flat(split.validation_images) & flat(whole.test_images)
  again = data.load_dataset(make_config(dataset='digits', validation_examples=300, seed=1))
  np.testing.assert_array_equal(again.validation_images, split.validation_images)


def test_max_train_examples_caps_train_after_validation():
  dataset = data.load_dataset(
      make_config(dataset='digits', validation_examples=300, max_train_examples=100))
  assert len(dataset.train_labels) == 100
  assert len(dataset.validation_labels) == 300


def test_too_many_validation_examples_is_one_line_error():
  with pytest.raises(ValueError, match='validation_examples=1500 must be less than the 1500'):
    data.load_dataset(make_config(dataset='digits', validation_examples=1500))


def test_synthetic_shapes_and_learnable_colours():
  dataset = data.load_dataset(make_config(dataset='synthetic'))
  assert dataset.train_images.shape == (45_000, 32, 32, 3)
  assert dataset.validation_images.shape == (5_000, 32, 32, 3)
  assert dataset.test_images.shape == (10_000, 32, 32, 3)
  assert dataset.num_classes == 10
  assert dataset.train_images.dtype == np.uint8
  colour = lambda label: dataset.train_images[dataset.train_labels == label][:100].mean()
  assert len({round(colour(label)) for label in range(10)}) > 1


def test_channel_statistics_match_numpy():
  dataset = data.load_dataset(make_config(dataset='digits', validation_examples=300))
  mean, std = data.channel_statistics(dataset.train_images)
  assert mean.dtype == std.dtype == np.float32
  pixels = dataset.train_images.astype(np.float64)
  np.testing.assert_allclose(mean, pixels.mean((0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, pixels.std((0, 1, 2)), rtol=1e-6)


def test_a_constant_channel_is_divided_by_one_not_zero():
  images = np.zeros((4, 2, 2, 2), np.uint8)
  images[..., 1] = [[[0, 255]]]  # half 0, half 255: std 127.5
  mean, std = data.channel_statistics(images)
  np.testing.assert_allclose(mean, [0.0, 127.5])
  np.testing.assert_allclose(std, [1.0, 127.5])


def never_decode(*args):
  raise AssertionError(f'decoded a TFDS split: {args}')


def test_unprepared_tfds_dataset_fails_fast(tmp_path, monkeypatch):
  monkeypatch.setattr(data, '_tfds_split', never_decode)
  config = make_config(dataset='mnist', data_dir=str(tmp_path))
  with pytest.raises(data.DatasetNotFoundError, match=str(tmp_path)):
    data.check_dataset(config)
  with pytest.raises(data.DatasetNotFoundError, match='download_and_prepare'):
    data.load_dataset(config)


def test_unknown_dataset_name():
  with pytest.raises(data.DatasetNotFoundError, match="Unknown dataset 'no_such_data'"):
    data.check_dataset(make_config(dataset='no_such_data'))


def test_check_dataset_catches_bad_sizes_without_decoding(monkeypatch, cifar10_data_dir):
  monkeypatch.setattr(data, '_tfds_split', never_decode)
  config = make_config(dataset='cifar10', data_dir=str(cifar10_data_dir),
                       validation_examples=50_000)
  with pytest.raises(ValueError, match='must be less than the 50000 training examples'):
    data.check_dataset(config)
  with pytest.raises(ValueError, match='must be less than the 50000 training examples'):
    data.load_dataset(config)


@pytest.fixture(scope='module')
def cifar10(cifar10_data_dir):
  config = make_config(dataset='cifar10', data_dir=str(cifar10_data_dir),
                       validation_examples=5000)
  data.check_dataset(config)
  return data.load_dataset(config)


def test_cifar10_splits(cifar10):
  assert cifar10.train_images.shape == (45_000, 32, 32, 3)
  assert cifar10.validation_images.shape == (5_000, 32, 32, 3)
  assert cifar10.test_images.shape == (10_000, 32, 32, 3)
  assert cifar10.train_images.dtype == np.uint8
  assert cifar10.num_classes == 10
  for labels in (cifar10.train_labels, cifar10.validation_labels, cifar10.test_labels):
    assert labels.dtype == np.int32
    assert labels.min() == 0 and labels.max() == 9
  np.testing.assert_array_equal(np.bincount(cifar10.test_labels), [1000] * 10)


def test_cifar10_normalization(cifar10):
  mean, std = data.channel_statistics(cifar10.train_images)
  # Over the 45,000 training images; the full 50,000 give 125.31 / 122.95 / 113.87.
  np.testing.assert_allclose(mean, [125.31, 122.95, 113.87], atol=0.5)
  np.testing.assert_allclose(std, [62.99, 62.09, 66.70], atol=0.5)


def shifted_versions(image, pad):
  """Every crop of the zero-padded image, and its mirror image."""
  height, width, _ = image.shape
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  crops = [padded[dy:dy + height, dx:dx + width]
           for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)]
  return np.stack(crops + [crop[:, ::-1] for crop in crops])


def test_augment_is_a_shift_and_maybe_flip():
  image = np.arange(1, 16 * 16 * 2 + 1, dtype=np.float32).reshape(16, 16, 2)
  images = np.broadcast_to(image, (64, 16, 16, 2))
  out = np.asarray(data.augment(jax.random.key(0), jnp.asarray(images)))
  assert out.shape == images.shape and out.dtype == images.dtype
  candidates = shifted_versions(image, pad=2)
  matches = [(candidates == crop).all(axis=(1, 2, 3)) for crop in out]
  assert all(match.sum() == 1 for match in matches)
  chosen = {int(match.argmax()) for match in matches}
  assert any(c >= 25 for c in chosen) and any(c < 25 for c in chosen)  # both flips seen
  assert len(chosen) > 10


def test_augment_keeps_uint8_and_differs_by_key():
  images = jax.random.randint(jax.random.key(1), (8, 32, 32, 3), 0, 256).astype(jnp.uint8)
  first = data.augment(jax.random.key(0), images)
  second = data.augment(jax.random.key(1), images)
  assert first.dtype == jnp.uint8 and first.shape == images.shape
  assert not jnp.array_equal(first, second)


def test_augment_is_jittable():
  images = jnp.arange(4 * 8 * 8 * 1, dtype=jnp.float32).reshape(4, 8, 8, 1)
  key = jax.random.key(3)
  np.testing.assert_array_equal(jax.jit(data.augment)(key, images), data.augment(key, images))


def _zeroed_box(zeroed):
  """(first row, end row, first column, end column) of the zeroed pixels of one image."""
  rows, cols = np.nonzero(zeroed)
  return rows.min(), rows.max() + 1, cols.min(), cols.max() + 1


def _clipped_span(start, end, extent, size):
  """Whether [start, end) is a size-wide span around some centre in 0..extent-1, starting
  size // 2 before it, clipped to the image."""
  return any((max(c - size // 2, 0), min(c - size // 2 + size, extent)) == (start, end)
             for c in range(extent))


@pytest.mark.parametrize('size', [3, 4])
def test_cutout_zeroes_one_square_around_a_pixel_clipped_at_the_border(size):
  """Each image loses one size x size square (every channel) centred on one of its pixels,
  size // 2 before the centre; a square over the border loses its outside part."""
  height, width = 8, 10
  image = np.arange(1, height * width * 2 + 1, dtype=np.float32).reshape(height, width, 2)
  images = np.broadcast_to(image, (256, height, width, 2))
  out = np.asarray(data.cutout(jax.random.key(0), jnp.asarray(images), size))
  zeroed = out == 0
  np.testing.assert_array_equal(zeroed[..., 0], zeroed[..., 1])
  np.testing.assert_array_equal(out[~zeroed], images[~zeroed])  # the rest is untouched
  areas, hangs = [], set()
  for mask in zeroed[..., 0]:
    top, bottom, left, right = _zeroed_box(mask)
    assert mask.sum() == (bottom - top) * (right - left)  # a filled rectangle
    assert _clipped_span(top, bottom, height, size) and _clipped_span(left, right, width, size)
    areas.append(mask.sum())
    if bottom - top < size:
      hangs.add('top' if top == 0 else 'bottom')
    if right - left < size:
      hangs.add('left' if left == 0 else 'right')
  assert max(areas) == size * size
  assert hangs == {'top', 'bottom', 'left', 'right'}  # centres reach every border
