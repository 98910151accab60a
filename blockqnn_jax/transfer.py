"""Transfer a found block to ImageNet-style data (``config.mode = 'transfer_imagenet'``).

  python -m blockqnn_jax.main --config=configs/cifar10.py --config.mode=transfer_imagenet \
      --config.block=SEARCH_WORKDIR --config.dataset=imagenet_resized/64x64 --workdir=DIR

The block is stacked into the ImageNet template (strided stem, four stages) with
``config.transfer.filters`` and ``config.transfer.repeats`` and trained with the
``config.transfer`` recipe, checkpoints and resume of ``train_final.fit``, reporting
top-1 and top-5 accuracy on the dataset's validation split (its test split if it has none).
``config.dataset`` is a TFDS name (``imagenet2012``, ``imagenet_resized/32x32``, any image
classification dataset) or the directory of a prepared TFDS dataset (read with
``tfds.builder_from_directory``, so data built elsewhere works offline).

The images stream from disk: ``StreamingPipeline`` reads each batch's records through
``tfds`` data sources in worker threads, decodes them, resizes the shorter side to
``config.transfer.image_size`` and centre-crops, batches, and puts the batches on the
devices a few ahead of the step; random crop and flip happen on the device. Nothing holds
the dataset in memory.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from blockqnn_jax import data as data_lib
from blockqnn_jax import files
from blockqnn_jax import train
from blockqnn_jax import train_final

STATISTICS_IMAGES = 1024  # images sampled to estimate the per-channel mean and std


def open_dataset(config) -> tuple[dict, int]:
  """The dataset's 'train' and evaluation data sources, and its class count."""
  tfds = data_lib.import_tfds()
  if os.path.isdir(config.dataset):
    builder = tfds.builder_from_directory(config.dataset)
    read = builder.as_data_source
  else:
    builder = tfds.builder(config.dataset, data_dir=data_lib.tfds_data_dir(config))
    read = lambda split: tfds.data_source(
        config.dataset, split=split, data_dir=data_lib.tfds_data_dir(config),
        download=False)
  features = builder.info.features
  if 'image' not in features or 'label' not in features:
    raise ValueError(f'{config.dataset} has features {list(features)}; an "image" and a '
                     '"label" are needed')
  splits = list(builder.info.splits)
  eval_split = 'validation' if 'validation' in splits or not splits else 'test'
  try:
    sources = {'train': read('train'), 'eval': read(eval_split)}
  except Exception as error:  # pylint: disable=broad-except  (TFDS raises several kinds)
    raise data_lib.DatasetNotFoundError(
        f'{config.dataset}: cannot read its train/{eval_split} splits ({error}); prepare '
        'it with TFDS (see the README) or give the directory of a prepared copy') from None
  return sources, features['label'].num_classes


def resize(image: np.ndarray, size: int) -> np.ndarray:
  """Shorter side to ``size``, then the centre ``size`` x ``size`` crop."""
  height, width = image.shape[:2]
  if (height, width) != (size, size):
    scale = size / min(height, width)
    shape = (max(size, round(width * scale)), max(size, round(height * scale)))
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    image = np.asarray(pil.resize(shape, Image.BILINEAR)).reshape(shape[1], shape[0], -1)
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    image = image[top:top + size, left:left + size]
  return image


class StreamingPipeline:
  """Batches of one split, read, decoded and resized in threads, prefetched to devices."""

  def __init__(self, source, batch_size: int, image_size: int, mesh, *, shuffle: bool,
               seed: int = 0, limit: int = 0, threads: int = 8, prefetch: int = 4):
    """``limit`` > 0 uses only that many records of the split (a cap for quick runs)."""
    self.source, self.batch_size, self.image_size = source, batch_size, image_size
    self.shuffle, self.seed, self.prefetch = shuffle, seed, prefetch
    self.pool = concurrent.futures.ThreadPoolExecutor(threads)
    self.sharding = NamedSharding(mesh, P('data'))
    self.count = min(len(source), limit) if limit else len(source)
    count = self.count
    self.steps_per_epoch = count // batch_size if shuffle else -(-count // batch_size)

  def _load(self, indices: np.ndarray) -> tuple:
    records = [self.source[int(i)] for i in indices]
    images = np.stack([resize(r['image'], self.image_size) for r in records])
    labels = np.array([r['label'] for r in records], np.int32)
    mask = np.ones(len(labels), bool)
    pad = self.batch_size - len(labels)
    if pad:  # the last evaluation batch: padded, masked out
      images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
      labels, mask = np.pad(labels, (0, pad)), np.pad(mask, (0, pad))
    return tuple(jax.device_put(x, self.sharding) for x in (images, labels, mask))

  def epoch(self, epoch: int = 0, start_step: int = 0):
    """The epoch's batches (images, labels, mask) from ``start_step`` on."""
    order = np.arange(len(self.source))
    if self.shuffle:
      order = np.random.default_rng([self.seed, epoch]).permutation(order)
    order = order[:self.count]
    batches = [order[i * self.batch_size:(i + 1) * self.batch_size]
               for i in range(start_step, self.steps_per_epoch)]
    pending = collections.deque()
    for indices in batches:
      pending.append(self.pool.submit(self._load, indices))
      if len(pending) > self.prefetch:
        yield pending.popleft().result()
    while pending:
      yield pending.popleft().result()


