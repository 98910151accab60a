"""Image-classification datasets held in memory, their place on the devices, their
normalisation and augmentation.

Every child network of a search trains on the same arrays, so a dataset is decoded once
per process (memoized) and put on the devices once (``device_data``); each jitted step
gathers and augments its batch there, with no host-side slicing. The validation split
that gives the search its reward is carved from the training split with a fixed
permutation, so every run and seed scores children on the same images and the test split
stays untouched.

``config.dataset`` is 'digits' (scikit-learn's bundled 8x8 digits), 'synthetic' (random
CIFAR-shaped data), a TFDS name such as 'cifar10', or a path (``own_data``): a folder of
images in class subfolders or a .npz, resized to ``config.image_size``, or a prepared TFDS
directory. TFDS is imported only for TFDS datasets, so the others work without it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blockqnn_jax import own_data

# Fixed seeds: the splits and the synthetic data are part of the dataset, not of a run.
_SPLIT_SEED = 0
_SYNTHETIC_SEED = 0
_DIGITS_TEST_EXAMPLES = 297
_DECODE_BATCH = 4096  # records per __getitems__ call: amortizes the per-call overhead


class DatasetNotFoundError(ValueError):
  """A TFDS dataset that is not prepared where TFDS was told to look."""


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Images (uint8, N x H x W x C) and int32 labels of the three splits."""
  train_images: np.ndarray
  train_labels: np.ndarray
  validation_images: np.ndarray
  validation_labels: np.ndarray
  test_images: np.ndarray
  test_labels: np.ndarray
  num_classes: int
  name: str

  @property
  def image_shape(self) -> tuple:
    return self.train_images.shape[1:]


def load_dataset(config) -> Dataset:
  """The dataset `config.dataset` names, with validation carved from train."""
  check_dataset(config)
  train_images, train_labels, test_images, test_labels, num_classes = _load_splits(config)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(train_labels))
  validation, train = order[:config.validation_examples], order[config.validation_examples:]
  if config.max_train_examples:
    train = train[:config.max_train_examples]
  return Dataset(
      train_images=train_images[train],
      train_labels=train_labels[train],
      validation_images=train_images[validation],
      validation_labels=train_labels[validation],
      test_images=test_images,
      test_labels=test_labels,
      num_classes=num_classes,
      name=config.dataset)


def check_dataset(config) -> None:
  """Fails fast, without decoding a TFDS dataset, if `config` cannot give a dataset. The
  fields' ranges are check_config's; this checks them against the dataset. A folder or a
  .npz is read in full here (and kept), so a bad image or array stops the run at start-up."""
  validation_examples = config.validation_examples
  train_examples = _num_train_examples(config)
  if validation_examples >= train_examples:
    raise ValueError(
        f'validation_examples={validation_examples} must be less than the '
        f'{train_examples} training examples of {config.dataset}')


