"""The SavedModel export: same images as the in-process generator (also in a fresh process), reproducible
sampling, exact interpolation end points, metadata, the EMA generator, atomic writes and refusals."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from dcgan_tf import export, images, models, train
from dcgan_tf.config import MAX_SAMPLES, ConfigError


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A briefly trained run with the end-of-training export: (trainer, workdir)."""
    workdir = str(tmp_path_factory.mktemp('run'))
    trainer = train.train_and_evaluate(tiny_config(train_steps=3, export_at_end=True), workdir)
    return trainer, workdir


@pytest.fixture(scope='module')
def loaded(run):
    return export.load(os.path.join(run[1], export.EXPORT_DIR))


def _z(num, z_dim=16, seed=0):
    return np.random.default_rng(seed).standard_normal((num, z_dim)).astype(np.float32)


def _in_process(generator, z):
    return images.to_uint8(generator(z, training=False).numpy())


def test_fresh_process_gets_the_in_process_images(run, tmp_path):
    trainer, workdir = run
    z = _z(5)
    np.save(tmp_path / 'z.npy', z)
    # Only tensorflow and numpy: a user of the export needs nothing of this package.
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import tensorflow as tf
        module = tf.saved_model.load({os.path.join(workdir, 'saved_model')!r})
        z = np.load({str(tmp_path / 'z.npy')!r})
        out = module.signatures['serving_default'](z=tf.constant(z))
        np.save({str(tmp_path / 'images.npy')!r}, out['images'].numpy())
        assert not any(name.startswith('dcgan_tf') for name in sys.modules), 'imported dcgan_tf'
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH='')
    subprocess.run([sys.executable, '-c', script], check=True, env=env, cwd=str(tmp_path), timeout=300)
    exported = np.load(tmp_path / 'images.npy')
    expected = _in_process(trainer.ema_generator, z)
    assert exported.dtype == np.uint8 and exported.shape == (5, 16, 16, 1)
    # Same weights, same graph ops: at most a rounding step apart where a value sits on a .5 boundary.
    assert np.abs(exported.astype(int) - expected).max() <= 1
    assert np.mean(exported == expected) > 0.99


def test_default_is_ema_and_raw_is_plain(run, loaded):
    trainer, _ = run
    z = _z(4, seed=1)
    raw = export.LoadedGenerator(loaded.module, 'raw')
    assert np.abs(loaded.generate(z).astype(int) - _in_process(trainer.ema_generator, z)).max() <= 1
    assert np.abs(raw.generate(z).astype(int) - _in_process(trainer.generator, z)).max() <= 1
    # Three steps of training move the raw weights away from their average.
    assert not np.array_equal(loaded.generate(z), raw.generate(z))


def test_sample_is_reproducible_and_any_size(loaded):
    images_a, z_a = loaded.sample(3, 42)  # 3: not the training batch (8).
    images_b, z_b = loaded.sample(3, 42)
    images_c, _ = loaded.sample(3, 43)
    assert images_a.shape == (3, 16, 16, 1) and z_a.shape == (3, 16)
    np.testing.assert_array_equal(images_a, images_b)
    np.testing.assert_array_equal(z_a, z_b)
    assert not np.array_equal(images_a, images_c)
    # The images are the generator's for the returned z.
    np.testing.assert_array_equal(loaded.generate(z_a), images_a)


