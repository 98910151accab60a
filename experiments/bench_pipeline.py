"""Images/second of the streaming input pipeline of ``mode=transfer_imagenet``.

Reads, decodes, resizes, batches and puts on the devices the training split of a TFDS
dataset (a name, or the directory of a prepared copy) for ``--batches`` batches:

  python experiments/bench_pipeline.py --dataset=../shared/data/tfds/cifar10/3.0.2 --image_size=64
"""

import json
import os
import platform
import time

from absl import app
from absl import flags
import jax

from blockqnn_jax import train
from blockqnn_jax import transfer
from configs import default

_DATASET = flags.DEFINE_string('dataset', '../shared/data/tfds/cifar10/3.0.2',
                               'TFDS name or prepared dataset directory.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 64, 'Images are resized to this size.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Images per batch.')
_BATCHES = flags.DEFINE_integer('batches', 40, 'Batches to time (after one warm-up).')
_THREADS = flags.DEFINE_integer('threads', 8, 'Reader threads.')


def main(argv):
  del argv
  config = default.get_config()
  config.dataset = _DATASET.value
  sources, _ = transfer.open_dataset(config)
  pipeline = transfer.StreamingPipeline(
      sources['train'], _BATCH.value, _IMAGE_SIZE.value, train.make_mesh(), shuffle=True,
      threads=_THREADS.value)
  batches = pipeline.epoch()
  next(batches)[0].block_until_ready()
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(batches)[0].block_until_ready()
  seconds = time.perf_counter() - start
  print(json.dumps({
      'hardware': f'{os.cpu_count()} CPUs ({platform.machine()}), {jax.devices()[0].platform}',
      'dataset': _DATASET.value, 'image_size': _IMAGE_SIZE.value, 'threads': _THREADS.value,
      'images_per_second': round(_BATCHES.value * _BATCH.value / seconds)}))


if __name__ == '__main__':
  app.run(main)
