"""The headline benchmark: what a search pays per sampled child, amortised.

A fixed, seeded stream of children (the three reference blocks, then blocks drawn by the
agent at epsilon = 1, seed 0) goes through the executor a search uses (the local
executor with the real trainer: compile ahead, several children per device) at the search
settings: CIFAR-10-sized data (45,000 train / 5,000 validation), batch 256, 12 epochs,
32 filters, N = 2. The real CIFAR-10 where TFDS has it prepared, else synthetic data of
that shape. One JSON line per child as it finishes; the last line is one JSON object:
``seconds_per_child`` (wall, amortised over the stream), ``compile_seconds`` (all
compilation the children caused, in any thread), ``compile_seconds_on_critical_path``
(stream wall time during which no child was training: what compilation and other host
work cost the devices), ``train_seconds``, the settings and the hardware.

  python -m experiments.bench_search                                # the search's scale
  python -m experiments.bench_search --children=6 --epochs=1 --max_train_examples=512 \
      --filters=8 --repeats=1 --batch_size=64 --compile_ahead=0    # a few minutes on 2 CPUs

``--compilation_cache_dir`` points the persistent cache (a fresh temporary one by default,
so a run is cold unless told otherwise); run twice with the same directory for the warm
figure.
"""

import json
import tempfile
import threading
import time

from absl import app
from absl import flags

from blockqnn_jax import child
from blockqnn_jax import data as data_lib
from blockqnn_jax import executors
from blockqnn_jax import nsc
from blockqnn_jax import strategies
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import reference_blocks
from configs import default

_CHILDREN = flags.DEFINE_integer('children', 32, 'Children in the stream (3 reference '
                                 'blocks first, then the agent at epsilon 1, seed 0).')
_EPOCHS = flags.DEFINE_integer('epochs', 12, 'Early-stop epochs.')
_MAX_TRAIN = flags.DEFINE_integer('max_train_examples', 0, '0 = all 45,000.')
_FILTERS = flags.DEFINE_integer('filters', 32, 'config.model.filters')
_REPEATS = flags.DEFINE_integer('repeats', 2, 'config.model.repeats (N)')
_BATCH = flags.DEFINE_integer('batch_size', 256, 'Global batch size.')
_DTYPE = flags.DEFINE_string('dtype', 'float32', 'config.dtype')
_DATASET = flags.DEFINE_string('dataset', '', "'' = cifar10 where prepared, else synthetic")
_CACHE = flags.DEFINE_string('compilation_cache_dir', '',
                             "persistent compilation cache; '' = a fresh temporary one")
_CHILDREN_PER_DEVICE = flags.DEFINE_integer('children_per_device', 1,
                                            'config.children_per_device')
_COMPILE_AHEAD = flags.DEFINE_integer('compile_ahead', 1, 'config.compile_ahead (0 = serial)')
_FAST_COMPILE = flags.DEFINE_bool('fast_compile', False, 'config.fast_compile')
_EPOCH_LOOP = flags.DEFINE_enum('epoch_loop', 'host', ['host', 'device'], 'config.epoch_loop')


def child_stream(count: int, max_layers: int) -> list[nsc.Block]:
  """The reference blocks, then blocks the agent draws at epsilon 1 with seed 0."""
  reference = reference_blocks.load()
  blocks = [reference[name] for name in ('small', 'medium', 'deep')]
  search_config = default.get_config().search
  search_config.max_layers = max_layers
  search_config.epsilon_schedule = ((1.0, 1),)
  sampler = strategies.make_strategy(search_config, seed=0)
  while len(blocks) < count:
    blocks.append(sampler.propose())
  return blocks[:count]


class TimedEvaluator:
  """The trainer, noting when each child trains (``run``), to find the idle time."""

  def __init__(self, evaluator):
    self.evaluator, self.runs, self.lock = evaluator, [], threading.Lock()

  def prepare(self, block):
    return self.evaluator.prepare(block)

  def run(self, prepared, should_stop):
    start = time.perf_counter()
    result = self.evaluator.run(prepared, should_stop)
    with self.lock:
      self.runs.append((start, time.perf_counter()))
    return result


