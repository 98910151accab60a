"""``drive``: a strategy run against a scoring function as the search loop runs it, without
logs or checkpoints (benchmarks, tables, tests)."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from blockqnn_jax.strategies import base


@dataclasses.dataclass(frozen=True)
class Sample:
  """One proposal that was fed back: its key, the iteration and the epsilon it was sampled
  with, its reward, and whether it was scored for it (``fresh``) or served from the cache."""

  arch: Any
  key: str
  iteration: int
  epsilon: float
  reward: float
  fresh: bool


def drive(strategy: base.Strategy, score: Callable[[Any], float], *, iterations: int | None = None,
          budget: int | None = None, max_proposals: int | None = None) -> list[Sample]:
  """Runs ``strategy`` against ``score`` as ``search.run_search`` does, without logs or
  checkpoints; returns every proposal fed back, in sample order.

  Each iteration proposes its ``blocks_per_iteration`` architectures before any is fed
  back, scores each distinct one (by ``space.key``) once, feeds every proposal its reward
  in sample order (a repeat is served from the cache and fed again, free) and ends the
  iteration. By default it runs to the end of the schedule. With ``iterations`` it runs
  that many; with ``budget`` until that many distinct architectures are scored, ending
  the iteration at the first one beyond (it and the rest of the iteration are neither
  scored nor fed); either way past the end of the schedule at its last epsilon. No
  iteration starts after ``max_proposals`` proposals (default 50 per unit of budget), so a
  strategy that only repeats itself still ends.
  """
  if max_proposals is None and budget is not None:
    max_proposals = 50 * budget
  scores: dict[str, float] = {}
  samples: list[Sample] = []  # every proposal but those after the budget's last
  done = 0

  def more() -> bool:
    if budget is not None and len(scores) >= budget:
      return False
    if max_proposals is not None and len(samples) >= max_proposals:
      return False
    if iterations is not None:
      return done < iterations
    return budget is not None or not strategy.finished

  while more():
    iteration, epsilon = strategy.iteration, strategy.epsilon
    for arch in [strategy.propose() for _ in range(strategy.blocks_per_iteration)]:
      key = strategy.space.key(arch)
      fresh = key not in scores
      if fresh:
        if budget is not None and len(scores) == budget:
          break
        scores[key] = float(score(arch))
      strategy.feedback(arch, scores[key])
      samples.append(Sample(arch, key, iteration, epsilon, scores[key], fresh))
    strategy.end_iteration()
    done += 1
  return samples
