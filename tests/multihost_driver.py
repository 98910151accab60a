"""``blockqnn_jax.main`` for the multi-process tests, able to die like a crashed host.

  CRASH_AFTER_SAVE=STEP python tests/multihost_driver.py FLAGS...

With ``CRASH_AFTER_SAVE`` set, the process exits (``os._exit``, no clean-up) right after
its Orbax checkpoint of global step STEP is written.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
import orbax.checkpoint as ocp

from blockqnn_jax import main

CRASH_EXIT_STATUS = 3


def die_after_save(step: int) -> None:
  save = ocp.CheckpointManager.save

  def save_then_die(self, global_step, *args, **kwargs):
    saved = save(self, global_step, *args, **kwargs)
    if global_step == step:
      self.wait_until_finished()
      os._exit(CRASH_EXIT_STATUS)  # pylint: disable=protected-access
    return saved

  ocp.CheckpointManager.save = save_then_die


if __name__ == '__main__':
  if os.environ.get('CRASH_AFTER_SAVE'):
    die_after_save(int(os.environ['CRASH_AFTER_SAVE']))
  app.run(main.main)
