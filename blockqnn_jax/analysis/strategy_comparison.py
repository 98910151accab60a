"""Search strategies compared on a tabular benchmark: many seeded runs per strategy and
budget, the best-so-far curves and their figure
(``python -m experiments.benchmark_strategies`` runs them on a table).

Every run uses the project's own strategy objects (``strategies.make_strategy``) driven by
``tabular.search_table``. A run keeps the configured search in its proportions: the
epsilon schedule is scaled to the budget (``tabular.scale_schedule``), so Q-learning
spends the same share of it in each epsilon phase whatever the budget, and the replay to
the blocks per iteration (100 replays per 64 blocks are 2 per block).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
import signal
import threading

from matplotlib.figure import Figure
import ml_collections
import numpy as np

from blockqnn_jax import strategies
from blockqnn_jax.analysis import tabular
from blockqnn_jax.strategies import predictor_guided

# 'qlearning' runs the config as given; 'qlearning_paper' with strategies.PAPER_QLEARNING.
# A name with the suffix '+predictor' is that strategy guided by config.search.predictor.
UNGUIDED = ('qlearning', 'qlearning_paper', 'random', 'evolution', 'local_search')
STRATEGIES = UNGUIDED + tuple(s + predictor_guided.SUFFIX for s in predictor_guided.GUIDED)

_TABLE: tabular.Table | None = None  # each worker process's copy


def strategy_config(search_config, strategy: str, budget: int,
                    blocks_per_iteration: int) -> ml_collections.ConfigDict:
  """The search config of one strategy's run at ``budget``."""
  if strategy not in STRATEGIES:
    raise ValueError(f'strategy {strategy!r} is unknown, allowed {STRATEGIES}')
  config = ml_collections.ConfigDict(search_config.to_dict())
  guided = strategy.endswith(predictor_guided.SUFFIX)
  strategy = strategy.removesuffix(predictor_guided.SUFFIX)
  if strategy == 'qlearning_paper':
    config.update(strategies.PAPER_QLEARNING)
  config.strategy = 'qlearning' if strategy.startswith('qlearning') else strategy
  config.predictor.enabled = guided
  if config.replay_samples:
    config.replay_samples = max(1, round(
        config.replay_samples * blocks_per_iteration / config.blocks_per_iteration))
  config.blocks_per_iteration = blocks_per_iteration
  config.epsilon_schedule = tabular.scale_schedule(
      config.epsilon_schedule, budget, blocks_per_iteration)
  return config


def run_one(task: tuple) -> np.ndarray:
  """One seeded run: the report of the best-so-far architecture after each evaluation."""
  search_config, strategy, budget, seed, blocks_per_iteration = task
  config = strategy_config(search_config, strategy, budget, blocks_per_iteration)
  searcher = strategies.make_strategy(config, seed, _TABLE.space)
  keys = tabular.search_table(searcher, _TABLE, budget)
  return tabular.best_so_far(_TABLE, keys, budget)


def _set_table(table: tabular.Table) -> None:
  global _TABLE
  _TABLE = table


def run_all(table: tabular.Table, search_config, strategies, budgets, runs: int,
            blocks_per_iteration: int = 1, processes: int | None = None,
            first_seed: int = 0) -> dict:
  """``{strategy: {budget: curves}}``, curves an array (runs, budget); seeds
  first_seed..first_seed+runs-1 (another range checks a choice made on the first)."""
  tasks = [(search_config, s, b, seed, blocks_per_iteration) for s in strategies
           for b in budgets for seed in range(first_seed, first_seed + runs)]
  processes = processes or os.cpu_count() or 1
  if processes == 1:
    _set_table(table)
    curves = [run_one(t) for t in tasks]
  else:
    with _terminate_as_exit():  # so that _run_in_processes kills its workers on SIGTERM too
      curves = _run_in_processes(table, tasks, processes)
  out: dict = {s: {} for s in strategies}
  for (_, s, b, _, _), curve in zip(tasks, curves):
    out[s].setdefault(b, []).append(curve)
  return {s: {b: np.stack(c) for b, c in by_budget.items()} for s, by_budget in out.items()}


class WorkerDied(RuntimeError):
  """A worker process ended abruptly (a signal, the out-of-memory killer): the runs are
  abandoned and nothing is returned."""


def _run_chunk(tasks: list) -> list:
  return [run_one(t) for t in tasks]


_POLL_SECONDS = 0.2  # how often the workers' exit codes are looked at
# Each worker is one core's share, so its BLAS runs on one thread: BLAS threads on top of
# one process per core fight for the cores (the three guided strategies, 40 runs to 500
# cells on 2 cores: 84 s with OpenBLAS's default threads, 40 s with one).
_ONE_BLAS_THREAD = {'OPENBLAS_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1',
                    'MKL_NUM_THREADS': '1'}


@contextlib.contextmanager
def _environment_where_unset(values: dict):
  """``os.environ`` with ``values`` for those names not already set, while the block runs
  (a process spawned meanwhile inherits them); a value the user set is kept."""
  added = {name: value for name, value in values.items() if name not in os.environ}
  os.environ.update(added)
  try:
    yield
  finally:
    for name in added:
      os.environ.pop(name, None)


