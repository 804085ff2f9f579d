"""Generator and discriminator builders: keras.Sequential models sized from the resolution.

`dcgan` follows Radford et al. (2016): project z and reshape, then stride-2 transposed convolutions
that halve the width and double the size, BatchNorm + ReLU everywhere but the tanh output; the
discriminator mirrors it with stride-2 convolutions, LeakyReLU(0.2) and BatchNorm on every layer but
the input one; every kernel is --kernel_size square (5 in the paper's code). `tutorial` is the TensorFlow
DCGAN tutorial's MNIST pair, kept for comparison.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from dcgan_tf import distribute
from dcgan_tf.config import Config
from dcgan_tf.layers import dropout, fast_conv, latent_code, leaky_relu
from dcgan_tf.layers.fused_bn import FusedBatchNormalization


def _weights_init(seed: int) -> keras.initializers.Initializer:
    # The paper: "All weights were initialized from a zero-centered Normal distribution with
    # standard deviation 0.02."
    return keras.initializers.RandomNormal(0.0, 0.02, seed=seed)


def use_fast_layer(choice: str, on_eigen_cpu: bool | None = None) -> bool:
    """Resolves --fused_batch_norm / --fast_layers (auto, true, false): whether our faster layer is used.

    `auto` uses it except on a CPU where TensorFlow runs its Eigen kernels (oneDNN off): there the plain
    Keras layers trained the DCGAN-64 float32 step faster. `on_eigen_cpu` None: this process is asked.
    """
    if choice != 'auto':
        return choice == 'true'
    if on_eigen_cpu is None:
        on_eigen_cpu = distribute.device_kind() == 'CPU' and not distribute.onednn_enabled()
    return not on_eigen_cpu


def _batch_norm_class(cfg: Config) -> type[layers.BatchNormalization]:
    # Same variables and maths; the fused kernel made the oneDNN train step faster (fused_bn.py).
    return FusedBatchNormalization if use_fast_layer(cfg.fused_batch_norm) else layers.BatchNormalization


def _dropout_class(cfg: Config) -> type[layers.Dropout]:
    # The same units dropped in expectation, with a mask a third as costly to draw (dropout.py).
    return dropout.Dropout if use_fast_layer(cfg.fast_layers) else layers.Dropout


def _leaky_relu_class(cfg: Config) -> type[layers.LeakyReLU]:
    # The same gradient, read from the output so grappler can fuse conv + bias + LeakyReLU (leaky_relu.py).
    return leaky_relu.LeakyReLU if use_fast_layer(cfg.fast_layers) else layers.LeakyReLU


def _batch_norm(cfg: Config, seed: int, name: str) -> layers.Layer:
    # gamma ~ N(1, 0.02) as in the paper's reference code; synchronized=True makes the statistics
    # global under a multi-replica strategy instead of per replica.
    return _batch_norm_class(cfg)(
        gamma_initializer=keras.initializers.RandomNormal(1.0, 0.02, seed=seed),
        synchronized=cfg.sync_bn,
        name=name,
    )


def start_size(resolution: int) -> int:
    """Side of the first feature map: 7 for 28x28 (MNIST), 4 otherwise."""
    return 7 if resolution == 28 else 4


def num_upsamplings(resolution: int) -> int:
    """Stride-2 layers between the first feature map and the image (log2 of the size ratio)."""
    ratio = resolution // start_size(resolution)
    if ratio * start_size(resolution) != resolution or ratio & (ratio - 1):
        raise ValueError(f'resolution {resolution} is not {start_size(resolution)} times a power of 2')
    return int(math.log2(ratio))


def _upsampling(
    cfg: Config, filters: int, init: keras.initializers.Initializer, name: str, use_bias: bool
) -> list[layers.Layer]:
    """Layers that double the map's size into `filters` channels (--upsample).

    A stride-2 transposed convolution whose kernel side is not a multiple of 2 gives neighbouring
    output pixels unequal numbers of taps, a checkerboard (Odena et al. 2016); nearest-neighbour
    upsampling and then a stride-1 convolution gives every pixel the same.
    """
    resize = cfg.upsample == 'resize'
    conv = (fast_conv.Conv2D if resize else fast_conv.Conv2DTranspose)(
        filters,
        cfg.kernel_size,
        strides=1 if resize else 2,
        padding='same',
        use_bias=use_bias,
        kernel_initializer=init,
        name=name,
        fast_conv=cfg.fast_conv,
    )
    if resize:
        return [layers.UpSampling2D(2, interpolation='nearest', name=f'{name}_upsample'), conv]
    return [conv]


def _stride1_conv(cfg: Config, width: int, seed: int, name: str) -> layers.Layer:
    # 3x3, stride 1: depth at the smallest map without changing its size (no bias before BatchNorm).
    return fast_conv.Conv2D(
        width,
        3,
        padding='same',
        use_bias=False,
        kernel_initializer=_weights_init(seed),
        name=name,
        fast_conv=cfg.fast_conv,
    )


def build_generator(cfg: Config) -> keras.Model:
    """z [B, z_dim] -> images [B, H, W, C] in [-1, 1] (float32 whatever the compute precision).

    --conditional: [z, class vector [B, --num_classes]] -> images, the class vector one-hot (or a mix
    of classes, for walks between them) joined to z before the projection, as in the paper's code.
    """
    if cfg.arch == 'tutorial':
        return _tutorial_generator(cfg)
    if not cfg.conditional:
        return _dcgan_generator(cfg, cfg.z_dim, 'generator')
    z = keras.Input(shape=(cfg.z_dim,), name='z')
    classes = keras.Input(shape=(cfg.num_classes,), name='classes')
    body = _dcgan_generator(cfg, cfg.z_dim + cfg.num_classes, 'generator_body')
    images = body(layers.Concatenate(name='z_and_class')([z, classes]))
    return keras.Model([z, classes], images, name='generator')


def _dcgan_generator(cfg: Config, input_dim: int, name: str) -> keras.Sequential:
    n = num_upsamplings(cfg.resolution)
    size = start_size(cfg.resolution)
    width = cfg.gf_dim * 2 ** (n - 1)  # e.g. 512 at 64x64 with gf_dim=64
    seed = cfg.seed * 1000
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=(input_dim,), name='z'))
    if cfg.info_code:
        # float32, so the code is z's argmax as the trainer computes it, never a bfloat16 tie.
        model.add(latent_code.CategoricalCode(cfg.info_code, dtype='float32', name='info_code'))
    # "Project and reshape": the one matrix multiply the paper allows before the convolutions.
    # No bias before BatchNorm: its shift makes one redundant.
    model.add(
        layers.Dense(
            size * size * width, use_bias=False, kernel_initializer=_weights_init(seed), name='project'
        )
    )
    model.add(layers.Reshape((size, size, width), name='reshape'))
    model.add(_batch_norm(cfg, seed + 1, 'project_bn'))
    model.add(layers.ReLU(name='project_relu'))
    for j in range(cfg.g_extra_layers):
        model.add(_stride1_conv(cfg, width, seed + 100 + 2 * j, f'extra{j}'))
        model.add(_batch_norm(cfg, seed + 101 + 2 * j, f'extra{j}_bn'))
        model.add(layers.ReLU(name=f'extra{j}_relu'))
    for i in range(1, n):
        width //= 2
        for layer in _upsampling(cfg, width, _weights_init(seed + 2 * i), f'deconv{i}', use_bias=False):
            model.add(layer)
        model.add(_batch_norm(cfg, seed + 2 * i + 1, f'deconv{i}_bn'))
        model.add(layers.ReLU(name=f'deconv{i}_relu'))
    for layer in _upsampling(cfg, cfg.channels, _weights_init(seed + 2 * n), 'to_image', use_bias=True):
        model.add(layer)
    # float32 output under mixed precision: images are written, compared and fed to D unchanged.
    model.add(layers.Activation('tanh', dtype='float32', name='tanh'))
    return model


def build_discriminator(cfg: Config) -> keras.Model:
    """images [B, H, W, C] in [-1, 1] -> one float32 logit per image [B, 1] (with --info_code, the logit
    and D's reading of the code, [B, 1 + N]: losses.split_info).

    --conditional: [images, class vector [B, --num_classes]] -> logit. `projection` adds the dot product
    of a learned embedding of the class with D's last features to the logit (Miyato & Koyama 2018);
    `concat` joins the one-hot class to the image as constant maps (the paper's code joins it to every
    layer; the input suffices for the first convolution to see it everywhere).
    """
    if cfg.arch == 'tutorial':
        return _tutorial_discriminator(cfg)
    seed = cfg.seed * 1000 + 500
    if not cfg.conditional:
        model = _dcgan_discriminator_body(cfg, cfg.channels, 'discriminator')
        model.add(_logit(seed, num_upsamplings(cfg.resolution), 1 + cfg.info_code))
        return model
    res = cfg.resolution
    images = keras.Input(shape=(res, res, cfg.channels), name='image')
    classes = keras.Input(shape=(cfg.num_classes,), name='classes')
    if cfg.conditional_d == 'concat':
        maps = layers.Reshape((1, 1, cfg.num_classes), name='class_pixel')(classes)
        maps = layers.UpSampling2D(res, name='class_maps')(maps)
        body = _dcgan_discriminator_body(cfg, cfg.channels + cfg.num_classes, 'discriminator_body')
        features = body(layers.Concatenate(name='image_and_class')([images, maps]))
        logit = _logit(seed, num_upsamplings(res))(features)
    else:
        body = _dcgan_discriminator_body(cfg, cfg.channels, 'discriminator_body')
        features = body(images)
        # A one-hot class times this kernel is its embedding row (no bias: the logit's Dense has one).
        embedding = layers.Dense(
            features.shape[-1],
            use_bias=False,
            kernel_initializer=_weights_init(seed + 99),
            name='class_embedding',
        )(classes)
        projection = layers.Dot(axes=1, dtype='float32', name='projection')([embedding, features])
        logit = layers.Add(dtype='float32', name='conditional_logit')(
            [_logit(seed, num_upsamplings(res))(features), projection]
        )
    return keras.Model([images, classes], logit, name='discriminator')


def _logit(seed: int, n: int, units: int = 1) -> layers.Layer:
    return layers.Dense(units, kernel_initializer=_weights_init(seed + 2 * n), dtype='float32', name='logit')


def _dcgan_discriminator_body(cfg: Config, input_channels: int, name: str) -> keras.Sequential:
    """D up to its flattened last features (the logit is added by the caller)."""
    n = num_upsamplings(cfg.resolution)
    seed = cfg.seed * 1000 + 500
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=(cfg.resolution, cfg.resolution, input_channels), name='image'))
    width = cfg.df_dim
    for i in range(n):
        model.add(
            fast_conv.Conv2D(
                width * 2**i,
                cfg.kernel_size,
                strides=2,
                padding='same',
                use_bias=i == 0,
                kernel_initializer=_weights_init(seed + 2 * i),
                name=f'conv{i}',
                fast_conv=cfg.fast_conv,
            )
        )
        if i > 0:  # The paper: no BatchNorm on the discriminator's input layer.
            model.add(_batch_norm(cfg, seed + 2 * i + 1, f'conv{i}_bn'))
        model.add(_leaky_relu_class(cfg)(negative_slope=0.2, name=f'conv{i}_lrelu'))
    for j in range(cfg.d_extra_layers):
        model.add(_stride1_conv(cfg, width * 2 ** (n - 1), seed + 100 + 2 * j, f'extra{j}'))
        model.add(_batch_norm(cfg, seed + 101 + 2 * j, f'extra{j}_bn'))
        model.add(_leaky_relu_class(cfg)(negative_slope=0.2, name=f'extra{j}_lrelu'))
    model.add(layers.Flatten(name='flatten'))
    return model


def _tutorial_generator(cfg: Config) -> keras.Sequential:
    # tensorflow.org/tutorials/generative/dcgan `make_generator_model`, with z_dim from the config.
    seed = cfg.seed * 1000
    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input(shape=(cfg.z_dim,), name='z'),
            layers.Dense(7 * 7 * 256, use_bias=False, kernel_initializer=init(seed), name='project'),
            _batch_norm_class(cfg)(name='project_bn'),
            _leaky_relu_class(cfg)(name='project_lrelu'),
            layers.Reshape((7, 7, 256), name='reshape'),
            fast_conv.Conv2DTranspose(
                128,
                5,
                strides=1,
                padding='same',
                use_bias=False,
                kernel_initializer=init(seed + 1),
                name='deconv1',
                fast_conv=cfg.fast_conv,
            ),
            _batch_norm_class(cfg)(name='deconv1_bn'),
            _leaky_relu_class(cfg)(name='deconv1_lrelu'),
            fast_conv.Conv2DTranspose(
                64,
                5,
                strides=2,
                padding='same',
                use_bias=False,
                kernel_initializer=init(seed + 2),
                name='deconv2',
                fast_conv=cfg.fast_conv,
            ),
            _batch_norm_class(cfg)(name='deconv2_bn'),
            _leaky_relu_class(cfg)(name='deconv2_lrelu'),
            fast_conv.Conv2DTranspose(
                1,
                5,
                strides=2,
                padding='same',
                use_bias=False,
                kernel_initializer=init(seed + 3),
                name='to_image',
                fast_conv=cfg.fast_conv,
            ),
            layers.Activation('tanh', dtype='float32', name='tanh'),
        ],
        name='generator',
    )


def _tutorial_discriminator(cfg: Config) -> keras.Sequential:
    # tensorflow.org/tutorials/generative/dcgan `make_discriminator_model`.
    seed = cfg.seed * 1000 + 500
    init = keras.initializers.GlorotUniform
    return keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1), name='image'),
            fast_conv.Conv2D(
                64,
                5,
                strides=2,
                padding='same',
                kernel_initializer=init(seed),
                name='conv0',
                fast_conv=cfg.fast_conv,
            ),
            _leaky_relu_class(cfg)(name='conv0_lrelu'),
            _dropout_class(cfg)(0.3, seed=seed, name='conv0_dropout'),
            fast_conv.Conv2D(
                128,
                5,
                strides=2,
                padding='same',
                kernel_initializer=init(seed + 1),
                name='conv1',
                fast_conv=cfg.fast_conv,
            ),
            _leaky_relu_class(cfg)(name='conv1_lrelu'),
            _dropout_class(cfg)(0.3, seed=seed + 1, name='conv1_dropout'),
            layers.Flatten(name='flatten'),
            layers.Dense(1, kernel_initializer=init(seed + 2), dtype='float32', name='logit'),
        ],
        name='discriminator',
    )
