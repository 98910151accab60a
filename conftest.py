"""Test set-up: four fake CPU devices, so data-parallel code runs as it would on four GPUs.

XLA reads the flag when JAX first initialises, so it is set here, before any test module
imports JAX.
"""

import os

os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=4']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
