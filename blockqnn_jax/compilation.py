"""JAX compilation: a persistent cache every process of a search shares, and a clock of the
compile time each child causes.

The cache holds compiled executables and XLA's own caches (GPU autotuning results
included, ``jax_persistent_cache_enable_xla_caches='all'``), so a restarted search, every
Ray worker and every later search pay a network's compilation and convolution autotuning
once. Entries are keyed by the program and the compiler, so a shared cache is never
wrong, only warm or cold.

The clock listens to JAX's compile events (tracing, lowering, XLA compilation) and sums
them per thread, so a child compiled in a background thread is billed correctly while
another trains.
"""

from __future__ import annotations

import contextlib
import os
import threading

import jax
from absl import logging

# XLA options that halve a small child's compile time on the CPU and make its steps some
# three times slower (config.fast_compile): worth it where children train for seconds.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}
_COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                   '/jax/core/compile/jaxpr_to_mlir_module_duration',
                   '/jax/core/compile/backend_compile_duration')
_configured_dir = None
_lock = threading.Lock()
_per_thread = threading.local()


def use_persistent_cache(directory: str) -> None:
  """Points this process's JAX at the persistent compilation cache in ``directory``
  ('' = off). Only the first call of a process takes effect: JAX reads it once."""
  global _configured_dir
  with _lock:
    if _configured_dir is not None or not directory:
      return
    _configured_dir = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(_configured_dir, exist_ok=True)
    jax.config.update('jax_compilation_cache_dir', _configured_dir)
    # Children are small: cache every executable, however quick it was to compile.
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
    jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)
    jax.config.update('jax_persistent_cache_enable_xla_caches', 'all')
    logging.info('JAX persistent compilation cache: %s', _configured_dir)


def _on_event(event: str, seconds: float, **kwargs) -> None:
  del kwargs
  if event in _COMPILE_EVENTS:
    _per_thread.seconds = getattr(_per_thread, 'seconds', 0.0) + seconds


jax.monitoring.register_event_duration_secs_listener(_on_event)


@contextlib.contextmanager
def measure():
  """Yields a function that returns the compile seconds this thread spent inside the
  ``with`` block so far."""
  start = getattr(_per_thread, 'seconds', 0.0)
  yield lambda: getattr(_per_thread, 'seconds', 0.0) - start
