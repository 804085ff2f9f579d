"""The architectures follow the paper's guidelines at every supported resolution."""

import keras
import numpy as np
import pytest
from conftest import requires_bfloat16, tiny_config
from keras import layers

from dcgan_tf import models
from dcgan_tf.layers import leaky_relu
from dcgan_tf.layers.fused_bn import FusedBatchNormalization


@pytest.mark.parametrize('resolution', [28, 32, 64, 128])
@pytest.mark.parametrize('channels', [1, 3])
def test_shapes_and_range(resolution, channels):
    cfg = tiny_config(resolution=resolution, channels=channels, z_dim=10)
    generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
    z = np.random.default_rng(0).normal(size=(3, 10)).astype('float32') * 3
    images = generator(z, training=False).numpy()
    assert images.shape == (3, resolution, resolution, channels)
    assert images.dtype == np.float32
    assert np.all(images >= -1) and np.all(images <= 1)
    logits = discriminator(images, training=False)
    assert logits.shape == (3, 1)


@pytest.mark.parametrize('resolution', [28, 32, 64, 128])
def test_paper_guidelines(resolution):
    cfg = tiny_config(resolution=resolution)
    generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
    for model in (generator, discriminator):
        assert isinstance(model, keras.Sequential)
        assert not any('pool' in type(la).__name__.lower() for la in model.layers)
        convs = [la for la in model.layers if isinstance(la, layers.Conv2D | layers.Conv2DTranspose)]
        assert convs and all(c.strides == (2, 2) for c in convs)
    # Generator: BN + ReLU after every layer but the output, which is tanh.
    g_layers = generator.layers
    assert isinstance(g_layers[-1], layers.Activation) and g_layers[-1].get_config()['activation'] == 'tanh'
    weighted = [i for i, la in enumerate(g_layers) if isinstance(la, layers.Dense | layers.Conv2DTranspose)]
    for i in weighted[:-1]:
        following = g_layers[i + 1 : i + 4]
        assert any(isinstance(la, layers.BatchNormalization) for la in following)
        assert any(isinstance(la, layers.ReLU) for la in following)
    assert not any(isinstance(la, layers.BatchNormalization) for la in g_layers[weighted[-1] :])
    # Discriminator: LeakyReLU(0.2) everywhere, BN on every conv but the first.
    d_convs = [i for i, la in enumerate(discriminator.layers) if isinstance(la, layers.Conv2D)]
    for n, i in enumerate(d_convs):
        nxt = discriminator.layers[i + 1]
        assert isinstance(nxt, layers.BatchNormalization) == (n > 0)
    lrelus = [la for la in discriminator.layers if isinstance(la, layers.LeakyReLU)]
    assert len(lrelus) == len(d_convs)
    assert all(la.negative_slope == pytest.approx(0.2) for la in lrelus)
    assert isinstance(discriminator.layers[-1], layers.Dense) and discriminator.layers[-1].units == 1


@pytest.mark.parametrize('kernel_size', [4, 5])
def test_kernel_size_sets_every_convolution_and_keeps_the_shapes(kernel_size):
    cfg = tiny_config(resolution=28, gf_dim=8, df_dim=8, z_dim=16, kernel_size=kernel_size)
    generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
    convs = [
        la
        for model in (generator, discriminator)
        for la in model.layers
        if isinstance(la, layers.Conv2D | layers.Conv2DTranspose)
    ]
    assert len(convs) == 4 and all(c.kernel_size == (kernel_size, kernel_size) for c in convs)
    # G's deconv1 kernel [k, k, out 8, in 16]: k * k * 8 * 16 weights, no bias before BatchNorm.
    assert generator.get_layer('deconv1').count_params() == kernel_size**2 * 8 * 16
    assert generator(np.zeros((2, 16), np.float32)).shape == (2, 28, 28, 1)
    assert discriminator(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 1)


@pytest.mark.parametrize(('g_extra', 'd_extra'), [(2, 0), (0, 1), (1, 1)])
def test_extra_layers_are_stride_1_convolutions_at_the_smallest_map(g_extra, d_extra):
    cfg = tiny_config(
        resolution=28, gf_dim=8, df_dim=8, z_dim=16, g_extra_layers=g_extra, d_extra_layers=d_extra
    )
    generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
    for model, count, act, width in (
        (generator, g_extra, layers.ReLU, 16),
        (discriminator, d_extra, layers.LeakyReLU, 16),
    ):
        names = [la.name for la in model.layers]
        extras = [la for la in model.layers if la.name.startswith('extra') and isinstance(la, layers.Conv2D)]
        assert len(extras) == count
        for conv in extras:
            assert conv.strides == (1, 1) and conv.kernel_size == (3, 3) and conv.filters == width
            assert conv.output.shape[1:3] == (7, 7)
            i = names.index(conv.name)
            assert isinstance(model.layers[i + 1], layers.BatchNormalization)
            assert isinstance(model.layers[i + 2], act)
    # In G they follow the projection, before the first upsampling; in D they follow the last stride-2 conv.
    g_names = [la.name for la in generator.layers]
    if g_extra:
        assert g_names.index('project_relu') < g_names.index('extra0') < g_names.index('deconv1')
    d_names = [la.name for la in discriminator.layers]
    if d_extra:
        assert d_names.index('conv1_lrelu') < d_names.index('extra0') < d_names.index('flatten')
    assert generator(np.zeros((2, 16), np.float32)).shape == (2, 28, 28, 1)
    assert discriminator(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 1)


