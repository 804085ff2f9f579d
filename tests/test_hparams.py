"""HParams: two short runs with different learning rates under one folder are two sessions of TensorBoard's
HParams dashboard, each with its flags and its final (and best) metrics, read back by the plugin itself; a
resumed run adds no second session."""

import os

import pytest
from conftest import tiny_config
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups

from dcgan_tf import hparams, train
from dcgan_tf.quality import classifier

FINAL = ('d_loss', 'g_loss', 'd_real', 'd_fake', 'images_per_second')


def _dashboard(logdir):
    """{session name: (hparams, {(group, tag): value})}, as the HParams dashboard lists its rows."""
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(logdir)
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, logdir)
    context = backend_context.Context(
        base_plugin.TBContext(logdir=logdir, multiplexer=multiplexer, data_provider=provider)
    )
    # Sessions of every status, as the dashboard asks for them (ours have no end, so STATUS_UNKNOWN).
    statuses = api_pb2.Status.values()
    request = api_pb2.ListSessionGroupsRequest(start_index=0, slice_size=100, allowed_statuses=statuses)
    response = list_session_groups.Handler(RequestContext(), context, '', request).run()
    rows = {}
    for group in response.session_groups:
        for session in group.sessions:
            values = {k: v.number_value or v.string_value for k, v in group.hparams.items()}
            metrics = {(m.name.group, m.name.tag): m.value for m in session.metric_values}
            rows[session.name] = (values, metrics)
    return rows


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """Two runs under one parent: `fast` (g_lr 1e-3, evaluated every 2 steps) and `slow` (g_lr 3e-4)."""
    parent = tmp_path_factory.mktemp('runs')
    net = str(parent / 'net.keras')
    classifier.build_classifier().save(net)
    evaluated = dict(eval_every=2, eval_samples=24, kid_subsets=4, kid_subset_size=12, feature_net='mnist')
    fast = tiny_config(g_lr=1e-3, classifier_path=net, **evaluated)
    train.train_and_evaluate(fast, str(parent / 'fast'))
    train.train_and_evaluate(tiny_config(g_lr=3e-4), str(parent / 'slow'))
    return parent, fast


def test_two_runs_are_two_rows_with_their_learning_rates_and_metrics(runs):
    parent, _ = runs
    rows = _dashboard(str(parent))
    assert set(rows) == {'fast/tensorboard', 'slow/tensorboard'}
    for name, g_lr in (('fast', 1e-3), ('slow', 3e-4)):
        values, metrics = rows[f'{name}/tensorboard']
        assert values['g_lr'] == pytest.approx(g_lr) and values['dataset'] == 'synthetic'
        assert values['z_dim'] == 16 and set(values) == set(hparams.HPARAM_FLAGS)
        for key in FINAL:
            assert ('train', f'train/{key}') in metrics, (name, key, sorted(metrics))
        assert metrics[('train', 'train/images_per_second')] > 0
    # The best evaluation, in the evaluated run only.
    assert ('eval', 'eval/best_fid') in rows['fast/tensorboard'][1]
    assert not any(group == 'eval' for group, _ in rows['slow/tensorboard'][1])


def test_a_resumed_run_stays_one_row(runs):
    parent, fast = runs
    train.train_and_evaluate(fast.replace(train_steps=6), str(parent / 'fast'))
    rows = _dashboard(str(parent))
    assert set(rows) == {'fast/tensorboard', 'slow/tensorboard'}
    session_files = [n for n in os.listdir(parent / 'fast' / 'tensorboard') if n.startswith('events')]
    assert len(session_files) == 1  # No second session start written by the resumed run.
