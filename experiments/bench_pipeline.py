"""Images/second of the Grain training input pipeline of ``mode=transfer_imagenet``.

Reads, decodes, random-resized-crops, flips, batches and puts on the devices the training
split of a TFDS dataset (a name, or the directory of a prepared copy) for ``--batches``
batches after one warm-up batch, with ``--workers`` Grain worker processes:

  python -m experiments.bench_pipeline --dataset=jpeg_mock --image_size=224 --workers=2
  python -m experiments.bench_pipeline --dataset=../shared/data/tfds/cifar10/3.0.2 --image_size=64

``--dataset=jpeg_mock`` serves ImageNet-sized JPEGs (400x350, 60-110 KB, made from CIFAR-10
images upscaled with added noise) from memory. The last line printed is a JSON object.
"""

import io
import json
import os
import time

from absl import app
from absl import flags
import numpy as np
from PIL import Image

from blockqnn_jax import data as data_lib
from blockqnn_jax import streaming_input
from blockqnn_jax.analysis import benchmarking
from configs import default

JPEG_MOCK = 'jpeg_mock'
CIFAR10_DIR = '../shared/data/tfds/cifar10/3.0.2'

_DATASET = flags.DEFINE_string(
    'dataset', CIFAR10_DIR, f'TFDS name, prepared dataset directory or {JPEG_MOCK!r}.')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', 224, 'Training crops are this size.')
_BATCH = flags.DEFINE_integer('batch_size', 128, 'Images per batch.')
_BATCHES = flags.DEFINE_integer('batches', 40, 'Batches to time (after one warm-up).')
_WORKERS = flags.DEFINE_integer('workers', 2, 'Grain worker processes (0 = in process).')
_MOCK_IMAGES = flags.DEFINE_integer('mock_images', 512, f'JPEGs that {JPEG_MOCK} makes.')


def jpeg_mock(count: int) -> list[dict]:
  """``count`` ImageNet-sized JPEG records: CIFAR-10 training images upscaled to 400x350
  with Gaussian noise (sigma 22-40 per image), so each file holds ImageNet-like detail
  (60-110 KB)."""
  config = default.get_config()
  config.dataset = CIFAR10_DIR
  cifar = streaming_input.open_dataset(config)[0]['train']
  rng = np.random.default_rng(0)
  records = []
  for i in range(count):
    record = cifar[i]
    pixels = streaming_input.decode(record['image'])
    large = np.asarray(Image.fromarray(pixels).resize((400, 350), Image.BICUBIC), np.float32)
    noise = rng.normal(0, rng.uniform(22, 40), large.shape)
    noisy = np.clip(large + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, 'JPEG', quality=90)
    records.append({'image': buffer.getvalue(), 'label': record['label']})
  return records


def main(argv):
  del argv
  if _DATASET.value == JPEG_MOCK:
    source = jpeg_mock(_MOCK_IMAGES.value)
    sizes = [len(r['image']) / 1e3 for r in source]
    print(f'{len(source)} JPEGs, {min(sizes):.0f}-{max(sizes):.0f} KB, '
          f'mean {np.mean(sizes):.0f} KB')
  else:
    config = default.get_config()
    config.dataset = _DATASET.value
    source = streaming_input.open_dataset(config)[0]['train']
  epochs = -(-(_BATCHES.value + 1) * _BATCH.value // len(source))
  train_input = streaming_input.TrainInput(
      source, batch_size=_BATCH.value, image_size=_IMAGE_SIZE.value, epochs=epochs, seed=0,
      mesh=data_lib.make_mesh(), workers=_WORKERS.value)
  batches = train_input.iterator()
  next(batches)[0].block_until_ready()
  start = time.perf_counter()
  for _ in range(_BATCHES.value):
    next(batches)[0].block_until_ready()
  seconds = time.perf_counter() - start
  batches.close()
  images_per_second = _BATCHES.value * _BATCH.value / seconds
  print(json.dumps({
      'hardware': benchmarking.hardware(),
      'load_average': [round(x, 2) for x in os.getloadavg()],
      'dataset': _DATASET.value, 'image_size': _IMAGE_SIZE.value,
      'batch_size': _BATCH.value, 'batches': _BATCHES.value, 'workers': _WORKERS.value,
      'decoder': 'simplejpeg (JPEG, DCT-scaled), Pillow (PNG); OpenCV resize',
      'images_per_second': round(images_per_second),
      'images_per_second_per_core': round(images_per_second / max(1, _WORKERS.value))}))


if __name__ == '__main__':
  app.run(main)