def test_auto_uses_our_faster_layers_except_on_eigen_cpu_kernels():
    # Decided by the device's kernels, passed explicitly here so the answer does not depend on this CPU.
    assert models.use_fast_layer('auto', on_eigen_cpu=False)
    assert not models.use_fast_layer('auto', on_eigen_cpu=True)
    assert models.use_fast_layer('true', on_eigen_cpu=True)
    assert not models.use_fast_layer('false', on_eigen_cpu=False)
    fused = {type(la) for la in models.build_generator(tiny_config(fused_batch_norm='true')).layers}
    plain = {type(la) for la in models.build_generator(tiny_config(fused_batch_norm='false')).layers}
    assert FusedBatchNormalization in fused and FusedBatchNormalization not in plain
    lrelus = {type(la) for la in models.build_discriminator(tiny_config(fast_layers='true')).layers}
    assert leaky_relu.LeakyReLU in lrelus


def test_widths_at_64_match_the_paper():
    cfg = tiny_config(resolution=64, channels=3, gf_dim=64, df_dim=64, z_dim=100)
    generator = models.build_generator(cfg)
    deconv_widths = [la.filters for la in generator.layers if isinstance(la, layers.Conv2DTranspose)]
    assert generator.get_layer('reshape').output.shape[1:] == (4, 4, 512)
    assert deconv_widths == [256, 128, 64, 3]
    discriminator = models.build_discriminator(cfg)
    assert [la.filters for la in discriminator.layers if isinstance(la, layers.Conv2D)] == [64, 128, 256, 512]
    # project: 100 * 4*4*512 weights (no bias before BN) = 819,200; BN 4 * 512 = 2,048 (gamma, beta,
    # moving mean, moving variance); deconv1 5*5*512*256 = 3,276,800; BN 1,024; deconv2
    # 5*5*256*128 = 819,200; BN 512; deconv3 5*5*128*64 = 204,800; BN 256; to_image 5*5*64*3 + 3
    # = 4,803. Total 5,128,643.
    assert generator.count_params() == 5_128_643


def test_initialisation_is_the_papers():
    cfg = tiny_config(resolution=64, gf_dim=64, df_dim=64)
    generator = models.build_generator(cfg)
    kernel = generator.get_layer('deconv1').kernel.numpy()
    assert abs(kernel.mean()) < 1e-3 and kernel.std() == pytest.approx(0.02, rel=0.05)
    gamma = generator.get_layer('deconv1_bn').gamma.numpy()
    assert gamma.mean() == pytest.approx(1.0, abs=0.01) and gamma.std() == pytest.approx(0.02, rel=0.2)


def test_tutorial_pair():
    cfg = tiny_config(arch='tutorial', resolution=28, z_dim=100)
    generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
    assert generator.output_shape == (None, 28, 28, 1)
    assert any(isinstance(la, layers.Dropout) for la in discriminator.layers)
    # The tutorial's generator: Dense(7*7*256, no bias) = 100 * 12,544 = 1,254,400 weights.
    assert generator.get_layer('project').count_params() == 1_254_400


@requires_bfloat16
def test_mixed_precision_outputs_stay_float32():
    keras.mixed_precision.set_global_policy('mixed_bfloat16')
    try:
        cfg = tiny_config()
        generator, discriminator = models.build_generator(cfg), models.build_discriminator(cfg)
        images = generator(np.zeros((2, cfg.z_dim), 'float32'))
        assert images.dtype == 'float32'
        assert discriminator(images).dtype == 'float32'
        assert generator.get_layer('project').compute_dtype == 'bfloat16'
    finally:
        keras.mixed_precision.set_global_policy('float32')


@pytest.mark.parametrize('resolution', [28, 32, 64])
def test_resize_upsampling_doubles_with_nearest_neighbours_then_a_stride_1_convolution(resolution):
    cfg = tiny_config(resolution=resolution, gf_dim=8, z_dim=16, upsample='resize')
    generator = models.build_generator(cfg)
    assert not any(isinstance(la, layers.Conv2DTranspose) for la in generator.layers)
    ups = [la for la in generator.layers if isinstance(la, layers.UpSampling2D)]
    assert len(ups) == models.num_upsamplings(resolution) and all(u.interpolation == 'nearest' for u in ups)
    convs = [la for la in generator.layers if isinstance(la, layers.Conv2D)]
    assert len(convs) == len(ups) and all(c.strides == (1, 1) for c in convs)
    # Each convolution follows its upsampling directly; BatchNorm + ReLU after all but the image layer.
    for up in ups:
        i = generator.layers.index(up)
        assert generator.layers[i + 1] in convs
    assert isinstance(generator.layers[-2], layers.Conv2D) and generator.layers[-1].name == 'tanh'
    images = generator(np.random.default_rng(0).normal(size=(2, 16)).astype('float32'), training=False)
    assert images.shape == (2, resolution, resolution, 1)
    # Same widths as the transposed version, so D and the rest of the run are unchanged.
    plain = models.build_generator(cfg.replace(upsample='transpose'))
    assert [la.output.shape for la in plain.layers if 'bn' in la.name] == [
        la.output.shape for la in generator.layers if 'bn' in la.name
    ]
