"""DiffAugment: shapes and ranges kept, gradients flowing, parameters drawn per image from the seed."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from dcgan_tf import augment, train
from dcgan_tf.config import AUGMENT_OPS, ConfigError, parse_augment_policy, validate

SEED = tf.constant([3, 4], tf.int64)


def _images(batch=8, size=16, channels=3, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, channels)), tf.float32)


@pytest.mark.parametrize('policy', [('color',), ('translation',), ('cutout',), AUGMENT_OPS])
def test_shapes_kept_gradients_flow_and_the_seed_decides(policy):
    x = _images()
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = augment.diff_augment(x, SEED, policy)
        loss = tf.reduce_sum(y * tf.range(y.shape[-1], dtype=tf.float32))
    assert y.shape == x.shape and y.dtype == tf.float32
    grad = tape.gradient(loss, x)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0  # G learns through it.
    np.testing.assert_array_equal(y.numpy(), augment.diff_augment(x, SEED, policy).numpy())
    other = augment.diff_augment(x, tf.constant([5, 6], tf.int64), policy).numpy()
    assert not np.array_equal(y.numpy(), other)


def test_translation_moves_whole_images_and_fills_with_grey():
    x = _images(batch=16, channels=1)
    y = augment.translation(x, SEED).numpy()
    pad = int(16 * augment.TRANSLATION_RATIO + 0.5)
    for original, moved in zip(x.numpy(), y, strict=True):
        found = False
        for dy in range(-pad, pad + 1):
            for dx in range(-pad, pad + 1):
                shifted = np.zeros_like(original)
                src = original[max(dy, 0) : 16 + min(dy, 0), max(dx, 0) : 16 + min(dx, 0)]
                shifted[max(-dy, 0) : 16 + min(-dy, 0), max(-dx, 0) : 16 + min(-dx, 0)] = src
                found = found or np.array_equal(shifted, moved)
        assert found  # Each output is its input shifted by at most `pad` pixels, zeros entering.


def test_cutout_blanks_one_square_of_half_the_side_at_most():
    x = tf.ones([32, 16, 16, 1])
    y = augment.cutout(x, SEED).numpy()[..., 0]
    for image in y:
        rows, cols = np.nonzero(image == 0)
        assert len(rows) > 0 and rows.max() - rows.min() < 8 and cols.max() - cols.min() < 8
        assert len(rows) == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle
    assert (y == 0).sum(axis=(1, 2)).max() == 64  # 8 x 8 where it lies wholly inside.


def test_color_keeps_a_grey_image_grey_and_moves_brightness_and_contrast():
    x = _images(channels=1)
    y = augment.color(x, SEED).numpy()
    # Per image an affine map of the pixel values: brightness shifts, contrast scales.
    for original, changed in zip(x.numpy().ravel().reshape(8, -1), y.reshape(8, -1), strict=True):
        slope, intercept = np.polyfit(original, changed, 1)
        np.testing.assert_allclose(changed, slope * original + intercept, atol=1e-5)
        assert 0.5 <= slope <= 1.5
    assert not np.allclose(y, x.numpy())


def test_policy_flags_are_checked():
    assert parse_augment_policy(' cutout, color ') == ('cutout', 'color')
    with pytest.raises(ConfigError, match='unknown: flip'):
        validate(tiny_config(augment='diffaugment', augment_policy='color,flip'))
    with pytest.raises(ConfigError, match='empty'):
        validate(tiny_config(augment='diffaugment', augment_policy=','))
    with pytest.raises(ConfigError, match="--augment='yes' is not one of"):
        validate(tiny_config(augment='yes'))
    validate(tiny_config(augment='none', augment_policy='anything: unused'))


def test_training_with_diffaugment_differs_and_resumes_exactly(tmp_path):
    cfg = tiny_config(augment='diffaugment', train_steps=2)
    plain = train.Trainer(cfg.replace(augment='none'), str(tmp_path / 'plain'))
    first = train.Trainer(cfg, str(tmp_path / 'a'))
    second = train.Trainer(cfg, str(tmp_path / 'b'))
    metrics = [t.train_steps(2) for t in (plain, first, second)]
    assert metrics[1] == metrics[2]  # The seed decides every augmentation.
    assert metrics[0]['d_loss'] != metrics[1]['d_loss']  # D saw augmented images.


def test_xla_augments_exactly_as_the_uncompiled_step():
    # Float random kernels differ between TensorFlow and XLA; the augmentations draw integers instead.
    x = _images()
    compiled = tf.function(lambda a, s: augment.diff_augment(a, s, AUGMENT_OPS), jit_compile=True)
    np.testing.assert_allclose(
        compiled(x, SEED).numpy(), augment.diff_augment(x, SEED, AUGMENT_OPS).numpy(), atol=1e-6
    )
