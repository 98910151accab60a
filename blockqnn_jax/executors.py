"""Where children are evaluated: in this process, or on a Ray cluster.

Both executors take submissions and hand back ``(key, result)`` pairs as evaluations
finish. An evaluation has two phases (``Evaluator``): ``prepare`` builds and compiles the
child, ``run`` trains and scores it. A ``ChildPipeline`` runs them so that compilation is
off the critical path: up to ``compile_ahead`` children are built and compiled in
background threads while up to ``children_per_device`` others train.

``LocalExecutor`` is one pipeline in this process, data-parallel over its devices.
``RayExecutor`` keeps a pool of actors (one per trial slot: a GPU or a fraction of one
where the cluster has GPUs, and a CPU share; never more than the cluster's nodes can
place), each a long-lived process with a pipeline of its own, so the dataset it loads for
its first child is reused by every later one. An actor is handed children only once it has
started, so one the cluster cannot place holds no work. Results come back in the order
they finish.

Failures: the real trainer never raises (it reports ``status='failed'``); an exception
raised by a plain ``evaluate_fn`` is a bug, not a result, and ends the search with that
exception on either executor. A child that runs out of memory while sharing a device with
others is retried alone; a child whose Ray worker dies is retried ``config.ray.max_retries``
times on a fresh actor, then reported failed with ``transient=True``: it did not run, so
the search neither caches it nor feeds it to the strategy. A Ray cluster that is gone, or
that can no longer place a single actor, ends the search with ``ClusterLostError``.

Ray is optional (``pip install -r requirements-ray.txt``) and imported only here.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import math
import os
import threading
import time
from typing import Any, Callable, Protocol

from absl import logging

from blockqnn_jax import nsc

EXECUTORS = ('local', 'ray')
# A Ray actor on a fraction of a GPU preallocates this share of that fraction of the GPU's
# memory (XLA_PYTHON_CLIENT_MEM_FRACTION); the rest is headroom for CUDA's own use.
GPU_MEMORY_HEADROOM = 0.9
CLUSTER_CHECK_SECONDS = 15  # how often a wait for results checks that Ray nodes are alive
# An actor not started this long after it was asked for is reported (a warning): the
# cluster has no room for it now. Our choice: well beyond a worker's start-up (importing
# JAX, a runtime environment), short enough to explain a search running on fewer actors.
ACTOR_START_SECONDS = 300
# With no actor left, how long the search waits for Ray to report their nodes dead (its
# health checks take about 15 s) before it ends saying that no actor can be placed.
NO_ACTOR_SECONDS = 60


class Evaluator(Protocol):
  """Builds and compiles a child (``prepare``, in a background thread), then trains and
  scores it (``run``); ``should_stop()`` true asks ``run`` to give up early."""

  def prepare(self, block: nsc.Block) -> Any:
    ...

  def run(self, prepared: Any, should_stop: Callable[[], bool]) -> Any:
    ...


class FunctionEvaluator:
  """A plain ``evaluate_fn(block)`` (a surrogate, a tabular benchmark) as an Evaluator."""

  def __init__(self, evaluate_fn: Callable):
    self.evaluate_fn = evaluate_fn

  def prepare(self, block: nsc.Block) -> nsc.Block:
    return block

  def run(self, block: nsc.Block, should_stop: Callable[[], bool]):
    del should_stop
    return self.evaluate_fn(block)


def is_two_phase(evaluate_fn) -> bool:
  return hasattr(evaluate_fn, 'prepare') and hasattr(evaluate_fn, 'run')


def make_evaluator(config, evaluate_fn) -> Evaluator:
  """``evaluate_fn`` itself if it is an Evaluator, else wrapped; None gives the real
  trainer (JAX is imported by whoever calls this: the Ray driver never needs it)."""
  if is_two_phase(evaluate_fn):
    return evaluate_fn
  if evaluate_fn is not None:
    return FunctionEvaluator(evaluate_fn)
  from blockqnn_jax import child  # pylint: disable=g-import-not-at-top
  return child.ChildEvaluator(config)


def is_out_of_memory(result) -> bool:
  return isinstance(result, dict) and result.get('status') == 'failed' and str(
      result.get('reason', '')).startswith('out of memory')


def is_verdict(result: dict) -> bool:
  """Whether a result says something about the architecture itself: it trained, or it ran
  and failed on its own account, its loss non-finite (``child._train_and_score``'s
  ``'loss became ...'``) or out of memory with the device to itself. Any other failure
  (a worker that died, a child that could not be built or a dataset that could not be
  read) says nothing about it."""
  if result.get('status') == 'ok':
    return True
  return not result.get('transient') and (
      is_out_of_memory(result) or str(result.get('reason', '')).startswith('loss became'))


class _TrainingSlots:
  """At most ``capacity`` children train at once; ``alone()`` waits for all others to end
  and keeps new ones out while it lasts."""

  def __init__(self, capacity: int):
    self.capacity, self.active, self.exclusive = capacity, 0, 0
    self.condition = threading.Condition()

  @contextlib.contextmanager
  def shared(self):
    with self.condition:
      self.condition.wait_for(lambda: self.active < self.capacity and not self.exclusive)
      self.active += 1
    try:
      yield self.capacity > 1
    finally:
      with self.condition:
        self.active -= 1
        self.condition.notify_all()

  @contextlib.contextmanager
  def alone(self):
    with self.condition:
      self.exclusive += 1
      self.condition.wait_for(lambda: self.active == 0)
      self.active += 1
    try:
      yield
    finally:
      with self.condition:
        self.active -= 1
        self.exclusive -= 1
        self.condition.notify_all()


class ChildPipeline:
  """Evaluates children in threads: ``compile_ahead`` of them prepared while
  ``children_per_device`` train; a child out of memory while sharing is retried alone."""

  def __init__(self, evaluator: Evaluator, children_per_device: int = 1,
               compile_ahead: int = 1):
    self.evaluator = evaluator
    self.slots = _TrainingSlots(children_per_device)
    self.stopping = threading.Event()
    self.pool = concurrent.futures.ThreadPoolExecutor(
        children_per_device + compile_ahead, thread_name_prefix='child')

  def submit(self, block: nsc.Block) -> concurrent.futures.Future:
    return self.pool.submit(self.evaluate, block)

  def evaluate(self, block: nsc.Block):
    """Prepare, then train in a free slot; alone if it ran out of memory beside others."""
    prepared = self.evaluator.prepare(block)
    with self.slots.shared() as sharing:
      result = self.evaluator.run(prepared, self.stopping.is_set)
    if sharing and is_out_of_memory(result) and not self.stopping.is_set():
      logging.warning('child %s ran out of memory beside others: retrying it alone',
                      block.to_codes())
      del prepared
      with self.slots.alone():
        result = self.evaluator.run(self.evaluator.prepare(block), self.stopping.is_set)
    return result

  def close(self) -> None:
    """Asks running children to stop, drops queued ones; does not wait for them."""
    self.stopping.set()
    self.pool.shutdown(wait=False, cancel_futures=True)


class LocalExecutor:
  """Evaluates submissions in this process, several at once as the config allows.

  At most ``children_per_device + compile_ahead`` children are started and not yet handed
  back, so a failure never leaves finished work behind that nobody logged.
  """

  def __init__(self, evaluator: Evaluator, children_per_device: int = 1,
               compile_ahead: int = 1):
    self.pipeline = ChildPipeline(evaluator, children_per_device, compile_ahead)
    self.capacity = children_per_device + compile_ahead
    self.queue = collections.deque()  # (key, block) not yet started
    self.in_flight: dict[concurrent.futures.Future, str] = {}

  def submit(self, key: str, block: nsc.Block) -> None:
    self.queue.append((key, block))
    self._launch()

  def _launch(self) -> None:
    while self.queue and len(self.in_flight) < self.capacity:
      key, block = self.queue.popleft()
      self.in_flight[self.pipeline.submit(block)] = key

  def next_result(self, timeout: float | None = None) -> tuple[str, Any] | None:
    """The next evaluation to finish, or None after ``timeout`` seconds without one.

    An exception raised by a plain evaluate_fn is raised here.
    """
    done, _ = concurrent.futures.wait(
        self.in_flight, timeout, return_when=concurrent.futures.FIRST_COMPLETED)
    if not done:
      return None
    # The earliest submitted of those done, so that a serial run is reproducible.
    future = next(f for f in self.in_flight if f in done)
    key = self.in_flight.pop(future)
    result = future.result()
    self._launch()
    return key, result

  def close(self) -> None:
    self.pipeline.close()


class ClusterLostError(RuntimeError):
  """The Ray cluster is gone; a rerun of the same command resumes the search."""


class ClusterTooSmallError(ValueError):
  """No node of the Ray cluster places one actor of ``config.ray``'s share: the share is
  a mistake for this cluster."""


class _Worker:
  """A Ray actor: one long-lived process with its own child pipeline."""

  def __init__(self, config, evaluate_fn: Callable | None, compile_ahead: int):
    self.pipeline = ChildPipeline(make_evaluator(config, evaluate_fn), 1, compile_ahead)

  def evaluate(self, block: nsc.Block):
    return self.pipeline.submit(block).result()

  def environment(self, name: str) -> str | None:
    return os.environ.get(name)


def _first_line(error: Exception) -> str:
  return f'{type(error).__name__}: {error}'.strip().splitlines()[0]


def _failed(reason: str, **extra) -> dict:
  return {'accuracy': 0.0, 'status': 'failed', 'reason': reason[:500], **extra}


def worker_env_vars(gpus_per_trial: float) -> dict[str, str]:
  """Environment of a worker: a share of a GPU gets that share of its memory, not the 75%
  JAX preallocates by default (which makes every actor after the first run out)."""
  if 0 < gpus_per_trial < 1:
    return {'XLA_PYTHON_CLIENT_MEM_FRACTION': f'{GPU_MEMORY_HEADROOM * gpus_per_trial:.3f}'}
  return {}


def _actors_on_node(resources: dict, cpus: float, gpus: float) -> int:
  """Actors one node places: a fraction of a GPU must fit on one physical GPU, so
  ``floor(1 / gpus)`` actors share each; whole GPUs are counted whole."""
  # Ray keeps fractions to 4 decimals: 1 / 0.3333 GPU must still count as 3 actors.
  fits = []
  if cpus:
    fits.append(int(resources.get('CPU', 0) / cpus + 1e-3))
  if gpus:
    physical = int(resources.get('GPU', 0) + 1e-3)
    if gpus < 1:
      fits.append(physical * int(1 / gpus + 1e-3))
    else:
      fits.append(physical // math.ceil(gpus - 1e-3))
  return min(fits, default=int(resources.get('CPU', 1)))


def placeable_actors(nodes: list[dict], cpus: float, gpus: float) -> int:
  """Actors of ``cpus`` CPUs and ``gpus`` GPUs that the alive nodes of ``ray.nodes()``
  place at once: Ray puts an actor on one node, never across two."""
  return sum(_actors_on_node(node.get('Resources', {}), cpus, gpus)
             for node in nodes if node.get('Alive'))


def actor_count(nodes: list[dict], cpus: float, gpus: float, max_in_flight: int) -> int:
  """Actors to start: as many as the nodes place (``placeable_actors``), at most
  ``max_in_flight`` (0 = no cap). An actor that cannot be placed would never start."""
  places = placeable_actors(nodes, cpus, gpus)
  if not places:
    resources = [node.get('Resources', {}) for node in nodes if node.get('Alive')]
    raise ClusterTooSmallError(
        f'no node of the Ray cluster ({resources}) can place one actor of {cpus} CPU and '
        f'{gpus} GPU: lower config.ray.cpus_per_trial or gpus_per_trial')
  if max_in_flight > places:
    logging.warning('config.ray.max_in_flight=%d but the cluster places %d actors: using %d',
                    max_in_flight, places, places)
  return min(max_in_flight, places) if max_in_flight else places


class _ActorPool:
  """The actors and the calls each may still take, in one record, so an actor that was
  replaced is never given work again nor freed back into the pool. An actor takes calls
  only once it has ``started`` (its process is up on a node): one the cluster cannot
  place holds no work, and nothing ever waits on it."""

  def __init__(self, new_actor: Callable, size: int, calls_per_actor: int):
    self.new_actor, self.calls_per_actor = new_actor, calls_per_actor
    self.free = {}      # started actor -> calls it may still take
    self.starting = {}  # actor asked for -> time.time() then
    for _ in range(size):
      self.add()

  @property
  def actors(self) -> list:
    return [*self.free, *self.starting]

  def add(self):
    actor = self.new_actor()
    self.starting[actor] = time.time()
    return actor

  def started(self, actor) -> None:
    if self.starting.pop(actor, None) is not None:
      self.free[actor] = self.calls_per_actor

  def acquire(self):
    """The least busy started actor, one of its calls taken; None if all are busy."""
    if not self.free:
      return None
    actor = max(self.free, key=self.free.get)
    if not self.free[actor]:
      return None
    self.free[actor] -= 1
    return actor

  def release(self, actor) -> None:
    """A call of ``actor`` ended; nothing to free if the actor was replaced meanwhile."""
    if actor in self.free:
      self.free[actor] += 1

  def remove(self, dead) -> bool:
    """Forgets an actor that died; False if it was already forgotten (a second call of a
    dead actor failing)."""
    return (self.free.pop(dead, None) is not None
            or self.starting.pop(dead, None) is not None)

  def replace(self, dead, room: int):
    """A fresh worker process in place of one that died, if the cluster has ``room`` for
    one more actor than the pool keeps (a dead node's actors have none); returns it, or
    None. Calls still in flight on the dead one fail on their own, and replace nothing."""
    if self.remove(dead) and len(self.free) + len(self.starting) < room:
      return self.add()
    return None

  def unstarted_since(self, seconds: float) -> list:
    """Actors asked for more than ``seconds`` ago that have not started."""
    now = time.time()
    return [actor for actor, since in self.starting.items() if now - since > seconds]


class RayExecutor:
  """Evaluates submissions on a pool of Ray actors, results in order of completion."""

  def __init__(self, config, evaluate_fn: Callable | None, compile_ahead: int):
    import ray  # pylint: disable=g-import-not-at-top  (optional dependency)
    self.ray = ray
    ray_config = config.ray
    self.started_ray = not ray.is_initialized()
    if self.started_ray:
      # Workers import blockqnn_jax from this checkout (the same path on every node).
      root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
      python_path = os.pathsep.join(filter(None, [root, os.environ.get('PYTHONPATH')]))
      ray.init(address=ray_config.address or None, include_dashboard=False,
               log_to_driver=False, runtime_env={'env_vars': {'PYTHONPATH': python_path}})
    resources = ray.cluster_resources()
    gpus = ray_config.gpus_per_trial
    if gpus < 0:  # automatic: children_per_device actors share each GPU
      gpus = 1 / config.children_per_device if resources.get('GPU', 0) else 0
    self.cpus, self.gpus = ray_config.cpus_per_trial, gpus
    self.size = actor_count(ray.nodes(), self.cpus, gpus, ray_config.max_in_flight)
    # Each actor takes its next children while it trains one: they compile meanwhile.
    calls_per_actor = 1 + compile_ahead
    actor_class = ray.remote(_Worker).options(
        num_cpus=self.cpus, num_gpus=gpus, max_concurrency=calls_per_actor,
        runtime_env={'env_vars': worker_env_vars(gpus)})
    self.starts = {}  # ready call of an actor not yet started -> the actor
    self.pool = _ActorPool(lambda: actor_class.remote(config, evaluate_fn, compile_ahead),
                           self.size, calls_per_actor)
    for actor in self.pool.actors:
      self._watch_start(actor)
    self.max_retries = ray_config.max_retries
    errors = ray.exceptions
    self.worker_died = (errors.RayActorError, errors.WorkerCrashedError,
                        errors.NodeDiedError, errors.ObjectLostError)
    self.queue = collections.deque()   # (key, block, attempt) not yet started
    self.in_flight = {}                # object ref -> (key, block, actor, attempt)
    self.last_cluster_check = time.time()
    self.reported_unstarted = set()
    self.last_death = 'none died'
    self.actorless_since = None
    logging.info('Ray: %d actors of %s CPU / %s GPU, %d children each at once; cluster %s',
                 self.size, self.cpus, gpus, calls_per_actor, resources)

  @property
  def actors(self) -> list:
    return self.pool.actors

  def _watch_start(self, actor) -> None:
    if actor is not None:
      self.starts[actor.__ray_ready__.remote()] = actor

  def submit(self, key: str, block: nsc.Block) -> None:
    self.queue.append((key, block, 0))
    self._launch()

  def _launch(self) -> None:
    while self.queue:
      actor = self.pool.acquire()
      if actor is None:
        return
      key, block, attempt = self.queue.popleft()
      self.in_flight[actor.evaluate.remote(block)] = (key, block, actor, attempt)

  def next_result(self, timeout: float | None = None) -> tuple[str, Any] | None:
    """The next evaluation to finish (None after ``timeout`` seconds without one),
    retrying those whose worker died. An exception the evaluate_fn raised is raised here,
    as the local executor does."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
      if not self.pool.actors:
        self._without_actors(None if deadline is None else deadline - time.time())
        return None
      self._report_unstarted()
      wait = None if deadline is None else max(0.0, deadline - time.time())
      ready, _ = self.ray.wait([*self.in_flight, *self.starts], num_returns=1,
                               timeout=wait)
      if not ready:
        self._check_cluster()
        return None
      ref = ready[0]
      if ref in self.starts:
        self._started(ref)
        continue
      key, block, actor, attempt = self.in_flight.pop(ref)
      try:
        result = self.ray.get(ref)
        self.pool.release(actor)
      except self.worker_died as error:
        self._check_cluster(force=True)
        self.last_death = f'the last died: {_first_line(error)}'
        self._watch_start(self.pool.replace(actor, self._room()))
        if attempt < self.max_retries:
          logging.warning('worker died evaluating %s (attempt %d), retrying: %s',
                          key, attempt + 1, error)
          self.queue.appendleft((key, block, attempt + 1))
          self._launch()
          continue
        result = _failed(f'worker died {attempt + 1} times: {type(error).__name__}',
                         transient=True)
      except self.ray.exceptions.RayTaskError as error:  # raised by the evaluate_fn itself
        self.pool.release(actor)
        if isinstance(error.cause, Exception):
          raise error.cause from None
        raise
      self._launch()
      return key, result

  def _started(self, ref) -> None:
    """An actor's start came back: it takes work now, or it died starting (a node gone,
    a worker that cannot start) and is dropped."""
    actor = self.starts.pop(ref)
    try:
      self.ray.get(ref)
    except self.worker_died as error:
      self.pool.remove(actor)
      self.last_death = f'the last died starting: {_first_line(error)}'
      logging.warning('a Ray actor died before it started (%d remain): %s',
                      len(self.pool.actors), _first_line(error))
      return
    self.pool.started(actor)
    self._launch()

  def _without_actors(self, wait: float | None) -> None:
    """Every actor died and none could be replaced: ClusterLostError, at once if the
    cluster is gone, else after NO_ACTOR_SECONDS (it places no actor of ours any more);
    meanwhile waits up to a second of ``wait``."""
    self._check_cluster(force=True)
    self.actorless_since = self.actorless_since or time.time()
    if time.time() - self.actorless_since > NO_ACTOR_SECONDS:
      raise ClusterLostError(
          f'no Ray actor of {self.cpus} CPU / {self.gpus} GPU is left and the cluster '
          f'places no new one ({self.last_death}); restart the cluster and rerun the '
          'same command to resume')
    time.sleep(min(1.0, 1.0 if wait is None else max(0.0, wait)))

  def _room(self) -> int:
    """Actors the pool may keep now: its size, at most what the alive nodes place."""
    return min(self.size, placeable_actors(self.ray.nodes(), self.cpus, self.gpus))

  def _report_unstarted(self) -> None:
    """Warns once about each actor the cluster has not placed in ACTOR_START_SECONDS."""
    late = [a for a in self.pool.unstarted_since(ACTOR_START_SECONDS)
            if a not in self.reported_unstarted]
    if late:
      self.reported_unstarted.update(late)
      logging.warning(
          '%d Ray actors of %s CPU / %s GPU have not started after %d s: the cluster has '
          'no room for them now; the search goes on with the %d started, and gives them '
          'work once they start', len(late), self.cpus, self.gpus, ACTOR_START_SECONDS,
          len(self.pool.free))

  def _check_cluster(self, force: bool = False) -> None:
    """Raises ClusterLostError when no Ray node is alive (checked every so often)."""
    if not force and time.time() - self.last_cluster_check < CLUSTER_CHECK_SECONDS:
      return
    self.last_cluster_check = time.time()
    try:
      alive = any(node.get('Alive') for node in self.ray.nodes())
    except Exception as error:  # pylint: disable=broad-except  (any failure: no cluster)
      alive, why = False, _first_line(error)
    else:
      why = 'no node is alive'
    if not alive:
      raise ClusterLostError(f'the Ray cluster is gone ({why}); restart it and rerun the '
                             'same command to resume')

  def close(self) -> None:
    for actor in self.actors:
      with contextlib.suppress(Exception):
        self.ray.kill(actor)
    if self.started_ray:
      self.ray.shutdown()


def make_executor(config, evaluate_fn):
  """The executor ``config.executor`` names, evaluating with ``evaluate_fn``: a function
  of a block, an Evaluator, or None for the real trainer."""
  # A plain function has nothing to compile: its children run strictly one after another
  # (per training slot), in submission order.
  two_phase = evaluate_fn is None or is_two_phase(evaluate_fn)
  compile_ahead = config.compile_ahead if two_phase else 0
  if config.executor == 'ray':
    return RayExecutor(config, evaluate_fn, compile_ahead)
  return LocalExecutor(make_evaluator(config, evaluate_fn), config.children_per_device,
                       compile_ahead)
