"""One workdir, one writer: the workdir's lock and the config it was made with.

A workdir is a new or empty directory, or one a run made (it holds the lock file or
``config.json``); any other directory is refused before anything is written in it, so a
run never mixes its files with others'.

The lock is an OS file lock (``flock``) on ``workdir/.lock``, held for the whole run: the
kernel drops it when the process dies, even by SIGKILL, so there is never a stale lock to
clean up. The file holds the holder's pid and host, for the error message only.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket

from blockqnn_jax import distributed
from blockqnn_jax import files

LOCK_FILE = '.lock'
CONFIG_FILE = 'config.json'


class WorkdirBusyError(RuntimeError):
  """Another process holds the workdir."""


class ConfigMismatchError(ValueError):
  """The workdir holds a search or training run made with a different config."""


class NotAWorkdirError(ValueError):
  """A directory that holds files of something other than a run."""


@contextlib.contextmanager
def locked(workdir: str, process_index: int = 0):
  """Holds ``workdir``'s lock for the ``with`` body; raises WorkdirBusyError if another
  process holds it. The processes of one multi-host job each hold their own lock
  (process 0 the usual one), so they share the workdir and exclude any other job.
  Raises NotAWorkdirError, before writing anything, for a directory that holds files but
  no run (``check_is_workdir``)."""
  check_is_workdir(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE + (f'.{process_index}' if process_index else ''))
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'another process'
      raise WorkdirBusyError(
          f'{os.path.abspath(workdir)} is in use by {holder}: wait for it to finish or stop '
          'it (a rerun resumes), or give another --workdir') from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}\n'.encode(), 0)
    yield
  finally:
    os.close(fd)  # closing the descriptor releases the lock


def check_is_workdir(workdir: str) -> None:
  """Refuses a file, or a non-empty directory no run made: one with neither the lock file
  (the first thing a run writes) nor ``config.json``. A new or empty directory is fine."""
  if not os.path.exists(workdir):
    return
  if not os.path.isdir(workdir):
    raise NotAWorkdirError(f'{workdir} is a file: give a new or empty directory as '
                           '--workdir, or the workdir of a run to resume')
  entries = sorted(os.listdir(workdir))
  if entries and not any(e == CONFIG_FILE or e.startswith(LOCK_FILE) for e in entries):
    shown = ', '.join(entries[:3]) + (', ...' if len(entries) > 3 else '')
    raise NotAWorkdirError(
        f'{workdir} holds files ({shown}) but no run of blockqnn_jax (no {CONFIG_FILE}): '
        'give a new or empty directory as --workdir, or the workdir of a run to resume')


# Where the work runs and how it is spread, not what is computed: may change between runs
# in any mode. ``data_dir`` says where the dataset is read, not which (``dataset``).
_SPREAD_KEYS = ('executor', 'children_per_device', 'compile_ahead', 'compilation_cache_dir',
                'data_dir')
_SPREAD_PREFIXES = ('ray.', 'distributed.')
# The config block holding the recipe each final-training mode trains with.
FINAL_RECIPES = {'train': 'train', 'transfer_imagenet': 'transfer'}
# Fields of that recipe a rerun may change: when to checkpoint and how many input workers
# (neither changes a batch or a step), and ``epochs`` upwards, to extend a run.
_RECIPE_FIELDS_THAT_MAY_CHANGE = ('checkpoint_every_seconds', 'workers')


def check_unchanged(config, workdir: str, allow_config_change: bool) -> None:
  """Refuses a workdir whose ``config.json`` (``record_config``) holds another config.

  In any mode, ``data_dir``, ``executor``, ``children_per_device``, ``compile_ahead``,
  ``compilation_cache_dir`` and the ``ray`` and ``distributed`` settings may change. A
  search reads neither the ``train`` nor the ``transfer`` recipe, so both may change
  (``transfer.workers`` defaults to the machine's cores). A final training
  (``FINAL_RECIPES``) may change the other mode's recipe, its own recipe's
  ``checkpoint_every_seconds`` and ``workers``, and raise its ``epochs``; anything else
  (block, dataset, a recipe number) is refused.
  """
  path = os.path.join(workdir, CONFIG_FILE)
  if allow_config_change or not os.path.exists(path):
    return
  with open(path) as f:
    saved = json.load(f)
  current = _flat_config(config)
  changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k)
                   and not _may_change(k, config.mode, saved.get(k), current.get(k)))
  if changed:
    diff = ', '.join(f'{k}: {saved.get(k)!r} -> {current.get(k)!r}' for k in changed)
    raise ConfigMismatchError(
        f'{workdir} holds a {_run_name(saved.get("mode"))} made with another config '
        f'({diff}); use a new --workdir, or --allow_config_change to continue it anyway')


def record_config(config, workdir: str) -> None:
  """``workdir/config.json``: the config the run now goes on with (written once the run
  has started from the workdir's state, so a refused start changes nothing). Process 0
  writes it: every process of a job shares the workdir."""
  if distributed.is_main_process():
    files.write_json_atomic(os.path.join(workdir, CONFIG_FILE), _flat_config(config))


def _flat_config(config) -> dict:
  return flatten(json.loads(config.to_json()))


def _run_name(mode) -> str:
  return 'search' if mode in (None, 'search') else f'mode={mode} run'


def _may_change(key: str, mode: str, before, after) -> bool:
  """Whether ``key`` may go from ``before`` to ``after`` between runs of ``mode``."""
  if key in _SPREAD_KEYS or key.startswith(_SPREAD_PREFIXES):
    return True
  section, _, field = key.partition('.')
  if section == FINAL_RECIPES.get(mode):
    return field in _RECIPE_FIELDS_THAT_MAY_CHANGE or (
        field == 'epochs' and _is_more(before, after))
  return section in FINAL_RECIPES.values()  # a recipe this mode does not train with


def _is_more(before, after) -> bool:
  return isinstance(before, int) and isinstance(after, int) and after > before


def flatten(tree: dict, prefix: str = '') -> dict:
  """Nested config -> {'search.max_layers': 23, ...}; lists become strings."""
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten(value, f'{name}.'))
    else:
      flat[name] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
  return flat
