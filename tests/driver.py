"""A search driver for tests that need a real process: the resume test's config and
surrogate, slowed down, exiting as ``blockqnn_jax.main`` does.

  python tests/driver.py WORKDIR [EXECUTOR] [SECONDS_PER_CHILD] [CPUS_PER_TRIAL]
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from blockqnn_jax import executors  # pylint: disable=g-import-not-at-top
from blockqnn_jax import main
from blockqnn_jax import search
from tests import test_resume


def run(workdir: str, executor: str = 'local', seconds: float = 0.05,
        cpus_per_trial: float = 1.0) -> None:
  evaluate = test_resume.CountingEvaluator()

  def slow(block):
    time.sleep(seconds)
    return evaluate(block)

  config = test_resume.resume_config()
  config.executor = executor
  config.ray.cpus_per_trial = cpus_per_trial
  try:
    search.run_search(config, workdir, slow)
  except search.SearchStopped:
    sys.exit(main.STOPPED_BY_SIGTERM)
  except executors.ClusterLostError as error:
    sys.exit(f'error: {error}')


if __name__ == '__main__':
  workdir_arg, *rest = sys.argv[1:]
  converters = (str, float, float)
  run(workdir_arg, *(convert(value) for convert, value in zip(converters, rest)))
