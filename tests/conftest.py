"""Test set-up and shared fixtures: four fake CPU devices, so data-parallel code runs as it
would on four GPUs.

XLA reads the flag when JAX first initialises, so it is set here, before any test module
imports JAX.

Fixtures: ``small_codes`` and ``small_block`` (tests/common.py's small block),
``cifar10_dir`` and ``cifar10_data_dir`` (where CIFAR-10 is prepared), and
``uninterrupted_search`` (tests/searches.py's search, run once to the end). Helpers that
module-level code needs too live in tests/common.py and tests/searches.py.

Tests that need CIFAR-10 skip where it is not prepared, with a skip reason naming
'CIFAR-10'; with REQUIRE_CIFAR10=1 such a skip is a failure (see .ci/run). Likewise tests
that need the NAS-Bench-201 table ('NAS-Bench-201', REQUIRE_NASBENCH201=1).
"""

import json
import os

from absl import flags
import pytest

from blockqnn_jax import nsc
from tests import common

os.environ['XLA_FLAGS'] = ' '.join(
    [os.environ.get('XLA_FLAGS', ''), '--xla_force_host_platform_device_count=4']).strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Outside an absl app nothing parses the flags; Grain's worker processes read their
# defaults from them (blockqnn_jax.main runs under absl.app.run, which parses them).
flags.FLAGS.mark_as_parsed()
# Its assertions compare whole search outcomes: rewritten, a failure shows what differs.
pytest.register_assert_rewrite('tests.searches')


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


@pytest.fixture
def small_codes() -> list[list[int]]:
  """The small block's codes (a fresh list: a test may change it)."""
  return json.loads(common.SMALL)


@pytest.fixture
def small_block() -> nsc.Block:
  """The small block: a conv, a conv on it, their sum."""
  return nsc.Block.from_json(common.SMALL)


@pytest.fixture(scope='session')
def cifar10_dir():
  """CIFAR-10's prepared directory (``config.dataset`` in mode=transfer_imagenet); where it
  is not there, the test skips with a reason naming 'CIFAR-10' (see REQUIRE_CIFAR10)."""
  if not common.CIFAR10_DIR.is_dir():
    pytest.skip(f'CIFAR-10 is not prepared at {common.CIFAR10_DIR} (see ../shared/data)')
  return common.CIFAR10_DIR


@pytest.fixture(scope='session')
def cifar10_data_dir(cifar10_dir):
  """The TFDS data directory (``config.data_dir``) CIFAR-10 is prepared in; skips as
  ``cifar10_dir`` does."""
  del cifar10_dir  # asked for its skip
  return common.TFDS_DIR


@pytest.fixture(scope='session')
def uninterrupted_search(tmp_path_factory):
  """tests/searches.py's search run once to the end with its CountingEvaluator: (the
  outcome, how many children it evaluated), what an interrupted run must resume to."""
  # Imported here, not above: it loads JAX, which must come after the set-up above.
  from blockqnn_jax import search  # pylint: disable=g-import-not-at-top
  from tests import searches  # pylint: disable=g-import-not-at-top
  workdir = tmp_path_factory.mktemp('uninterrupted')
  evaluator = searches.CountingEvaluator()
  search.run_search(searches.resume_config(), str(workdir), evaluator)
  return searches.outcome(workdir), evaluator.calls
