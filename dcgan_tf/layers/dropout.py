"""A Dropout layer whose random mask costs a fraction of Keras' (`--fast_layers`).

Keras draws one uniform float per unit and compares it with the rate. On a CPU, drawing those floats
is a large share of the tutorial model's training step (millions of units per D call). Sixteen random
bits per unit decide just as well: the unit is kept when its bits are at least round(rate * 2**16), a
keep probability within 2**-17 of 1 - rate. One uint32 draw gives two units' bits, a much cheaper draw
than the floats. (Keras' own mask under mixed_bfloat16 compares bfloat16 uniforms, which have 7 bits:
rate 0.3 kept 69.5% of the units, not 70%; this one keeps 70.0% in any precision.) The layer's
SeedGenerator advances exactly as Keras' does, so checkpoints and resumes are unchanged. Only on a CPU:
accelerators were not measured and keep Keras' mask.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from dcgan_tf import distribute

_BITS = 16


def keep_threshold(rate: float) -> int:
    """Units whose 16 random bits are >= this are kept: P(keep) = 1 - threshold / 2**16 ~ 1 - rate."""
    return min(round(rate * 2**_BITS), 2**_BITS - 1)


@keras.saving.register_keras_serializable(package='dcgan_tf')
class Dropout(keras.layers.Dropout):
    """keras.layers.Dropout with a 16-bit mask (training on a CPU; a noise_shape goes to Keras' layer)."""

    def call(self, inputs, training=False):
        if (
            not training
            or self.rate <= 0
            or self.noise_shape is not None
            or distribute.device_kind() != 'CPU'
        ):
            return super().call(inputs, training=training)
        seed = self.seed_generator.next()
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)  # As Keras' own dropout does.
        size = inputs.shape.num_elements() or tf.size(inputs)  # Static in a training step: no slicing.
        words = tf.random.stateless_uniform(
            [(size + 1) // 2], seed, minval=None, maxval=None, dtype=tf.uint32
        )
        bits = tf.reshape(tf.bitcast(words, tf.uint16), [-1])
        if not isinstance(size, int) or size % 2:
            bits = bits[:size]
        keep = tf.reshape(bits, tf.shape(inputs)) >= tf.constant(keep_threshold(self.rate), tf.uint16)
        scale = tf.constant(1.0 / (1.0 - self.rate), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))
