"""A three-minute search on scikit-learn's bundled 8x8 digits: no download, 2 CPU cores.

  python -m blockqnn_jax.main --config=configs/quickstart.py --workdir=/tmp/blockqnn_quickstart

and then its best block trained in full, in under a minute:

  python -m blockqnn_jax.main --config=configs/quickstart.py --config.mode=train \
      --config.block=/tmp/blockqnn_quickstart --workdir=/tmp/blockqnn_quickstart_final
"""

from configs import default


def get_config(variant: str = ''):
  if variant:  # what --config=quickstart:VARIANT passes
    raise ValueError(f'the quickstart config has no variants, not {variant!r}')
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
  # mode=train, sized for 1,500 training images of 8x8 pixels (our choice, measured on
  # the seed-0 quickstart's best block, docs/training.md): the CIFAR recipe's network
  # (64 filters, N = 4: 9.3M parameters) and 300 epochs of batch 128 with steps at 150 and
  # 225 are far too much for them; 16 filters, N = 1 and 10 epochs of batch 64 with a
  # cosine decay reach a test accuracy above 0.9 in under a minute on 2 CPU cores.
  config.train.filters = 16
  config.train.repeats = 1
  config.train.epochs = 10
  config.train.batch_size = 64
  config.train.schedule = 'cosine'
  return config
