"""A training run stopped right after a checkpoint, then rerun to the end."""

import orbax.checkpoint as ocp
import pytest


class Crash(Exception):
  """Stands in for the process dying (a training run's or a search's)."""


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


def mid_epoch_interrupt_then_resume(run, config, workdir, monkeypatch, runner_class, *,
                                    crash_after: int) -> dict:
  """Runs ``run`` with a checkpoint after every step (``checkpoint_every_seconds=0``) and
  kills it right after the first mid-epoch save at or after global step ``crash_after``
  (the mid-epoch saves before it are skipped); then reruns it with ``config`` as given
  (which saves at epoch ends) to the end.

  ``runner_class`` is the runner ``training.loop.fit`` drives (its ``start_epoch`` and
  ``step`` are watched). Returns a dict: ``summary`` of the resumed run, ``saved`` (the
  global steps the interrupted run saved; the last is where it died), ``steps_per_epoch``,
  ``starts`` ((epoch, start_step) of every epoch the resumed run began) and ``steps``
  (the global step of every training step the resumed run took).
  """
  interrupted = config.copy_and_resolve_references()
  for recipe in (interrupted.train, interrupted.transfer):  # whichever the mode trains with
    recipe.checkpoint_every_seconds = 0
  save, start_epoch, step = ocp.CheckpointManager.save, runner_class.start_epoch, runner_class.step
  out = {'saved': [], 'starts': [], 'steps': [], 'steps_per_epoch': None}

  def watched_start_epoch(self, epoch, rng, start_step):
    out['steps_per_epoch'] = self.steps_per_epoch
    out['starts'].append((epoch, start_step))
    return start_epoch(self, epoch, rng, start_step)

  def watched_step(self, index, rng):
    out['steps'].append(out['starts'][-1][0] * self.steps_per_epoch + index)
    return step(self, index, rng)

  def crash_after_mid_epoch_save(self, global_step, *args, **kwargs):
    mid_epoch = global_step % out['steps_per_epoch'] != 0
    if mid_epoch and global_step < crash_after:
      return  # saves that the next one replaces anyway: skipped, they cost time
    save(self, global_step, *args, **kwargs)
    out['saved'].append(global_step)
    if mid_epoch:
      raise Crash()

  monkeypatch.setattr(runner_class, 'start_epoch', watched_start_epoch)
  monkeypatch.setattr(ocp.CheckpointManager, 'save', crash_after_mid_epoch_save)
  with pytest.raises(Crash):
    run(interrupted, str(workdir))
  monkeypatch.setattr(ocp.CheckpointManager, 'save', save)
  out['starts'].clear()
  monkeypatch.setattr(runner_class, 'step', watched_step)
  try:
    out['summary'] = run(config, str(workdir))
  finally:
    monkeypatch.setattr(runner_class, 'start_epoch', start_epoch)
    monkeypatch.setattr(runner_class, 'step', step)
  return out


def started_epochs(monkeypatch, runner_class) -> list[int]:
  """The epochs ``runner_class.start_epoch`` is called for from now on (a list that fills
  as the run goes): what a resumed or extended run trains again."""
  started, start_epoch = [], runner_class.start_epoch

  def watched(self, epoch, rng, start_step):
    started.append(epoch)
    return start_epoch(self, epoch, rng, start_step)

  monkeypatch.setattr(runner_class, 'start_epoch', watched)
  return started
