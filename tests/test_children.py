"""Every child visible: ``blockqnn report`` on a killed search, and each trained child a
session of TensorBoard's HParams plugin, read back by TensorBoard's own HParams backend."""

import csv
import json

from PIL import Image
import pytest
from tensorboard import context
from tensorboard.backend.event_processing import data_provider
from tensorboard.backend.event_processing import plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import backend_context
from tensorboard.plugins.hparams import list_session_groups

from blockqnn_jax import main
from blockqnn_jax import nsc
from blockqnn_jax import report
from blockqnn_jax import search
from blockqnn_jax import workdir as workdir_lib
from blockqnn_jax.analysis import surrogate
from tests import searches
from tests.interrupt import Crash


class Evaluator(searches.CountingEvaluator):
  """The surrogate's accuracy with a child's FLOPs, parameters and seconds, as a trained
  child reports them; raises Crash on call number ``crash_at``."""

  def __call__(self, block):
    super().__call__(block)
    return {'accuracy': surrogate.synthetic_accuracy(block),
            'flops': block.flops(32, 32, 8), 'params': 1000 + 7 * len(block),
            'prepare_seconds': 0.25, 'train_seconds': 1.5, 'eval_seconds': 0.125}


def logged(workdir):
  lines = (workdir / 'results.jsonl').read_text().splitlines()
  return [json.loads(line) for line in lines if line.endswith('}')]


def test_report_on_a_killed_search_reads_without_the_lock_or_cutting_the_torn_line(
    tmp_path, capsys):
  with pytest.raises(Crash):
    search.run_search(searches.tiny_search_config(), str(tmp_path), Evaluator(crash_at=7))
  with open(tmp_path / 'results.jsonl', 'a') as log:
    log.write('{"accuracy": 0.5, "rew')  # a write in progress
  records = logged(tmp_path)
  trained = [r for r in records if not r['cached']]
  assert len(trained) == 6
  before = (tmp_path / 'results.jsonl').read_bytes()
  with workdir_lib.locked(str(tmp_path)):  # as a running search holds it
    report.run(['--top=3', str(tmp_path), '--csv', str(tmp_path / 'all.csv')])
  assert (tmp_path / 'results.jsonl').read_bytes() == before

  best = sorted(trained, key=lambda r: r['reward'], reverse=True)
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].split() == ['rank', 'reward', 'accuracy', 'FLOPs', 'params', 'codes']
  for rank, (line, record) in enumerate(zip(lines[1:4], best), 1):
    assert line.split()[:3] == [str(rank), f'{record["reward"]:.4f}',
                                f'{record["accuracy"]:.4f}']
    assert line.endswith(json.dumps(record['codes']))
  assert lines[4] == ''  # the table holds the top 3 only
  with open(tmp_path / 'all.csv') as f:
    rows = list(csv.DictReader(f))
  assert [json.loads(row['codes']) for row in rows] == [r['codes'] for r in best]
  assert [int(row['flops']) for row in rows] == [r['flops'] for r in best]
  assert [row['rank'] for row in rows] == [str(i) for i in range(1, 7)]
  with Image.open(tmp_path / 'pareto.png') as picture:
    assert picture.format == 'PNG'


def test_report_lists_each_architecture_that_ran_once_with_its_latest_result(tmp_path,
                                                                             capsys):
  records = [
      {'hash': 'a', 'cached': False, 'transient': True, 'accuracy': 0.0, 'reward': 0.0},
      {'hash': 'b', 'cached': False, 'accuracy': 0.5, 'reward': 0.45},
      {'hash': 'b', 'cached': True, 'accuracy': 0.5, 'reward': 0.45},
      {'hash': 'a', 'cached': False, 'accuracy': 0.75, 'reward': 0.7},
      {'hash': 'c', 'cached': False, 'transient': True, 'accuracy': 0.0, 'reward': 0.0},
  ]
  with open(tmp_path / 'results.jsonl', 'w') as log:
    log.writelines(json.dumps({**r, 'codes': [[1, 4, 0, 0, 0], [2, 7, 0, 0, 0]], 'index': i,
                               'iteration': 0}) + '\n' for i, r in enumerate(records))
  report.run([str(tmp_path)])
  assert [(r['hash'], r['reward'], r['index']) for r in report.children(str(tmp_path))] == [
      ('a', 0.7, 3), ('b', 0.45, 1)]
  output = capsys.readouterr().out
  assert 'no FLOPs in the log' in output and not (tmp_path / 'pareto.png').exists()


