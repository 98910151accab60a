"""What a benchmark ran on, in one line, so that its numbers say where they come from."""

import os
import platform


def cpu() -> str:
  """The processor and its core count (for benchmarks that do not use JAX)."""
  return f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores'


def hardware() -> str:
  """The JAX devices (count, kind, platform), the CPU and the jax version."""
  import jax  # here, not above: the worker processes of a cpu()-only benchmark import us
  device = jax.devices()[0]
  return (f'{jax.device_count()} x {device.device_kind} ({device.platform}), {cpu()}, '
          f'jax {jax.__version__}')
