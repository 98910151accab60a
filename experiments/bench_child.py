"""Child-training speed for the reference blocks (``blockqnn_jax/analysis/reference_blocks.json``).

For each block, in the CIFAR search template (32 filters, N = 2, batch 256, CIFAR-10-sized
data: 45,000 training and 5,000 validation images), prints one JSON line with training
images/second, compile seconds and the wall time of one full early-stop evaluation
(``child.evaluate_block``: compile, 12 epochs, validation). It also times the input side
alone (gather + augment + normalise of every batch of an epoch, on the device) to show
where an epoch's time goes.

  python -m experiments.bench_child                      # the paper's scale, any devices
  python -m experiments.bench_child --epochs=1 --max_train_examples=2560   # quick, on CPU

Synthetic data by default (no download, and small enough to travel); --dataset=cifar10
uses the real images where TFDS has them.
"""

import json
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from blockqnn_jax import child
from blockqnn_jax import data as data_lib
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import reference_blocks
from blockqnn_jax.training import steps
from configs import default

_BLOCKS = flags.DEFINE_list('blocks', ['small', 'medium', 'deep'], 'Reference blocks to time.')
_BLOCKS_FILE = flags.DEFINE_string('blocks_file', str(reference_blocks.PATH),
                                   'JSON of NSC blocks by name.')
_DATASET = flags.DEFINE_string('dataset', 'synthetic', 'config.dataset')
_EPOCHS = flags.DEFINE_integer('epochs', 12, 'Early-stop epochs.')
_MAX_TRAIN = flags.DEFINE_integer('max_train_examples', 0, '0 = all 45,000.')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Global batch size.')
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'config.dtype')


def input_seconds_per_epoch(data: data_lib.DeviceData, batch_size: int) -> float:
  """One epoch of the input side only: permutation, gather, augment, normalise."""
  steps = len(data.train_labels) // batch_size

  @jax.jit
  def epoch(data, rng):
    order = jax.random.permutation(rng, len(data.train_labels))[:steps * batch_size]

    def body(total, indices):
      images = data_lib.augment(jax.random.fold_in(rng, indices[0]),
                                data.train_images[indices])
      return total + data_lib.normalize(images, data.mean, data.std, jnp.float32).sum(), None

    return jax.lax.scan(body, 0.0, order.reshape(steps, batch_size))[0]

  rng = jax.random.key(0)
  epoch(data, rng).block_until_ready()
  start = time.perf_counter()
  epoch(data, jax.random.fold_in(rng, 1)).block_until_ready()
  return time.perf_counter() - start


def main(argv):
  del argv
  config = default.get_config()
  config.dataset = _DATASET.value
  config.early_stop.epochs = _EPOCHS.value
  config.max_train_examples = _MAX_TRAIN.value
  config.batch_size = _BATCH.value
  config.dtype = _DTYPE.value
  mesh = data_lib.make_mesh()
  start = time.perf_counter()
  data = data_lib.device_data(config, mesh)
  print(json.dumps({
      'hardware': benchmarking.hardware(), 'dtype': str(np.dtype(steps.compute_dtype(config))),
      'train_images': len(data.train_labels), 'epochs': _EPOCHS.value,
      'batch_size': _BATCH.value, 'repeats': config.model.repeats,
      'filters': config.model.filters, 'data_load_seconds': time.perf_counter() - start,
      'input_only_seconds_per_epoch': input_seconds_per_epoch(data, _BATCH.value),
  }), flush=True)
  blocks = reference_blocks.load(_BLOCKS_FILE.value)
  for name in _BLOCKS.value:
    block = blocks[name]
    start = time.perf_counter()
    result = child.evaluate_block(block, config, mesh)
    wall = time.perf_counter() - start
    print(json.dumps({
        'block': name, 'status': result['status'], 'reason': result.get('reason'),
        'images_per_second': round(result.get('images_per_second', 0.0)),
        'compile_seconds': round(result['compile_seconds'], 2),
        'train_seconds': round(result['train_seconds'], 2),
        'eval_seconds': round(result['eval_seconds'], 2),
        'seconds_per_epoch': round(result['train_seconds'] / max(result['epochs'], 1), 3),
        'evaluation_wall_seconds': round(wall, 2),
        'validation_accuracy': round(result['accuracy'], 4),
        'gflops_per_image': round(result['flops'] / 1e9, 3), 'params': result['params'],
    }), flush=True)


if __name__ == '__main__':
  app.run(main)
