"""Image sizes read from file headers, so an enormous image is refused before it is decoded.

A 20000x20000 PNG is a few hundred KB on disk but 1.2 GB once decoded to RGB, and tf.data decodes
several files at once: checking the header first keeps a hostile folder from exhausting memory.
Works inside tf.data (graph ops only) for PNG, JPEG, GIF, BMP and WebP; other bytes pass through to
the decoder, which rejects what it cannot read.
"""

from __future__ import annotations

import tensorflow as tf

# 50 megapixels: above any camera photo worth training on (150 MB as RGB uint8), far below a bomb.
MAX_PIXELS = 50_000_000
# In the error of an image over the limit, so callers can tell it from an undecodable one.
TOO_LARGE = 'image larger than'


def _bytes_at(raw: tf.Tensor, offset: int, length: int) -> tf.Tensor:
    return tf.cast(tf.io.decode_raw(tf.strings.substr(raw, offset, length), tf.uint8), tf.int64)


def _uint(raw: tf.Tensor, offset: int, length: int, big_endian: bool) -> tf.Tensor:
    digits = _bytes_at(raw, offset, length)
    if big_endian:
        digits = tf.reverse(digits, [0])
    return tf.reduce_sum(
        digits * tf.bitwise.left_shift(tf.constant(1, tf.int64), 8 * tf.range(length, dtype=tf.int64))
    )


def _png(raw: tf.Tensor) -> tf.Tensor:
    return _uint(raw, 16, 4, True) * _uint(raw, 20, 4, True)  # IHDR width, height


def _jpeg(raw: tf.Tensor) -> tf.Tensor:
    shape = tf.cast(tf.image.extract_jpeg_shape(raw), tf.int64)  # Scans the markers; no decoding.
    return shape[0] * shape[1]


def _gif(raw: tf.Tensor) -> tf.Tensor:
    return _uint(raw, 6, 2, False) * _uint(raw, 8, 2, False)  # logical screen width, height


def _bmp(raw: tf.Tensor) -> tf.Tensor:
    width, height = _uint(raw, 18, 4, False), _uint(raw, 22, 4, False)
    height = tf.where(height >= 2**31, 2**32 - height, height)  # Negative: a top-down bitmap.
    return width * height


def _webp(raw: tf.Tensor) -> tf.Tensor:
    chunk = tf.strings.substr(raw, 12, 4)

    def vp8x() -> tf.Tensor:  # Extended format: 24-bit canvas width-1 and height-1.
        return (_uint(raw, 24, 3, False) + 1) * (_uint(raw, 27, 3, False) + 1)

    def vp8l() -> tf.Tensor:  # Lossless: 14-bit width-1 and height-1 packed after a signature byte.
        bits = _uint(raw, 21, 4, False)
        return (tf.bitwise.bitwise_and(bits, 0x3FFF) + 1) * (
            tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 14), 0x3FFF) + 1
        )

    def vp8() -> tf.Tensor:  # Lossy: 14-bit width and height after the key-frame start code.
        return tf.bitwise.bitwise_and(_uint(raw, 26, 2, False), 0x3FFF) * tf.bitwise.bitwise_and(
            _uint(raw, 28, 2, False), 0x3FFF
        )

    return tf.case(
        [(tf.equal(chunk, b'VP8X'), vp8x), (tf.equal(chunk, b'VP8L'), vp8l)], default=vp8, exclusive=True
    )


def header_pixels(raw: tf.Tensor) -> tf.Tensor:
    """Width x height that the header of encoded image bytes announces (int64; 0 if not recognised)."""
    # The first 32 bytes, zero-padded: every fixed-offset field lies there, and short files read as 0.
    head = tf.strings.substr(tf.strings.join([tf.strings.substr(raw, 0, 32), b'\0' * 32]), 0, 32)
    magic = tf.strings.substr(head, 0, 4)
    is_webp = tf.logical_and(tf.equal(magic, b'RIFF'), tf.equal(tf.strings.substr(head, 8, 4), b'WEBP'))
    return tf.case(
        [
            (tf.equal(magic, b'\x89PNG'), lambda: _png(head)),
            (tf.equal(tf.strings.substr(head, 0, 2), b'\xff\xd8'), lambda: _jpeg(raw)),
            (tf.equal(tf.strings.substr(head, 0, 3), b'GIF'), lambda: _gif(head)),
            (tf.equal(tf.strings.substr(head, 0, 2), b'BM'), lambda: _bmp(head)),
            (is_webp, lambda: _webp(head)),
        ],
        default=lambda: tf.constant(0, tf.int64),
    )


def guard_size(raw: tf.Tensor, max_pixels: int = MAX_PIXELS) -> tf.Tensor:
    """`raw` unchanged, or InvalidArgumentError (a skip in tf.data's ignore_errors) when it is enormous."""
    pixels = header_pixels(raw)
    check = tf.debugging.assert_less_equal(
        pixels, tf.constant(max_pixels, tf.int64), message=f'{TOO_LARGE} {max_pixels} pixels'
    )
    with tf.control_dependencies([check]):
        return tf.identity(raw)
