"""Test set-up: four fake CPU devices, so data-parallel code runs as it would on four GPUs.

XLA reads the flag when JAX first initialises, so it is set here, before any test module
imports JAX.

Tests that need CIFAR-10 skip where it is not prepared, with a skip reason naming
'CIFAR-10'; with REQUIRE_CIFAR10=1 such a skip is a failure (see .ci/run). Likewise tests
that need the NAS-Bench-201 table ('NAS-Bench-201', REQUIRE_NASBENCH201=1).
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


def _tfds_dir() -> str:
  return f' (TFDS_DATA_DIR={os.environ.get("TFDS_DATA_DIR", "")!r})'


# Environment variable -> the data a skip reason names, and where that data was looked for
# (the NAS-Bench-201 test's skip reason names its path itself).
_REQUIRED_DATA = {'REQUIRE_CIFAR10': ('CIFAR-10', _tfds_dir),
                  'REQUIRE_NASBENCH201': ('NAS-Bench-201', lambda: '')}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  """With REQUIRE_CIFAR10=1 (set by .ci/run where the shared CIFAR-10 is present), a test
  that skips for want of CIFAR-10 (its skip reason names 'CIFAR-10') fails instead: CI
  must never pass while silently not running them. REQUIRE_NASBENCH201=1 does the same for
  'NAS-Bench-201' (the shared table)."""
  del item, call
  report = yield
  if not report.skipped or hasattr(report, 'wasxfail'):
    return report
  for variable, (data, where) in _REQUIRED_DATA.items():
    if os.environ.get(variable) == '1' and data in _skip_reason(report):
      report.outcome = 'failed'
      report.longrepr = (f'{variable}=1, but this test skipped for want of {data}: '
                         f'{_skip_reason(report)}{where()}')
      break
  return report


@pytest.fixture(scope='session', autouse=True)
def _temporary_home(tmp_path_factory):
  """HOME is a temporary directory for the test session, so that what defaults to '~'
  (config.compilation_cache_dir, '~/.cache/blockqnn_jax/jax_cache') never fills the
  user's cache; subprocesses inherit it through the environment."""
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv('HOME', str(tmp_path_factory.mktemp('home')))
    yield
