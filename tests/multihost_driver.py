"""``blockqnn_jax.main`` for the multi-process tests, able to die like a crashed host.

  CRASH_AFTER_SAVE=STEP CHECKPOINT_CLOCK=fast python tests/multihost_driver.py FLAGS...

With ``CRASH_AFTER_SAVE`` set, the process exits (``os._exit``, no clean-up) right after
its Orbax checkpoint of global step STEP is written. ``CHECKPOINT_CLOCK`` sets the clock
train_final's checkpoint timer reads: ``fast`` moves an hour at every reading (a
checkpoint is always due by this process's clock), ``stopped`` never moves (never due).
The process that opens TensorBoard event files says so on stdout.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app  # pylint: disable=g-import-not-at-top
import jax
import orbax.checkpoint as ocp

from blockqnn_jax import main
from blockqnn_jax import summaries
from blockqnn_jax.training import loop

CRASH_EXIT_STATUS = 3
CLOCK_STEPS = {'fast': 3600.0, 'stopped': 0.0}  # seconds per reading


def die_after_save(step: int) -> None:
  save = ocp.CheckpointManager.save

  def save_then_die(self, global_step, *args, **kwargs):
    saved = save(self, global_step, *args, **kwargs)
    if global_step == step:
      self.wait_until_finished()
      os._exit(CRASH_EXIT_STATUS)  # pylint: disable=protected-access
    return saved

  ocp.CheckpointManager.save = save_then_die


class FakeClock:
  """Stands in for the ``time`` module in training.loop: ``seconds_per_reading`` on at each
  reading."""

  def __init__(self, seconds_per_reading: float):
    self.seconds_per_reading, self.now = seconds_per_reading, 0.0

  def monotonic(self) -> float:
    self.now += self.seconds_per_reading
    return self.now


def announce_event_writers() -> None:
  writer = summaries.SummaryWriter

  def announced(*args, **kwargs):
    print(f'TensorBoard events from process {jax.process_index()}', flush=True)
    return writer(*args, **kwargs)

  summaries.SummaryWriter = announced


if __name__ == '__main__':
  if os.environ.get('CRASH_AFTER_SAVE'):
    die_after_save(int(os.environ['CRASH_AFTER_SAVE']))
  if os.environ.get('CHECKPOINT_CLOCK'):
    loop.time = FakeClock(CLOCK_STEPS[os.environ['CHECKPOINT_CLOCK']])
  announce_event_writers()
  app.run(main.main)
