"""A training run stopped right after its first checkpoint, then rerun to the end."""

import orbax.checkpoint as ocp
import pytest


class Crash(Exception):
  """Stands in for the process dying."""


def interrupt_then_resume(run, config, workdir, monkeypatch) -> tuple[dict, list[int]]:
  """Runs ``run(config, workdir)`` until its first Orbax save, then again to the end.

  Returns the resumed run's summary and the step the interrupted run saved.
  """
  original = ocp.CheckpointManager.save
  saved = []

  def crash_after_first_save(self, step, *args, **kwargs):
    original(self, step, *args, **kwargs)
    saved.append(step)
    raise Crash()

  monkeypatch.setattr(ocp.CheckpointManager, 'save', crash_after_first_save)
  with pytest.raises(Crash):
    run(config, str(workdir))
  monkeypatch.setattr(ocp.CheckpointManager, 'save', original)
  return run(config, str(workdir)), saved
