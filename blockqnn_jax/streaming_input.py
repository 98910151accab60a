"""A Grain input pipeline that streams an image-classification dataset from disk,
decoding and augmenting in worker processes (``mode=transfer_imagenet``'s input).

Records are read from TFDS array_record data sources with image decoding skipped, or from
a folder's image files (``own_data``), so the encoded bytes reach our decoder
(``images``): JPEGs decode at the smallest DCT scale that still leaves the crop at least
``image_size`` pixels. A .npz's arrays are read as they are. Decoding and augmentation
run in ``workers`` Grain processes.

Training: Inception-style random-resized crop and horizontal flip, random per (seed,
epoch, index) so runs are reproducible; every batch is a pure function of its position in
the run, so the position the training checkpoint holds (the train state's step) restores
the iterator, and a resumed run reads exactly the batches an uninterrupted one would.
Evaluation: the shorter side resized to ``image_size / 0.875``, then the centre crop.
Each JAX process reads its own part of every batch; batches are assembled into global
arrays sharded over the mesh's 'data' axis and put on the devices a couple of steps ahead.
"""

from __future__ import annotations

import functools
import gc
import math

from absl import flags
import grain
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from blockqnn_jax import data as data_lib
from blockqnn_jax import images
from blockqnn_jax import own_data

CROP_SCALE = (0.08, 1.0)  # area fraction of the random-resized crop (Szegedy et al. 2015)
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect-ratio range, sampled log-uniformly
CROP_ATTEMPTS = 10  # then the centre crop, as in TF's and torchvision's reference code
# Evaluation crops the centre 87.5% (224 of 256, the ResNet/Inception evaluation; TF's
# inception_preprocessing central_fraction=0.875, torchvision's Resize(256)+CenterCrop(224)).
EVAL_CROP_FRACTION = 0.875
DEVICE_PREFETCH = 2  # batches put on the devices ahead of the step
STATISTICS_IMAGES = 1024  # training images whose centre crops give the channel mean/std


def open_dataset(config) -> tuple[dict, int]:
  """The dataset's 'train' and evaluation data sources, and its class count.

  Sources yield encoded image bytes where TFDS can skip decoding, decoded arrays where it
  cannot (``tfds.testing.mock_data`` encodes its random images with TensorFlow); a
  folder's JPEGs as bytes, its other images and a .npz's as arrays."""
  kind = own_data.dataset_kind(config.dataset)
  if kind in (own_data.FOLDER, own_data.NPZ):
    return own_data.streaming_sources(config.dataset)
  tfds = data_lib.import_tfds()
  if kind == own_data.TFDS_DIRECTORY:
    builder = data_lib.tfds_directory_builder(config.dataset)
    read = builder.as_data_source
  else:
    builder = tfds.builder(config.dataset, data_dir=data_lib.tfds_data_dir(config))
    read = functools.partial(tfds.data_source, config.dataset, download=False,
                             data_dir=data_lib.tfds_data_dir(config))
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'{config.dataset} has features {list(features)}; an "image" and a '
                     '"label" are needed')
  splits = list(builder.info.splits)
  eval_split = 'validation' if 'validation' in splits or not splits else 'test'

  def read_encoded(split):
    source = read(split=split, decoders={'image': tfds.decode.SkipDecoding()})
    try:
      source[0]
    except Exception:  # pylint: disable=broad-except  (mock data cannot encode)
      return read(split=split)
    return source

  try:
    sources = {'train': read_encoded('train'), 'eval': read_encoded(eval_split)}
  except Exception as error:  # pylint: disable=broad-except  (TFDS raises several kinds)
    raise data_lib.DatasetNotFoundError(
        f'{config.dataset}: cannot read its train/{eval_split} splits '
        f'({own_data.one_line(error)}); prepare '
        'it with TFDS (docs/training.md) or give the directory of a prepared copy') from None
  return sources, features['label'].num_classes


