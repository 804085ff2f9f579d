"""The fused BatchNormalization computes what Keras' does, and swaps in without changing checkpoints."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_bfloat16, tiny_config

from dcgan_tf import models
from dcgan_tf.layers.fused_bn import FusedBatchNormalization


def _pair(shape):
    gamma = keras.initializers.RandomNormal(1.0, 0.02, seed=1)
    plain = keras.layers.BatchNormalization(gamma_initializer=gamma, momentum=0.9)
    fused = FusedBatchNormalization(gamma_initializer=gamma, momentum=0.9)
    plain.build(shape)
    fused.build(shape)
    return plain, fused


@pytest.mark.parametrize('shape', [(6, 5, 5, 3), (6, 7)])
def test_training_step_matches_keras(shape):
    x = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, shape).astype('float32'))
    plain, fused = _pair(shape)
    outputs, grads = [], []
    for layer in (plain, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y**3)  # Non-linear, so every input and parameter gets its own gradient.
        outputs.append(y.numpy())
        grads.append([g.numpy() for g in tape.gradient(loss, [x, *layer.trainable_variables])])
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)
    # Moving statistics use the biased batch variance, as Keras' do (the kernel returns n - 1).
    np.testing.assert_allclose(plain.moving_mean.numpy(), fused.moving_mean.numpy(), atol=1e-6)
    np.testing.assert_allclose(plain.moving_variance.numpy(), fused.moving_variance.numpy(), rtol=1e-5)
    assert not np.allclose(fused.moving_variance.numpy(), 1.0)  # They did move.
    # Inference uses the moving statistics, identically.
    np.testing.assert_allclose(plain(x, training=False), fused(x, training=False), atol=1e-5)


@requires_bfloat16
def test_bfloat16_inputs_keep_the_compute_dtype():
    layer = FusedBatchNormalization(dtype='mixed_bfloat16')
    x = tf.random.stateless_normal([4, 3, 3, 8], seed=[1, 2])
    y = layer(x, training=True)
    assert y.dtype == tf.bfloat16
    assert layer.moving_mean.dtype == tf.float32
    expected = (x - tf.reduce_mean(x, [0, 1, 2])) / tf.sqrt(tf.math.reduce_variance(x, [0, 1, 2]) + 1e-3)
    np.testing.assert_allclose(tf.cast(y, tf.float32), expected, atol=0.05)


@pytest.mark.parametrize('arch', ['dcgan', 'tutorial'])
def test_checkpoints_are_interchangeable(tmp_path, arch):
    extra = dict(arch='tutorial', resolution=28) if arch == 'tutorial' else {}
    fused = models.build_generator(tiny_config(fused_batch_norm='true', **extra))
    plain = models.build_generator(tiny_config(fused_batch_norm='false', seed=1, **extra))
    assert any(isinstance(layer, FusedBatchNormalization) for layer in fused.layers)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in plain.layers)
    path = tf.train.Checkpoint(generator=fused).write(str(tmp_path / 'ckpt'))
    tf.train.Checkpoint(generator=plain).read(path).assert_consumed()
    for a, b in zip(fused.weights, plain.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy())
