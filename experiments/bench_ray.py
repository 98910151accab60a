"""Throughput of the Ray executor: blocks/second against the number of workers.

Each evaluation is a surrogate that sleeps a fixed time (a stand-in for training), so the
numbers show what the executor and the driver add, and how throughput scales with workers:

  python -m experiments.bench_ray --workers=1,2,4 --sleep=0.5 --blocks=32

Prints one JSON line per setting (and one for the in-process executor), with the hardware.
"""

import functools
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import ray

from blockqnn_jax import search
from blockqnn_jax.analysis import benchmarking
from blockqnn_jax.analysis import surrogate
from configs import default

_WORKERS = flags.DEFINE_list('workers', ['1', '2', '4'], 'Ray workers (max_in_flight).')
_SLEEP = flags.DEFINE_float('sleep', 0.5, 'Seconds each evaluation takes.')
_BLOCKS = flags.DEFINE_integer('blocks', 32, 'Blocks per search (one iteration).')


def sleepy_surrogate(block, seconds: float):
  time.sleep(seconds)
  return surrogate.synthetic_accuracy(block)


def blocks_per_second(executor: str, workers: int) -> dict:
  config = default.get_config()
  config.executor = executor
  config.ray.max_in_flight = workers
  config.ray.cpus_per_trial = 0.25  # sleeping workers: several share a core
  config.search.epsilon_schedule = ((1.0, 1),)
  config.search.blocks_per_iteration = _BLOCKS.value
  with tempfile.TemporaryDirectory() as workdir:
    start = time.perf_counter()
    summary = search.run_search(
        config, workdir, functools.partial(sleepy_surrogate, seconds=_SLEEP.value))
    seconds = time.perf_counter() - start
  return {'executor': executor, 'workers': workers, 'blocks': summary['blocks_evaluated'],
          'seconds': round(seconds, 2),
          'blocks_per_second': round(summary['blocks_evaluated'] / seconds, 2)}


def main(argv):
  del argv
  hardware = f'{benchmarking.cpu()}, ray {ray.__version__}'
  print(json.dumps({'hardware': hardware, 'sleep_seconds': _SLEEP.value}), flush=True)
  print(json.dumps(blocks_per_second('local', 1)), flush=True)
  ray.init(include_dashboard=False, log_to_driver=False,
           runtime_env={'env_vars': {'PYTHONPATH': os.getcwd()}})
  for workers in _WORKERS.value:
    ray_result = blocks_per_second('ray', int(workers))
    print(json.dumps(ray_result), flush=True)
  ray.shutdown()


if __name__ == '__main__':
  app.run(main)
