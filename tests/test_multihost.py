"""mode=transfer_imagenet as one job of two JAX processes on the CPU (as two hosts would
run it): it trains, checkpoints when process 0's clock says so, dies, resumes, and ends as
the one-process run does; only process 0 writes TensorBoard events."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from blockqnn_jax.training import inference

from tests.common import CIFAR10_DIR
from tests.common import ROOT
from tests.common import SMALL
from tests.multihost_driver import CRASH_EXIT_STATUS

STEPS_PER_EPOCH = 4  # 128 images, global batch 32
FLAGS = ['--config=configs/cifar10.py:smoke', '--config.mode=transfer_imagenet',
         f'--config.dataset={CIFAR10_DIR}', f'--config.block={SMALL}',
         '--config.transfer.image_size=32', '--config.transfer.max_eval_examples=64',
         '--config.max_train_examples=128', '--config.transfer.batch_size=32',
         '--config.transfer.epochs=2', '--config.transfer.warmup_epochs=1']
# Seconds a run of the job may take; a job whose processes disagree on a collective hangs.
TIMEOUT = 400


def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def launch(workdir, processes: int, devices_per_process: int, crash_after_save: int = 0,
           workers: int = 0, checkpoint_every_seconds: float = 0, clocks: tuple = ()):
  """Runs the job's ``processes`` commands at once (``workers`` Grain worker processes
  each, process i's checkpoint timer reading ``clocks[i]`` where given: see
  multihost_driver.py); returns their exit statuses and outputs."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu',
         'XLA_FLAGS': f'--xla_force_host_platform_device_count={devices_per_process}'}
  if crash_after_save:
    env['CRASH_AFTER_SAVE'] = str(crash_after_save)
  job = [] if processes == 1 else [
      f'--config.distributed.coordinator_address=localhost:{free_port()}',
      f'--config.distributed.num_processes={processes}']
  commands = [[sys.executable, 'tests/multihost_driver.py', *FLAGS, *job,
               f'--config.transfer.workers={workers}',
               f'--config.transfer.checkpoint_every_seconds={checkpoint_every_seconds}',
               f'--workdir={workdir}'] + ([f'--config.distributed.process_id={i}'] if job else [])
              for i in range(processes)]
  envs = [{**env, 'CHECKPOINT_CLOCK': clock} for clock in clocks] or [env] * processes
  running = [subprocess.Popen(command, cwd=ROOT, env=process_env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for command, process_env in zip(commands, envs)]
  try:
    outputs = [process.communicate(timeout=TIMEOUT)[0] for process in running]
  except subprocess.TimeoutExpired:
    for process in running:
      process.kill()
    outputs = [process.communicate()[0] for process in running]
    pytest.fail(f'the job did not end in {TIMEOUT} s: {outputs}')
  return [process.returncode for process in running], outputs


@pytest.mark.usefixtures('cifar10_dir')
def test_two_processes_train_die_resume_and_match_one_process(tmp_path):
  one, two = tmp_path / 'one', tmp_path / 'two'
  statuses, outputs = launch(one, processes=1, devices_per_process=2)
  assert statuses == [0], outputs
  # Process 0's clock says a checkpoint is due at every step, process 1's never: both
  # still save together (Orbax's save is collective; disagreeing processes would hang)
  # and die right after the checkpoint in the middle of epoch 2, then resume it with a
  # Grain worker process each (as on a machine with other cores): the worker count
  # changes nothing, since a batch is a pure function of its position.
  crash_step = STEPS_PER_EPOCH + 2
  statuses, crashed = launch(two, 2, 1, crash_after_save=crash_step,
                             checkpoint_every_seconds=60, clocks=('fast', 'stopped'))
  assert statuses == [CRASH_EXIT_STATUS] * 2, crashed
  assert not (two / 'final.json').exists()
  statuses, outputs = launch(two, 2, 1, workers=1)
  assert statuses == [0, 0], outputs
  assert 'top1_accuracy' in outputs[0] and 'top1_accuracy' not in outputs[1]  # 0 reports
  for run in (crashed, outputs):  # only process 0 writes TensorBoard events
    assert 'TensorBoard events from process 0' in run[0]
    assert 'TensorBoard events from process' not in run[1]
  assert 'resuming from epoch 2, step 2' in outputs[0]
  alone, joint = (json.loads((w / 'final.json').read_text()) for w in (one, two))
  # The same global batches, so the same run up to the order of floating-point sums.
  assert [h['epoch'] for h in joint['history']] == [1, 2]
  for a, b in zip(alone['history'], joint['history']):
    np.testing.assert_allclose(b['loss'], a['loss'], rtol=1e-5)
    assert (b['top1_accuracy'], b['top5_accuracy']) == (a['top1_accuracy'],
                                                        a['top5_accuracy'])
  import jax  # pylint: disable=g-import-not-at-top
  for a, b in zip(*(jax.tree.leaves(inference.load_model(str(w))[0]) for w in (one, two))):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-5)
