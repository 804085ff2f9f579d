"""The 16-bit dropout mask drops what Keras' does, in expectation, and keeps Keras' seeds and variables."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_bfloat16, tiny_config

from dcgan_tf import models
from dcgan_tf.layers import dropout


@pytest.mark.parametrize('rate', [0.3, 0.5, 0.9])
@pytest.mark.parametrize('dtype', ['float32', pytest.param('mixed_bfloat16', marks=requires_bfloat16)])
def test_keeps_units_with_probability_one_minus_rate_and_rescales(rate, dtype):
    layer = dropout.Dropout(rate, seed=3, dtype=dtype)
    x = tf.ones([64, 32, 32, 4])  # 262,144 units: the kept fraction's standard deviation is < 0.001.
    y = tf.cast(layer(x, training=True), tf.float32).numpy()
    kept = y != 0
    assert abs(kept.mean() - (1 - rate)) < 0.005
    # Kept units are scaled by 1 / (1 - rate) (to the precision of the compute dtype).
    np.testing.assert_allclose(y[kept], 1 / (1 - rate), rtol=1e-2 if dtype == 'mixed_bfloat16' else 1e-6)


def test_threshold_is_the_rate_in_sixteen_bits():
    assert dropout.keep_threshold(0.3) == 19661
    assert dropout.keep_threshold(0.0) == 0
    assert dropout.keep_threshold(1.0) == 2**16 - 1  # Never 2**16, which does not fit in 16 bits.


def test_gradient_flows_through_kept_units_only():
    layer = dropout.Dropout(0.5, seed=4)
    x = tf.random.stateless_normal([8, 5, 5, 3], seed=[1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
    grad = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(grad, np.where(y.numpy() != 0, 2.0, 0.0))


def test_inference_and_odd_sizes():
    layer = dropout.Dropout(0.3, seed=5)
    x = tf.random.stateless_normal([3, 7, 5], seed=[1, 2])  # 105 units: one 16-bit half left over.
    np.testing.assert_array_equal(layer(x, training=False), x)
    assert layer(x, training=True).shape == x.shape


def test_seeds_advance_like_keras_and_repeat_from_a_checkpoint():
    ours, theirs = dropout.Dropout(0.3, seed=6), keras.layers.Dropout(0.3, seed=6)
    x = tf.ones([16, 16])
    first, second = ours(x, training=True).numpy(), ours(x, training=True).numpy()
    theirs(x, training=True), theirs(x, training=True)
    assert not np.array_equal(first, second)  # A fresh mask every call.
    # The same seed state, the same variable: a resumed layer draws the masks an unbroken one would.
    [state] = [v for v in ours.variables if 'seed_generator_state' in v.path]
    [keras_state] = [v for v in theirs.variables if 'seed_generator_state' in v.path]
    np.testing.assert_array_equal(state.numpy(), keras_state.numpy())
    restored = dropout.Dropout(0.3, seed=6)
    restored.variables[0].assign(state.numpy())
    np.testing.assert_array_equal(restored(x, training=True), ours(x, training=True))


def test_the_tutorial_discriminator_uses_it_unless_asked_not_to():
    def kinds(fast):
        cfg = tiny_config(arch='tutorial', resolution=28, fast_layers='true' if fast else 'false')
        return {type(layer) for layer in models.build_discriminator(cfg).layers}

    assert dropout.Dropout in kinds(True)
    assert dropout.Dropout not in kinds(False) and keras.layers.Dropout in kinds(False)
