"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) of D's inputs, for small data sets.

With a few hundred images D memorises them within a few epochs and G's gradients vanish. Augmenting
every image D sees, real and fake alike, with transformations that gradients flow through keeps D
from memorising while G still learns the un-augmented distribution (D never sees a clean image, and G
is scored only through augmented ones). Batches of float32 images in [-1, 1], NHWC; each transformation
draws its parameters per image from a stateless seed, so a resumed run augments as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

# One named algorithm: `auto_select` picks another under XLA, and the compiled step must augment alike.
ALG = 'philox'
# Translation moves an image by up to this share of its side; cutout blanks a square of this share.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(seed: tf.Tensor, shape, low: float = 0.0, high: float = 1.0) -> tf.Tensor:
    # From integers: TensorFlow's and XLA's float kernels map the same random bits to different floats.
    bits = tf.random.stateless_uniform(shape, seed, 0, 2**24, tf.int32, alg=ALG)
    return low + (high - low) * tf.cast(bits, tf.float32) / 2**24


def color(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random brightness, saturation and contrast, per image."""
    seeds = tf.random.experimental.stateless_split(seed, 3, alg=ALG)
    batch = tf.shape(images)[0]
    images = images + (_uniform(seeds[0], [batch, 1, 1, 1]) - 0.5)
    grey = tf.reduce_mean(images, axis=3, keepdims=True)
    images = (images - grey) * _uniform(seeds[1], [batch, 1, 1, 1], 0.0, 2.0) + grey
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    return (images - mean) * _uniform(seeds[2], [batch, 1, 1, 1], 0.5, 1.5) + mean


def translation(images: tf.Tensor, seed: tf.Tensor, ratio: float = TRANSLATION_RATIO) -> tf.Tensor:
    """Shifts each image by up to `ratio` of its side in each direction; what enters is 0 (mid-grey)."""
    height, width = images.shape[1], images.shape[2]
    pad_h, pad_w = int(height * ratio + 0.5), int(width * ratio + 0.5)
    seeds = tf.random.experimental.stateless_split(seed, 2, alg=ALG)
    batch = tf.shape(images)[0]
    dy = tf.random.stateless_uniform([batch, 1, 1], seeds[0], -pad_h, pad_h + 1, tf.int32, alg=ALG)
    dx = tf.random.stateless_uniform([batch, 1, 1], seeds[1], -pad_w, pad_w + 1, tf.int32, alg=ALG)
    padded = tf.pad(images, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]])
    rows = tf.broadcast_to(tf.range(height)[None, :, None] + pad_h + dy, [batch, height, width])
    cols = tf.broadcast_to(tf.range(width)[None, None, :] + pad_w + dx, [batch, height, width])
    return tf.gather_nd(padded, tf.stack([rows, cols], axis=-1), batch_dims=1)


def cutout(images: tf.Tensor, seed: tf.Tensor, ratio: float = CUTOUT_RATIO) -> tf.Tensor:
    """Sets a square of `ratio` of the side to 0 in each image, centred anywhere (it may be clipped)."""
    height, width = images.shape[1], images.shape[2]
    half_h, half_w = int(height * ratio + 0.5) // 2, int(width * ratio + 0.5) // 2
    seeds = tf.random.experimental.stateless_split(seed, 2, alg=ALG)
    batch = tf.shape(images)[0]
    cy = tf.random.stateless_uniform([batch, 1, 1], seeds[0], 0, height, tf.int32, alg=ALG)
    cx = tf.random.stateless_uniform([batch, 1, 1], seeds[1], 0, width, tf.int32, alg=ALG)
    dy = tf.range(height)[None, :, None] - cy
    dx = tf.range(width)[None, None, :] - cx
    inside_rows = (dy >= -half_h) & (dy < half_h)
    inside_cols = (dx >= -half_w) & (dx < half_w)
    keep = tf.cast(~(inside_rows & inside_cols), images.dtype)
    return images * keep[..., None]


# The policy's names (config.AUGMENT_OPS, checked there) -> the transformations.
_OPS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    'color': color,
    'translation': translation,
    'cutout': cutout,
}


def diff_augment(images: tf.Tensor, seed: tf.Tensor, policy: tuple[str, ...]) -> tf.Tensor:
    """Applies each transformation of `policy` in turn, each with its own seed derived from `seed`."""
    images = tf.cast(images, tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, len(policy), alg=ALG)
    for i, name in enumerate(policy):
        images = _OPS[name](images, seeds[i])
    return images
