"""A three-minute search on scikit-learn's bundled 8x8 digits: no download, 2 CPU cores.

  python -m blockqnn_jax.main --config=configs/quickstart.py --workdir=/tmp/blockqnn_quickstart
"""

from configs import default


def get_config():
  config = default.get_config()
  config.dataset = 'digits'
  config.validation_examples = 300
  config.batch_size = 64
  config.early_stop.epochs = 2
  config.model.filters = 8
  config.model.repeats = 1
  config.search.max_layers = 4
  config.search.blocks_per_iteration = 8
  config.search.epsilon_schedule = ((1.0, 3), (0.5, 1), (0.1, 2))
  # Children train for a fraction of a second here: compile them fast, two at a time.
  config.fast_compile = True
  config.compile_ahead = 2
  return config
