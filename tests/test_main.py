"""The command line, end to end, in fresh processes as a user runs it."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import HAVE_SHARED_MNIST, REPO_ROOT, SHARED_MNIST, TINY_CLI
from tiny import TINY_MODEL_CLI

TINY = TINY_MODEL_CLI


def run_cli(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    return subprocess.run(
        [sys.executable, '-m', 'dcgan_tf.main', *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env,
    )


def test_train_synthetic_end_to_end(tmp_path):
    result = run_cli(
        '--dataset=synthetic',
        *TINY,
        '--train_steps=4',
        '--log_every=2',
        '--sample_every=2',
        '--checkpoint_every=2',
        f'--workdir={tmp_path}',
        '--overwrite',
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'samples' / 'step_0000004.png').exists()
    assert (tmp_path / 'samples' / 'progress.gif').exists()
    assert (tmp_path / 'checkpoints' / 'checkpoint').exists()
    # The first lines say what will run; TensorFlow's start-up chatter stays out of the way.
    assert 'Strategy:' in result.stderr and 'Data: synthetic' in result.stderr
    assert 'oneDNN' not in result.stderr and 'cuInit' not in result.stderr
    # stderr is a pipe, not a terminal: one plain progress line per log step, no bar.
    assert '\r' not in result.stderr and '\x1b[' not in result.stderr
    assert re.search(r'step 4/4 \(100%\), \d+ images/s, ETA 0:00:00, d_loss ', result.stderr), result.stderr
    # The saved flags re-run the same training: they resume it (nothing left to do) rather than delete
    # it, although the run was started with --overwrite.
    checkpoint = (tmp_path / 'checkpoints' / 'ckpt-4.index').read_bytes()
    again = run_cli(f'--flagfile={tmp_path}/config.cfg')
    assert again.returncode == 0, again.stderr
    assert re.search(r'Resumed from \S+ckpt-4 at step 4\.', again.stderr), again.stderr
    assert (tmp_path / 'checkpoints' / 'ckpt-4.index').read_bytes() == checkpoint


def test_onednn_is_on_for_every_x86_cpu_unless_the_user_says_otherwise(monkeypatch):
    # TensorFlow itself enables oneDNN only on CPUs with VNNI/BF16/AMX; an AVX2-only one gets Eigen.
    from dcgan_tf import main as main_lib

    monkeypatch.setattr(main_lib.platform, 'machine', lambda: 'x86_64')
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS', raising=False)
    main_lib._use_onednn()
    assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '1'
    monkeypatch.setenv('TF_ENABLE_ONEDNN_OPTS', '0')
    main_lib._use_onednn()
    assert os.environ['TF_ENABLE_ONEDNN_OPTS'] == '0'
    # Elsewhere (ARM) TensorFlow's own choice stands.
    monkeypatch.setattr(main_lib.platform, 'machine', lambda: 'aarch64')
    monkeypatch.delenv('TF_ENABLE_ONEDNN_OPTS')
    main_lib._use_onednn()
    assert 'TF_ENABLE_ONEDNN_OPTS' not in os.environ


@pytest.mark.skipif(not HAVE_SHARED_MNIST, reason='the full MNIST IDX files are not beside this checkout')
def test_train_on_real_mnist_files(tmp_path):
    result = run_cli(
        '--dataset=mnist',
        f'--data_dir={SHARED_MNIST}',
        '--resolution=28',
        '--gf_dim=8',
        '--df_dim=8',
        '--batch_size=16',
        '--train_steps=3',
        f'--workdir={tmp_path}',
    )
    assert result.returncode == 0, result.stderr
    assert 'mnist: 60000 images' in result.stderr


@pytest.mark.parametrize(
    'args, message',
    [
        (['--resolution=30'], '--resolution=30 is not supported'),
        (['--batch_size=0'], '--batch_size=0 must be a positive integer'),
        (['--batch_size=abc'], 'flag --batch_size=abc'),
        (['--dataset=imagenet'], "--dataset='imagenet' is not one of"),
        (['--dataset=folder'], '--dataset=folder needs --data_dir'),
        (['--dataset=folder', '--data_dir=/does/not/exist'], 'does not exist'),
        (['--train_steps=0'], 'Set --train_steps or --epochs'),
        (['--arch=tutorial', '--resolution=64'], '--arch=tutorial'),
        (['stray'], 'unexpected arguments'),
    ],
)
def test_bad_flags_fail_fast_with_one_sentence(args, message):
    started = time.monotonic()
    result = run_cli('--train_steps=5', *args) if '--train_steps=0' not in args else run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.strip().count('\n') == 0  # one line, no stack trace
    assert time.monotonic() - started < 15  # before TensorFlow loads


def test_empty_data_dir_and_unwritable_workdir(tmp_path):
    (tmp_path / 'empty').mkdir()
    result = run_cli('--dataset=folder', f'--data_dir={tmp_path / "empty"}', '--train_steps=1')
    assert result.returncode == 2 and 'is empty' in result.stderr
    blocker = tmp_path / 'a_file'
    blocker.write_text("a file where the workdir's parent should be")
    result = run_cli('--train_steps=1', f'--workdir={blocker / "run"}')
    assert result.returncode == 2 and 'is not writable' in result.stderr


def test_an_older_config_cfg_holding_overwrite_does_not_delete_the_run(tmp_path):
    """Older versions recorded --overwrite=true in config.cfg; resuming with that file must not delete."""
    run = tmp_path / 'run'
    (run / 'checkpoints').mkdir(parents=True)
    kept = run / 'checkpoints' / 'ckpt-2.index'
    kept.write_bytes(b'a checkpoint to keep')
    (run / 'config.cfg').write_text(
        '\n'.join([*TINY_CLI, '--train_steps=4', f'--workdir={run}', '--overwrite=true'])
    )
    result = run_cli(f'--flagfile={run / "config.cfg"}')
    assert result.returncode == 2, result.stderr[-2000:]
    assert 'holds --overwrite=true, which would delete this run' in result.stderr
    assert kept.read_bytes() == b'a checkpoint to keep'


def test_ctrl_c_while_tensorflow_loads_is_one_line(tmp_path):
    # SIGINT's default disposition restored: a background shell starts children with it ignored.
    process = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'dcgan_tf.main',
            *TINY_CLI,
            '--train_steps=2',
            f'--workdir={tmp_path / "run"}',
        ],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=REPO_ROOT),
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    time.sleep(1.5)  # Flags parsed, TensorFlow importing (several seconds).
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-2000:]
    assert 'Traceback' not in stderr
    assert stderr.strip().splitlines()[-1] == 'Interrupted (Ctrl-C).'
