"""A BatchNormalization layer that trains with TensorFlow's fused kernel (`--fused_batch_norm`).

Keras 3 normalises with a chain of elementwise ops (cast, moments, normalise, cast back) and their
gradients; on a CPU these memory-bound ops took more time than the convolutions of the DCGAN step. One
FusedBatchNormV3 op (oneDNN on CPU, cuDNN on GPU) does the same maths in one pass and its gradient in
another, so the DCGAN step is much faster on a CPU, in float32 and in bfloat16. Same
variables, same maths (up to float rounding), so checkpoints and exported models are unchanged.
"""

from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package='dcgan_tf')
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization whose training-mode forward and backward are single fused ops.

    Used for channels-last feature maps (4-D) and dense features (2-D, seen as 1x1 maps); anything else
    (masks, renorm, synchronized statistics, other axes) and inference go through the Keras layer.
    """

    def _fusable(self, inputs, training, mask) -> bool:
        return bool(
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.axis in (-1, len(inputs.shape) - 1)
            and len(inputs.shape) in (2, 4)
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        # Dense features as 1x1 maps by reshaping: a slice would copy, and so would its gradient.
        x = inputs if len(inputs.shape) == 4 else tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        # The kernel keeps float32 statistics for bfloat16/float16 inputs, as Keras' upcast does.
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, offset, epsilon=self.epsilon, data_format='NHWC', is_training=True
        )
        # The kernel returns the unbiased (n - 1) batch variance; Keras' moving average uses the biased one.
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (n - 1.0) / n
        momentum = self.momentum
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        y = y if len(inputs.shape) == 4 else tf.reshape(y, tf.shape(inputs))
        return tf.cast(y, self.compute_dtype)
