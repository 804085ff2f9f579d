"""The rewrites of fast_conv compute what TensorFlow's ops do, and the layers swap in unchanged."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import requires_bfloat16, tiny_config

from dcgan_tf import config, distribute, models
from dcgan_tf.layers import fast_conv


@pytest.mark.parametrize(
    'input_shape, out_channels, kernel, stride, padding',
    [
        ((3, 8, 8, 5), 4, 5, 2, 'SAME'),  # The DCGAN layers: even maps, 5x5, stride 2.
        ((2, 7, 7, 3), 6, 5, 2, 'SAME'),  # Odd map: asymmetric padding.
        ((2, 7, 7, 3), 4, 5, 1, 'SAME'),  # The tutorial's stride-1 layer.
        ((2, 9, 9, 2), 3, 5, 2, 'VALID'),  # A row left over that no window reads.
        ((2, 6, 6, 2), 3, 3, 3, 'SAME'),
    ],
)
def test_filter_gradient_matches_tensorflow(input_shape, out_channels, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=input_shape).astype('float32'))
    w = tf.zeros([kernel, kernel, input_shape[-1], out_channels])
    out_shape = tf.nn.conv2d(x, w, stride, padding).shape
    dy = tf.constant(rng.normal(size=out_shape).astype('float32'))
    expected = tf.raw_ops.Conv2DBackpropFilter(
        input=x,
        filter_sizes=w.shape,
        out_backprop=dy,
        strides=[1, stride, stride, 1],
        padding=padding,
    )
    got = fast_conv.filter_gradient(x, dy, kernel, stride, padding)
    assert got.shape == w.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    'layer_class, input_shape, options',
    [
        (fast_conv.Conv2D, (3, 8, 8, 5), dict(strides=2)),
        (fast_conv.Conv2D, (3, 7, 7, 5), dict(strides=2, use_bias=True)),
        (fast_conv.Conv2DTranspose, (3, 4, 4, 6), dict(strides=2)),
        (fast_conv.Conv2DTranspose, (3, 7, 7, 6), dict(strides=1, use_bias=True)),
    ],
)
def test_layers_train_as_keras_does(layer_class, input_shape, options):
    x = tf.random.stateless_normal(input_shape, seed=[1, 2])
    results = []
    for mode in ('off', 'all'):
        layer = layer_class(
            4,
            5,
            padding='same',
            kernel_initializer=keras.initializers.RandomNormal(seed=3),
            bias_initializer='ones',
            fast_conv=mode,
            **options,
        )
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(y**2)  # Non-linear: every input and weight gets its own gradient.
        grads = tape.gradient(loss, [x, *layer.trainable_variables])
        results.append([y.numpy(), *[g.numpy() for g in grads]])
    for native, forward in zip(*results, strict=True):
        np.testing.assert_allclose(forward, native, rtol=1e-4, atol=1e-4)


def test_auto_picks_each_rewrite_only_where_it_measured_faster():
    # On a CPU running oneDNN, `auto` decides by dtype and shape; on Eigen's kernels (oneDNN off, or a
    # GPU) never. Both cases are asked explicitly, so the answer does not depend on this machine.
    limit = fast_conv.FORWARD_GRAD_MAX_SIZE
    assert fast_conv.use_forward_grad('auto', tf.bfloat16, 4, on_onednn_cpu=True)
    assert fast_conv.use_forward_grad('auto', tf.bfloat16, limit, on_onednn_cpu=True)
    assert not fast_conv.use_forward_grad('auto', tf.bfloat16, limit * 2, on_onednn_cpu=True)
    assert not fast_conv.use_forward_grad('auto', tf.float32, 4, on_onednn_cpu=True)
    assert not fast_conv.use_forward_grad('auto', tf.bfloat16, 4, on_onednn_cpu=False)
    assert not fast_conv.use_forward_grad('off', tf.bfloat16, 4, on_onednn_cpu=True)
    assert fast_conv.use_forward_grad('all', tf.float32, 64, on_onednn_cpu=False)
    few = fast_conv.SUBPIXEL_MAX_CHANNELS
    assert fast_conv.use_subpixel('auto', few, 2, 'SAME', 64, 32, on_onednn_cpu=True)
    assert not fast_conv.use_subpixel('auto', few, 2, 'SAME', 64, 32, on_onednn_cpu=False)
    assert not fast_conv.use_subpixel('auto', few + 1, 2, 'SAME', 64, 32, on_onednn_cpu=True)
    assert not fast_conv.use_subpixel('off', 1, 2, 'SAME', 64, 32, on_onednn_cpu=True)
    assert fast_conv.use_subpixel('all', 256, 2, 'SAME', 64, 32, on_onednn_cpu=False)
    # Unasked, the probe answers: this process's device and TensorFlow's oneDNN switch.
    expected = distribute.device_kind() == 'CPU' and distribute.onednn_enabled()
    assert fast_conv.use_subpixel('auto', few, 2, 'SAME', 64, 32) == expected
    # Only what the rewrite can express: strided, 'SAME', the big map exactly stride times the small.
    assert not fast_conv.use_subpixel('all', 1, 1, 'SAME', 7, 7)
    assert not fast_conv.use_subpixel('all', 1, 2, 'VALID', 64, 32)
    assert not fast_conv.use_subpixel('all', 1, 2, 'SAME', 63, 32)


@pytest.mark.parametrize('kernel, stride, size', [(5, 2, 4), (5, 2, 7), (4, 2, 5), (3, 3, 4), (5, 4, 3)])
def test_subpixel_conv_transpose_matches_tensorflow(kernel, stride, size):
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(2, size, size, 6)).astype('float32'))
    w = tf.constant(rng.normal(size=(kernel, kernel, 3, 6)).astype('float32'))
    out_shape = [2, size * stride, size * stride, 3]
    expected = tf.nn.conv2d_transpose(x, w, out_shape, stride, 'SAME')
    np.testing.assert_allclose(
        fast_conv.subpixel_conv_transpose(x, w, stride), expected, rtol=1e-4, atol=1e-4
    )


def test_whole_models_get_the_same_gradients_and_checkpoints(tmp_path):
    results, nets = [], []
    for mode in ('off', 'all'):
        cfg = tiny_config(fast_conv=mode)
        generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
        nets.append(generator)
        z = tf.random.stateless_normal([4, cfg.z_dim], seed=[3, 4])
        with tf.GradientTape() as tape:
            logits = discriminator(generator(z, training=True), training=True)
            loss = tf.reduce_sum(tf.nn.softplus(-logits))
        variables = generator.trainable_variables + discriminator.trainable_variables
        results.append([g.numpy() for g in tape.gradient(loss, variables)])
    for native, forward in zip(*results, strict=True):
        np.testing.assert_allclose(forward, native, rtol=1e-3, atol=1e-5)
    # Same variables: a checkpoint written with one mode loads into the other.
    path = tf.train.Checkpoint(generator=nets[1]).write(str(tmp_path / 'ckpt'))
    tf.train.Checkpoint(generator=nets[0]).read(path).assert_consumed()


@requires_bfloat16
def test_bfloat16_training_uses_the_forward_gradient_and_stays_close(monkeypatch):
    monkeypatch.setattr(fast_conv, 'onednn_cpu', lambda: True)  # Where `auto` uses the rewrite.
    calls = []
    original = fast_conv.filter_gradient
    monkeypatch.setattr(fast_conv, 'filter_gradient', lambda *args: calls.append(1) or original(*args))
    kernel = keras.initializers.RandomNormal(stddev=0.1, seed=5)
    x = tf.random.stateless_normal([8, 8, 8, 16], seed=[5, 6])
    grads = {}
    for mode in ('off', 'auto'):
        layer = fast_conv.Conv2D(
            32,
            5,
            strides=2,
            padding='same',
            kernel_initializer=kernel,
            fast_conv=mode,
            dtype='mixed_bfloat16',
        )
        with tf.GradientTape() as tape:
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
        assert y.dtype == tf.bfloat16
        grads[mode] = tape.gradient(loss, layer.kernel).numpy()
        assert len(calls) == (mode == 'auto')  # A 4x4 bfloat16 output map on a CPU: the rewrite.
    # bfloat16 keeps 8 bits of mantissa: the two sums round differently, within a few parts in 100.
    scale = np.abs(grads['off']).max()
    np.testing.assert_allclose(grads['auto'], grads['off'], atol=0.03 * scale)


def test_config_round_trip_keeps_the_mode():
    layer = fast_conv.Conv2DTranspose(4, 5, strides=2, padding='same', fast_conv='all')
    clone = fast_conv.Conv2DTranspose.from_config(layer.get_config())
    assert clone.fast_conv == 'all'


def test_unsupported_layers_are_refused_when_built():
    with pytest.raises(ValueError, match='square'):
        fast_conv.Conv2D(4, (3, 5), fast_conv='all')
    with pytest.raises(ValueError, match='one of'):
        fast_conv.Conv2D(4, 5, fast_conv='fast')
    with pytest.raises(ValueError, match='output_padding'):
        fast_conv.Conv2DTranspose(4, 5, strides=2, output_padding=1, fast_conv='auto')
    fast_conv.Conv2D(4, (3, 5), fast_conv='off')  # Keras' layer as it is.


def test_the_flag_offers_exactly_the_layer_modes():
    assert config.field_help('fast_conv')[1] == fast_conv.MODES
