"""A LeakyReLU whose gradient reads its output instead of its input, so grappler can fuse the layer before it.

TensorFlow's LeakyRelu gradient reads the op's input. When that input is a convolution plus bias (the
tutorial's discriminator, or any Conv2D with a bias followed by LeakyReLU), grappler's remapper fuses
Conv2D + BiasAdd + LeakyRelu into one op, then finds the gradient still wanting the unfused BiasAdd and
gives up on the whole training graph ("remapper failed: ... fanout LeakyReluGrad exist for missing node
BiasAdd"), losing every fusion it had made. With a slope >= 0 (all Keras allows) the output has the
input's sign, so LeakyReluGrad(dy, output) is the same gradient, exactly, and the input is left with one
consumer, and the tutorial model's CPU step keeps its fusions. Inference goes through the Keras layer
untouched.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='dcgan_tf')
class LeakyReLU(keras.layers.LeakyReLU):
    """keras.layers.LeakyReLU; in training, its gradient is computed from its output."""

    def call(self, inputs, training=None):
        if not training:
            return super().call(inputs)
        slope = float(self.negative_slope)  # Keras refuses negative slopes, which would flip signs.

        @tf.custom_gradient
        def leaky_relu(x):
            y = tf.nn.leaky_relu(x, slope)

            def grad(dy):
                return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=slope)

            return y, grad

        return leaky_relu(inputs)
