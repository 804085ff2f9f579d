"""The run folder: never silently restarted, one trainer at a time, gfile everywhere (ram:// leaves no
local trace), config.cfg that resumes, and one sentence for every damaged file."""

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, TINY_CLI, requires_bfloat16, tiny_config
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import saved_model_pb2

from dcgan_tf import data, export, safety, sampling, train, workdir
from dcgan_tf.config import ConfigError, validate
from dcgan_tf.workdir import lock

STEPS = 4  # The shared run: checkpoints ckpt-2 and ckpt-4, metrics at steps 2 and 4, an export.


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> str:
    """One briefly trained run for the whole module; tests damage copies of it."""
    path = str(tmp_path_factory.mktemp('trained') / 'run')
    train.train_and_evaluate(_cfg(export_at_end=True), path)
    return path


def _cfg(**overrides):
    values = dict(train_steps=STEPS, checkpoint_every=2, log_every=2, sample_every=2, collapse_threshold=0)
    values.update(overrides)
    return tiny_config(**values)


def _copy(trained: str, tmp_path) -> str:
    path = str(tmp_path / 'run')
    shutil.copytree(trained, path)
    return path


def _tree(path: str) -> dict[str, str]:
    """Every file under `path` with its digest: what 'nothing was changed' compares."""
    digests = {}
    for folder, _, files in os.walk(path):
        for name in files:
            full = os.path.join(folder, name)
            with open(full, 'rb') as f:
                digests[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return digests


def _ckpt(run: str, step: int) -> str:
    return os.path.join(run, 'checkpoints', f'ckpt-{step}')


# --- a workdir is never silently restarted ---


@pytest.mark.parametrize(
    'damage, expected_step, named',
    [
        ('delete_state_file', 4, 'checkpoints/checkpoint is missing'),
        ('delete_latest_index', 2, 'ckpt-4: files missing'),
        ('state_names_missing', 4, 'names ckpt-99, which does not exist'),
        ('garbage_state_file', 4, 'is not a checkpoint state file'),
        ('truncate_latest_data', 2, 'ckpt-4: damaged or cut short'),
    ],
)
def test_a_damaged_checkpoint_falls_back_to_the_newest_that_restores(
    trained, tmp_path, caplog, damage, expected_step, named
):
    run = _copy(trained, tmp_path)
    state = os.path.join(run, 'checkpoints', 'checkpoint')
    if damage == 'delete_state_file':
        os.remove(state)
    elif damage == 'delete_latest_index':
        os.remove(_ckpt(run, 4) + '.index')
    elif damage == 'state_names_missing':
        with open(state, 'w') as f:
            f.write('model_checkpoint_path: "ckpt-99"\nall_model_checkpoint_paths: "ckpt-99"\n')
    elif damage == 'garbage_state_file':
        with open(state, 'wb') as f:
            f.write(b'\x00\xffnot { a proto')
    else:
        data = _ckpt(run, 4) + '.data-00000-of-00001'
        with open(data, 'rb') as f:
            content = f.read()
        with open(data, 'wb') as f:
            f.write(content[: len(content) // 2])
    with caplog.at_level(logging.WARNING):
        trainer = train.Trainer(_cfg(), run)
    assert int(trainer.step) == expected_step
    assert trainer.restored_from == _ckpt(run, expected_step)
    # One warning naming what could not be restored and what was used instead.
    warning = [r.getMessage() for r in caplog.records if 'resumed from' in r.getMessage()]
    assert len(warning) == 1 and named in warning[0] and f'ckpt-{expected_step} instead' in warning[0]
    # The manager goes on from the restored checkpoint (rollback and rotation read it).
    assert trainer.manager.latest_checkpoint == _ckpt(run, expected_step)


def test_after_a_fallback_saving_rotation_and_metrics_go_on(trained, tmp_path):
    run = _copy(trained, tmp_path)
    os.remove(_ckpt(run, 4) + '.index')  # Resumes from step 2, with steps 2 and 4 in metrics.jsonl.
    trainer = train.train_and_evaluate(_cfg(train_steps=6, keep_checkpoints=2), run)
    assert trainer.restored_from.endswith('ckpt-2') and int(trainer.step) == 6
    # Step 4 was trained again and saved over the damaged files; ckpt-2 rotated out.
    assert [os.path.basename(p) for p in trainer.manager.checkpoints] == ['ckpt-4', 'ckpt-6']
    assert not os.path.exists(_ckpt(run, 2) + '.index')
    assert tf.train.latest_checkpoint(os.path.join(run, 'checkpoints')) == _ckpt(run, 6)
    # Metrics never hold a step twice: the records after the restored step were dropped.
    assert [h['step'] for h in workdir.read_metrics(run)] == [2, 4, 6]


def test_a_checkpoint_of_another_model_is_refused_and_nothing_is_rewritten(trained, tmp_path):
    run = _copy(trained, tmp_path)
    with open(os.path.join(run, 'config.cfg'), 'w'):
        pass  # An empty config.cfg: only the checkpoint itself can tell the model apart.
    before = _tree(run)
    with pytest.raises(ConfigError) as error:
        train.train_and_evaluate(_cfg(gf_dim=16, train_steps=6), run)
    message = str(error.value)
    assert 'holds a checkpoint of another model' in message and 'generator/project/kernel' in message
    assert '\n' not in message
    assert _tree(run) == before  # config.cfg too: it is written only once a restore succeeded.


def test_checkpoints_none_of_which_restores_are_refused_and_left_alone(trained, tmp_path):
    run = _copy(trained, tmp_path)
    for step in (2, 4):
        os.remove(_ckpt(run, step) + '.index')
    before = _tree(run)
    with pytest.raises(
        ConfigError, match=r'holds checkpoints but none of them restores \(ckpt-4: files missing'
    ):
        train.train_and_evaluate(_cfg(train_steps=6), run)
    assert _tree(run) == before


# --- config.cfg ---


def test_config_cfg_records_the_training_not_what_acts_on_the_folder(trained):
    with open(os.path.join(trained, 'config.cfg')) as f:
        names = {line.split('=')[0][2:] for line in f if line.startswith('--')}
    assert {'resolution', 'gf_dim', 'train_steps', 'seed', 'workdir'} <= names
    assert not names & {'mode', 'overwrite', 'out', 'out_dir', 'saved_model'}


def test_garbage_in_config_cfg_is_one_sentence(trained, tmp_path):
    run = _copy(trained, tmp_path)
    path = os.path.join(run, 'config.cfg')
    with open(path, 'wb') as f:
        f.write(b'\x89\xff\x00binary')
    before = _tree(run)
    with pytest.raises(ConfigError, match='config.cfg is not a text flagfile') as error:
        train.train_and_evaluate(_cfg(train_steps=6), run)
    assert '\n' not in str(error.value) and _tree(run) == before
    with open(path, 'w') as f:
        f.write('--resolution=16\nthis line is not a flag\n')
    with pytest.raises(ConfigError, match=r"config.cfg is not a flagfile: line 2 \('this line"):
        export.export_from_checkpoint(run)


def test_a_bad_value_in_config_cfg_on_export_is_one_sentence(trained, tmp_path):
    run = _copy(trained, tmp_path)
    path = os.path.join(run, 'config.cfg')
    with open(path) as f:
        text = f.read()
    with open(path, 'w') as f:
        f.write(text.replace('--resolution=16', '--resolution=sixteen'))
    with pytest.raises(ConfigError, match=r'config.cfg holds --resolution=sixteen, which is not an integer'):
        export.export_from_checkpoint(run)
    with open(path, 'w') as f:
        f.write(text.replace('--resolution=16', '--resolution=48'))
    with pytest.raises(ConfigError, match='holds a model that cannot be built: --resolution=48'):
        export.export_from_checkpoint(run)


def test_a_binary_flagfile_on_the_command_line_is_one_sentence(tmp_path, monkeypatch, capsys):
    from test_flags import _cli

    flagfile = tmp_path / 'config.cfg'
    flagfile.write_bytes(b'--resolution=16\n\xff\xfe\n')
    status, stderr = _cli([f'--flagfile={flagfile}'], monkeypatch, capsys)
    assert status == 2 and f'--flagfile ({flagfile}) is not a text file of flags' in stderr
    assert stderr.strip().count('\n') == 0


# --- metrics.jsonl ---


def test_bad_lines_in_metrics_are_dropped_with_a_warning_and_the_run_exports(trained, tmp_path, caplog):
    run = _copy(trained, tmp_path)
    shutil.rmtree(os.path.join(run, 'saved_model'))
    with open(os.path.join(run, 'metrics.jsonl'), 'a') as f:
        f.write('not json\n[1, 2]\n{"no_step": 1}\n{"step": 3, "d_l')  # The last one cut short.
    with caplog.at_level(logging.WARNING):
        train.train_and_evaluate(_cfg(train_steps=6, export_at_end=True), run)
    assert 'Dropped 4 line(s) of' in caplog.text and 'metrics.jsonl' in caplog.text
    assert [h['step'] for h in workdir.read_metrics(run)] == [2, 4, 6]
    with open(os.path.join(run, 'metrics.jsonl')) as f:
        assert all(isinstance(json.loads(line), dict) for line in f)
    assert export.load(os.path.join(run, 'saved_model')).metadata['step'] == 6
    assert os.path.exists(os.path.join(run, 'samples', 'losses.png'))


# --- a damaged SavedModel and z file ---


def test_a_saved_model_with_damaged_variables_is_one_sentence(trained, tmp_path):
    for damage in ('delete', 'truncate', 'truncate_graph'):
        path = str(tmp_path / damage)
        shutil.copytree(os.path.join(trained, 'saved_model'), path)
        if damage == 'delete':
            shutil.rmtree(os.path.join(path, 'variables'))
        else:
            name = (
                'saved_model.pb' if damage == 'truncate_graph' else 'variables/variables.data-00000-of-00001'
            )
            with open(os.path.join(path, name), 'rb') as f:
                content = f.read()
            with open(os.path.join(path, name), 'wb') as f:
                f.write(content[: len(content) // 3])
        with pytest.raises(ConfigError, match=f'SavedModel {path} cannot be loaded') as error:
            export.load(path)
        assert '\n' not in str(error.value)


@pytest.mark.parametrize(
    'bank, message',
    [
        (np.full((4, 16), np.nan, np.float32), 'holds NaN or Inf values'),
        (np.full((4, 16), 1e30), 'holds values up to 1e\\+30'),
        (np.array([['a'] * 16] * 4), 'holds <U1 values, not numbers'),
    ],
)
def test_a_z_file_of_nan_huge_values_or_strings_is_one_sentence(trained, tmp_path, bank, message):
    z_file = tmp_path / 'z.npy'
    np.save(z_file, bank)
    cfg = tiny_config(
        mode='arithmetic',
        saved_model=os.path.join(trained, 'saved_model'),
        z_file=str(z_file),
        group_a='0',
        group_b='1',
        group_c='2',
        out=str(tmp_path / 'out.png'),
    )
    with pytest.raises(ConfigError, match=f'--z_file={z_file} {message}'):
        sampling.run(validate(cfg))
    assert not (tmp_path / 'out.png').exists()


# --- gfile everywhere: a ram:// workdir ---


def test_train_resume_export_and_sample_in_ram_leave_nothing_on_disk(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = f'ram://dcgan_test_{os.getpid()}/run'
    first = train.train_and_evaluate(_cfg(train_steps=2), run)
    assert first.restored_from is None
    resumed = train.train_and_evaluate(_cfg(export_at_end=True), run)
    assert resumed.restored_from == f'{run}/checkpoints/ckpt-2' and int(resumed.step) == STEPS
    assert [h['step'] for h in workdir.read_metrics(run)] == [2, 4]
    samples = {os.path.basename(p) for p in tf.io.gfile.glob(f'{run}/samples/*')}
    assert {'step_0000000.png', 'step_0000004.png', 'progress.gif', 'losses.png'} <= samples
    assert export.load(f'{run}/saved_model').metadata['step'] == STEPS
    export.export_from_checkpoint(run, f'{run}/again')
    assert export.load(f'{run}/again').metadata['step'] == STEPS
    cfg = validate(tiny_config(mode='sample', workdir=run, num=4, out=f'{run}/grid.png'))
    sampling.run(cfg)
    assert tf.io.gfile.exists(f'{run}/grid.png') and tf.io.gfile.exists(f'{run}/grid.npy')
    assert not tf.io.gfile.exists(workdir.lock_path(run))
    assert os.listdir(tmp_path) == []  # No folder named ram: (or anything else) in the working directory.


# --- one trainer per workdir ---


def _lock(run, **fields):
    os.makedirs(run, exist_ok=True)
    info = dict(host=socket.gethostname(), pid=os.getpid(), started=time.time(), heartbeat=time.time())
    info.update(fields)
    with open(workdir.lock_path(run), 'w') as f:
        json.dump(info, f)


def test_a_lock_refuses_a_live_holder_and_takes_over_a_stale_one(tmp_path, caplog):
    run = str(tmp_path / 'run')
    with lock.RunLock(run):
        with pytest.raises(ConfigError, match=r'is in use by another trainer \(host .*, PID \d+, since '):
            lock.RunLock(run).acquire()
        with open(workdir.lock_path(run)) as f:
            assert json.load(f)['pid'] == os.getpid()
    assert not os.path.exists(workdir.lock_path(run))  # Released.
    gone = subprocess.run(
        [sys.executable, '-c', 'import os; print(os.getpid())'], capture_output=True, text=True
    )
    stale = [
        dict(pid=int(gone.stdout)),  # A process that ended.
        dict(pid=1, started=time.time() - 10**9),  # PID 1 has run since boot, not since 1990.
        dict(host='elsewhere', heartbeat=time.time() - lock.LOCK_STALE_S - 1),  # Another host, silent.
        dict(host=None, pid='x'),  # Not a lock this program writes.
    ]
    for fields in stale:
        _lock(run, **fields)
        with caplog.at_level(logging.WARNING), lock.RunLock(run):
            assert 'Took over the stale lock' in caplog.text
        caplog.clear()
    _lock(run, host='elsewhere', pid=1)  # Another host that renewed its lock just now.
    with pytest.raises(ConfigError, match='host elsewhere, PID 1'):
        lock.RunLock(run).acquire()


def test_a_lock_on_another_host_is_renewed(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, 'LOCK_HEARTBEAT_S', 0.05)
    run = str(tmp_path / 'run')
    with lock.RunLock(run):
        with open(workdir.lock_path(run)) as f:
            first = json.load(f)['heartbeat']
        time.sleep(0.5)
        with open(workdir.lock_path(run)) as f:
            assert json.load(f)['heartbeat'] > first


def _blocked_trainer(run: str, log_path) -> subprocess.Popen:
    """The CLI with a data pipeline that never yields: it hangs in its first call, holding the lock."""
    code = (
        'import sys, threading\n'
        'import tensorflow as tf\n'
        'from dcgan_tf import data, main\n'
        'def make_dataset(cfg, source, input_context=None, start_step=0, **kwargs):\n'
        '    def never():\n'
        '        threading.Event().wait()\n'
        '        yield\n'
        '    spec = tf.TensorSpec([cfg.batch_size, cfg.resolution, cfg.resolution, cfg.channels])\n'
        '    return tf.data.Dataset.from_generator(never, output_signature=spec)\n'
        'data.make_dataset = make_dataset\n'
        'sys.argv = ["dcgan_tf"] + sys.argv[1:]\n'
        'main.run()\n'
    )
    args = [*TINY_CLI, '--train_steps=10', '--collapse_threshold=0', f'--workdir={run}']
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CPP_MIN_LOG_LEVEL='2')
    with open(log_path, 'w') as log:
        return subprocess.Popen(
            [sys.executable, '-c', code, *args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env
        )


def test_a_second_trainer_is_refused_and_sigterm_stops_a_blocked_start_up(tmp_path):
    run, log_path = str(tmp_path / 'run'), tmp_path / 'blocked.log'
    blocked = _blocked_trainer(run, log_path)
    try:
        deadline = time.monotonic() + 240
        while 'Tracing the train step' not in log_path.read_text() and blocked.poll() is None:
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert blocked.poll() is None, log_path.read_text()[-3000:]
        # A second trainer of the same workdir, while the first holds it: one sentence, status 2.
        env = dict(os.environ, PYTHONPATH=REPO_ROOT)
        second = subprocess.run(
            [sys.executable, '-m', 'dcgan_tf.main', *TINY_CLI, '--train_steps=10', f'--workdir={run}'],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO_ROOT,
            env=env,
        )
        assert second.returncode == 2, second.stderr[-3000:]
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith(f'error: --workdir={run} is in use by another trainer (host ')
        assert f'PID {blocked.pid}' in last and 'Traceback' not in second.stderr
        # The first one is stuck inside TensorFlow, where Python runs no signal handler: SIGTERM still
        # ends it within seconds, with one line, and releases the lock.
        sent = time.monotonic()
        blocked.send_signal(signal.SIGTERM)
        status = blocked.wait(timeout=30)
        assert time.monotonic() - sent < 10
    finally:
        if blocked.poll() is None:
            blocked.kill()
    text = log_path.read_text()
    assert status == 0, text[-3000:]
    assert text.strip().splitlines()[-1].startswith('Stopped by SIGTERM during start-up'), text[-3000:]
    assert 'Traceback' not in text
    assert not os.path.exists(workdir.lock_path(run))


def test_sigterm_while_start_up_runs_python_unwinds_cleanly(tmp_path, monkeypatch):
    load_source = data.load_source

    def interrupted(cfg):  # The signal lands while start-up runs Python (here: loading the data).
        os.kill(os.getpid(), signal.SIGTERM)
        return load_source(cfg)

    monkeypatch.setattr(data, 'load_source', interrupted)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(safety.StoppedDuringStartUp, match='Stopped by SIGTERM during start-up'):
        train.train_and_evaluate(_cfg(), str(tmp_path))
    # The exception unwound every `with` (the process lives on): lock released, handlers put back,
    # and nothing of the run written.
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert os.listdir(tmp_path) == []


def test_the_lock_is_released_when_the_run_fails(tmp_path, monkeypatch):
    def fail(self, num_steps):
        raise RuntimeError('a fault in the middle of the loop')

    monkeypatch.setattr(train.Trainer, 'train_steps', fail)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(RuntimeError, match='a fault in the middle'):
        train.train_and_evaluate(_cfg(), str(tmp_path))
    assert not os.path.exists(workdir.lock_path(str(tmp_path)))
    # The stop handlers and the wakeup fd are put back too.
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    assert wakeup_fd == -1


# --- no global state escapes a run ---


def _node_dtypes(saved_model: str) -> set[int]:
    """The dtypes every op of a SavedModel's graphs and functions computes with."""
    with open(os.path.join(saved_model, 'saved_model.pb'), 'rb') as f:
        graph = saved_model_pb2.SavedModel.FromString(f.read()).meta_graphs[0].graph_def
    nodes = list(graph.node) + [n for function in graph.library.function for n in function.node_def]
    dtypes = set()
    for node in nodes:
        for attr in node.attr.values():
            dtypes.update([attr.type] if attr.HasField('type') else list(attr.list.type))
    return dtypes


@requires_bfloat16
def test_training_in_bfloat16_leaves_the_global_policy_and_exports_float32(tmp_path):
    before = keras.mixed_precision.global_policy().name
    run = str(tmp_path / 'run')
    cfg = _cfg(train_steps=2, precision='mixed_bfloat16', export_at_end=True)
    # A bfloat16 run at its last step: the next call builds everything and exports, and runs no
    # bfloat16 kernel (which oneDNN cannot when ONEDNN_MAX_CPU_ISA caps a bfloat16 CPU to AVX2).
    trainer = train.Trainer(cfg, run)
    trainer.step.assign(2)
    trainer.save()
    trainer = train.train_and_evaluate(cfg, run)
    assert trainer.restored_from.endswith('ckpt-2')
    assert trainer.generator.dtype_policy.name == 'mixed_bfloat16'
    assert keras.mixed_precision.global_policy().name == before
    export.export_from_checkpoint(run, str(tmp_path / 'again'))
    for path in (os.path.join(run, 'saved_model'), str(tmp_path / 'again')):
        assert _node_dtypes(path) and types_pb2.DT_BFLOAT16 not in _node_dtypes(path), path
