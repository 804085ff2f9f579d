"""--info_code: InfoGAN's categorical code read off z, the models' extra head and loss, grids, export."""

import imageio.v3 as iio
import numpy as np
import pytest
import tensorflow as tf

from dcgan_tf import export, losses, models, train
from dcgan_tf import workdir as workdir_lib
from dcgan_tf.config import ConfigError, validate
from dcgan_tf.layers import latent_code
from tests.conftest import tiny_config

CODES = 4


def info_config(**overrides):
    return tiny_config(info_code=CODES, **overrides)


# --- the code ---


def test_the_code_is_the_argmax_of_z_first_entries_and_uniform():
    z = tf.random.stateless_normal([20000, 16], seed=[3, 4])
    codes = latent_code.codes_of(z, CODES).numpy()
    np.testing.assert_array_equal(codes, np.argmax(z.numpy()[:, :CODES], axis=1))
    shares = np.bincount(codes, minlength=CODES) / len(codes)
    np.testing.assert_allclose(shares, 1 / CODES, atol=0.015)


def test_with_codes_reorders_the_first_entries_to_carry_a_code():
    z = tf.random.stateless_normal([50, 16], seed=[5, 6])
    wanted = tf.constant(np.arange(50) % CODES, tf.int32)
    moved = latent_code.with_codes(z, wanted, CODES).numpy()
    np.testing.assert_array_equal(latent_code.codes_of(moved, CODES).numpy(), wanted.numpy())
    np.testing.assert_array_equal(np.sort(moved[:, :CODES]), np.sort(z.numpy()[:, :CODES]))
    np.testing.assert_array_equal(moved[:, CODES:], z.numpy()[:, CODES:])
    already = latent_code.codes_of(z, CODES)  # A row that carries its code already is left as it is.
    np.testing.assert_array_equal(latent_code.with_codes(z, already, CODES).numpy(), z.numpy())


def test_the_generator_sees_the_code_and_d_reads_it_back():
    cfg = info_config()
    generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
    assert type(generator).__name__ == 'Sequential' and generator.layers[0].name == 'info_code'
    z = tf.random.stateless_normal([6, cfg.z_dim], seed=[0, 1])
    one_hot = generator.layers[0](z).numpy()[:, cfg.z_dim :]
    np.testing.assert_array_equal(one_hot.argmax(axis=1), latent_code.codes_of(z, CODES).numpy())
    images = generator(z, training=False)
    assert images.shape == (6, 16, 16, 1)
    outputs = discriminator(images, training=False)
    assert outputs.shape == (6, 1 + CODES) and outputs.dtype == tf.float32
    logits, per_example = losses.split_info(outputs, z, CODES, 2.0)
    assert logits.shape == (6, 1)
    expected = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=latent_code.codes_of(z, CODES), logits=outputs[:, 1:]
    )
    np.testing.assert_allclose(per_example.numpy(), 2.0 * expected.numpy(), rtol=1e-6)
    plain_logits, nothing = losses.split_info(outputs[:, :1], z, 0, 1.0)
    assert plain_logits.shape == (6, 1) and float(nothing) == 0.0


@pytest.mark.parametrize(
    'overrides, message',
    [
        (dict(info_code=1), '--info_code=1 reads the code off'),
        (dict(info_code=17), r'use 2 to --z_dim \(16\)'),
        (dict(info_code=4, arch='tutorial', resolution=28), 'with --arch=tutorial or --conditional add'),
        (dict(info_code=4, conditional=True, dataset='embedded', resolution=28), '--info_code=0'),
    ],
)
def test_impossible_codes_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate(tiny_config(**overrides))


# --- training ---


def test_d_learns_to_read_the_code_and_g_to_show_it(tmp_path):
    # Chance is 1/4; with a vanishing --info_weight D read 0.43 of the codes after these steps, with 1 all
    # but one of 400 (batch statistics, as in training: the moving ones lag that short a run).
    cfg = info_config(train_steps=150, batch_size=16, g_lr=2e-3, d_lr=2e-3, beta_1=0.0, log_every=150)
    cfg = cfg.replace(sample_every=150, checkpoint_every=150)
    trainer = train.train_and_evaluate(cfg, str(tmp_path / 'run'))
    z = tf.random.stateless_normal([400, cfg.z_dim], seed=[9, 9])
    outputs = trainer.discriminator(trainer.generator(z, training=True), training=True)
    read = np.argmax(outputs.numpy()[:, 1:], axis=1)
    accuracy = float(np.mean(read == latent_code.codes_of(z, CODES).numpy()))
    assert accuracy > 0.9, accuracy


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp('info') / 'run')
    trainer = train.train_and_evaluate(info_config(num_grid=9, export_at_end=True), workdir)
    return workdir, trainer


def test_the_fixed_grid_has_one_row_per_code(run):
    workdir, trainer = run
    grid = iio.imread(workdir_lib.sample_grid_path(workdir, 4))
    cell = trainer.cfg.resolution + 2
    assert grid.shape[:2] == (CODES * cell + 2, 3 * cell + 2)  # 3 columns: the square root of 9.


def test_the_export_takes_z_alone_and_names_the_code(run):
    workdir, trainer = run
    path = workdir_lib.export_path(workdir)
    generator = export.load(path)
    assert generator.num_classes == 0
    z = tf.random.stateless_normal([5, trainer.cfg.z_dim], seed=[1, 2])
    # The code is read off z inside the SavedModel, as in training.
    np.testing.assert_allclose(generator.generate_float(z), trainer.generate(z, ema=True), atol=1e-5)
    assert generator.metadata['info_code'] == CODES and 'num_classes' not in generator.metadata
