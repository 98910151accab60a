"""Where children are evaluated: in this process, or on a Ray cluster.

Both executors take submissions and hand back ``(key, result)`` pairs as evaluations
finish. ``LocalExecutor`` evaluates one child at a time, in submission order, data-parallel
over this process's devices. ``RayExecutor`` keeps a pool of actors, one per trial slot
(one GPU each where the cluster has GPUs, else a CPU share); each actor is a long-lived
process, so the dataset it loads for its first child is reused by every later one. Up to
``config.ray.max_in_flight`` children run at once; results come back in the order they
finish. A child whose worker process dies (killed, node lost) is retried up to
``config.ray.max_retries`` times on a fresh actor, then reported failed; an exception
inside a child fails that child only.

Ray is optional (``pip install -r requirements-ray.txt``) and imported only here.
"""

from __future__ import annotations

import collections
import os
from typing import Callable

from absl import logging

from blockqnn_jax import nsc

EXECUTORS = ('local', 'ray')


class LocalExecutor:
  """Evaluates each submission in this process when its result is asked for."""

  def __init__(self, evaluate_fn: Callable):
    self.evaluate_fn = evaluate_fn
    self.queue = collections.deque()

  def submit(self, key: str, block: nsc.Block) -> None:
    self.queue.append((key, block))

  def next_result(self) -> tuple[str, object]:
    key, block = self.queue.popleft()
    return key, self.evaluate_fn(block)

  def close(self) -> None:
    pass


class _Evaluator:
  """A Ray actor: one long-lived worker process that evaluates children."""

  def __init__(self, evaluate_fn: Callable):
    self.evaluate_fn = evaluate_fn

  def evaluate(self, block: nsc.Block):
    return self.evaluate_fn(block)


def _failed(reason: str) -> dict:
  return {'accuracy': 0.0, 'status': 'failed', 'reason': reason[:500]}


class RayExecutor:
  """Evaluates submissions on a pool of Ray actors, results in order of completion."""

  def __init__(self, evaluate_fn: Callable, ray_config):
    import ray  # pylint: disable=g-import-not-at-top  (optional dependency)
    self.ray = ray
    self.started_ray = not ray.is_initialized()
    if self.started_ray:
      # Workers import blockqnn_jax from this checkout (the same path on every node).
      root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      python_path = os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')]))
      ray.init(address=ray_config.address or None, include_dashboard=False,
               log_to_driver=False, runtime_env={'env_vars': {'PYTHONPATH': python_path}})
    resources = ray.cluster_resources()
    gpus = ray_config.gpus_per_trial
    if gpus < 0:  # automatic: one GPU per trial where the cluster has GPUs
      gpus = 1 if resources.get('GPU', 0) else 0
    slots = ray_config.max_in_flight or int(
        resources.get('GPU', 0) // gpus if gpus else resources.get('CPU', 1) //
        ray_config.cpus_per_trial) or 1
    actor_class = ray.remote(_Evaluator).options(
        num_cpus=ray_config.cpus_per_trial, num_gpus=gpus)
    self.new_actor = lambda: actor_class.remote(evaluate_fn)
    self.actors = [self.new_actor() for _ in range(slots)]
    self.idle = list(self.actors)
    self.max_retries = ray_config.max_retries
    self.queue = collections.deque()   # (key, block, attempt) not yet started
    self.in_flight = {}                # object ref -> (key, block, actor, attempt)
    logging.info('Ray: %d trial slots of %s CPU / %s GPU; cluster %s', slots,
                 ray_config.cpus_per_trial, gpus, resources)

  def submit(self, key: str, block: nsc.Block) -> None:
    self.queue.append((key, block, 0))
    self._launch()

  def _launch(self) -> None:
    while self.idle and self.queue:
      key, block, attempt = self.queue.popleft()
      actor = self.idle.pop()
      self.in_flight[actor.evaluate.remote(block)] = (key, block, actor, attempt)

  def next_result(self) -> tuple[str, object]:
    """The next evaluation to finish, retrying those whose worker died."""
    errors = self.ray.exceptions
    while True:
      [ref], _ = self.ray.wait(list(self.in_flight), num_returns=1)
      key, block, actor, attempt = self.in_flight.pop(ref)
      try:
        result = self.ray.get(ref)
        self.idle.append(actor)
      except (errors.RayActorError, errors.WorkerCrashedError, errors.NodeDiedError,
              errors.ObjectLostError) as error:
        self.replace(actor)
        if attempt < self.max_retries:
          logging.warning('worker died evaluating %s (attempt %d), retrying: %s',
                          block.to_codes(), attempt + 1, error)
          self.queue.appendleft((key, block, attempt + 1))
          self._launch()
          continue
        result = _failed(f'worker died {attempt + 1} times: {type(error).__name__}')
      except errors.RayTaskError as error:
        self.idle.append(actor)
        result = _failed(f'{type(error.cause).__name__}: {error.cause}')
      self._launch()
      return key, result

  def replace(self, dead) -> None:
    """A fresh worker process in place of one that died (its calls queue until it is up)."""
    self.actors.remove(dead)
    self.actors.append(self.new_actor())
    self.idle.append(self.actors[-1])

  def close(self) -> None:
    for actor in self.actors:
      self.ray.kill(actor)
    if self.started_ray:
      self.ray.shutdown()


def make_executor(config, evaluate_fn: Callable):
  if config.executor == 'ray':
    return RayExecutor(evaluate_fn, config.ray)
  return LocalExecutor(evaluate_fn)