def test_interpolate_ends_and_slerp_norm(loaded):
    z0, z1 = _z(2, seed=2)
    z1 = z1 / np.linalg.norm(z1) * np.linalg.norm(z0)  # Equal norms: slerp must keep it all the way.
    pictures, path = loaded.interpolate(z0, z1, 7, spherical=True)
    assert pictures.shape == (7, 16, 16, 1) and path.shape == (7, 16)
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_array_equal(pictures[[0, -1]], loaded.generate(np.stack([z0, z1])))
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), np.linalg.norm(z0), rtol=1e-5)
    # A straight line cuts through the ball: its midpoint is shorter (what slerp avoids).
    _, line = loaded.interpolate(z0, z1, 7, spherical=False)
    np.testing.assert_allclose(line[3], (z0 + z1) / 2, rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(line[3]) < 0.9 * np.linalg.norm(z0)


def test_metadata(run, loaded):
    trainer, workdir = run
    meta = loaded.metadata
    assert (meta['z_dim'], meta['resolution'], meta['channels'], meta['step']) == (16, 16, 1, 3)
    assert meta['z_distribution'] == export.Z_DISTRIBUTION
    assert '--gf_dim=8' in meta['flags'] and '--ema_decay=0.999' in meta['flags']
    facts = loaded.module.signatures['metadata']()
    assert int(facts['z_dim']) == 16 and int(facts['step']) == 3
    assert json.loads(facts['json'].numpy().decode()) == meta
    with open(os.path.join(workdir, 'saved_model', 'assets.extra', export.METADATA_FILE)) as f:
        assert json.load(f) == meta
    assert set(loaded.module.signatures) == {
        'serving_default',
        'sample',
        'interpolate',
        'raw_serving_default',
        'raw_sample',
        'raw_interpolate',
        'metadata',
    }


def test_signatures_refuse_bad_num_and_steps(loaded):
    signature = loaded.module.signatures['sample']
    for num in (0, -3, MAX_SAMPLES + 1):
        with pytest.raises(tf.errors.InvalidArgumentError, match='num must be'):
            signature(num=tf.constant(num), seed=tf.constant(1, tf.int64))
    z = tf.zeros([16])
    with pytest.raises(tf.errors.InvalidArgumentError, match='steps must be'):
        loaded.module.signatures['interpolate'](z0=z, z1=z, steps=tf.constant(1), spherical=tf.constant(True))
    for num, seed in ((0, 1), (MAX_SAMPLES + 1, 1), (1, -1), (1, 2**63)):
        with pytest.raises(ConfigError):
            loaded.sample(num, seed)
    with pytest.raises(ConfigError, match='shape'):
        loaded.generate(np.zeros((2, 15), np.float32))


def test_nan_weights_raise_instead_of_black_images(tmp_path):
    cfg = tiny_config()
    generator = models.build_generator(cfg)
    kernel = generator.get_layer('to_image').kernel
    kernel.assign(tf.fill(kernel.shape, float('nan')))
    loaded = export.load(export.save(str(tmp_path / 'sm'), generator, cfg, step=0))
    with pytest.raises(tf.errors.InvalidArgumentError, match='NaN or Inf'):
        loaded.generate(_z(2))


def test_export_is_atomic_and_refuses_non_exports(run, tmp_path, monkeypatch):
    trainer, workdir = run
    path = str(tmp_path / 'sm')
    export.save(path, trainer.generator, trainer.cfg, step=3, ema_generator=trainer.ema_generator)
    before = export.load(path).generate(_z(2))

    def broken_save(*args, **kwargs):
        raise OSError('disk full')

    monkeypatch.setattr(tf.saved_model, 'save', broken_save)
    with pytest.raises(OSError):
        export.save(path, trainer.generator, trainer.cfg, step=4)
    monkeypatch.undo()
    # The good export is still there and unchanged; nothing half-written is left beside it.
    np.testing.assert_array_equal(export.load(path).generate(_z(2)), before)
    assert export.load(path).metadata['step'] == 3
    with pytest.raises(ConfigError, match='does not exist'):
        export.load(str(tmp_path / 'missing'))
    with pytest.raises(ConfigError, match='not a SavedModel'):
        export.load(workdir)  # A run folder, not an export.


def test_export_from_checkpoint_matches_trainer(run, tmp_path):
    trainer, workdir = run
    path = export.export_from_checkpoint(workdir, str(tmp_path / 'from_ckpt'))
    loaded = export.load(path)
    z = _z(3, seed=5)
    assert loaded.metadata['step'] == 3
    with open(os.path.join(workdir, 'config.cfg')) as f:
        assert loaded.metadata['flags'] == f.read()
    assert np.abs(loaded.generate(z).astype(int) - _in_process(trainer.ema_generator, z)).max() <= 1
    with pytest.raises(ConfigError, match='no checkpoint'):
        os.makedirs(tmp_path / 'empty_run')
        with open(tmp_path / 'empty_run' / 'config.cfg', 'w') as f:
            f.write('--z_dim=16\n')
        export.export_from_checkpoint(str(tmp_path / 'empty_run'))


def test_ema_update_follows_the_formula(tmp_path):
    cfg = tiny_config(ema_decay=0.5)
    trainer = train.Trainer(cfg, str(tmp_path))
    initial = [v.numpy() for v in trainer.generator.trainable_variables]
    np.testing.assert_array_equal(initial[0], trainer.ema_generator.trainable_variables[0].numpy())
    trainer.train_steps(1)
    # After the first step (step = 1) the warm-up decay is min(0.5, 2 / 11).
    decay = 2 / 11
    for w0, w1, ema in zip(
        initial, trainer.generator.trainable_variables, trainer.ema_generator.trainable_variables, strict=True
    ):
        np.testing.assert_allclose(ema.numpy(), w1.numpy() + decay * (w0 - w1.numpy()), rtol=1e-5, atol=1e-7)
    for stat, ema in zip(
        trainer.generator.non_trainable_variables, trainer.ema_generator.non_trainable_variables, strict=True
    ):
        np.testing.assert_array_equal(stat.numpy(), ema.numpy())
    assert train.Trainer(tiny_config(ema_decay=0.0), str(tmp_path / 'off')).ema_generator is None


def test_a_run_without_the_ema_is_not_resumed_with_one(tmp_path):
    # The average cannot be made up for steps already trained: resuming with it on is refused, unchanged.
    train.train_and_evaluate(tiny_config(ema_decay=0.0, train_steps=2), str(tmp_path))
    with pytest.raises(ConfigError, match='lacks parts of this one'):
        train.Trainer(tiny_config(train_steps=3), str(tmp_path))
    assert train.Trainer(tiny_config(ema_decay=0.0, train_steps=3), str(tmp_path)).restored_from.endswith(
        'ckpt-2'
    )


_CLI_RUNNER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tensorflow.python.tools import saved_model_cli

    # saved_model_cli run's own code path (a TF1 session, the loader TF Serving mirrors), once per signature.
    path, out, z_dim = sys.argv[1], sys.argv[2], int(sys.argv[3])
    z = np.random.default_rng(0).standard_normal((2, z_dim)).astype(np.float32)
    feeds = {
        'serving_default': {'z': z},
        'sample': {'num': np.int32(3), 'seed': np.int64(7)},
        'interpolate': {'z0': z[0], 'z1': z[1], 'steps': np.int32(4), 'spherical': True},
        'metadata': {},
    }
    for name, feed in list(feeds.items())[:3]:
        feeds['raw_' + name] = feed
    for name, feed in feeds.items():
        saved_model_cli.run_saved_model_with_feed_dict(path, 'serve', name, feed, f'{out}/{name}', True)
    """
)


def test_every_signature_runs_under_saved_model_cli(run, loaded, tmp_path):
    _, workdir = run
    path = os.path.join(workdir, 'saved_model')
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', PYTHONPATH='')
    # The command line itself, on the signature with random and assert ops.
    command = ['saved_model_cli', 'run', '--dir', path, '--tag_set', 'serve', '--signature_def', 'sample']
    command += ['--input_exprs', 'num=3;seed=7', '--outdir', str(tmp_path / 'cli'), '--overwrite']
    subprocess.run(command, check=True, env=env, capture_output=True, timeout=300)
    images_cli, z_cli = (np.load(tmp_path / 'cli' / f'{k}.npy') for k in ('images', 'z'))
    expected_images, expected_z = loaded.sample(3, 7)
    np.testing.assert_array_equal(z_cli, expected_z)
    assert np.abs(images_cli.astype(int) - expected_images).max() <= 1
    # Then all seven signatures, through the same function of saved_model_cli, in one process.
    script = [sys.executable, '-c', _CLI_RUNNER, path, str(tmp_path / 'all'), '16']
    subprocess.run(script, check=True, env=env, capture_output=True, timeout=300)
    for prefix in ('', 'raw_'):
        assert np.load(tmp_path / 'all' / f'{prefix}serving_default' / 'images.npy').shape == (2, 16, 16, 1)
        assert np.load(tmp_path / 'all' / f'{prefix}sample' / 'images.npy').shape == (3, 16, 16, 1)
        assert np.load(tmp_path / 'all' / f'{prefix}interpolate' / 'z.npy').shape == (4, 16)
    metadata = tmp_path / 'all' / 'metadata'
    assert int(np.load(metadata / 'z_dim.npy')) == 16 and int(np.load(metadata / 'step.npy')) == 3
    assert json.loads(np.load(metadata / 'json.npy', allow_pickle=True).item()) == loaded.metadata


class _EarlierSampler(export._Sampler):
    """The layout of the exports written before: the Keras model and its Keras Variables tracked."""

    def __init__(self, generator, z_dim, name, num_classes=0):
        super().__init__(generator, z_dim, name, num_classes)
        self.generator = generator
        self.weights = list(generator.variables)


def test_exports_of_the_earlier_layout_still_load(run, tmp_path, monkeypatch):
    trainer, _ = run
    monkeypatch.setattr(export, '_Sampler', _EarlierSampler)
    path = export.save(str(tmp_path / 'old'), trainer.generator, trainer.cfg, 3, trainer.ema_generator)
    monkeypatch.undo()
    old = export.load(path)
    z = _z(3, seed=9)
    assert np.abs(old.generate(z).astype(int) - _in_process(trainer.ema_generator, z)).max() <= 1
    pixels = old.generate_float(tf.constant(z)).numpy()
    np.testing.assert_allclose(pixels, trainer.ema_generator(z, training=False).numpy(), atol=1e-5)
    assert old.metadata['step'] == 3 and old.sample(2, 1)[0].shape == (2, 16, 16, 1)


def test_the_export_stores_each_weight_once(run):
    _, workdir = run
    reader = tf.train.load_checkpoint(os.path.join(workdir, 'saved_model', 'variables', 'variables'))
    keys = [k for k in reader.get_variable_to_shape_map() if k != '_CHECKPOINTABLE_OBJECT_GRAPH']
    trainer = run[0]
    # Both generators' variables and the five metadata values, nothing saved twice.
    assert len(keys) == len(trainer.generator.variables) + len(trainer.ema_generator.variables) + 5
