"""A search driver for tests that need a real process: tests/searches.py's config and
surrogate, slowed down, exiting as ``blockqnn_jax.main`` does; it prints how many
children it evaluated.

  python tests/driver.py WORKDIR [EXECUTOR] [SECONDS_PER_CHILD] [CPUS_PER_TRIAL] [KILL_AT]

KILL_AT > 0: the process SIGKILLs itself inside checkpoint number KILL_AT, while Orbax
writes it: the arrays item is on disk in the temporary directory, the JSON item written
but not finalized, the checkpoint not committed.
"""

import os
import signal
import sys
import time

import orbax.checkpoint as ocp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blockqnn_jax import executors  # pylint: disable=g-import-not-at-top
from blockqnn_jax import main
from blockqnn_jax import search
from tests import searches


def kill_inside_checkpoint(number: int) -> None:
  """Dies as checkpoint ``number`` finalizes its JSON item (every item written)."""
  finalize = ocp.JsonCheckpointHandler.finalize
  saves = []

  def dying_finalize(self, *args, **kwargs):
    saves.append(None)
    if len(saves) == number:
      os.kill(os.getpid(), signal.SIGKILL)
    return finalize(self, *args, **kwargs)

  ocp.JsonCheckpointHandler.finalize = dying_finalize


def run(workdir: str, executor: str = 'local', seconds: float = 0.05,
        cpus_per_trial: float = 1.0, kill_at: int = 0) -> None:
  if kill_at:
    kill_inside_checkpoint(kill_at)
  evaluate = searches.CountingEvaluator()

  def slow(block):
    time.sleep(seconds)
    return evaluate(block)

  config = searches.resume_config()
  config.executor = executor
  config.ray.cpus_per_trial = cpus_per_trial
  try:
    search.run_search(config, workdir, slow)
  except search.SearchStopped:
    sys.exit(main.STOPPED_BY_SIGTERM)
  except executors.ClusterLostError as error:
    sys.exit(f'error: {error}')
  print(f'evaluations: {evaluate.calls}')


if __name__ == '__main__':
  workdir_arg, *rest = sys.argv[1:]
  converters = (str, float, float, int)
  run(workdir_arg, *(convert(value) for convert, value in zip(converters, rest)))
