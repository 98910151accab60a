"""The paper's search: BlockQNN on CIFAR-100, the full epsilon schedule, 12-epoch early stop.

The paper searched on CIFAR-100 (arXiv v1 abstract: "We trained the Q-learning on
CIFAR-100, and evaluated on CIFAR10 and ImageNet"); every setting and its source is in
configs/default.py. ``configs/cifar10.py`` is the same search on CIFAR-10.

  python -m blockqnn_jax.main --config=configs/cifar100.py --workdir=/tmp/blockqnn_cifar100
  python -m blockqnn_jax.main --config=configs/cifar100.py:smoke --workdir=/tmp/smoke

The ``smoke`` variant shrinks everything (data, network, schedule, final training) so
that every mode runs in a few minutes on a CPU. The ``paper_agent`` variant searches with
the published agent's values (``strategies.PAPER_QLEARNING``: the reported schedule, MetaQNN's
alpha 0.01 and initial Q 0.5) instead of ours (configs/default.py says why).

  python -m blockqnn_jax.main --config=configs/cifar100.py:paper_agent --workdir=/tmp/paper
"""

from blockqnn_jax import strategies
from configs import default


def get_config(variant: str = ''):
  config = default.get_config()
  config.dataset = 'cifar100'
  if variant == 'smoke':
    config.max_train_examples = 1024
    config.validation_examples = 512
    config.batch_size = 128
    config.early_stop.epochs = 1
    config.model.filters = 8
    config.model.repeats = 1
    config.search.max_layers = 4
    config.search.blocks_per_iteration = 4
    config.search.epsilon_schedule = ((1.0, 1), (0.1, 1))
    config.train.filters = 8
    config.train.repeats = 1
    config.train.epochs = 2
    config.train.lr_steps = (1,)
    config.transfer.image_size = 32
    config.transfer.max_eval_examples = 512
    config.transfer.update(filters=8, repeats=1, epochs=2, warmup_epochs=1, batch_size=128)
  elif variant == 'paper_agent':
    config.search.update(strategies.PAPER_QLEARNING)
  elif variant:
    raise ValueError(f"unknown variant {variant!r} of the CIFAR configs, allowed: 'smoke', "
                     "'paper_agent'")
  return config
