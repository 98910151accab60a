"""Command line: ``python -m blockqnn_jax.main --config=configs/cifar10.py --workdir=DIR``.

Any config field can be overridden, e.g. ``--config.search.max_layers=10``. The config is
checked before any work starts; a mistake exits with one line naming the field.
"""

import json
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from blockqnn_jax import check_config
from blockqnn_jax import search

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Configuration file.')
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for results and checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  try:
    check_config.check_config(config)
  except check_config.ConfigError as error:
    sys.exit(f'error: {error}')
  summary = search.run_search(config, _WORKDIR.value)
  print(json.dumps({k: v for k, v in summary.items() if k != 'best'}))


if __name__ == '__main__':
  app.run(main)
