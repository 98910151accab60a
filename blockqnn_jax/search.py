"""The search loop: the agent proposes blocks, they are evaluated, rewards feed back.

Each iteration samples ``blocks_per_iteration`` blocks with the iteration's epsilon, then
evaluates them. A block isomorphic to one already evaluated is not trained again: its
cached result is reused (and still fed to the agent). Every result is appended to
``workdir/results.jsonl`` and flushed to disk before the agent learns from it;
``workdir/best_block.json`` always holds the best block so far.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Callable, Union

from absl import logging

from blockqnn_jax import agent as agent_lib
from blockqnn_jax import nsc
from blockqnn_jax import reward as reward_lib

EvaluateFn = Callable[[nsc.Block], Union[float, dict]]
RESULTS_FILE = 'results.jsonl'
BEST_FILE = 'best_block.json'


def normalize_result(block: nsc.Block, result) -> dict:
  """An evaluate_fn's float or dict, checked: at least a finite accuracy in [0, 1]."""
  if not isinstance(result, dict):
    result = {'accuracy': result}
  if 'accuracy' not in result:
    raise ValueError(f'evaluate_fn returned {result!r} for {block.to_codes()}: no "accuracy"')
  result = dict(result)
  result.setdefault('status', 'ok')
  if result['status'] != 'ok':
    result['accuracy'] = 0.0  # a failed child gets the lowest accuracy, hence lowest reward
  accuracy = result['accuracy']
  if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not (
      math.isfinite(accuracy) and 0.0 <= accuracy <= 1.0):
    raise ValueError(
        f'evaluate_fn returned accuracy {accuracy!r} for {block.to_codes()}: '
        'expected a float in [0, 1]')
  result['accuracy'] = float(accuracy)
  return result


def write_json_atomic(path: str, obj) -> None:
  """Writes via a temporary file and rename, so a reader never sees half a file."""
  tmp = f'{path}.tmp'
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=1)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


class ResultsLog:
  """``results.jsonl``: one JSON object per evaluated block, flushed as it arrives."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, RESULTS_FILE)
    self._file = open(self.path, 'a')

  def append(self, record: dict) -> None:
    self._file.write(json.dumps(record) + '\n')
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    self._file.close()


def load_block(spec: str, max_layers: int = nsc.MAX_LAYERS) -> nsc.Block:
  """A block from a best_block.json path, a search workdir (its best block), or inline
  codes as JSON text."""
  text = spec.strip()
  if not text.startswith('['):
    path = os.path.join(spec, BEST_FILE) if os.path.isdir(spec) else spec
    if not os.path.exists(path):
      raise FileNotFoundError(f'no block file at {path} (give a best_block.json, a search '
                              'workdir or inline codes like [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]])')
    with open(path) as f:
      text = f.read()
  try:
    codes = json.loads(text)
  except json.JSONDecodeError as error:
    raise nsc.InvalidBlockError(f'not JSON: {error}') from None
  if isinstance(codes, dict):
    codes = codes.get('codes')
  return nsc.Block.from_codes(codes, max_layers)


def default_evaluate_fn(config) -> EvaluateFn:
  """The real trainer: each block is built, trained briefly and scored on validation data."""
  from blockqnn_jax import train  # pylint: disable=g-import-not-at-top  (imports JAX)
  return lambda block: train.evaluate_block(block, config)


def run_search(config, workdir: str, evaluate_fn: EvaluateFn | None = None) -> dict:
  """Runs the whole epsilon schedule; returns the best block, its reward and counts."""
  os.makedirs(workdir, exist_ok=True)
  if evaluate_fn is None:
    evaluate_fn = default_evaluate_fn(config)
  strategy = agent_lib.make_strategy(config.search, config.seed)
  log = ResultsLog(workdir)
  cache: dict[str, dict] = {}
  best = None
  count = 0
  start = time.time()
  try:
    while not strategy.finished:
      iteration, epsilon = strategy.iteration, strategy.epsilon
      blocks = [strategy.propose() for _ in range(strategy.blocks_per_iteration)]
      for block in blocks:
        key = block.canonical_hash()
        cached = key in cache
        if not cached:
          cache[key] = normalize_result(block, evaluate_fn(block))
        result = cache[key]
        terms = reward_lib.reward_terms(
            block, result['accuracy'], config.reward, config.model.filters)
        record = {
            **result, **terms, 'index': count, 'iteration': iteration, 'epsilon': epsilon,
            'codes': block.to_codes(), 'hash': key, 'cached': cached,
        }
        log.append(record)
        count += 1
        strategy.feedback(block, record['reward'])
        if best is None or record['reward'] > best['reward']:
          best = record
          write_json_atomic(os.path.join(workdir, BEST_FILE), best)
      strategy.end_iteration()
      logging.info('iteration %d/%d (epsilon %.2f): best reward so far %.4f',
                   iteration + 1, strategy.num_iterations, epsilon, best['reward'])
  finally:
    log.close()
  return {
      'best_codes': best['codes'] if best else None,
      'best_reward': best['reward'] if best else None,
      'best': best,
      'blocks_sampled': count,
      'blocks_evaluated': len(cache),
      'seconds': time.time() - start,
  }
