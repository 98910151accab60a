"""The paper's search on CIFAR-100 (the paper's own search dataset in its first version).

  python -m blockqnn_jax.main --config=configs/cifar100.py --workdir=/tmp/blockqnn_cifar100
"""

from configs import cifar10


def get_config(variant: str = ''):
  config = cifar10.get_config(variant)
  config.dataset = 'cifar100'
  return config
