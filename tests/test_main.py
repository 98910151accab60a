"""The command line, start-up config checks, TensorBoard events and block pictures."""

import json
import os
import subprocess
import sys

from PIL import Image
import pytest
from tensorboard.backend.event_processing import event_accumulator

from blockqnn_jax import check_config
from blockqnn_jax import draw
from blockqnn_jax import nsc
from blockqnn_jax import search
from blockqnn_jax.analysis import surrogate
from tests import searches

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize('field, value, message', [
    ('mode', 'evolve', "config.mode='evolve' is not allowed: one of ('search', 'train'"),
    ('early_stop.patience', -1, 'config.early_stop.patience=-1 is not allowed: an integer >= 0'),
    ('dataset', 'no_such_dataset', "config.dataset='no_such_dataset': Unknown dataset"),
    ('search.strategy', 'annealing', "config.search.strategy='annealing' is not allowed"),
    ('search.tournament_size', 11, 'config.search.tournament_size=11 is not allowed: an '
     'integer >= 1 and <= 10'),
    ('search.learning_rate_decrease', 1.5, 'config.search.learning_rate_decrease=1.5 is '
     'not allowed: a number in [0.0, 1.0]'),
    ('search.update_order', 'random', "config.search.update_order='random' is not "
     "allowed: one of ('reverse', 'forward')"),
    ('search.exploration', 'flat', "config.search.exploration='flat' is not allowed: one of "
     "('type_first', 'uniform')"),
    ('executor', 'slurm', "config.executor='slurm' is not allowed: one of ('local', 'ray')"),
    ('early_stop.epochs', -1, 'config.early_stop.epochs=-1 is not allowed: an integer >= 1'),
    ('search.epsilon_schedule', ((1.5, 3),), 'epsilon 1.5 must be in [0, 1]'),
    ('search.epsilon_schedule', ((0.5, 0),), 'iterations 0 must be an integer >= 1'),
    ('search.epsilon_schedule', (), 'at least one (epsilon, iterations) pair'),
    ('block', '[[1, 9, 0, 0, 0], [2, 7, 0, 0, 0]]', 'unknown type 9'),
    ('block', '/no/such/best_block.json', 'no block file at /no/such/best_block.json'),
    ('model.template', 'vgg', "config.model.template='vgg' is not allowed"),
    ('dtype', 'float16', "config.dtype='float16' is not allowed"),
    ('validation_examples', 5000, 'must be less than the 1500 training examples'),
    ('batch_size', 6, 'config.batch_size=6 is not allowed: a multiple of the 4 devices'),
    ('children_per_device', 0, 'config.children_per_device=0 is not allowed: an integer >= 1'),
    ('compile_ahead', -1, 'config.compile_ahead=-1 is not allowed: an integer >= 0'),
    ('epoch_loop', 'scan', "config.epoch_loop='scan' is not allowed: one of ('host', "
     "'device')"),
    ('distributed.num_processes', 2, "config.distributed.coordinator_address='' is not "
     "allowed: host:port of process 0 (or 'auto') when distributed.num_processes=2"),
    ('distributed.coordinator_address', 'auto', "only transfer_imagenet runs over several "
     'hosts'),
    ('distributed.process_id', -1, 'config.distributed.process_id=-1 is not allowed'),
])
def test_every_config_mistake_is_one_clear_line(field, value, message):
  config = searches.tiny_search_config()
  config.update_from_flattened_dict({field: value})
  with pytest.raises(check_config.ConfigError) as error:
    check_config.check_config(config)
  assert message in str(error.value)
  assert '\n' not in str(error.value)


def test_the_command_line_exits_with_one_line_before_any_work(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'blockqnn_jax.main', '--config=configs/quickstart.py',
       f'--workdir={tmp_path / "work"}', '--config.early_stop.epochs=-2'],
      cwd=ROOT, capture_output=True, text=True)
  assert result.returncode != 0
  assert result.stderr.strip().splitlines()[-1] == (
      'error: config.early_stop.epochs=-2 is not allowed: an integer >= 1')
  assert not (tmp_path / 'work').exists()