def _exit_on_signal(signum, frame) -> None:
  del frame
  signal.signal(signum, signal.SIG_IGN)  # a second one must not interrupt the cleanup
  raise SystemExit(128 + signum)


@contextlib.contextmanager
def _terminate_as_exit():
  """While the block runs, SIGTERM raises SystemExit (status 143), so that the
  ``finally`` of ``_run_in_processes`` kills the workers: Python's default handler ends
  the process at once and leaves them running their chunk for minutes. Only from the main
  thread, and only where nobody else handles SIGTERM."""
  if (threading.current_thread() is not threading.main_thread()
      or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
    yield
    return
  try:
    signal.signal(signal.SIGTERM, _exit_on_signal)
    yield
  finally:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _run_in_processes(table: tabular.Table, tasks: list, processes: int) -> list:
  """``run_one`` of each task in ``processes`` worker processes, in the tasks' order.

  'spawn': a fork of a process that has started JAX's threads (a test session) can
  deadlock; each worker gets its own copy of the table once. A worker that dies ends the
  run with ``WorkerDied`` (``multiprocessing.Pool.map`` would wait for it forever). The
  workers' exit codes are watched here as well as by the ``ProcessPoolExecutor``: on
  Python 3.11 the executor's own thread can crash while it handles a dead worker
  ("dictionary changed size during iteration"), and then nothing would end the wait."""
  context = multiprocessing.get_context('spawn')
  size = max(1, len(tasks) // (8 * processes))
  pool = concurrent.futures.ProcessPoolExecutor(
      processes, mp_context=context, initializer=_set_table, initargs=(table,))
  finished = False
  try:
    with _environment_where_unset(_ONE_BLAS_THREAD):  # the workers start as chunks are submitted
      futures = [pool.submit(_run_chunk, tasks[i:i + size])
                 for i in range(0, len(tasks), size)]
    pending = set(futures)
    while pending:
      done, pending = concurrent.futures.wait(
          pending, _POLL_SECONDS, concurrent.futures.FIRST_EXCEPTION)
      for future in done:
        future.result()  # a run's own exception, or BrokenProcessPool
      if pending and _a_worker_died(pool):
        raise concurrent.futures.process.BrokenProcessPool()
    finished = True
    return [curve for future in futures for curve in future.result()]
  except concurrent.futures.process.BrokenProcessPool:
    raise WorkerDied(
        'a worker process died (killed by a signal or out of memory) during the '
        f'{len(tasks)} runs; none of their results is kept') from None
  finally:
    if not finished:
      for process in _workers(pool):
        process.kill()
    pool.shutdown(wait=finished, cancel_futures=not finished)


def _workers(pool) -> list:
  try:
    return list((pool._processes or {}).values())  # pylint: disable=protected-access
  except RuntimeError:  # changed size while the executor's thread replaced a worker
    return []


def _a_worker_died(pool) -> bool:
  return any(p.exitcode not in (None, 0) for p in _workers(pool))


def summarize(curves: dict) -> dict:
  """Mean and standard deviation over runs of the final report, per strategy and budget."""
  return {s: {str(b): {'mean': float(c[:, -1].mean()), 'std': float(c[:, -1].std()),
                       'runs': int(len(c))}
              for b, c in by_budget.items()}
          for s, by_budget in curves.items()}


def mean_and_interval(curves: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The mean curve and the half-width of its 95% confidence interval (normal)."""
  return curves.mean(axis=0), 1.96 * curves.std(axis=0) / np.sqrt(len(curves))


def plot(curves: dict, optimum: float, path: str, title: str) -> Figure:
  """Best-so-far report against evaluations, one curve per strategy (its largest budget),
  shaded 95% interval of the mean; the table's optimum dashed."""
  figure = Figure(figsize=(7, 4.5))
  axes = figure.subplots()
  lows = []  # each mean curve after 10 evaluations: the y axis starts at the lowest
  for strategy, by_budget in curves.items():
    c = by_budget[max(by_budget)]
    mean, half = mean_and_interval(c)
    x = np.arange(1, len(mean) + 1)
    axes.plot(x, mean, label=f'{strategy} ({len(c)} runs)')
    axes.fill_between(x, mean - half, mean + half, alpha=0.25)
    lows.append(mean[min(9, len(mean) - 1)])
  axes.axhline(optimum, color='black', linestyle='--', linewidth=1, label='optimum')
  axes.set_xscale('log')
  budget = max(next(iter(curves.values())))
  axes.set_xlabel(f'architectures evaluated (the runs at budget {budget})')
  axes.set_ylabel('report of the best so far')
  axes.set_title(title)
  axes.set_ylim(min(lows), optimum + 0.1 * (optimum - min(lows)))
  axes.legend(loc='lower right')
  axes.grid(alpha=0.3)
  figure.tight_layout()
  figure.savefig(path, dpi=120)
  return figure
