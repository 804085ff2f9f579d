"""Preprocessing shared by every source: decode (with the header size guard), channels, crop/resize, range.

Every source ends in uint8 pixels at the target resolution (`fit_image` rounds), so reading a source
directly and reading its prepared TFRecords give the very same bytes; the pipeline then scales to [-1, 1].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from dcgan_tf.config import parse_crop
from dcgan_tf.data import image_headers

# Plain Python called while tracing map functions: autograph must not rewrite it.
_parse_crop = tf.autograph.experimental.do_not_convert(parse_crop)


def fit_image(image: tf.Tensor, crop: str, resolution: int) -> tf.Tensor:
    """Crops ([H, W, C] or [N, H, W, C]) as --crop says and resizes to a uint8 square.

    `center:N` takes the N x N centred square (the whole short side if it is smaller), as the
    classic CelebA recipe (108, then resize to 64). Rounding to uint8 here makes reading a source
    directly and reading its prepared TFRecords give the very same bytes.
    """
    kind, size = _parse_crop(crop)
    shape = tf.shape(image)
    height, width = shape[-3], shape[-2]
    if kind == 'center':
        side = tf.minimum(height, width)
        if size:
            side = tf.minimum(side, size)
        image = tf.image.crop_to_bounding_box(image, (height - side) // 2, (width - side) // 2, side, side)
    image = tf.image.resize(
        tf.cast(image, tf.float32), [resolution, resolution], method='bilinear', antialias=True
    )
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def to_channels(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Any decoded image (gray, gray+alpha, RGB, RGBA) -> `channels` (1 or 3); alpha is dropped."""
    num = tf.shape(image)[-1]
    if channels == 1:

        def gray() -> tf.Tensor:
            rgb = tf.cast(image[..., :3], tf.float32)
            return tf.cast(tf.round(tf.image.rgb_to_grayscale(rgb)), tf.uint8)

        out = tf.cond(num < 3, lambda: image[..., :1], gray)
    else:
        out = tf.cond(num < 3, lambda: tf.tile(image[..., :1], [1, 1, 3]), lambda: image[..., :3])
    out.set_shape([None, None, channels])
    return out


def decode_and_fit(raw: tf.Tensor, crop: str, resolution: int, channels: int) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, GIF, BMP, WebP) -> uint8 [resolution, resolution, channels].

    TF 2.21's decode_image reads WebP (LSUN's LMDB format) but converts channels only for some
    formats, so it decodes as stored and `to_channels` converts. Raises on bytes that are no image.
    """
    # An enormous image (e.g. 20000x20000) fails here, from its header, before it can fill memory.
    raw = image_headers.guard_size(raw)
    # expand_animations=False: the first frame of a GIF, so every file gives one 3-D image.
    image = tf.io.decode_image(raw, channels=0, expand_animations=False)
    image.set_shape([None, None, None])
    return fit_image(to_channels(image, channels), crop, resolution)


def to_unit_range(image: tf.Tensor) -> tf.Tensor:
    """uint8-valued [0, 255] -> float32 [-1, 1], the range of G's tanh."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def fit_array(images: np.ndarray, resolution: int, channels: int, crop: str = 'center') -> np.ndarray:
    """Resizes/retints a whole in-memory uint8 array once, so batches need no per-step work."""
    if images.shape[-1] != channels:
        images = (
            np.repeat(images, channels, axis=-1)
            if images.shape[-1] == 1
            else (
                np.round(images[..., :3].astype(np.float32) @ [0.299, 0.587, 0.114])[..., None].astype(
                    np.uint8
                )
            )
        )
    if images.shape[1:3] != (resolution, resolution):
        resized = [
            fit_image(tf.constant(chunk), crop, resolution).numpy()
            for chunk in np.array_split(images, max(1, len(images) // 4096))
        ]
        images = np.concatenate(resized)
    return images
