"""Files written by version 0.1.0 keep working: its checkpoint resumes and exports, its SavedModel loads and
samples, and its .keras file of the package's registered layers loads (tests/fixtures/write_fixtures.py)."""

import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from dcgan_tf import export, train
from dcgan_tf.config import Config

FIXTURES = os.path.join(REPO_ROOT, 'tests', 'fixtures')
# The same flags the fixture run was trained with (write_fixtures.RUN_FLAGS).
RUN_FLAGS = dict(
    dataset='synthetic',
    resolution=16,
    channels=1,
    gf_dim=4,
    df_dim=4,
    z_dim=8,
    batch_size=4,
    log_every=2,
    sample_every=2,
    checkpoint_every=2,
    num_grid=4,
    synthetic_examples=32,
    strategy='one_device',
    devices='/cpu:0',
)
# Another CPU (AVX2 against AVX512) may round a few float operations differently.
TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope='module')
def expected():
    return dict(np.load(os.path.join(FIXTURES, 'expected.npz')))


@pytest.fixture
def old_run(tmp_path):
    """A copy of the 0.1.0 run folder (tests write into it)."""
    path = str(tmp_path / 'run')
    shutil.copytree(os.path.join(FIXTURES, 'run'), path)
    return path


def _check_export(path: str, expected: dict) -> None:
    for sampler in ('ema', 'raw'):
        loaded = export.load(path, sampler)
        assert loaded.z_dim == 8 and loaded.metadata['step'] == 2
        images = loaded.generate_float(tf.constant(expected['z'])).numpy()
        np.testing.assert_allclose(images, expected[f'{sampler}_images'], **TOLERANCE)
        pictures, z = loaded.sample(3, seed=5)
        assert pictures.shape == (3, 16, 16, 1) and pictures.dtype == np.uint8 and z.shape == (3, 8)


def test_the_old_export_loads_and_samples(expected):
    _check_export(os.path.join(FIXTURES, 'run', 'saved_model'), expected)


def test_the_old_checkpoint_exports_the_same_generators(old_run, expected):
    path = export.export_from_checkpoint(old_run, os.path.join(old_run, 'exported_again'))
    _check_export(path, expected)


def test_the_old_checkpoint_resumes(old_run):
    trainer = train.train_and_evaluate(
        Config(workdir=old_run, train_steps=4, export_at_end=False, **RUN_FLAGS), old_run
    )
    assert trainer.restored_from == os.path.join(old_run, 'checkpoints', 'ckpt-2')
    assert int(trainer.step) == 4 and os.path.exists(os.path.join(old_run, 'checkpoints', 'ckpt-4.index'))
    # The EMA generator came back too: it is not the raw one (which a fresh average would start from).
    ema, raw = trainer.ema_generator.get_weights(), trainer.generator.get_weights()
    assert any(not np.allclose(a, b) for a, b in zip(ema, raw, strict=True))


def test_the_registered_layers_load_from_an_old_keras_file(expected):
    model = keras.saving.load_model(os.path.join(FIXTURES, 'layers.keras'))
    classes = [type(layer).__name__ for layer in model.layers]
    assert classes == ['Conv2D', 'FusedBatchNormalization', 'LeakyReLU', 'Dropout', 'Conv2DTranspose']
    assert all(type(layer).__module__.startswith('dcgan_tf') for layer in model.layers)
    outputs = np.asarray(model(expected['layer_inputs'], training=False))
    np.testing.assert_allclose(outputs, expected['layer_outputs'], **TOLERANCE)
