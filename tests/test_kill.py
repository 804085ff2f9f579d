"""Kill-safety, end to end: SIGKILL at any moment (also mid-checkpoint and mid-export) loses at most one
checkpoint interval, the same command resumes, and a half-written export never replaces a good one;
SIGTERM stops with exit 0 and a fresh checkpoint.

Each trial is a fresh `python -m dcgan_tf.main` process (TensorFlow start-up dominates its cost), so the
suite keeps a short chain of kills and the 10-trial version is a benchmark.
"""

import glob
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT, TINY_CLI

from dcgan_tf import export
from dcgan_tf import workdir as workdir_lib

CHECKPOINT_EVERY = 5
TINY = [
    *TINY_CLI,
    '--synthetic_examples=32',
    '--num_grid=4',
    '--log_every=1',
    '--sample_every=100000',
    f'--checkpoint_every={CHECKPOINT_EVERY}',
    '--keep_checkpoints=2',
    '--collapse_threshold=0',
    '--strategy=one_device',
    '--devices=/cpu:0',
]


# --- helpers ---


def _start(workdir, train_steps: int, log_path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    args = [
        sys.executable,
        '-m',
        'dcgan_tf.main',
        *TINY,
        f'--train_steps={train_steps}',
        f'--workdir={workdir}',
    ]
    with open(log_path, 'w') as log:
        return subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env)


def _wait_for(process: subprocess.Popen, condition, timeout: float = 240) -> bool:
    """Polls `condition()` every millisecond; False if the process ended (or time ran out) first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    return False


def _latest_step(workdir) -> int:
    """The step of the checkpoint the next run will resume from; it must load completely."""
    latest = tf.train.latest_checkpoint(os.path.join(workdir, 'checkpoints'))
    if latest is None:
        return 0
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():  # Every tensor readable: nothing half-written.
        reader.get_tensor(name)
    step = int(reader.get_tensor('step/.ATTRIBUTES/VARIABLE_VALUE'))
    assert latest.endswith(f'ckpt-{step}')
    return step


def _logged_step(workdir) -> int:
    history = workdir_lib.read_metrics(workdir)
    return max((h['step'] for h in history), default=0)


def _saving_checkpoint(workdir):
    return lambda: bool(glob.glob(os.path.join(workdir, 'checkpoints', '*_temp*')))


def _exporting(workdir):
    return lambda: bool(glob.glob(os.path.join(workdir, 'saved_model.tmp*')))


def _kill(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL


def _check_resumed(log_path, step: int) -> None:
    text = open(log_path).read()
    if step:
        assert re.search(rf'Resumed from \S+ckpt-{step} at step {step}\.', text), text[-3000:]
    else:
        assert 'Resumed from' not in text, text[-3000:]


def _assert_export(workdir, step: int) -> None:
    generator = export.load(os.path.join(workdir, 'saved_model'))
    assert generator.metadata['step'] == step
    images = generator.generate(np.zeros((2, 8), np.float32))
    assert images.shape == (2, 16, 16, 1) and images.dtype == np.uint8
    # No half-written export is left beside the good one.
    assert not glob.glob(os.path.join(workdir, 'saved_model.*'))


def _export_step(workdir) -> int | None:
    path = os.path.join(workdir, 'saved_model')
    return export.load(path).metadata['step'] if os.path.isdir(path) else None


def _trial(workdir, tmp_path, trial: int, train_steps: int, moment: str, rng: random.Random) -> None:
    """One process: resume, SIGKILL it at `moment` (or let it finish: 'none'), check what it left."""
    resume_from, exported = _latest_step(workdir), _export_step(workdir)
    log_path = tmp_path / f'trial{trial}_{moment}.log'
    process = _start(workdir, train_steps, log_path)
    if moment == 'random':  # Anywhere from the first call to the end of the export.
        started = _wait_for(process, lambda: 'Tracing the train step' in open(log_path).read())
        if started:
            time.sleep(rng.uniform(0, 2.0))
    elif moment == 'checkpoint':
        started = _wait_for(process, _saving_checkpoint(workdir))
    elif moment == 'export':
        started = _wait_for(process, _exporting(workdir))
    else:
        started = process.wait(timeout=600) == 0
    assert started or process.returncode == 0, open(log_path).read()[-3000:]
    if process.poll() is None:
        _kill(process)
    _check_resumed(log_path, resume_from)
    # What the next run resumes from is a complete checkpoint, at most one interval behind the progress
    # the run had logged (metrics are written before the checkpoint of the same step).
    assert _logged_step(workdir) - _latest_step(workdir) <= CHECKPOINT_EVERY
    if moment == 'export' and exported is not None:
        # Killed mid-export: the previous export is still there, whole, and still the old one.
        assert _export_step(workdir) == exported


def _chain(tmp_path, moments: list[str], seed: int) -> None:
    """One workdir, one process per moment (each asked for 20 more steps), then a run to the end."""
    rng = random.Random(seed)
    workdir = str(tmp_path / 'run')
    for trial, moment in enumerate(moments):
        _trial(workdir, tmp_path, trial, 20 * (trial + 1), moment, rng)
    final_steps = 20 * (len(moments) + 1)
    log_path = tmp_path / 'final.log'
    resume_from = _latest_step(workdir)
    process = _start(workdir, final_steps, log_path)
    assert process.wait(timeout=600) == 0, open(log_path).read()[-3000:]
    _check_resumed(log_path, resume_from)
    assert _latest_step(workdir) == final_steps
    _assert_export(workdir, final_steps)
    # Killed runs leave no half-written checkpoints behind once a run has started again.
    assert not glob.glob(os.path.join(workdir, 'checkpoints', '*_temp'))


# --- tests ---


@pytest.mark.slow
def test_sigkill_while_saving_and_exporting_resumes(tmp_path):
    # Three processes: killed mid-checkpoint, killed mid-export, then to the end.
    _chain(tmp_path, ['checkpoint', 'export'], seed=0)


@pytest.mark.benchmark
def test_sigkill_ten_times_at_random_moments(tmp_path):
    # 10 kills: anywhere, mid-checkpoint, and mid-export with (after 'none') and without a good export.
    moments = ['random', 'checkpoint', 'random', 'export', 'none', 'random', 'checkpoint']
    moments += ['export', 'random', 'checkpoint', 'none', 'export', 'random']
    assert sum(m != 'none' for m in moments) == 11
    _chain(tmp_path, moments, seed=1)


@pytest.mark.slow
def test_sigterm_stops_with_exit_0_and_a_fresh_checkpoint(tmp_path):
    workdir = str(tmp_path / 'run')
    log_path = tmp_path / 'run.log'
    process = _start(workdir, 100000, log_path)
    # Past a few steps, but nowhere near a --checkpoint_every boundary of its own choosing.
    assert _wait_for(process, lambda: _logged_step(workdir) >= 7), open(log_path).read()[-3000:]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, open(log_path).read()[-3000:]
    text = open(log_path).read()
    stopped_at = int(re.search(r'Stopped by SIGTERM at step (\d+) with a checkpoint', text).group(1))
    assert _latest_step(workdir) == stopped_at == _logged_step(workdir)
    # The stop leaves time for the checkpoint only: no export of a half-trained model.
    assert not os.path.exists(os.path.join(workdir, 'saved_model'))
    assert 'Traceback' not in text