def channel_statistics(pipeline: StreamingPipeline) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (0-255 scale) of the first training batches."""
  images = []
  for batch_images, _, _ in pipeline.epoch():
    images.append(np.asarray(batch_images, np.float64))
    if sum(len(x) for x in images) >= STATISTICS_IMAGES:
      break
  images = np.concatenate(images)
  axes = tuple(range(images.ndim - 1))
  return (images.mean(axes).astype(np.float32),
          np.maximum(images.std(axes), 1.0).astype(np.float32))


class StreamingRunner:
  """Feeds ``train_final.fit`` from streamed batches; evaluates top-1 and top-5."""

  def __init__(self, trainer: train.Trainer, train_pipeline: StreamingPipeline,
               eval_pipeline: StreamingPipeline, mean, std):
    self.trainer, self.train_pipeline, self.eval_pipeline = (
        trainer, train_pipeline, eval_pipeline)
    replicated = NamedSharding(trainer.mesh, P())
    self.mean, self.std = jax.device_put((mean, std), replicated)
    self.steps_per_epoch = train_pipeline.steps_per_epoch
    self._update = jax.jit(trainer.update, donate_argnums=0)
    self._hits = jax.jit(trainer.hits)

  def start_epoch(self, epoch: int, rng, start_step: int) -> None:
    del rng
    self.batches = self.train_pipeline.epoch(epoch, start_step)

  def step(self, step: int, rng):
    images, labels, _ = next(self.batches)
    self.trainer.state, loss = self._update(self.trainer.state, images, labels,
                                            jax.random.fold_in(rng, step), self.mean,
                                            self.std)
    return loss

  def evaluate(self) -> dict:
    top1 = top5 = total = 0
    for images, labels, mask in self.eval_pipeline.epoch():
      hits = self._hits(self.trainer.state, images, labels, mask, self.mean, self.std)
      top1, top5 = top1 + int(hits[0]), top5 + int(hits[1])
      total += int(mask.sum())
    return {'top1_accuracy': top1 / total, 'top5_accuracy': top5 / total}


def transfer_and_evaluate(config, workdir: str) -> dict:
  """Trains the block of ``config.block`` in the ImageNet template; returns the scores."""
  os.makedirs(workdir, exist_ok=True)
  final = config.transfer
  block = files.load_block(config.block, config.search.max_layers)
  mesh = train.make_mesh()
  train.check_batch_size(final.batch_size, mesh)
  sources, num_classes = open_dataset(config)
  size = config.transfer.image_size
  train_pipeline = StreamingPipeline(sources['train'], final.batch_size, size, mesh,
                                     shuffle=True, seed=config.seed,
                                     limit=config.max_train_examples)
  eval_pipeline = StreamingPipeline(sources['eval'], final.batch_size, size, mesh,
                                    shuffle=False, limit=config.transfer.max_eval_examples)
  if train_pipeline.steps_per_epoch == 0:
    raise ValueError(f'transfer.batch_size={final.batch_size} is larger than the '
                     f'{train_pipeline.count} training images')
  mean, std = channel_statistics(train_pipeline)
  channels = len(mean)
  model_config = train_final.final_model_config(config, final)
  model_config.template = 'imagenet'
  model, trainer, schedule = train_final.build_trainer(
      config, final, block, model_config, mesh, None, num_classes=num_classes,
      channels=channels, steps_per_epoch=train_pipeline.steps_per_epoch)
  runner = StreamingRunner(trainer, train_pipeline, eval_pipeline, mean, std)
  history = train_final.fit(runner, config, final, workdir, schedule)
  return train_final.write_summary(
      workdir, config, final, block, model, model_config, history, num_classes=num_classes,
      image_shape=(size, size, channels), mean=mean, std=std)