def test_blockqnn_report_runs_the_report(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr('sys.argv', ['blockqnn', 'report', str(tmp_path), '--top=2'])
  with pytest.raises(SystemExit, match='no results.jsonl, not a search workdir'):
    main.run()
  (tmp_path / 'results.jsonl').write_text('')
  main.run()
  assert capsys.readouterr().out == f'no trained child in {tmp_path}/results.jsonl yet\n'


def test_the_pareto_front_is_every_child_no_other_beats_on_both():
  rows = [{'flops': f, 'accuracy': a, 'name': n} for f, a, n in [
      (300, 0.6, 'c'), (100, 0.5, 'a'), (200, 0.4, 'b'), (300, 0.7, 'd'), (400, 0.7, 'e'),
      (500, 0.8, 'f')]]
  assert [r['name'] for r in report.pareto_front(rows + [{'accuracy': 0.9}])] == [
      'a', 'd', 'f']


def hparams_sessions(logdir):
  """The session groups TensorBoard's HParams plugin lists for ``logdir``, and the
  experiment (its columns)."""
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(str(logdir))
  multiplexer.Reload()
  tb_context = base_plugin.TBContext(
      logdir=str(logdir), multiplexer=multiplexer,
      data_provider=data_provider.MultiplexerDataProvider(multiplexer, str(logdir)))
  hparams_context = backend_context.Context(tb_context)
  request_context = context.RequestContext()
  experiment = hparams_context.experiment_from_metadata(
      request_context, '', include_metrics=True, data_provider_hparams=None,
      hparams_run_to_tag_to_content=hparams_context.hparams_metadata(request_context, ''))
  request = api_pb2.ListSessionGroupsRequest(
      start_index=0, slice_size=1000, allowed_statuses=[api_pb2.STATUS_SUCCESS])
  return experiment, list_session_groups.Handler(
      request_context, hparams_context, '', request).run().session_groups


def test_each_trained_child_is_a_tensorboard_hparams_session(tmp_path):
  search.run_search(searches.tiny_search_config(), str(tmp_path), Evaluator())
  trained = [r for r in logged(tmp_path) if not r['cached']]
  experiment, groups = hparams_sessions(tmp_path)
  assert sorted(h.name for h in experiment.hparam_infos) == sorted([
      'codes', 'hash', 'depth', 'conv', 'max_pool', 'avg_pool', 'identity', 'add', 'concat'])
  assert [m.name.tag for m in experiment.metric_infos] == [
      'child/accuracy', 'child/reward', 'child/flops', 'child/params', 'child/seconds']
  sessions = {group.name: group for group in groups}
  assert sorted(sessions) == [f'children/{r["index"]:06d}' for r in trained]
  for record in trained:
    group = sessions[f'children/{record["index"]:06d}']
    hparams = {k: v.string_value or v.number_value for k, v in group.hparams.items()}
    types = [code[1] for code in record['codes'][:-1]]
    assert hparams == {
        'codes': json.dumps(record['codes']), 'hash': record['hash'],
        'depth': len(record['codes']) - 1,
        **{name: types.count(code) for code, name in nsc.TYPE_NAMES.items()
           if code != nsc.TERMINAL}}
    metrics = {m.name.tag: m.value for m in group.metric_values}
    assert metrics == pytest.approx({
        'child/accuracy': record['accuracy'], 'child/reward': record['reward'],
        'child/flops': record['flops'], 'child/params': record['params'],
        'child/seconds': 1.875})
