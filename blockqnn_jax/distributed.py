"""Several hosts as one JAX runtime, for ``mode=transfer_imagenet`` on a cluster.

``jax.distributed.initialize`` joins this process to the others of the job; after it,
``jax.devices()`` lists every host's devices, so the trainer's mesh spans them all. Each
host then feeds its own shard of every batch, Orbax checkpoints are written by every host
(each its own part), and only process 0 writes logs, TensorBoard events and final.json.

``config.distributed.coordinator_address`` says how: '' is one host (nothing to join);
'auto' lets JAX read the cluster's environment (SLURM, Open MPI, Kubernetes, ...); a
``host:port`` with ``num_processes`` and ``process_id`` starts a job by hand, one command
per process.
"""

from __future__ import annotations

import jax

AUTO = 'auto'


def is_multi_process(distributed_config) -> bool:
  return bool(distributed_config.coordinator_address)


def initialize(distributed_config) -> None:
  """Joins the job's other processes; must run before anything touches a JAX device."""
  address = distributed_config.coordinator_address
  if not address:
    return
  if address == AUTO:
    jax.distributed.initialize()
  else:
    jax.distributed.initialize(address, num_processes=distributed_config.num_processes,
                               process_id=distributed_config.process_id)


def is_main_process() -> bool:
  """Process 0 writes what only one process should: logs, events, summaries."""
  return jax.process_index() == 0
