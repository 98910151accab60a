"""Command line: ``python -m blockqnn_jax.main --config=configs/cifar10.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.search.max_layers=10``; a config file
may take a variant, e.g. ``--config=configs/cifar10.py:smoke``. The config is checked
before any work starts: a mistake exits with one line naming the field. Rerunning the same
command with the same ``--workdir`` resumes the search where it stopped.
"""

import json
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from blockqnn_jax import check_config
from blockqnn_jax import distributed
from blockqnn_jax import executors
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax import workdir as workdir_lib

# Exit status after SIGTERM: the shell's convention for a process ended by that signal.
STOPPED_BY_SIGTERM = 128 + 15

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Configuration file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for results, checkpoints and '
                               'TensorBoard events (tensorboard --logdir DIR).')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Continue a search or training run in a workdir made by another config.')
flags.mark_flags_as_required(['config', 'workdir'])


def print_summary(summary: dict) -> None:
  workdir = summary['workdir']
  print(f'best block: {json.dumps(summary["best_codes"])}')
  print(f'  reward {summary["best_reward"]:.4f}, validation accuracy '
        f'{summary["best_accuracy"]:.4f}')
  print(f'{summary["blocks_sampled"]} blocks sampled, {summary["blocks_evaluated"]} '
        f'trained, {summary["seconds"]:.0f} s in this run')
  print(f'artifacts in {workdir}: results.jsonl, best_block.json/.png/.svg, checkpoints/, '
        f'TensorBoard events (tensorboard --logdir {workdir})')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  # Orbax narrates every checkpoint at INFO; keep the search's own progress readable.
  logging.get_absl_handler().addFilter(lambda record: 'orbax' not in record.pathname)
  workdir = _WORKDIR.value
  try:
    check_config.check_distributed(config)
    distributed.initialize(config.distributed)
    if not distributed.is_main_process():
      logging.set_verbosity(logging.WARNING)  # process 0 tells the story
    check_config.check_config(config)
    if config.mode in ('train', 'transfer_imagenet'):
      # Imported for their mode only: transfer's input pipeline loads OpenCV and Grain.
      # pylint: disable=g-import-not-at-top
      if config.mode == 'train':
        from blockqnn_jax.train_final import train_and_evaluate as run
      else:
        from blockqnn_jax.transfer import transfer_and_evaluate as run
      with workdir_lib.locked(workdir, jax.process_index()):
        summary = run(config, workdir, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
      if not distributed.is_main_process():
        return
      scores = ', '.join(f'{k} {v:.4f}' for k, v in summary.items() if 'accuracy' in k)
      print(f'{scores} after {summary["epochs"]} epochs; {summary["params"]:,} parameters; '
            f'trained model in {workdir} (blockqnn_jax.training.inference.load_model)')
      return
    summary = search.run_search(config, workdir,
                                allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except search.SearchStopped:
    print(f'stopped by SIGTERM; every finished child is in {workdir}/results.jsonl: rerun '
          'the same command to resume', file=sys.stderr)
    sys.exit(STOPPED_BY_SIGTERM)
  except (check_config.ConfigError, workdir_lib.ConfigMismatchError,
          workdir_lib.WorkdirBusyError, workdir_lib.NotAWorkdirError,
          results.DamagedLogError, executors.ClusterLostError,
          search.AllChildrenFailedError) as error:
    sys.exit(f'error: {error}')
  print_summary(summary)


if __name__ == '__main__':
  app.run(main)