def random_resized_crop_box(height: int, width: int,
                            rng: np.random.Generator) -> tuple[int, int, int, int]:
  """(top, left, crop height, crop width): a random area fraction in ``CROP_SCALE`` and
  aspect ratio in ``CROP_RATIO``; after ``CROP_ATTEMPTS`` misses, the centre crop of the
  nearest allowed ratio (torchvision's ``RandomResizedCrop.get_params``)."""
  area = height * width
  log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
  for _ in range(CROP_ATTEMPTS):
    target_area = area * rng.uniform(*CROP_SCALE)
    ratio = math.exp(rng.uniform(*log_ratio))
    crop_width = round(math.sqrt(target_area * ratio))
    crop_height = round(math.sqrt(target_area / ratio))
    if 0 < crop_width <= width and 0 < crop_height <= height:
      return (int(rng.integers(0, height - crop_height + 1)),
              int(rng.integers(0, width - crop_width + 1)), crop_height, crop_width)
  ratio = width / height
  if ratio < CROP_RATIO[0]:
    crop_width, crop_height = width, round(width / CROP_RATIO[0])
  elif ratio > CROP_RATIO[1]:
    crop_width, crop_height = round(height * CROP_RATIO[1]), height
  else:
    crop_width, crop_height = width, height
  return (height - crop_height) // 2, (width - crop_width) // 2, crop_height, crop_width


def centre_crop_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
  """The box that resizing the shorter side to ``size / EVAL_CROP_FRACTION`` and taking
  the centre ``size`` x ``size`` would keep, in the original image's pixels."""
  del size  # the box is the same fraction whatever the output size
  return images.centre_square(height, width, EVAL_CROP_FRACTION)


def train_example(record: dict, rng: np.random.Generator, size: int) -> dict:
  """A random-resized crop, flipped horizontally with probability 1/2."""
  box = random_resized_crop_box(*images.image_shape(record['image']), rng)
  image = images.crop_resized(record['image'], box, size)
  if rng.random() < 0.5:
    image = image[:, ::-1]
  return {'image': np.ascontiguousarray(image), 'label': np.int32(record['label'])}


def eval_example(record: dict, size: int) -> dict:
  """The centre crop (``centre_crop_box``), resized to ``size``."""
  box = centre_crop_box(*images.image_shape(record['image']), size)
  return {'image': images.crop_resized(record['image'], box, size),
          'label': np.int32(record['label'])}


def first_records(source, limit: int) -> grain.MapDataset:
  """The first ``limit`` records of ``source`` (0 = all): the cap of a quick run."""
  return grain.MapDataset.source(source)[:limit or len(source)]


def process_batches(dataset: grain.MapDataset, batch_size: int) -> grain.MapDataset:
  """This process's part of each global batch of ``dataset``, in order.

  Global batch ``g`` is the local batches ``g * P`` to ``g * P + P - 1`` of the dataset
  cut into local batches (P processes); process ``i`` feeds the ``i``-th, to its own
  devices. So every process count sees the same global batches, and a run's result does
  not depend on how many hosts feed it. The last local batches may be short (evaluation
  pads them)."""
  local_batch = _local_batch_size(batch_size)
  return dataset.batch(local_batch)[jax.process_index()::jax.process_count()]


def _local_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f'batch size {global_batch_size} must be a multiple of the '
                     f'{jax.process_count()} JAX processes')
  return global_batch_size // jax.process_count()


def _check_workers(workers: int) -> None:
  """Grain's worker processes read their settings from absl flags, which only an absl
  app (``blockqnn_jax.main``) parses: refused at construction, before any work."""
  if workers and not flags.FLAGS.is_parsed():
    raise RuntimeError(
        f'workers={workers} needs absl flags parsed (Grain reads its settings from them): '
        'run inside absl.app.run (as blockqnn_jax.main does), call '
        'absl.flags.FLAGS.mark_as_parsed() first, or use workers=0')


def _in_workers(dataset: grain.MapDataset, workers: int) -> grain.IterDataset:
  """``dataset``'s elements computed in ``workers`` processes (0 = this process), each
  with one reading thread (a worker is a core; more threads would contend for it) and two
  elements (batches) buffered."""
  iterable = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1,
                                                       prefetch_buffer_size=2))
  if workers:
    iterable = iterable.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers))
  return iterable


