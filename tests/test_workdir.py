"""The run folder: never silently restarted, one trainer at a time, gfile everywhere (ram:// leaves no
local trace), config.cfg that resumes, and one sentence for every damaged file."""

import hashlib
import os
import shutil

import pytest
import tensorflow as tf
from conftest import tiny_config

from dcgan_tf import export, sampling, train, workdir
from dcgan_tf.config import validate

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


# --- config.cfg ---


def test_config_cfg_records_the_training_not_what_acts_on_the_folder(trained):
    with open(os.path.join(trained, 'config.cfg')) as f:
        names = {line.split('=')[0][2:] for line in f if line.startswith('--')}
    assert {'resolution', 'gf_dim', 'train_steps', 'seed', 'workdir'} <= names
    assert not names & {'mode', 'overwrite', 'out', 'out_dir', 'saved_model'}


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
