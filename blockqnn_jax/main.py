"""Command line: ``blockqnn --config=cifar10 --workdir=DIR`` (the same as ``python -m
blockqnn_jax.main``), and ``blockqnn report WORKDIR`` (``blockqnn_jax.report``).

``--config`` takes a config file's path or the name of a shipped config (``configs/``:
quickstart, cifar10, cifar100, default), either with a variant, e.g. ``cifar10:smoke``.
Any config field can be overridden, e.g. ``--config.search.max_layers=10``. The config is
checked before any work starts: a mistake (an unknown field, a missing config file, a bad
value) exits with one line naming it. Rerunning the same command with the same
``--workdir`` resumes the search where it stopped.
"""

import json
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

import configs
from blockqnn_jax import check_config
from blockqnn_jax import distributed
from blockqnn_jax import executors
from blockqnn_jax import report
from blockqnn_jax import results
from blockqnn_jax import search
from blockqnn_jax import workdir as workdir_lib

# Exit status after SIGTERM: the shell's convention for a process ended by that signal.
STOPPED_BY_SIGTERM = 128 + 15

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A config file, or a shipped config by name (quickstart, cifar10, '
    'cifar100, default); a variant after a colon, e.g. cifar10:smoke.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for results, checkpoints and '
                               'TensorBoard events (tensorboard --logdir DIR).')
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    'allow_config_change', False,
    'Continue a search or training run in a workdir made by another config.')
flags.mark_flags_as_required(['config', 'workdir'])
# An override of a config field on the command line: group 1 is the field's dotted path.
_OVERRIDE = re.compile(r'--?(?:no)?config\.([^=]+)(=.*)?')


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
  # Orbax narrates every checkpoint at INFO, and JAX looks for a TPU on every start; keep
  # the search's own progress (and a config error's one line) readable.
  logging.get_absl_handler().addFilter(
      lambda record: 'orbax' not in record.pathname and
      "Unable to initialize backend 'tpu'" not in record.getMessage())
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
          executors.ClusterTooSmallError, search.AllChildrenFailedError,
          search.TruncatedLogError) as error:
    sys.exit(f'error: {error}')
  print_summary(summary)


def shipped_configs() -> dict[str, str]:
  """Name -> path of each config file shipped in the ``configs`` package."""
  directory = os.path.dirname(os.path.abspath(configs.__file__))
  return {name[:-3]: os.path.join(directory, name) for name in sorted(os.listdir(directory))
          if name.endswith('.py') and not name.startswith('_')}


def resolve_config(argv: list[str]) -> list[str]:
  """``argv`` with ``--config=NAME[:variant]`` turned into the shipped config's path.

  A path that exists is kept (a file wins over a shipped name); neither a file nor a
  shipped name exits with one line.
  """
  argv = list(argv)
  found = _config_argument(argv)
  if found is None:
    return argv
  where, prefix, value = found
  path, colon, variant = value.partition(':')
  if os.path.isfile(path):
    return argv
  shipped = shipped_configs()
  if path not in shipped:
    sys.exit(f'error: --config={value}: no config file {path!r} and no shipped config of '
             f'that name; give a path or one of {", ".join(shipped)}')
  argv[where] = prefix + shipped[path] + colon + variant
  return argv


def _config_argument(argv: list[str]) -> tuple[int, str, str] | None:
  """Where ``--config``'s value is in ``argv``, what precedes it there (``--config=``, or
  nothing for ``--config VALUE``) and the value; None without one."""
  for i, arg in enumerate(argv):
    flag, equals, value = arg.partition('=')
    if flag not in ('--config', '-config'):
      continue
    if equals:
      return i, f'{flag}=', value
    return (i + 1, '', argv[i + 1]) if i + 1 < len(argv) else None
  return None


def override_past_a_value(argv: list[str]) -> str | None:
  """One line for an override whose path goes on past a field that holds a value, such as
  ``--config.seed.x=1`` (ml_collections raises a KeyError or a TypeError naming no flag);
  None if no override does, or if the config does not load."""
  found = _config_argument(argv)
  try:
    config = flags.FLAGS['config'].parser.parse(found[2])
  except Exception:  # pylint: disable=broad-except  (the original error is reported)
    return None
  for arg in argv:
    override = _OVERRIDE.fullmatch(arg)
    if not override:
      continue
    node, walked = config, 'config'
    for field in override.group(1).split('.'):
      if not isinstance(node, ml_collections.ConfigDict):
        return (f'error: --config.{override.group(1)}: {walked} is {node!r}, a value, not '
                'a group of fields')
      if field not in node:
        break  # a missing field: unknown_field_message names it
      node, walked = node[field], f'{walked}.{field}'
  return None


def _innermost_message(error: BaseException) -> str:
  """The text of an error that may wrap another as its argument (ml_collections wraps a
  KeyError in an AttributeError)."""
  while error.args and isinstance(error.args[0], BaseException):
    error = error.args[0]
  return str(error.args[0]) if error.args else str(error)


def unknown_field_message(error: BaseException, argv: list[str]) -> str:
  """One line for an override of a field the config does not have, with ml_collections'
  "did you mean" suggestion where it has one (or for the error's first line, when no
  override names the missing field)."""
  text = _innermost_message(error)
  key = text.splitlines()[0].strip('\'"') if text else ''
  suggestion = re.search(r'Did you mean "([^"]+)"', text)
  hint = f'; did you mean {suggestion.group(1)!r}?' if suggestion else (
      '; every field is in configs/default.py')
  for arg in argv:
    path = _OVERRIDE.fullmatch(arg)
    if path and key in path.group(1).split('.'):
      parts = path.group(1).split('.')
      parent = '.'.join(['config'] + parts[:parts.index(key)])
      return f'error: --config.{path.group(1)}: {parent} has no field {key!r}{hint}'
  # Not an override's field: an error in the config file itself.
  return f'error: --config: {type(error).__name__}: {text.splitlines()[0] if text else ""}'


def parse_flags(argv: list[str]) -> list[str]:
  """Parses the command line; any config mistake exits with one line, no traceback."""
  argv = resolve_config(argv)
  sys.argv = argv  # ml_collections finds the --config.* overrides in sys.argv
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError) as error:  # an override of no config field
    sys.exit(override_past_a_value(argv) or unknown_field_message(error, argv))
  except flags.Error as error:
    # A config file's get_config error arrives as its whole traceback: keep its last line.
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    where = lines[0].split(': Error whilst parsing config file')[0] + ': '
    sys.exit(f'error: {where if len(lines) > 1 else ""}{lines[-1]}')


def run() -> None:
  """The ``blockqnn`` console script: ``blockqnn report ...`` or a run of ``main``."""
  if sys.argv[1:2] == ['report']:
    report.run(sys.argv[2:])
    return
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  run()