class TrainInput:
  """All epochs' training batches (images, labels), each a pure function of its position.

  Epoch ``e`` is the split shuffled with seed ``seed + e``, cut to whole global batches,
  of which this process reads its part (``process_batches``); the random map's generator
  derives from ``seed`` and the element's position in the run, i.e. (seed, epoch, index),
  the same whichever process reads it. So the iterator's state is its position: a
  checkpoint's step restores it exactly, with any number of workers or hosts."""

  def __init__(self, source, *, batch_size: int, image_size: int, epochs: int, seed: int,
               mesh, workers: int, limit: int = 0):
    _check_workers(workers)
    records = first_records(source, limit)
    self.count = len(records)
    self.steps_per_epoch = self.count // batch_size
    used = self.steps_per_epoch * batch_size  # whole global batches
    stream = grain.MapDataset.concatenate(
        [records.shuffle(seed=(seed + epoch) % 2**32)[:used] for epoch in range(epochs)])
    stream = stream.random_map(functools.partial(train_example, size=image_size),
                               seed=seed % 2**32)
    self.batches = process_batches(stream, batch_size)
    self.workers, self.sharding = workers, NamedSharding(mesh, P('data'))

  def iterator(self, position: int = 0) -> Batches:
    """The run's batches from batch ``position`` on, as global arrays put on the devices
    ``DEVICE_PREFETCH`` ahead; close it when done (it ends the worker processes)."""
    batches = _in_workers(self.batches[position:], self.workers).map(
        lambda batch: tuple(jax.make_array_from_process_local_data(self.sharding, batch[key])
                            for key in ('image', 'label')))
    return Batches(iter(grain.experimental.ThreadPrefetchIterDataset(
        batches, prefetch_buffer_size=DEVICE_PREFETCH)))


class Batches:
  """A Grain iterator whose ``close`` also frees the shared memory of the batches still
  in flight."""

  def __init__(self, iterator: grain.DatasetIterator):
    self._iterator = iterator

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._iterator)

  def close(self) -> None:
    _close(self._iterator)


def _close(iterator: grain.DatasetIterator) -> None:
  """Ends the iterator's worker processes and frees their shared memory before returning.

  The batches the iterator still held sit in reference cycles, which only the garbage
  collector frees, and Grain unlinks their shared memory in a background thread: left to
  the exit, both come too late and Python's resource tracker reports the memory as leaked.
  """
  iterator.close()
  gc.collect()
  # Grain's one deleting thread (created on the first worker) runs its queue in order,
  # so a no-op through it returns once every unlink queued above is done. It is private:
  # a Grain without it only brings the exit warning back.
  try:
    from grain._src.python.ipc import shared_memory_array  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  deleting = getattr(shared_memory_array.SharedMemoryArray, '_del_thread_pool', None)
  if deleting is not None:
    deleting.apply(int)


class EvalInput:
  """Evaluation batches (images, labels, mask) in order; short batches are padded and
  masked out, so every image counts once and every process takes the same steps."""

  def __init__(self, source, *, batch_size: int, image_size: int, mesh, workers: int,
               limit: int = 0):
    _check_workers(workers)
    self.local_batch = _local_batch_size(batch_size)
    self.records = first_records(source, limit)
    self.batch_size, self.image_size, self.workers = batch_size, image_size, workers
    self.sharding = NamedSharding(mesh, P('data'))
    self.steps = -(-len(self.records) // batch_size)

  def _padded(self, batch: dict | None, channels: int) -> tuple:
    """The global (images, labels, mask) of a local batch padded to the batch size."""
    size, count = self.image_size, 0 if batch is None else len(batch['label'])
    images = np.zeros((self.local_batch, size, size, channels), np.uint8)
    labels, mask = np.zeros(self.local_batch, np.int32), np.zeros(self.local_batch, bool)
    if count:
      images[:count], labels[:count], mask[:count] = batch['image'], batch['label'], True
    return tuple(jax.make_array_from_process_local_data(self.sharding, x)
                 for x in (images, labels, mask))

  def batches(self, channels: int):
    """One pass over the split, ``self.steps`` batches of ``channels``-channel images."""
    dataset = self.records.map(functools.partial(eval_example, size=self.image_size))
    iterator = iter(_in_workers(process_batches(dataset, self.batch_size), self.workers))
    try:
      for _ in range(self.steps):
        yield self._padded(next(iterator, None), channels)
    finally:
      _close(iterator)


def crop_statistics(source, image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (0-255 scale, ``data.channel_statistics``) of the evaluation
  crops of the split's first ``STATISTICS_IMAGES`` images (TFDS stores records shuffled)."""
  count = min(len(source), STATISTICS_IMAGES)
  return data_lib.channel_statistics(
      np.stack([eval_example(source[i], image_size)['image'] for i in range(count)]))
