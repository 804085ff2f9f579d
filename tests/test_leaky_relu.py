"""The output-gradient LeakyReLU computes Keras' values and gradients, and keeps grappler's fusions."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO_ROOT

from dcgan_tf.layers import leaky_relu


@pytest.mark.parametrize('slope', [0.2, 0.3, 0.0])
def test_values_and_gradients_match_keras(slope):
    x = tf.constant([[-2.0, -0.5, 0.0, 0.5, 3.0], [1e-3, -1e-3, 7.0, -7.0, 0.0]])
    results = []
    for layer in (keras.layers.LeakyReLU(negative_slope=slope), leaky_relu.LeakyReLU(negative_slope=slope)):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y * tf.range(1.0, 11.0, dtype=tf.float32)[None, :5])  # Distinct dy.
        results.append((y.numpy(), tape.gradient(loss, x).numpy()))
    (y_keras, g_keras), (y_ours, g_ours) = results
    np.testing.assert_array_equal(y_ours, y_keras)
    np.testing.assert_array_equal(g_ours, g_keras)


def test_inference_is_keras_layer():
    x = tf.random.stateless_normal([4, 3], seed=[1, 2])
    layer = leaky_relu.LeakyReLU(negative_slope=0.2)
    np.testing.assert_array_equal(layer(x, training=False), tf.nn.leaky_relu(x, 0.2))


def _remapper_errors(fast_layers: bool) -> str:
    """stderr of a short bench of the tutorial model (conv + bias + LeakyReLU in D), C++ errors kept."""
    command = [
        sys.executable, '-m', 'dcgan_tf.main', '--mode=bench', '--arch=tutorial', '--resolution=28',
        '--dataset=synthetic', '--batch_size=8', '--z_dim=8', '--bench_steps=1', '--bench_windows=1',
        '--bench_warmup_steps=1', f'--fast_layers={str(fast_layers).lower()}', '--workdir=unused',
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='1')
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


def test_the_tutorial_training_graph_keeps_grappler_remapper():
    # With Keras' own LeakyReLU gradient, grappler's remapper fails on this graph on some CPUs (seen with
    # AVX512_BF16, not on an AVX2-only one): the remapper's fusions depend on the CPU TensorFlow finds, so
    # only our layer's graph is asserted, and it must keep the remapper on every CPU.
    assert 'remapper failed' not in _remapper_errors(fast_layers=True)