def channel_statistics(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (float32, 0-255 scale) of uint8 N x H x W x C images: the
  normalisation of every mode. A histogram of the values gives exact moments with no float
  copy of the images. The std is at least 1, so a constant channel divides by 1, not 0."""
  channels = images.shape[-1]
  mean, std = np.empty(channels, np.float32), np.empty(channels, np.float32)
  values = np.arange(256, dtype=np.float64)
  for c in range(channels):
    counts = np.bincount(images[..., c].ravel(), minlength=256)
    c_mean = counts @ values / counts.sum()
    mean[c] = c_mean
    std[c] = max(1.0, np.sqrt(counts @ (values - c_mean) ** 2 / counts.sum()))
  return mean, std


def normalize(images: jax.Array, mean: jax.Array, std: jax.Array, dtype) -> jax.Array:
  """uint8 images to ``(images - mean) / std`` in ``dtype`` (the statistics in float32)."""
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def make_mesh(devices=None) -> jax.sharding.Mesh:
  """A 1-D mesh ('data') over ``devices`` (all of them by default): batches are split
  along it, parameters replicated."""
  return jax.sharding.Mesh(np.array(devices or jax.devices()), ('data',))


def check_batch_size(batch_size: int, mesh: jax.sharding.Mesh) -> None:
  if batch_size <= 0 or batch_size % mesh.size:
    raise ValueError(f'config.batch_size={batch_size} must be a positive multiple of the '
                     f'{mesh.size} devices it is split over')


@flax.struct.dataclass
class DeviceData:
  """The training set and an evaluation split, on the devices once per process.

  A pytree, passed to the jitted functions as an argument: closed over, the arrays would
  be baked into every child's executable as constants.
  """

  train_images: jax.Array
  train_labels: jax.Array
  eval_images: jax.Array   # the evaluation split's images, padded to whole batches;
  eval_labels: jax.Array   # `eval_mask` marks the real ones
  eval_mask: jax.Array
  mean: jax.Array
  std: jax.Array
  num_classes: int = flax.struct.field(pytree_node=False)
  image_shape: tuple = flax.struct.field(pytree_node=False)
  eval_split: str = flax.struct.field(pytree_node=False)  # 'validation' or 'test'


@dataclasses.dataclass(frozen=True)
class _DatasetFields:
  """The dataset fields of a config, hashable so the device copy can be memoized."""
  dataset: str
  data_dir: str
  image_size: int
  validation_examples: int
  max_train_examples: int


_device_data_lock = threading.Lock()


def device_data(config, mesh: jax.sharding.Mesh, *, batch_size: int | None = None,
                final: bool = False) -> DeviceData:
  """The dataset ``config`` names, loaded and placed on ``mesh`` once per process.

  For the search, training images less the validation split, evaluated on validation;
  for final training (``final=True``) every training image, evaluated on the test split.
  The evaluation split is padded to whole batches of ``batch_size`` (config.batch_size).
  """
  fields = _DatasetFields(config.dataset, config.data_dir, config.image_size,
                          0 if final else config.validation_examples,
                          config.max_train_examples)
  with _device_data_lock:  # children prepared in parallel threads load it once
    return _device_data(fields, batch_size or config.batch_size, mesh,
                        'test' if final else 'validation')


@functools.lru_cache(maxsize=2)
def _device_data(fields: _DatasetFields, batch_size: int, mesh: jax.sharding.Mesh,
                 eval_split: str) -> DeviceData:
  dataset = load_dataset(fields)
  mean, std = channel_statistics(dataset.train_images)
  eval_images = getattr(dataset, f'{eval_split}_images')
  eval_labels = getattr(dataset, f'{eval_split}_labels')
  pad = -len(eval_labels) % batch_size
  mask = np.concatenate([np.ones(len(eval_labels), bool), np.zeros(pad, bool)])
  put = functools.partial(jax.device_put, device=NamedSharding(mesh, P()))
  return DeviceData(
      train_images=put(dataset.train_images),
      train_labels=put(dataset.train_labels),
      eval_images=put(np.pad(eval_images, [(0, pad)] + [(0, 0)] * 3)),
      eval_labels=put(np.pad(eval_labels, (0, pad))),
      eval_mask=put(mask),
      mean=put(mean), std=put(std),
      num_classes=dataset.num_classes,
      image_shape=dataset.image_shape,
      eval_split=eval_split)


def augment(rng: jax.Array, images: jax.Array) -> jax.Array:
  """Random crop of the zero-padded images and random horizontal flip, per image.

  The padding is an eighth of the image size (4 pixels for 32x32), the standard CIFAR
  augmentation; it runs inside the jitted train step, so it is pure jax.numpy.
  """
  if images.ndim != 4:
    raise ValueError(f'augment takes N x H x W x C images, got shape {images.shape}')
  n, height, width, channels = images.shape
  pad_h, pad_w = height // 8, width // 8
  crop_rng, flip_rng = jax.random.split(rng)
  offsets = jax.random.randint(
      crop_rng, (n, 2), 0, jnp.array([2 * pad_h + 1, 2 * pad_w + 1]))
  flips = jax.random.bernoulli(flip_rng, 0.5, (n,))
  padded = jnp.pad(images, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))

  def crop_and_flip(image, offset, flip):
    crop = jax.lax.dynamic_slice(
        image, (offset[0], offset[1], 0), (height, width, channels))
    return jnp.where(flip, crop[:, ::-1], crop)

  return jax.vmap(crop_and_flip)(padded, offsets, flips)


def cutout(rng: jax.Array, images: jax.Array, size: int) -> jax.Array:
  """Zeroes one random ``size`` x ``size`` square per image (DeVries & Taylor, 2017); the
  square may hang over the border, as in the original."""
  n, height, width, _ = images.shape
  centres = jax.random.randint(rng, (n, 2), 0, jnp.array([height, width]))
  rows = jnp.arange(height)[None, :, None]
  cols = jnp.arange(width)[None, None, :]
  top, left = centres[:, 0, None, None] - size // 2, centres[:, 1, None, None] - size // 2
  inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
  return jnp.where(inside[..., None], jnp.zeros((), images.dtype), images)


def _num_train_examples(config):
  """Size of the train split before validation is carved: a TFDS dataset's from its
  metadata, the others' by loading them (memoized)."""
  if config.dataset in ('digits', 'synthetic') or own_data.dataset_kind(config.dataset) in (
      own_data.FOLDER, own_data.NPZ):
    return len(_load_splits(config)[1])
  builder = _tfds_builder(config.dataset, tfds_data_dir(config))
  return builder.info.splits['train'].num_examples


def _load_splits(config):
  """(train_images, train_labels, test_images, test_labels, num_classes)."""
  if config.dataset == 'digits':
    return _digits()
  if config.dataset == 'synthetic':
    return _synthetic()
  kind = own_data.dataset_kind(config.dataset)
  if kind in (own_data.FOLDER, own_data.NPZ):
    return _own_splits(os.path.expanduser(config.dataset), kind, config.image_size)
  data_dir = tfds_data_dir(config)
  builder = _tfds_builder(config.dataset, data_dir)
  return (*_tfds_split(config.dataset, data_dir, 'train'),
          *_tfds_split(config.dataset, data_dir, 'test'),
          builder.info.features['label'].num_classes)


@functools.cache
def _digits():
  """scikit-learn's 1,797 8x8 digits: 1,500 train, 297 test, scaled to uint8."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)[..., None]
  labels = digits.target.astype(np.int32)
  order = np.random.default_rng(_SPLIT_SEED).permutation(len(labels))
  test, train = order[:_DIGITS_TEST_EXAMPLES], order[_DIGITS_TEST_EXAMPLES:]
  return (*_read_only(images[train], labels[train], images[test], labels[test]), 10)


@functools.cache
def _own_splits(path, kind, image_size):
  """A folder's or a .npz's splits, resized to ``image_size``, decoded once per process."""
  if kind == own_data.FOLDER:
    train_images, train_labels, test_images, test_labels, num_classes = (
        own_data.folder_arrays(path, image_size))
  else:
    train_images, train_labels, test_images, test_labels, num_classes = (
        own_data.npz_arrays(path))
    train_images = own_data.resized(train_images, image_size)
    test_images = own_data.resized(test_images, image_size)
  return (*_read_only(train_images, np.array(train_labels), test_images,
                      np.array(test_labels)), num_classes)


@functools.cache
def _synthetic(train_examples=50_000, test_examples=10_000, num_classes=10):
  """Random 32x32x3 images whose mean colour depends on the label, so they are learnable."""
  rng = np.random.default_rng(_SYNTHETIC_SEED)
  colours = rng.integers(0, 128, (num_classes, 3), dtype=np.uint8)

  def split(n):
    labels = rng.integers(0, num_classes, n, dtype=np.int32)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)  # full range: fast
    images >>= 1
    images += colours[labels][:, None, None, :]
    return images, labels

  return (*_read_only(*split(train_examples), *split(test_examples)), num_classes)


def tfds_data_dir(config):
  """config.data_dir, else $TFDS_DATA_DIR, else None (TFDS's own default)."""
  return config.data_dir or os.environ.get('TFDS_DATA_DIR') or None


def import_tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        "TFDS datasets need 'pip install tensorflow-datasets array_record'; "
        "'digits' and 'synthetic' work without it") from e
  return tfds


def tfds_directory_builder(path: str):
  """The builder of the prepared TFDS dataset in directory ``path`` (its version
  directory, holding dataset_info.json)."""
  tfds = import_tfds()
  try:
    return tfds.builder_from_directory(os.path.expanduser(path))
  except Exception as e:  # pylint: disable=broad-except  (TFDS raises several kinds)
    raise DatasetNotFoundError(
        f'{path}: not a readable TFDS directory ({own_data.one_line(e)})') from None


def _tfds_builder(name, data_dir):
  """The builder of a prepared TFDS image-classification dataset (a name, or the
  directory of a prepared copy); never downloads."""
  tfds = import_tfds()
  if own_data.dataset_kind(name) == own_data.TFDS_DIRECTORY:
    builder = tfds_directory_builder(name)
  else:
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as e:
      raise DatasetNotFoundError(
          f"Unknown dataset '{name}': not a TFDS name nor an existing path; use 'digits', "
          "'synthetic', a TFDS dataset name, a folder of images in train/CLASS/ folders, a "
          ".npz or a prepared TFDS directory") from e
  root = builder.data_dir_root
  if not builder.is_prepared():
    raise DatasetNotFoundError(
        f"TFDS dataset '{name}' is not prepared in {root}: prepare it on a machine with "
        f"internet (and TensorFlow) with python -c \"import tensorflow_datasets as tfds; "
        f"tfds.builder('{name}', data_dir='{root}').download_and_prepare()\", or point "
        f"config.data_dir or $TFDS_DATA_DIR at a directory that holds it")
  features = builder.info.features
  if not ('image' in features and isinstance(features['image'], tfds.features.Image) and
          'label' in features and isinstance(features['label'], tfds.features.ClassLabel)):
    raise ValueError(
        f"TFDS dataset '{name}' has features {list(features)}; an 'image' Image and a "
        f"'label' ClassLabel are needed")
  image = features['image']
  if None in image.shape or image.np_dtype != np.uint8:
    raise ValueError(
        f"TFDS dataset '{name}' has {image.np_dtype.__name__} images of shape "
        f"{image.shape}; only fixed-size uint8 images are supported")
  if not {'train', 'test'} <= set(builder.info.splits):
    raise ValueError(
        f"TFDS dataset '{name}' has splits {list(builder.info.splits)}; 'train' and "
        f"'test' are needed")
  return builder


@functools.cache
def _tfds_split(name, data_dir, split):
  """All images and labels of one split, decoded once per process."""
  if own_data.dataset_kind(name) == own_data.TFDS_DIRECTORY:
    source = _tfds_builder(name, data_dir).as_data_source(split=split)
  else:
    source = import_tfds().data_source(name, split=split, data_dir=data_dir, download=False)
  count = len(source)
  first = source[0]['image']
  images = np.empty((count, *first.shape), first.dtype)
  labels = np.empty(count, np.int32)
  for start in range(0, count, _DECODE_BATCH):
    records = source.__getitems__(list(range(start, min(start + _DECODE_BATCH, count))))
    images[start:start + len(records)] = [record['image'] for record in records]
    labels[start:start + len(records)] = [record['label'] for record in records]
  return _read_only(images, labels)


def _read_only(*arrays):
  """Guards memoized arrays against callers that write into them."""
  for array in arrays:
    array.flags.writeable = False
  return arrays
