"""TFLite: the .tflite generator draws what the SavedModel draws for the same z (float32 and float16
weights), samples from the CLI, is written from a checkpoint by --mode=export, and refuses files that are
not TFLite generators."""

import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from dcgan_tf import config, export, models, sampling, tflite, train
from dcgan_tf.config import ConfigError

# Differences from the SavedModel's uint8 images for the same z: float32 weights round a pixel sitting on a
# .5 boundary the other way at most; float16 weights (10-bit mantissa) move pixels by a few levels at most.
TOLERANCE = {'tflite': (1, 0.01), 'tflite_float16': (4, 0.5)}  # (max |difference|, mean |difference|)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """A generator whose pixels span 0..255, as a SavedModel and both TFLite variants: (dir, files, cfg)."""
    folder = tmp_path_factory.mktemp('tflite')
    cfg = tiny_config()
    generator = models.build_generator(cfg)
    # Freshly initialised weights (std 0.02) draw flat grey, tanh near 0; ten times larger kernels draw
    # pixels over the whole range, so the comparison below sees every level.
    for layer in generator.layers:
        if hasattr(layer, 'kernel'):
            layer.kernel.assign(layer.kernel * 10.0)
    saved_model = export.save(str(folder / 'saved_model'), generator, cfg, step=0)
    files = {
        fmt: tflite.save(str(folder / f'{fmt}.tflite'), generator, cfg.z_dim, fmt)
        for fmt in tflite.FILE_NAMES
    }
    return saved_model, files, cfg


def _z(num, seed=0):
    return np.random.default_rng(seed).standard_normal((num, 16)).astype(np.float32)


@pytest.mark.parametrize('fmt', sorted(TOLERANCE))
def test_tflite_draws_the_saved_models_images(exported, fmt):
    saved_model, files, _ = exported
    z = _z(300)  # More than one interpreter batch (256).
    expected = export.load(saved_model).generate(z)
    assert expected.std() > 40 and expected.min() < 30 and expected.max() > 225
    images = tflite.load(files[fmt]).generate(z)
    assert images.dtype == np.uint8 and images.shape == expected.shape
    difference = np.abs(images.astype(int) - expected)
    most, mean = TOLERANCE[fmt]
    assert difference.max() <= most and difference.mean() <= mean, (difference.max(), difference.mean())


def test_float16_halves_the_file_and_facts_come_from_the_file(exported):
    _, files, _ = exported
    generator = tflite.load(files['tflite'])
    assert (generator.z_dim, generator.metadata['resolution'], generator.metadata['channels']) == (16, 16, 1)
    sizes = {fmt: os.path.getsize(path) for fmt, path in files.items()}
    assert sizes['tflite_float16'] < 0.75 * sizes['tflite']


def test_sample_mode_with_a_tflite_model(exported, tmp_path):
    saved_model, files, cfg = exported
    run_cfg = config.validate(
        cfg.replace(mode='sample', model=files['tflite'], num=6, seed=3, out=str(tmp_path / 'grid.png'))
    )
    result = sampling.run(run_cfg)
    images, z = export.load(saved_model).sample(6, 3)
    np.testing.assert_array_equal(result['z'], z)  # The SavedModel's `sample` z's, drawn outside it.
    assert np.abs(result['images'].astype(int) - images).max() <= 1
    assert os.path.exists(tmp_path / 'grid.png') and os.path.exists(tmp_path / 'grid.npy')


def test_export_mode_writes_tflite_from_the_checkpoint(tmp_path):
    workdir = str(tmp_path / 'run')
    trainer = train.train_and_evaluate(tiny_config(train_steps=2), workdir)
    path = export.run(config.validate(tiny_config(mode='export', workdir=workdir, format='tflite_float16')))
    assert path == os.path.join(workdir, 'generator_float16.tflite')
    z = _z(4, seed=1)
    expected = trainer.ema_generator(z, training=False).numpy()  # The EMA generator, as the SavedModel.
    assert np.abs(tflite.load(path).generate(z).astype(int) - np.round((expected + 1) * 127.5)).max() <= 1
    raw = export.run(
        config.validate(
            tiny_config(
                mode='export', workdir=workdir, format='tflite', sampler='raw', out=str(tmp_path / 'r.tflite')
            )
        )
    )
    expected = trainer.generator(z, training=False).numpy()
    assert np.abs(tflite.load(raw).generate(z).astype(int) - np.round((expected + 1) * 127.5)).max() <= 1


def test_files_that_are_not_tflite_generators(exported, tmp_path):
    _, files, _ = exported
    with pytest.raises(ConfigError, match='does not exist'):
        tflite.load(str(tmp_path / 'missing.tflite'))
    (tmp_path / 'text.tflite').write_text('not a model')
    with pytest.raises(ConfigError, match='is not a TFLite file'):
        tflite.load(str(tmp_path / 'text.tflite'))
    # A real TFLite model, but of something else: a classifier with a float output.
    classifier = keras.Sequential([keras.Input((16,)), keras.layers.Dense(3)])
    weights = tf.Module()
    weights.variables_ = export.tf_variables(classifier)
    function = tf.function(lambda x: classifier(x), input_signature=[tf.TensorSpec([None, 16], tf.float32)])
    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [function.get_concrete_function()], weights
    ).convert()
    (tmp_path / 'other.tflite').write_bytes(content)
    with pytest.raises(ConfigError, match='not a dcgan_tf generator'):
        tflite.load(str(tmp_path / 'other.tflite'))
    with pytest.raises(ConfigError, match='shape'):
        tflite.load(files['tflite']).generate(np.zeros((2, 15), np.float32))


def test_without_litert_tf_lite_interpreter_runs_the_same_file(exported, monkeypatch):
    pytest.importorskip('ai_edge_litert', reason='LiteRT is not installed: every test here used the fallback')
    _, files, _ = exported
    z = _z(5, seed=2)
    with_litert = tflite.load(files['tflite']).generate(z)
    monkeypatch.setitem(sys.modules, 'ai_edge_litert.interpreter', None)  # Its import now fails.
    fallback = tflite.load(files['tflite'])
    assert not type(fallback._runner).__module__.startswith('ai_edge_litert')
    np.testing.assert_array_equal(fallback.generate(z), with_litert)
    with pytest.raises(ConfigError, match='is not a TFLite file'):
        tflite.load(__file__)