@pytest.mark.parametrize('flag, message', [
    ('--config.search.strategi=random', "error: --config.search.strategi: config.search "
     "has no field 'strategi'; did you mean 'strategy'?"),
    ('--config.seed.x=1', "error: --config.seed.x: config.seed is 0, a value, not a group "
     'of fields'),
    ('--config.search.strategy.x=1', "error: --config.search.strategy.x: "
     "config.search.strategy is 'qlearning', a value, not a group of fields"),
    ('--config=configs/no_such_config.py', "error: --config=configs/no_such_config.py: no "
     "config file 'configs/no_such_config.py' and no shipped config of that name; give a "
     'path or one of cifar10, cifar100, default, quickstart'),
    ('--config=cifar1O:smoke', "error: --config=cifar1O:smoke: no config file 'cifar1O' "
     'and no shipped config of that name; give a path or one of cifar10, cifar100, '
     'default, quickstart'),
])
def test_a_config_mistake_on_the_command_line_is_one_line(tmp_path, flag, message):
  command = [sys.executable, '-m', 'blockqnn_jax.main', '--config=configs/quickstart.py',
             f'--workdir={tmp_path / "work"}']
  if flag.startswith('--config='):
    command[3] = flag
  else:
    command.append(flag)
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
  assert result.returncode == 1
  assert result.stderr.strip() == message
  assert not (tmp_path / 'work').exists()


def test_config_variants_load():
  from configs import cifar10, cifar100, default, quickstart  # pylint: disable=g-import-not-at-top
  smoke = cifar10.get_config('smoke')
  assert smoke.early_stop.epochs == 1 and cifar10.get_config().early_stop.epochs == 12
  assert cifar100.get_config().dataset == 'cifar100'
  assert cifar10.get_config('smoke').to_dict() == {**cifar100.get_config('smoke').to_dict(),
                                                    'dataset': 'cifar10'}
  assert quickstart.get_config().dataset == 'digits'
  paper = cifar10.get_config('paper_agent').search
  assert paper.epsilon_schedule[0] == (1.0, 95) and paper.learning_rate == 0.01
  assert paper.learning_rate_decrease == 0.01 and paper.q_init == 0.5
  assert cifar10.get_config().search.learning_rate == 1.0
  with pytest.raises(ValueError, match="unknown variant 'huge'"):
    cifar10.get_config('huge')
  with pytest.raises(ValueError, match="the quickstart config has no variants, not 'smoke'"):
    quickstart.get_config('smoke')
  with pytest.raises(ValueError, match="the default config has no variants, not 'smoke'"):
    default.get_config('smoke')


def test_tensorboard_events_hold_the_search(tmp_path):
  search.run_search(searches.tiny_search_config(), str(tmp_path),
                    surrogate.synthetic_accuracy)
  events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'tensors': 0})
  events.Reload()
  tags = events.Tags()
  for tag in ('block/accuracy', 'block/reward', 'block/flops_term', 'block/density_term',
              'iteration/epsilon', 'iteration/mean_reward', 'iteration/best_reward',
              'iteration/best_so_far'):
    assert tag in tags['scalars'], tag
  assert len(events.Scalars('block/reward')) == 12
  assert [e.value for e in events.Scalars('iteration/epsilon')] == pytest.approx([1, 1, 0.1])
  assert 'best_block' in tags['images']
  assert 'best_block/codes/text_summary' in tags['tensors']
  assert '_hparams_/experiment' in events.PluginTagToContent('hparams')


def test_best_block_pictures_are_written(tmp_path):
  search.run_search(searches.tiny_search_config(), str(tmp_path),
                    surrogate.synthetic_accuracy)
  best = json.loads((tmp_path / 'best_block.json').read_text())
  with Image.open(tmp_path / 'best_block.png') as image:
    assert image.width > 100 and image.height > 100
  svg = (tmp_path / 'best_block.svg').read_text()
  for layer in nsc.Block.from_codes(best['codes']).layers:
    assert f'{layer.index}: {layer.label}' in svg


def test_draw_any_block_from_its_codes_in_one_line(tmp_path):
  out = tmp_path / 'block.png'
  subprocess.run([sys.executable, '-m', 'blockqnn_jax.draw',
                  '[[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 6, 0, 1, 2], [4, 7, 0, 0, 0]]',
                  str(out)], cwd=ROOT, check=True)
  assert Image.open(out).size == draw.to_image(
      nsc.Block.from_codes([[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 6, 0, 1, 2],
                            [4, 7, 0, 0, 0]])).size
