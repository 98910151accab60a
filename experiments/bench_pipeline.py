"""Images/second of the Grain training input pipeline of ``mode=transfer_imagenet``.

Reads, decodes, random-resized-crops, flips, batches and puts on the devices the training
split of a dataset (a TFDS name, the directory of a prepared TFDS copy, an image folder or
a .npz) for ``--batches`` batches after one warm-up batch, with ``--workers`` Grain worker
processes:

  python -m experiments.bench_pipeline --dataset=jpeg_mock --image_size=224 --workers=2
  python -m experiments.bench_pipeline --dataset=../shared/data/tfds/cifar10/3.0.2 --image_size=64

``--dataset=jpeg_mock`` serves ImageNet-sized JPEGs (400x350, 60-110 KB, made from CIFAR-10
images upscaled with added noise) from memory. The last line printed is a JSON object.

An image folder against the same images in TFDS form (docs/running.md, "Your own data"):

  python -m experiments.bench_pipeline --write_folder=/tmp/jpegs --mock_images=10000 --mock_size=224
  python -m experiments.bench_pipeline --dataset=/tmp/jpegs --write_tfds=/tmp/jpegs_tfds
  python -m experiments.bench_pipeline --dataset=/tmp/jpegs --batches=60
  python -m experiments.bench_pipeline --dataset=/tmp/jpegs_tfds/jpegs/1.0.0 --batches=60
  python -m experiments.bench_pipeline --dataset=/tmp/jpegs --read_only   # reading alone

``--write_folder`` writes ``jpeg_mock``'s JPEGs (at ``--mock_size``, square) as
DIR/train/CLASS/NNNNN.JPEG; ``--write_tfds`` writes a folder's images, their bytes
unchanged, as a TFDS array_record dataset (``blockqnn_jax.prepare_dataset``).
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
from blockqnn_jax import images
from blockqnn_jax import prepare_dataset
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
_MOCK_SIZE = flags.DEFINE_integer('mock_size', 0, 'Side of the JPEGs made (0 = 400x350).')
_READ_ONLY = flags.DEFINE_bool(
    'read_only', False, 'Time reading the training records alone, in one process, in a '
    'shuffled order, with no decoding: what differs between a folder and TFDS.')
_WRITE_FOLDER = flags.DEFINE_string(
    'write_folder', '', f'Write {JPEG_MOCK} JPEGs as an image folder here, then exit.')
_WRITE_TFDS = flags.DEFINE_string(
    'write_tfds', '', 'Write the images of the --dataset folder as a TFDS array_record '
    'dataset here, then exit.')


def jpeg_mock(count: int, size: int = 0) -> list[dict]:
  """``count`` ImageNet-sized JPEG records: CIFAR-10 training images upscaled to 400x350
  (``size`` x ``size`` if given) with Gaussian noise (sigma 22-40 per image), so each file
  holds ImageNet-like detail (60-110 KB at 400x350)."""
  config = default.get_config()
  config.dataset = CIFAR10_DIR
  cifar = streaming_input.open_dataset(config)[0]['train']
  rng = np.random.default_rng(0)
  records = []
  for i in range(count):
    record = cifar[i]
    pixels = images.decode(record['image'])
    large = np.asarray(Image.fromarray(pixels).resize((size, size) if size else (400, 350),
                                                      Image.BICUBIC), np.float32)
    noise = rng.normal(0, rng.uniform(22, 40), large.shape)
    noisy = np.clip(large + noise, 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noisy).save(buffer, 'JPEG', quality=90)
    records.append({'image': buffer.getvalue(), 'label': record['label']})
  return records


def write_folder(directory: str, records: list[dict]) -> None:
  """``records`` as DIRECTORY/train/CLASS/NNNNN.JPEG (ImageNet's upper-case extension)."""
  for i, record in enumerate(records):
    class_dir = os.path.join(directory, 'train', f'class_{record["label"]:02d}')
    os.makedirs(class_dir, exist_ok=True)
    with open(os.path.join(class_dir, f'{i:05d}.JPEG'), 'wb') as file:
      file.write(record['image'])


def read_only(source) -> dict:
  """Records/second of reading every training record of ``source`` once, shuffled."""
  order = np.random.default_rng(0).permutation(len(source))
  start = time.perf_counter()
  for i in order:
    source[int(i)]  # pylint: disable=pointless-statement
  seconds = time.perf_counter() - start
  return {'hardware': benchmarking.hardware(),
          'load_average': [round(x, 2) for x in os.getloadavg()],
          'dataset': _DATASET.value, 'records': len(source),
          'records_per_second': round(len(source) / seconds)}


def main(argv):
  del argv
  if _WRITE_FOLDER.value:
    write_folder(_WRITE_FOLDER.value, jpeg_mock(_MOCK_IMAGES.value, _MOCK_SIZE.value))
    print(f'wrote {_MOCK_IMAGES.value} JPEGs under {_WRITE_FOLDER.value}/train')
    return
  if _WRITE_TFDS.value:
    print(f'wrote {prepare_dataset.write_tfds(_DATASET.value, _WRITE_TFDS.value)}')
    return
  if _DATASET.value == JPEG_MOCK:
    source = jpeg_mock(_MOCK_IMAGES.value, _MOCK_SIZE.value)
    sizes = [len(r['image']) / 1e3 for r in source]
    print(f'{len(source)} JPEGs, {min(sizes):.0f}-{max(sizes):.0f} KB, '
          f'mean {np.mean(sizes):.0f} KB')
  else:
    config = default.get_config()
    config.dataset = _DATASET.value
    source = streaming_input.open_dataset(config)[0]['train']
  if _READ_ONLY.value:
    print(json.dumps(read_only(source)))
    return
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
