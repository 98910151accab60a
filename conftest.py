"""Test set-up: four fake CPU devices, so data-parallel code runs as it would on four GPUs.

XLA reads the flag when JAX first initialises, so it is set here, before any test module
imports JAX.

Tests that need CIFAR-10 skip where it is not prepared, with a skip reason naming
'CIFAR-10'; with REQUIRE_CIFAR10=1 such a skip is a failure (see .ci/run).
"""

import os

import pytest

os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=4']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


def _skip_reason(report) -> str:
  longrepr = report.longrepr
  if isinstance(longrepr, tuple) and len(longrepr) == 3:  # (path, line, 'Skipped: why')
    return str(longrepr[2])
  return str(longrepr)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  """With REQUIRE_CIFAR10=1 (set by .ci/run where the shared CIFAR-10 is present), a test
  that skips for want of CIFAR-10 (its skip reason names 'CIFAR-10') fails instead: CI
  must never pass while silently not running them."""
  del item, call
  report = yield
  if (os.environ.get('REQUIRE_CIFAR10') == '1' and report.skipped and
      not hasattr(report, 'wasxfail') and 'CIFAR-10' in _skip_reason(report)):
    report.outcome = 'failed'
    report.longrepr = ('REQUIRE_CIFAR10=1, but this test skipped for want of CIFAR-10: '
                       f'{_skip_reason(report)} (TFDS_DATA_DIR='
                       f'{os.environ.get("TFDS_DATA_DIR", "")!r})')
  return report