def busy_seconds(intervals) -> float:
  """Length of the union of (start, end) intervals."""
  total, end = 0.0, float('-inf')
  for start, stop in sorted(intervals):
    if stop > end:
      total += stop - max(start, end)
      end = stop
  return total


def make_config():
  config = default.get_config()
  config.dataset = _DATASET.value or ('cifar10' if _cifar10_prepared() else 'synthetic')
  config.early_stop.epochs = _EPOCHS.value
  config.max_train_examples = _MAX_TRAIN.value
  config.model.filters = _FILTERS.value
  config.model.repeats = _REPEATS.value
  config.batch_size = _BATCH.value
  config.dtype = _DTYPE.value
  config.children_per_device = _CHILDREN_PER_DEVICE.value
  config.compile_ahead = _COMPILE_AHEAD.value
  config.fast_compile = _FAST_COMPILE.value
  config.epoch_loop = _EPOCH_LOOP.value
  config.compilation_cache_dir = _CACHE.value or tempfile.mkdtemp(prefix='jax_cache_')
  return config


def _cifar10_prepared() -> bool:
  config = default.get_config()
  try:
    data_lib.check_dataset(config)
  except (ImportError, ValueError):
    return False
  return True


def main(argv):
  del argv
  config = make_config()
  blocks = child_stream(_CHILDREN.value, config.search.max_layers)
  start = time.perf_counter()
  data_lib.device_data(config, data_lib.make_mesh())  # loaded once per process, as in a search
  load_seconds = time.perf_counter() - start
  evaluator = TimedEvaluator(child.ChildEvaluator(config))
  executor = executors.LocalExecutor(evaluator, config.children_per_device,
                                     config.compile_ahead)
  start = time.perf_counter()
  for index, block in enumerate(blocks):
    executor.submit(str(index), block)
  results = {}
  while len(results) < len(blocks):
    key, result = executor.next_result()
    results[key] = result
    print(json.dumps({
        'child': int(key), 'layers': len(blocks[int(key)]), 'status': result['status'],
        'reason': result.get('reason'), 'accuracy': round(result['accuracy'], 4),
        'compile_seconds': round(result['compile_seconds'], 2),
        'prepare_seconds': round(result['prepare_seconds'], 2),
        'train_seconds': round(result['train_seconds'], 2),
        'images_per_second': round(result.get('images_per_second', 0.0)),
        'elapsed': round(time.perf_counter() - start, 2)}), flush=True)
  wall = time.perf_counter() - start
  executor.close()
  print(json.dumps({
      'seconds_per_child': round(wall / len(blocks), 3),
      'wall_seconds': round(wall, 2),
      'compile_seconds': round(sum(r['compile_seconds'] for r in results.values()), 2),
      'compile_seconds_on_critical_path': round(wall - busy_seconds(evaluator.runs), 2),
      'train_seconds': round(sum(r['train_seconds'] for r in results.values()), 2),
      'failed': sum(r['status'] != 'ok' for r in results.values()),
      'data_load_seconds': round(load_seconds, 2),
      'children': len(blocks), 'epochs': config.early_stop.epochs,
      'train_examples': len(data_lib.device_data(config, data_lib.make_mesh()).train_labels),
      'batch_size': config.batch_size, 'filters': config.model.filters,
      'repeats': config.model.repeats, 'dtype': config.dtype, 'dataset': config.dataset,
      'children_per_device': config.children_per_device,
      'compile_ahead': config.compile_ahead, 'fast_compile': config.fast_compile,
      'epoch_loop': config.epoch_loop,
      'compilation_cache_dir': config.compilation_cache_dir, 'hardware': benchmarking.hardware(),
  }))


if __name__ == '__main__':
  app.run(main)
